"""The names movielens.model.keras_model.build_model gives its layers, for the code that reads a trained model.

Kept apart from movielens.model.keras_model so that reading them does not import TensorFlow.
"""

from __future__ import annotations

import numpy as np

USER_INPUT, MOVIE_INPUT = "user_index", "movie_index"
USER_EMBEDDING, MOVIE_EMBEDDING = "user_embedding", "movie_embedding"
USER_BIAS, MOVIE_BIAS = "user_bias", "movie_bias"
RATING = "rating"  # the Rescaling layer: rating = offset + scale * sigmoid(logit)
# The standard model's four tables, each side's embedding then its bias: the one order every
# reader of the tables (compiled engine, NumPy scoring, architecture check) uses.
TABLES = (USER_EMBEDDING, USER_BIAS, MOVIE_EMBEDDING, MOVIE_BIAS)


def rating_scale(model) -> tuple[float, float]:
    """(lo, hi), the rating range the model's output is scaled to."""
    rescale = model.get_layer(RATING)
    lo = float(np.asarray(rescale.offset))
    return lo, lo + float(np.asarray(rescale.scale))
