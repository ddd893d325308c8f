"""Fold-in: recommendations for people the models never saw, from the ratings they give.

The one fold-in code path that evaluate (held-out users) and `movielens recommend --ratings` use:

    histories = Histories.of(users, movies, ratings, n_people)   # people 0..n_people-1
    settings = fold_in_settings(paths.MODEL, n_fitted=len(train))  # the training L2s, no TensorFlow
    ranker = folded_ranker(histories, factors, watch, like_weight, settings)
    lists = folded_lists(ranker, histories, k, block_size)       # never a movie of the history
    predicted = folded_ratings(ranker, users, movies)            # float64, for RMSE / MAE
    baseline = folded_bias_ratings(bias_model, reg_users, histories, users, movies)

`factors` is the trained rating model's Factors (movielens.serve.load.load_scorer or
movielens.ranking.scorers.factors_from_tables): only its movie tables and rating scale are used.
The ranker is movielens.ranking.served.Ranker, so the served formula is served.blend, unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from movielens.model.baseline import BiasModel, predict_biases
from movielens.model.foldin import (
    fold_in_biases,
    fold_in_ratings,
    regularisation_of,
)
from movielens.model.watch import WatchModel, history_matrix
from movielens.ranking.lists import TopLists, top_lists
from movielens.ranking.scorers import Factors
from movielens.ranking.served import Ranker, WatchScorer


@dataclass(frozen=True)
class Histories:
    """The ratings people give at request time, people numbered 0..n_people-1.

    Attributes:
        users: int64 (n,), each rating's person, 0..n_people-1.
        movies: int64 (n,), its movie index (the trained models' movie id space).
        ratings: float32 (n,), its rating, on the rating model's scale.
        n_people: how many people (one may have no rating: then it gets the movie biases' order).
    """

    users: np.ndarray
    movies: np.ndarray
    ratings: np.ndarray
    n_people: int

    @classmethod
    def of(cls, users, movies, ratings, n_people: int | None = None) -> Histories:
        """Histories with the columns converted to their dtypes; n_people defaults to max(users) + 1."""
        users = np.asarray(users, np.int64)
        people = int(users.max()) + 1 if n_people is None and len(users) else int(n_people or 0)
        return cls(users, np.asarray(movies, np.int64), np.asarray(ratings, np.float32), people)

    def rows(self, n_movies: int) -> sp.csr_matrix:
        """The binary (n_people, n_movies) history matrix the watch model scores."""
        return history_matrix(self.users, self.movies, self.n_people, n_movies)


@dataclass(frozen=True)
class FoldInSettings:
    """How the rating model's user rows are fitted (movielens.model.foldin.fold_in_ratings).

    Attributes:
        embeddings_l2, activity_l2: the L2 weights the model was trained with (regularisation_of).
        n_fitted: ratings in one epoch of the fit that produced the tables (the training split's
            size under train.refit, else its part without the validation ratings).
    """

    embeddings_l2: float
    activity_l2: float
    n_fitted: int


def fold_in_settings(model_path: Path, n_fitted: int) -> FoldInSettings:
    """The settings of the saved rating model at `model_path` (its L2s read from its config)."""
    return FoldInSettings(*regularisation_of(model_path), n_fitted)


def saved_fold_in_settings(model_path: Path, train_metrics_path: Path) -> FoldInSettings:
    """fold_in_settings of the train stage's saved model, n_fitted being the `fitted_ratings` the
    train stage wrote beside it (metrics/train.json): how evaluate and bench_topn fold people in."""
    n_fitted = json.loads(Path(train_metrics_path).read_text())["fitted_ratings"]
    return fold_in_settings(model_path, int(n_fitted))


def folded_factors(histories: Histories, factors: Factors, settings: FoldInSettings) -> Factors:
    """Factors over the people: their fitted rows beside the trained model's movie tables."""
    vectors, bias = fold_in_ratings(
        factors.movie_vectors,
        factors.movie_bias,
        factors.rating_scale,
        histories.users,
        histories.movies,
        histories.ratings,
        settings.embeddings_l2,
        settings.activity_l2,
        settings.n_fitted,
        n_people=histories.n_people,
    )
    return Factors(vectors, factors.movie_vectors, bias, factors.movie_bias, factors.rating_scale)


def folded_ranker(
    histories: Histories,
    factors: Factors,
    watch: WatchModel,
    like_weight: float,
    settings: FoldInSettings,
) -> Ranker:
    """The served Ranker over the people (user index = person 0..n_people-1).

    Args:
        histories: the people's ratings.
        factors: the trained rating model's Factors (its movie tables and rating scale are used).
        watch: the trained watch model; it scores the people's history rows (WatchModel.fold_in).
        like_weight: ranking.like_weight.
        settings: fold_in_settings of the rating model.
    """
    rows = histories.rows(watch.n_movies)
    rating = folded_factors(histories, factors, settings)
    return Ranker(WatchScorer(watch.fold_in(rows), rows), rating, like_weight)


def folded_lists(ranker: Ranker, histories: Histories, k: int, block_size: int) -> TopLists:
    """Every person's top-k list, never a movie of their history (lists.users = 0..n_people-1)."""
    people = np.arange(histories.n_people, dtype=np.int64)
    return top_lists(ranker, people, (histories.users, histories.movies), k, block_size)


def folded_ratings(ranker: Ranker, users: np.ndarray, movies: np.ndarray) -> np.ndarray:
    """float64 (n,): the rating model's predicted rating of each (person, movie) pair.

    Movies must be in the model (index >= 0); evaluate predicts the others with the bias baseline
    (movielens.evaluation.accuracy.predict_with_fallback).
    """
    rating = ranker.rating
    users, movies = np.asarray(users, np.int64), np.asarray(movies, np.int64)
    logits = np.einsum("ij,ij->i", rating.user_vectors[users], rating.movie_vectors[movies])
    logits += rating.user_bias[users] + rating.movie_bias[movies]
    return np.asarray(rating.ratings(logits), np.float64)


def folded_bias_ratings(
    bias_model: BiasModel,
    reg_users: float,
    histories: Histories,
    users: np.ndarray,
    movies: np.ndarray,
) -> np.ndarray:
    """float64 (n,): the bias baseline's mu + b_u + b_m of each (person, movie) pair, the people's
    b_u folded in from their histories (fold_in_biases with train.baseline_reg_users); a movie
    index of -1 (unseen in training) drops b_m, as BiasModel.predict does. Not clipped, as the
    evaluate stage's baseline is not."""
    b_u = fold_in_biases(
        bias_model,
        reg_users,
        histories.users,
        histories.movies,
        histories.ratings,
        n_people=histories.n_people,
    )
    users, movies = np.asarray(users, np.int64), np.asarray(movies, np.int64)
    return predict_biases(bias_model.mu, b_u, bias_model.movie_bias, users, movies)
