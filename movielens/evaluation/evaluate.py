"""Evaluate stage: the model's test RMSE and MAE beside two baselines, and the data for DVC plots."""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from movielens.evaluation.ranking import Factors, Scorer, ranking_metrics, sample_users, scorer_of
from movielens.model.baseline import BiasModel

log = logging.getLogger(__name__)


def rmse(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Root mean squared error; NaN for no pairs."""
    if len(actual) == 0:
        return float("nan")
    diff = np.asarray(predicted, np.float64) - np.asarray(actual, np.float64)
    return float(np.sqrt(np.mean(diff**2)))


def mae(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Mean absolute error; NaN for no pairs."""
    if len(actual) == 0:
        return float("nan")
    return float(
        np.mean(np.abs(np.asarray(predicted, np.float64) - np.asarray(actual, np.float64)))
    )


def predict_with_fallback(
    model_predict, fallback: np.ndarray, user_index: np.ndarray, movie_index: np.ndarray
) -> np.ndarray:
    """The model's rating for warm pairs; `fallback` where the user or the movie is cold (index -1).

    Args:
        model_predict: callable(user_index, movie_index) -> float array, called on warm pairs only.
        fallback: float (n,), the prediction to use for cold pairs.
    """
    warm = (user_index >= 0) & (movie_index >= 0)
    predicted = np.asarray(fallback, np.float64).copy()
    predicted[warm] = model_predict(user_index[warm], movie_index[warm])
    return predicted


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


def scores(actual: np.ndarray, predictions: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """RMSE and MAE of each named prediction, rounded for stable diffs."""
    return {
        name: {"rmse": round(rmse(actual, p), 6), "mae": round(mae(actual, p), 6)}
        for name, p in predictions.items()
    }


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
    p: dict,
    users: np.ndarray | None = None,
) -> dict:
    """precision@k, recall@k, NDCG@k and coverage of each ranker over the test users.

    Args:
        users: the user indices to rank, the same for every ranker (sample_users); None: all.
    """
    out = {}
    for name, scorer in rankers.items():
        summary = ranking_metrics(
            scorer,
            train["user_index"].to_numpy(),
            train["movie_index"].to_numpy(),
            test["user_index"].to_numpy(),
            test["movie_index"].to_numpy(),
            test["rating"].to_numpy(),
            k=p["k"],
            relevance_threshold=p["relevance_threshold"],
            block_size=p["block_size"],
            users=users,
        ).summary()
        k = summary.pop("k")
        del summary["relevance_threshold"]  # a param, not a result
        out[name] = {
            f"{metric}@{k}"
            if metric in ("precision", "recall", "ndcg", "coverage")
            else metric: value
            for metric, value in summary.items()
        }
    return out


def predict_test(
    model, biases: BiasModel, test: pd.DataFrame, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The test predictions: the model for warm pairs, the saved bias model for cold ones.

    Args:
        model: the trained Keras model.
        biases: the bias model the train stage fitted on the same training split.
        test: user_index and movie_index (-1: unseen in training) of the test split.
        batch_size: pairs per model.predict call.

    Returns:
        float64 (n_test,) predictions of the model with the fallback, and the same of the bias
        model alone.
    """
    from movielens.model.keras_model import predict_ratings

    users, movies = test["user_index"].to_numpy(), test["movie_index"].to_numpy()
    fallback = biases.predict(users, movies)
    predicted = predict_with_fallback(
        lambda u, m: predict_ratings(model, u, m, batch_size), fallback, users, movies
    )
    return predicted, fallback


@dataclass(frozen=True)
class Evaluation:
    """What the evaluate stage writes: the scores, and the data of two plots."""

    scores: dict
    predictions: pd.DataFrame  # actual and predicted ratings of at most plot_points test pairs
    rmse_by_activity: pd.DataFrame


def evaluate_split(
    model,
    biases: BiasModel,
    train: pd.DataFrame,
    test: pd.DataFrame,
    n_users: int,
    n_movies: int,
    p: dict,
) -> Evaluation:
    """Score the model and the baselines on the test split, and rank for the sampled users.

    Args:
        model: the trained Keras model; biases: the saved user+movie bias model (cold pairs).
        train, test: user_index, movie_index and rating of the splits (-1: a cold id).
        p: the `evaluate` params section.
    """
    users, movies = test["user_index"].to_numpy(), test["movie_index"].to_numpy()
    actual = test["rating"].to_numpy(np.float64)
    predicted, baseline = predict_test(model, biases, test, p["batch_size"])
    warm = (users >= 0) & (movies >= 0)
    table = scores(
        actual,
        {
            "model": predicted,
            "global_mean": np.full(len(actual), biases.mu),
            "user_movie_biases": baseline,
        },
    )
    ranked = sample_users(n_users, p["ranking_users"], p["seed"])
    ranking = ranking_table(
        {
            # NumPy for the standard architecture, the model's own predict for any other
            "model": scorer_of(model, n_users, n_movies, p["batch_size"]),
            "most_popular": popularity_factors(train["movie_index"].to_numpy(), n_users, n_movies),
        },
        train,
        test,
        p,
        ranked,
    )
    model_ranking = {k: v for k, v in ranking["model"].items() if "@" in k}
    result = {
        "rmse": table["model"]["rmse"],
        "mae": table["model"]["mae"],
        **model_ranking,
        "rmse_warm": round(rmse(actual[warm], predicted[warm]), 6),
        "baselines": {k: v for k, v in table.items() if k != "model"},
        "ranking": ranking,
        "ranking_users": {"ranked": n_users if ranked is None else len(ranked), "of": n_users},
        "test_pairs": len(actual),
        "cold_pairs": int((~warm).sum()),
        "cold_fallback": "user_movie_biases",
    }
    rows = sample_rows(len(actual), p["plot_points"])
    predictions = pd.DataFrame({"actual": actual[rows], "predicted": predicted[rows].round(4)})
    train_counts = np.bincount(train["user_index"].to_numpy(), minlength=n_users)
    counts = np.where(users >= 0, train_counts[np.maximum(users, 0)], 0)
    by_activity = rmse_by_activity(actual, predicted, counts, p["activity_buckets"])
    log.info("%-18s %8s %8s", "model", "RMSE", "MAE")
    for name, row in table.items():
        log.info("%-18s %8.4f %8.4f", name, row["rmse"], row["mae"])
    log.info(
        "%d test pairs, %d cold (predicted by the saved user+movie bias model)",
        len(actual),
        (~warm).sum(),
    )
    for name, row in ranking.items():
        log.info("%-18s %s", name, "  ".join(f"{k}={v}" for k, v in row.items() if "@" in k))
    return Evaluation(result, predictions, by_activity)
