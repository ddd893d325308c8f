"""The pipeline's stages, one module each; run them with `python -m stages.<name>` or `dvc repro`."""

import os

# Must precede the first TensorFlow import: its C++ start-up banners are noise, not errors.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
