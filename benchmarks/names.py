"""The names of our model's rows in the training benchmark: one per engine that fits it."""

from __future__ import annotations

OURS = "movielens_mf"  # the Keras model's own name (movielens.model.keras_model.build_model)
ENGINES = ("compiled", "keras")  # `movielens_mf` fits with each, on the same split, in one run
JAX_ENGINE = "xla"  # then fits with this one on Keras' JAX backend, in a process of its own


def engine_row_name(engine: str) -> str:
    """The results row of our model trained by one engine: `movielens_mf (keras)`."""
    return f"{OURS} ({engine})"


COMPILED, KERAS = (engine_row_name(engine) for engine in ENGINES)
XLA = engine_row_name(JAX_ENGINE)
