"""Top-N evaluation: the served ranking beside the rating model alone, the watch model alone and
popularity, each ranked over the same users (trained users, or people folded in from a history)
and scored against the test split."""

from __future__ import annotations

import numpy as np
import pandas as pd

from movielens.evaluation.ranking_metrics import RankingMetrics, ranking_metrics
from movielens.model.watch import WatchModel
from movielens.ranking.foldin import Histories
from movielens.ranking.scorers import Factors, Scorer, scorer_of
from movielens.ranking.served import Ranker, served_ranker


def popularity_factors(train_movies: np.ndarray, n_users: int, n_movies: int) -> Factors:
    """A non-personal ranker: every user's list is the movies with the most training ratings."""
    counts = np.bincount(train_movies, minlength=n_movies).astype(np.float32)
    return Factors(
        np.zeros((n_users, 1), np.float32),
        np.zeros((n_movies, 1), np.float32),
        np.zeros(n_users, np.float32),
        counts,
        (0.0, 1.0),
    )


def ranking_table(
    rankers: dict[str, Scorer],
    train: pd.DataFrame,
    test: pd.DataFrame,
    k: int,
    relevance_threshold: float,
    block_size: int,
    users: np.ndarray | None = None,
) -> dict[str, RankingMetrics]:
    """precision@k, recall@k, NDCG@k and coverage of each ranker over the same test users.

    Args:
        users: the user indices to rank, the same for every ranker (sample_users); None: all.
    """
    return {
        name: ranking_metrics(
            scorer,
            train["user_index"].to_numpy(),
            train["movie_index"].to_numpy(),
            test["user_index"].to_numpy(),
            test["movie_index"].to_numpy(),
            test["rating"].to_numpy(),
            k=k,
            relevance_threshold=relevance_threshold,
            block_size=block_size,
            users=users,
        )
        for name, scorer in rankers.items()
    }


def ranking_summary(metrics: RankingMetrics) -> dict:
    """One ranker's row of metrics/scores.json: precision@k, ..., coverage@k, then the counts."""
    return summary_row(metrics.summary())


def summary_row(summary: dict) -> dict:
    """RankingMetrics.summary()'s figures (from NumPy or Spark) as a row of metrics/scores.json."""
    summary = dict(summary)
    k = summary.pop("k")
    del summary["relevance_threshold"]  # a param, not a result
    named = ("precision", "recall", "ndcg", "coverage")
    return {f"{key}@{k}" if key in named else key: value for key, value in summary.items()}


def rank_test_users(
    model,
    watch: WatchModel,
    train: pd.DataFrame,
    test: pd.DataFrame,
    like_weight: float,
    batch_size: int,
    k: int,
    relevance_threshold: float,
    block_size: int,
    users: np.ndarray | None,
) -> dict[str, RankingMetrics]:
    """The served ranking beside the rating model alone, the watch model alone and popularity."""
    n_users, n_movies = watch.n_users, watch.n_movies
    # NumPy for the standard architecture, the model's own predict for any other
    rating = scorer_of(model, n_users, n_movies, batch_size)
    served = served_ranker(
        rating, watch, train["user_index"].to_numpy(), train["movie_index"].to_numpy(), like_weight
    )
    rankers = beside_baselines(served, train["movie_index"].to_numpy())
    return ranking_table(rankers, train, test, k, relevance_threshold, block_size, users)


def beside_baselines(served: Ranker, train_movies: np.ndarray) -> dict[str, Scorer]:
    """The served ranking, the rating model alone, the watch model alone and popularity (the
    training ratings per movie), over the served ranker's users: the rankers every protocol scores.
    """
    return {
        "served": served,
        "model": served.rating,
        "watch": served.watch,
        "most_popular": popularity_factors(train_movies, served.n_users, served.n_movies),
    }


def rank_folded_people(
    served: Ranker,
    histories: Histories,
    train_movies: np.ndarray,
    targets: pd.DataFrame,
    k: int,
    relevance_threshold: float,
    block_size: int,
    users: np.ndarray | None,
) -> dict[str, RankingMetrics]:
    """beside_baselines for people folded in (movielens.ranking.foldin.folded_ranker's `served`):
    their history is what each ranker leaves out, as a trained user's training ratings are.

    Args:
        histories: the people's ratings (people 0..n_people-1, the ranker's user index).
        train_movies: int (n_train,), the training ratings' movies (popularity).
        targets: user_index (the person), movie_index (-1: unseen in training) and rating of the
            ratings to predict.
        users: the people to rank (sample_users), None: all.
    """
    given = pd.DataFrame({"user_index": histories.users, "movie_index": histories.movies})
    rankers = beside_baselines(served, train_movies)
    return ranking_table(rankers, given, targets, k, relevance_threshold, block_size, users)
