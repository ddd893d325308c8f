"""What is served: movies ranked by "will watch" times "will like", one formula for every caller.

    score(u, m) = max(watch(u, m), 0) * like(u, m) ** like_weight

watch is the watch model's score (movielens.model.watch: EASE or ALS on who rated what), like the
rating model's predicted rating scaled to 0..1 ((rating - lo) / (hi - lo), the sigmoid of its
logit). A movie the watch model gives no positive evidence for scores 0, below every movie it
does; like_weight = 0 ranks by watch alone, and a larger weight lets the predicted rating reorder
the likely movies more. The score is non-decreasing in each input, and increasing where the other
is positive. The evaluate stage scores exactly these lists (movielens.ranking.lists.top_lists)
and `movielens recommend` serves them, both with params.yaml's ranking.like_weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from movielens.model.watch import WatchModel, history_matrix
from movielens.ranking.scorers import Scorer


def blend(watch: np.ndarray, like: np.ndarray, like_weight: float) -> np.ndarray:
    """The served score from will-watch scores and will-like fractions (0..1), float32, same shape."""
    watch = np.maximum(np.asarray(watch, np.float32), np.float32(0.0))
    return (watch * np.power(np.asarray(like, np.float32), np.float32(like_weight))).astype(
        np.float32, copy=False
    )


def like_fraction(ratings: np.ndarray, rating_scale: tuple[float, float]) -> np.ndarray:
    """Predicted ratings scaled to 0..1 by the model's rating scale, float32."""
    lo, hi = rating_scale
    return ((np.asarray(ratings, np.float64) - lo) / (hi - lo)).astype(np.float32)


class _WatchSized:
    """The id spaces of a scorer built on a watch model: the watch model's."""

    watch: WatchModel

    @property
    def n_users(self) -> int:
        return self.watch.n_users

    @property
    def n_movies(self) -> int:
        return self.watch.n_movies


@dataclass(frozen=True)
class WatchScorer(_WatchSized):
    """The watch model alone, as a Scorer over its users' training histories."""

    watch: WatchModel
    history: sp.csr_matrix

    def scores(self, user_index: np.ndarray) -> np.ndarray:
        return self.watch.scores(user_index, self.history)


@dataclass(frozen=True)
class Ranker(_WatchSized):
    """The served ranking: blend(watch, like, like_weight) for every movie of a block of users.

    Attributes:
        watch: the will-watch scores (WatchScorer).
        rating: the rating model's Scorer (Factors or PairScorer); its predicted ratings give like.
        like_weight: the exponent of like in blend.
    """

    watch: WatchScorer
    rating: Scorer
    like_weight: float

    def scores(self, user_index: np.ndarray) -> np.ndarray:
        """float32 (len(user_index), n_movies), the served scores."""
        return blend(self.watch.scores(user_index), self.like(user_index), self.like_weight)

    def like(self, user_index: np.ndarray) -> np.ndarray:
        """float32 (len(user_index), n_movies): the rating model's predicted ratings, scaled to 0..1."""
        ratings = self.rating.ratings(self.rating.scores(user_index))
        return like_fraction(ratings, self.rating.rating_scale)

    def predicted_ratings(self, user_index: int, movie_index: np.ndarray) -> np.ndarray:
        """float64 (len(movie_index),): the rating model's predicted ratings of one user's movies."""
        ratings = self.rating.ratings(self.rating.scores(np.array([user_index])))[0]
        return np.asarray(ratings, np.float64)[np.asarray(movie_index, np.int64)]


def served_ranker(
    rating: Scorer,
    watch: WatchModel,
    train_users: np.ndarray,
    train_movies: np.ndarray,
    like_weight: float,
) -> Ranker:
    """The ranker evaluate scores and recommend serves, over the training split's histories.

    Args:
        rating: the rating model's Scorer; watch: the fitted watch model.
        train_users, train_movies: int (n,), the training pairs the watch model was fitted on.
    """
    history = history_matrix(train_users, train_movies, watch.n_users, watch.n_movies)
    return Ranker(WatchScorer(watch, history), rating, like_weight)


def non_personal_scores(
    train_counts: np.ndarray,
    average_ratings: np.ndarray,
    rating_scale: tuple[float, float],
    like_weight: float,
) -> np.ndarray:
    """The served formula for a user no model knows: popularity as watch, the average user's rating as like.

    Args:
        train_counts: int (n_movies,), training ratings per movie.
        average_ratings: float (n_movies,), the bias model's mu + b_m.

    Returns:
        float32 (n_movies,).
    """
    counts = np.asarray(train_counts, np.float64)
    watch = counts / counts.max() if counts.max() > 0 else counts
    return blend(
        watch, like_fraction(np.clip(average_ratings, *rating_scale), rating_scale), like_weight
    )


def ranked_by(watch_kind: str, like_weight: float) -> str:
    """What the served lists are ranked by, in words (the CLI's header and JSON)."""
    return (
        f"will-watch ({watch_kind}) x predicted rating scaled to 0-1, to the power {like_weight:g}"
    )


def lists_frame(lists, user_ids: np.ndarray, movie_ids: np.ndarray) -> pd.DataFrame:
    """The top-k lists as rows userId, movieId, rank (1 = best), score; padding left out.

    Args:
        lists: a movielens.ranking.lists.TopLists.
        user_ids, movie_ids: the id of each user and movie index (data/processed's id tables).
    """
    rows, ranks = np.nonzero(lists.movies >= 0)
    return pd.DataFrame(
        {
            "userId": user_ids[lists.users[rows]],
            "movieId": movie_ids[lists.movies[rows, ranks]],
            "rank": (ranks + 1).astype(np.int32),
            "score": lists.scores[rows, ranks].astype(np.float32),
        }
    )
