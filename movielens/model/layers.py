"""The names movielens.model.keras_model.build_model gives its layers, for the code that reads a trained model.

Kept apart from movielens.model.keras_model so that reading them does not import TensorFlow.
"""

from __future__ import annotations

import numpy as np

USER_INPUT, MOVIE_INPUT = "user_index", "movie_index"
USER_EMBEDDING, MOVIE_EMBEDDING = "user_embedding", "movie_embedding"
USER_BIAS, MOVIE_BIAS = "user_bias", "movie_bias"
RATING = "rating"  # the Rescaling layer: rating = offset + scale * sigmoid(logit)


def rating_scale(model) -> tuple[float, float]:
    """(lo, hi), the rating range the model's output is scaled to."""
    rescale = model.get_layer(RATING)
    lo = float(np.asarray(rescale.offset))
    return lo, lo + float(np.asarray(rescale.scale))
