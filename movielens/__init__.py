"""MovieLens rating prediction: data, the Keras model and its engines, evaluation, recommendations.

Layers, each importing only the ones before it: plumbing (paths, errors, atomic files), params,
data, model, evaluation, then recommend, synth (with synth_ranking) and the command line (cli).
The pipeline's stage scripts in stages/ read params and paths and call this package.
"""

import os

# Must precede the first TensorFlow import: its C++ start-up banners are noise, not errors.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
