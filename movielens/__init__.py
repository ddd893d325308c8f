"""MovieLens recommendations: data, the Keras rating model and its engines, the will-watch model,
the served ranking, evaluation.

Layers, each importing only the ones before it: plumbing (paths, errors, atomic files), data,
model, evaluation, then ranker, serve and recommend, synth (with synth_ranking) and the command
line (cli). params.py, params.yaml's schema and loader, stands beside them: it takes the dataset names from data.releases, and
data.splits takes the split rules' names from it. The pipeline's stage scripts in stages/ read
params and paths and call this package.
"""

import os

# The one place this is set; it must precede the first TensorFlow import (the package is imported
# before Keras in every entry point): TensorFlow's C++ start-up banners are noise, not errors.
if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
