"""MovieLens rating prediction: data, the Keras model and its engines, evaluation, recommendations.

Layers, each importing only the ones before it: plumbing (paths, errors, atomic files), params,
data, model, evaluation, then recommend, synth and the command line (cli). The pipeline's stage
scripts in stages/ read params and paths and call this package.
"""

import os

# The one place this is set; it must precede the first TensorFlow import (the package is imported
# before Keras in every entry point): TensorFlow's C++ start-up banners are noise, not errors.
if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
