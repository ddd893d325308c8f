"""The Keras model, the engines that train it (Keras, compiled, xla), the backends, and the bias baseline."""
