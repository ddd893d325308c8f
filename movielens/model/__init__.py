"""The Keras model, its two training engines (Keras, compiled) and the bias baseline."""
