"""Scorers: every movie's score for a block of users.

The NumPy formula of the standard architecture (Factors), valid only for a model that
movielens.model.architecture.standard_problem accepts, or the trained model itself (PairScorer) for
any other; scorer_of picks the one a model allows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from movielens.model.architecture import standard_problem
from movielens.model.layers import (
    MOVIE_BIAS,
    MOVIE_EMBEDDING,
    TABLES,
    USER_BIAS,
    USER_EMBEDDING,
    rating_scale,
)
from movielens.plumbing.errors import PipelineError
from movielens.ranking.formula import predict_logits, rating_of_logit


class Scorer(Protocol):
    """Scores every movie for a block of users; a higher score means a higher predicted rating."""

    @property
    def n_users(self) -> int: ...

    @property
    def n_movies(self) -> int: ...

    @property
    def rating_scale(self) -> tuple[float, float]: ...

    def scores(self, user_index: np.ndarray) -> np.ndarray:
        """float32 (len(user_index), n_movies), a new array, ordered as the predicted ratings."""
        ...

    def ratings(self, scores: np.ndarray) -> np.ndarray:
        """The predicted ratings of some of those scores."""
        ...


@dataclass(frozen=True)
class Factors:
    """The rating model's parameters as numpy arrays.

    logit(u, m) = user_vectors[u] · movie_vectors[m] + user_bias[u] + movie_bias[m] and
    rating = lo + (hi - lo) * sigmoid(logit). The sigmoid and the rescaling are strictly increasing,
    so ranking movies by the logit ranks them exactly as by the predicted rating, without the
    float32 saturation of the sigmoid merging distinct scores.

    Attributes:
        user_vectors: float32 (n_users, embedding_dim).
        movie_vectors: float32 (n_movies, embedding_dim).
        user_bias: float32 (n_users,).
        movie_bias: float32 (n_movies,).
        rating_scale: (lo, hi), the lowest and highest rating.
    """

    user_vectors: np.ndarray
    movie_vectors: np.ndarray
    user_bias: np.ndarray
    movie_bias: np.ndarray
    rating_scale: tuple[float, float]

    @property
    def n_users(self) -> int:
        return len(self.user_vectors)

    @property
    def n_movies(self) -> int:
        return len(self.movie_vectors)

    def scores(self, user_index: np.ndarray) -> np.ndarray:
        """The Scorer interface: the logits, ranked as the predicted ratings."""
        return self.logits(user_index)

    def logits(self, user_index: np.ndarray) -> np.ndarray:
        """float32 (len(user_index), n_movies): every movie's logit for each user."""
        users = np.asarray(user_index)
        return predict_logits(
            self.user_vectors[users], self.user_bias[users], self.movie_vectors, self.movie_bias
        )

    def ratings(self, logits: np.ndarray) -> np.ndarray:
        """Predicted ratings from logits, as the model's sigmoid and rescaling layers compute them."""
        return rating_of_logit(logits, self.rating_scale)


@dataclass(frozen=True)
class PairScorer:
    """Scores with the model itself: its predicted rating of every (user, movie) pair of a block.

    Attributes:
        predict: callable(user_index, movie_index) -> float (n,) predicted ratings.
        n_users, n_movies: sizes of the model's id spaces.
        rating_scale: (lo, hi), the model's lowest and highest rating.
    """

    predict: Callable[[np.ndarray, np.ndarray], np.ndarray]
    n_users: int
    n_movies: int
    rating_scale: tuple[float, float]

    def scores(self, user_index: np.ndarray) -> np.ndarray:
        users = np.asarray(user_index)
        pairs_user = np.repeat(users, self.n_movies)
        pairs_movie = np.tile(np.arange(self.n_movies), len(users))
        predicted = np.asarray(self.predict(pairs_user, pairs_movie), dtype=np.float32)
        return predicted.reshape(len(users), self.n_movies)

    def ratings(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores, dtype=np.float64)


def factors_from_tables(tables: dict[str, np.ndarray], scale: tuple[float, float]) -> Factors:
    """Factors from the four weight tables (layer name -> float32 (rows, dim)) and the rating scale.

    Raises:
        PipelineError: when a weight is NaN or infinite (training diverged).
    """
    factors = Factors(
        np.asarray(tables[USER_EMBEDDING], dtype=np.float32),
        np.asarray(tables[MOVIE_EMBEDDING], dtype=np.float32),
        np.asarray(tables[USER_BIAS], dtype=np.float32)[:, 0],
        np.asarray(tables[MOVIE_BIAS], dtype=np.float32)[:, 0],
        scale,
    )
    arrays = (factors.user_vectors, factors.movie_vectors, factors.user_bias, factors.movie_bias)
    if not all(np.isfinite(a).all() for a in arrays):
        raise PipelineError(
            "the model has NaN or infinite weights (training diverged); lower train.learning_rate "
            "and retrain (dvc repro train)"
        )
    return factors


def factors_from_model(model) -> Factors:
    """Read the embedding tables, biases and rating scale out of a model from movielens.model.keras_model.build_model.

    Raises:
        PipelineError: when a weight is NaN or infinite (training diverged).
    """
    tables = {name: model.get_layer(name).get_weights()[0] for name in TABLES}
    return factors_from_tables(tables, rating_scale(model))


def scorer_of(model, n_users: int, n_movies: int, batch_size: int) -> Scorer:
    """The NumPy Factors for a model of the standard architecture, else the model's own predict.

    Args:
        model: a trained Keras model taking user_index and movie_index.
        n_users, n_movies: sizes of the processed data's id spaces.
        batch_size: pairs per model.predict call (PairScorer only).
    """
    if standard_problem(model.get_config()) is None:
        return factors_from_model(model)
    from movielens.model.keras_model import (
        predict_ratings,  # TensorFlow is loaded already: `model` is Keras
    )

    return PairScorer(
        lambda u, m: predict_ratings(model, u, m, batch_size),
        n_users,
        n_movies,
        rating_scale(model),
    )
