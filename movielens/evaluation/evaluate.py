"""Scoring the test split: the rating model's RMSE and MAE beside two baselines, the served top-k
lists' ranking metrics beside the rating model alone, the watch model alone and popularity, and the
data for DVC plots."""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from movielens.evaluation.accuracy import predict_test, rmse, scores
from movielens.evaluation.topn import rank_test_users, ranking_summary
from movielens.model.baseline import BiasModel
from movielens.model.watch import WatchModel
from movielens.ranking.lists import TopLists, sample_users
from movielens.ranking.served import ranked_by

log = logging.getLogger(__name__)


def activity_buckets(train_counts: np.ndarray, edges: list[int]) -> np.ndarray:
    """Label each count by its bucket: '<e0', 'e0-e1', ..., '>=eN' (lower bounds inclusive)."""
    labels = [f"<{edges[0]}"] + [f"{a}-{b - 1}" for a, b in itertools.pairwise(edges)]
    labels.append(f">={edges[-1]}")
    return np.asarray(labels, dtype=object)[np.searchsorted(edges, train_counts, side="right")]


def rmse_by_activity(
    actual: np.ndarray, predicted: np.ndarray, train_counts: np.ndarray, edges: list[int]
) -> pd.DataFrame:
    """RMSE of the test pairs grouped by how many training ratings their user has."""
    frame = pd.DataFrame(
        {
            "bucket": activity_buckets(train_counts, edges),
            "lower": np.asarray([0, *edges])[np.searchsorted(edges, train_counts, side="right")],
            "sq": (np.asarray(predicted, np.float64) - actual) ** 2,
        }
    )
    grouped = (
        frame.groupby(["lower", "bucket"], sort=True)["sq"].agg(["mean", "size"]).reset_index()
    )
    return pd.DataFrame(
        {
            "user_activity": grouped["bucket"],
            "rmse": np.sqrt(grouped["mean"]).round(6),
            "test_pairs": grouped["size"],
        }
    )


def sample_rows(n: int, limit: int) -> np.ndarray:
    """At most `limit` evenly spaced row positions out of n (deterministic; all rows when n <= limit)."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).astype(np.int64))


@dataclass(frozen=True)
class Evaluation:
    """What the evaluate stage writes: the scores, the data of two plots and the served lists."""

    scores: dict
    predictions: pd.DataFrame  # actual and predicted ratings of at most plot_points test pairs
    rmse_by_activity: pd.DataFrame
    top_lists: TopLists  # the served top-k lists the ranking metrics were computed from


def evaluate_split(
    model,
    biases: BiasModel,
    watch: WatchModel,
    train: pd.DataFrame,
    test: pd.DataFrame,
    *,
    like_weight: float,
    batch_size: int,
    plot_points: int,
    activity_buckets: list[int],
    k: int,
    relevance_threshold: float,
    block_size: int,
    ranking_users: int | None,
    seed: int,
) -> Evaluation:
    """Score the model and the baselines on the test split, and rank for the sampled users.

    Args:
        model: the trained Keras model; biases: the saved user+movie bias model (cold pairs);
            watch: the saved watch model (its id spaces are the processed data's).
        train, test: user_index, movie_index and rating of the splits (-1: a cold id).
        like_weight, batch_size, ...: the `ranking.like_weight` and `evaluate` params.
    """
    n_users = watch.n_users
    users, movies = test["user_index"].to_numpy(), test["movie_index"].to_numpy()
    actual = test["rating"].to_numpy(np.float64)
    predicted, baseline = predict_test(model, biases, test, batch_size)
    warm = (users >= 0) & (movies >= 0)
    table = scores(
        actual,
        {
            "model": predicted,
            "global_mean": np.full(len(actual), biases.mu),
            "user_movie_biases": baseline,
        },
    )
    ranked = sample_users(n_users, ranking_users, seed)
    ranking = rank_test_users(
        model,
        watch,
        train,
        test,
        like_weight,
        batch_size,
        k,
        relevance_threshold,
        block_size,
        ranked,
    )
    rows = {name: ranking_summary(metrics) for name, metrics in ranking.items()}
    served_by = ranked_by(watch.kind, like_weight)
    result = scores_json(table, rows, served_by, rmse(actual[warm], predicted[warm]), n_users, warm)
    log_scores(table, rows, len(actual), int((~warm).sum()))
    predictions, by_activity = plot_data(
        actual, predicted, users, train["user_index"].to_numpy(), plot_points, activity_buckets
    )
    return Evaluation(result, predictions, by_activity, ranking["served"].lists)


def scores_json(
    table: dict, rows: dict, served_by: str, rmse_warm: float, n_users: int, warm: np.ndarray
) -> dict:
    """metrics/scores.json: RMSE and MAE first, the served lists' ranking metrics, then the rest.

    Args:
        table: scores() of the model and the baselines; rows: ranking_summary of each ranker.
        served_by: what the served lists are ranked by; n_users: the users the model knows.
        warm: bool (n_test,), the test pairs whose user and movie the model knows.
    """
    return {
        "rmse": table["model"]["rmse"],
        "mae": table["model"]["mae"],
        **{key: value for key, value in rows["served"].items() if "@" in key},
        "rmse_warm": round(rmse_warm, 6),
        "baselines": {key: value for key, value in table.items() if key != "model"},
        "ranked_by": served_by,
        "ranking": rows,
        "ranking_users": {"ranked": rows["served"]["users_ranked"], "of": n_users},
        "test_pairs": len(warm),
        "cold_pairs": int((~warm).sum()),
        "cold_fallback": "user_movie_biases",
    }


def plot_data(
    actual: np.ndarray,
    predicted: np.ndarray,
    test_users: np.ndarray,
    train_users: np.ndarray,
    plot_points: int,
    activity_buckets: list[int],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The two plots' data: at most plot_points (actual, predicted) pairs, RMSE by user activity."""
    points = sample_rows(len(actual), plot_points)
    predictions = pd.DataFrame({"actual": actual[points], "predicted": predicted[points].round(4)})
    train_counts = np.bincount(train_users)  # every warm test user has training ratings
    counts = np.where(test_users >= 0, train_counts[np.maximum(test_users, 0)], 0)
    return predictions, rmse_by_activity(actual, predicted, counts, activity_buckets)


def log_scores(table: dict, ranking: dict, n_test: int, n_cold: int) -> None:
    """The evaluate stage's summary in its log: RMSE and MAE, then each ranker's metrics."""
    log.info("%-18s %8s %8s", "model", "RMSE", "MAE")
    for name, row in table.items():
        log.info("%-18s %8.4f %8.4f", name, row["rmse"], row["mae"])
    log.info(
        "%d test pairs, %d cold (predicted by the saved user+movie bias model)", n_test, n_cold
    )
    for name, row in ranking.items():
        log.info("%-18s %s", name, "  ".join(f"{k}={v}" for k, v in row.items() if "@" in k))
