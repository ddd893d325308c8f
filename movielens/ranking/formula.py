"""The standard model's prediction formula in NumPy, for scoring many pairs without Keras.

rating = lo + (hi - lo) * sigmoid(u . m + b_u + b_m), the formula movielens.model.keras_model.build_model
builds; the Keras model is the reference and tests/test_scoring.py checks these functions against
it. Ranking and serving score every movie for a block of users with one matrix product
(`predict_logits`, through movielens.ranking.scorers.Factors); the training engines never call
this module.
"""

from __future__ import annotations

import numpy as np

from movielens.model.foldin import sigmoid


def rating_of_logit(logits: np.ndarray, rating_scale: tuple[float, float]) -> np.ndarray:
    """The model's sigmoid and rescaling: lo + (hi - lo) * sigmoid(logits), same shape.

    The sigmoid is movielens.model.foldin.sigmoid, the one fold-in fits people with.
    """
    lo, hi = rating_scale
    return lo + (hi - lo) * sigmoid(logits)


def predict_logits(
    user_vectors: np.ndarray,
    user_bias: np.ndarray,
    movie_vectors: np.ndarray,
    movie_bias: np.ndarray,
) -> np.ndarray:
    """The model's logit u . m + b_u + b_m of every movie for each given user: float32 (users, movies).

    Ranking by the logit ranks exactly as by the predicted rating (the sigmoid and the rescaling
    are strictly increasing), without the float32 saturation of the sigmoid merging close scores.
    """
    # In the movies' dtype (the model's float32): a float64 fold-in times float32 tables would
    # cast the whole movie table each call and leave BLAS.
    logits = user_vectors.astype(movie_vectors.dtype, copy=False) @ movie_vectors.T
    logits += user_bias[:, None]
    logits += movie_bias[None, :]
    return logits.astype(np.float32, copy=False)
