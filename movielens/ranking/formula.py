"""The standard model's prediction formula in NumPy, for scoring many pairs without Keras.

rating = lo + (hi - lo) * sigmoid(u . m + b_u + b_m), the formula movielens.model.keras_model.build_model
builds; the Keras model is the reference and tests/test_scoring.py checks these functions against
it. Ranking and serving score every movie for a block of users with one matrix product
(`predict_scores`); the training engines never call this module.
"""

from __future__ import annotations

import numpy as np


def rating_of_logit(logits: np.ndarray, rating_scale: tuple[float, float]) -> np.ndarray:
    """The model's sigmoid and rescaling: lo + (hi - lo) * sigmoid(logits), same shape.

    Written with tanh, which equals the sigmoid and does not overflow for large negative logits.
    """
    lo, hi = rating_scale
    return lo + (hi - lo) * 0.5 * (1.0 + np.tanh(0.5 * np.asarray(logits)))


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
    logits = user_vectors @ movie_vectors.T
    logits += user_bias[:, None]
    logits += movie_bias[None, :]
    return logits.astype(np.float32, copy=False)


def predict_scores(
    user_vectors: np.ndarray,
    user_bias: np.ndarray,
    movie_vectors: np.ndarray,
    movie_bias: np.ndarray,
    rating_scale: tuple[float, float],
) -> np.ndarray:
    """Predicted ratings of every movie for each given user: float32 (users, movies).

    Args:
        user_vectors: float32 (users, dim), the embedding rows of the users to score.
        user_bias: float32 (users,), their biases.
        movie_vectors: float32 (movies, dim); movie_bias: float32 (movies,).
        rating_scale: (lo, hi), the model's rating range (movielens.model.layers.rating_scale).
    """
    logits = predict_logits(user_vectors, user_bias, movie_vectors, movie_bias)
    return rating_of_logit(logits, rating_scale).astype(np.float32, copy=False)


def predict_pairs(
    user_vectors: np.ndarray,
    user_bias: np.ndarray,
    movie_vectors: np.ndarray,
    movie_bias: np.ndarray,
    rating_scale: tuple[float, float],
) -> np.ndarray:
    """Predicted ratings of aligned (user, movie) rows: float32 (n,); row i pairs user i, movie i."""
    logits = np.einsum("ij,ij->i", user_vectors, movie_vectors) + user_bias + movie_bias
    return rating_of_logit(logits, rating_scale).astype(np.float32, copy=False)
