"""The pipeline's stages, one module each; run them with `python -m stages.<name>` or `dvc repro`."""
