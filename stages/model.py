"""The rating model: user and movie embeddings, a per-pair dot product, biases, a scaled sigmoid."""

from __future__ import annotations

import keras
import numpy as np

USER_INPUT = "user_index"
MOVIE_INPUT = "movie_index"


def build_model(
    n_users: int,
    n_movies: int,
    embedding_dim: int,
    l2: float,
    rating_scale: tuple[float, float],
) -> keras.Model:
    """Build the rating model (uncompiled).

    rating = lo + (hi - lo) * sigmoid(sum(u * m) + b_u + b_m), one dot product per (user, movie)
    pair in the batch. L2 is applied to the embedding rows and biases a batch looks up.

    Args:
        n_users: rows of the user tables (user indices 0..n_users-1).
        n_movies: rows of the movie tables.
        embedding_dim: length of each embedding vector.
        l2: weight of the L2 penalty on the looked-up rows, per rating.
        rating_scale: (lo, hi), the lowest and highest rating.

    Returns:
        A model taking {"user_index": int32 (batch,), "movie_index": int32 (batch,)} and returning
        float32 (batch, 1) predicted ratings.
    """
    lo, hi = rating_scale
    user = keras.Input(shape=(), dtype="int32", name=USER_INPUT)
    movie = keras.Input(shape=(), dtype="int32", name=MOVIE_INPUT)
    init = keras.initializers.RandomNormal(stddev=0.05)
    reg = keras.regularizers.L2(l2) if l2 > 0 else None

    def table(n: int, dim: int, name: str, initializer) -> keras.layers.Embedding:
        return keras.layers.Embedding(
            n, dim, embeddings_initializer=initializer, activity_regularizer=reg, name=name
        )

    u = table(n_users, embedding_dim, "user_embedding", init)(user)
    m = table(n_movies, embedding_dim, "movie_embedding", init)(movie)
    b_u = table(n_users, 1, "user_bias", "zeros")(user)
    b_m = table(n_movies, 1, "movie_bias", "zeros")(movie)
    dot = keras.layers.Dot(axes=1, name="dot")([u, m])
    logit = keras.layers.Add(name="logit")([dot, b_u, b_m])
    unit = keras.layers.Activation("sigmoid", name="sigmoid")(logit)
    rating = keras.layers.Rescaling(scale=hi - lo, offset=lo, name="rating")(unit)
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
