"""The rating model: user and movie embeddings, a per-pair dot product, biases, a scaled sigmoid."""

from __future__ import annotations

import keras
import numpy as np

from movielens.model.layers import (
    MOVIE_BIAS,
    MOVIE_EMBEDDING,
    MOVIE_INPUT,
    RATING,
    USER_BIAS,
    USER_EMBEDDING,
    USER_INPUT,
)


def build_model(
    n_users: int,
    n_movies: int,
    embedding_dim: int,
    embeddings_l2: float,
    activity_l2: float,
    rating_scale: tuple[float, float],
) -> keras.Model:
    """Build the rating model (uncompiled).

    rating = lo + (hi - lo) * sigmoid(sum(u * m) + b_u + b_m), one dot product per (user, movie)
    pair in the batch. The embedding tables carry two L2 terms: `embeddings_l2` on the whole table
    (Keras' embeddings_regularizer: every row shrinks at every step, so rarely rated movies and
    rarely rating users stay close to zero and the biases speak for them) and `activity_l2` on the
    rows a batch looks up, averaged over the batch (activity_regularizer: per rating). Biases are
    not regularised.

    Args:
        n_users: rows of the user tables (user indices 0..n_users-1).
        n_movies: rows of the movie tables.
        embedding_dim: length of each embedding vector.
        embeddings_l2: weight of the L2 penalty on the whole embedding tables.
        activity_l2: weight of the L2 penalty on the looked-up embedding rows, per rating.
        rating_scale: (lo, hi), the lowest and highest rating.

    Returns:
        A model taking {"user_index": int32 (batch,), "movie_index": int32 (batch,)} and returning
        float32 (batch, 1) predicted ratings.
    """
    lo, hi = rating_scale
    user = keras.Input(shape=(), dtype="int32", name=USER_INPUT)
    movie = keras.Input(shape=(), dtype="int32", name=MOVIE_INPUT)
    init = keras.initializers.RandomNormal(stddev=0.05)

    def l2(weight: float) -> keras.regularizers.L2 | None:
        return keras.regularizers.L2(weight) if weight > 0 else None

    def embedding(n: int, name: str) -> keras.layers.Embedding:
        return keras.layers.Embedding(
            n,
            embedding_dim,
            embeddings_initializer=init,
            embeddings_regularizer=l2(embeddings_l2),
            activity_regularizer=l2(activity_l2),
            name=name,
        )

    def bias(n: int, name: str) -> keras.layers.Embedding:
        return keras.layers.Embedding(n, 1, embeddings_initializer="zeros", name=name)

    u = embedding(n_users, USER_EMBEDDING)(user)
    m = embedding(n_movies, MOVIE_EMBEDDING)(movie)
    b_u = bias(n_users, USER_BIAS)(user)
    b_m = bias(n_movies, MOVIE_BIAS)(movie)
    dot = keras.layers.Dot(axes=1, name="dot")([u, m])
    logit = keras.layers.Add(name="logit")([dot, b_u, b_m])
    unit = keras.layers.Activation("sigmoid", name="sigmoid")(logit)
    rating = keras.layers.Rescaling(scale=hi - lo, offset=lo, name=RATING)(unit)
    return keras.Model({USER_INPUT: user, MOVIE_INPUT: movie}, rating, name="movielens_mf")


def model_inputs(user_index: np.ndarray, movie_index: np.ndarray) -> dict[str, np.ndarray]:
    """The model's input dict from two index arrays."""
    return {
        USER_INPUT: np.asarray(user_index, dtype=np.int32),
        MOVIE_INPUT: np.asarray(movie_index, dtype=np.int32),
    }


def predict_ratings(
    model: keras.Model, user_index: np.ndarray, movie_index: np.ndarray, batch_size: int
) -> np.ndarray:
    """Predicted ratings, float32 (n,), for known (non-negative) index pairs."""
    if len(user_index) == 0:
        return np.zeros(0, dtype=np.float32)
    out = model.predict(model_inputs(user_index, movie_index), batch_size=batch_size, verbose=0)
    return out.reshape(-1).astype(np.float32)


def load_model(path) -> keras.Model:
    """Load a saved model with Keras' safe mode (no arbitrary code from the file)."""
    return keras.saving.load_model(path, compile=False, safe_mode=True)
