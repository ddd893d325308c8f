"""K-fold cross-validation: the model and the bias baseline on each fold of the kept ratings."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd

from movielens.data.preprocess import encode_splits
from movielens.data.splits import assign_folds, fold_parts
from movielens.evaluation.accuracy import mae, predict_test, rmse
from movielens.model.baseline import BiasSettings, fit_bias_model
from movielens.plumbing.errors import PipelineError
from movielens.training.fit import fit_model
from movielens.training.settings import TrainSettings

log = logging.getLogger(__name__)


def fold_splits(
    ratings: pd.DataFrame, folds: int, seed: int, split: str
) -> Iterator[tuple[pd.DataFrame, pd.DataFrame, int, int]]:
    """Each fold's training and held-out ratings, encoded on its training part only.

    Yields:
        train and test as movielens.data.preprocess.encode_splits gives them (user_index,
        movie_index; test also `cold`), and the numbers of encoded users and movies.

    Raises:
        PipelineError: when a fold would have no training or no held-out ratings; checked for
            every fold before the first is yielded.
    """
    fold = assign_folds(ratings, folds, seed, split)
    parts = [fold_parts(fold, k, split) for k in range(folds)]
    for k, (train, test) in enumerate(parts, start=1):
        if not train.any() or not test.any():
            raise PipelineError(
                f"crossvalidate.folds={folds} with preprocess.split={split} leaves fold {k} with "
                f"no {'training' if test.any() else 'held-out'} ratings ({len(ratings)} ratings "
                "kept); lower crossvalidate.folds or keep more users and movies"
            )
    for train, test in parts:
        train_df, test_df, users, movies = encode_splits(
            ratings[train].reset_index(drop=True), ratings[test].reset_index(drop=True)
        )
        yield train_df, test_df, len(users), len(movies)


def fold_scores(actual: np.ndarray, predicted: np.ndarray, baseline: np.ndarray) -> dict:
    """RMSE and MAE of the model and of the bias baseline on one held-out fold, and model - baseline."""
    row = {
        "rmse": rmse(actual, predicted),
        "mae": mae(actual, predicted),
        "baseline_rmse": rmse(actual, baseline),
        "baseline_mae": mae(actual, baseline),
    }
    row["rmse_difference"] = row["rmse"] - row["baseline_rmse"]
    row["mae_difference"] = row["mae"] - row["baseline_mae"]
    return {name: round(value, 6) for name, value in row.items()}


def mean_and_std(values: list[float]) -> dict:
    """Mean and sample standard deviation (ddof=1) over the folds, rounded."""
    values = np.asarray(values, np.float64)
    return {"mean": round(float(values.mean()), 6), "std": round(float(values.std(ddof=1)), 6)}


def fold_means(rows: list[dict], names: tuple[str, ...], column: str = "{}") -> dict:
    """`<name>_mean` and `<name>_std` over the folds (mean_and_std) of each named fold score,
    read from the column `column.format(name)` of the rows."""
    out = {}
    for name in names:
        stats = mean_and_std([row[column.format(name)] for row in rows])
        out[f"{name}_mean"], out[f"{name}_std"] = stats["mean"], stats["std"]
    return out


def summarize(rows: list[dict], split: str) -> dict:
    """metrics/cv.json: mean and std over the folds of every fold score, then the folds themselves.

    rmse_mean and rmse_std (the model, cold pairs by the bias baseline) come first, so that
    `dvc metrics show` and `dvc exp show` list them first.
    """
    scores = ("rmse", "mae")
    return {
        **fold_means(rows, scores),
        "user_movie_biases": fold_means(rows, scores, "baseline_{}"),
        "model_minus_user_movie_biases": {
            **fold_means(rows, scores, "{}_difference"),
            "rmse_folds_lower": sum(row["rmse_difference"] < 0 for row in rows),
        },
        "folds": len(rows),
        "split": split,
        "per_fold": rows,
    }


def cross_validate(
    ratings: pd.DataFrame,
    split: str,
    folds: int,
    seed: int,
    batch_size: int,
    model_settings: TrainSettings,
    bias_settings: BiasSettings,
    on_fold: Callable[[dict], None] | None = None,
) -> dict:
    """Fit and score the model and the bias baseline on each fold, as train and evaluate do.

    Each fold's model is movielens.training.fit.fit_model on its training part (with its own
    validation part for early stopping), its bias model movielens.model.baseline.fit_bias_model on
    the same part; the held-out ratings are predicted by
    movielens.evaluation.accuracy.predict_test (cold pairs by the bias model).

    Args:
        ratings: userId, movieId, rating, timestamp of every kept rating.
        split, folds, seed: see assign_folds.
        batch_size: held-out pairs per model.predict call.
        model_settings: how each fold's model is fitted (the train stage's).
        bias_settings: how each fold's bias model is fitted (the train stage's).
        on_fold: called with each fold's row as it is scored (movielens.training.live.log_fold).

    Returns:
        The summary that summarize writes to metrics/cv.json.
    """
    rows = []
    for k, (train, test, n_users, n_movies) in enumerate(
        fold_splits(ratings, folds, seed, split), start=1
    ):
        start = time.perf_counter()
        model, history = fit_model(train, n_users, n_movies, model_settings)
        biases = fit_bias_model(train, n_users, n_movies, bias_settings)
        predicted, baseline = predict_test(model, biases, test, batch_size)
        row = {
            "fold": k,
            **fold_scores(test["rating"].to_numpy(np.float64), predicted, baseline),
            "train_ratings": len(train),
            "test_ratings": len(test),
            "cold_pairs": int(test["cold"].sum()),
            "epochs_run": len(history),
        }
        rows.append(row)
        if on_fold is not None:
            on_fold(row)
        log.info(
            "fold %d/%d: RMSE %.4f (bias baseline %.4f) on %d held-out ratings, %d cold; %.1f s",
            k, folds, row["rmse"], row["baseline_rmse"], len(test), row["cold_pairs"],
            time.perf_counter() - start,
        )  # fmt: skip
    return summarize(rows, split)
