"""K-fold cross-validation: the model and the bias baseline on each fold of the kept ratings.

Under heldout_users a fold holds out whole users: the model and the bias baseline are fitted on
the other users, each held-out user is folded in from the history they give (movielens.ranking.
foldin, as evaluate does), and their later ratings are predicted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np
import pandas as pd

from movielens.data.preprocess import encode_held_out, encode_splits
from movielens.data.splits import assign_folds, fold_parts, history_mask
from movielens.evaluation.accuracy import mae, predict_folded, predict_test, rmse
from movielens.evaluation.evaluate import folded_people, standard_factors
from movielens.model.baseline import BiasModel, BiasSettings, fit_bias_model
from movielens.plumbing.errors import PipelineError
from movielens.ranking.foldin import FoldInSettings, folded_factors
from movielens.ranking.scorers import Factors
from movielens.training.fit import train_model
from movielens.training.settings import TrainSettings

log = logging.getLogger(__name__)


class Fold(NamedTuple):
    """One fold's ratings, encoded on its training part only (encode_splits, encode_held_out)."""

    train: pd.DataFrame  # user_index, movie_index, rating, ...
    test: pd.DataFrame  # the held-out ratings to predict, with `cold`
    n_users: int  # encoded users and movies
    n_movies: int
    # heldout_users: the held-out users' given ratings (columns as `test`); else no rows
    history: pd.DataFrame


def fold_splits(
    ratings: pd.DataFrame, folds: int, seed: int, split: str, *, history_size: float
) -> Iterator[Fold]:
    """Each fold's training, history and held-out ratings (movielens.data.splits: assign_folds,
    fold_parts; under heldout_users each held-out user's history_mask with `history_size`).

    Raises:
        PipelineError: when a fold would have no training or no held-out ratings to predict;
            checked for every fold before the first is yielded.
    """
    fold = assign_folds(ratings, folds, seed, split)
    # A user is held out by one fold only, so their history is the same in the whole table.
    given = np.zeros(len(ratings), dtype=bool)
    if split == "heldout_users":
        given = history_mask(ratings, history_size)
    parts = []
    for k in range(folds):
        train, held_out = fold_parts(fold, k, split)
        test = held_out & ~given
        if not train.any() or not test.any():
            missing = "training ratings" if test.any() else "held-out ratings"
            if split == "heldout_users" and not test.any():  # none, or only histories
                missing += " to predict"
            raise PipelineError(
                f"crossvalidate.folds={folds} with preprocess.split={split} leaves fold {k + 1} "
                f"with no {missing} ({len(ratings)} ratings kept); lower crossvalidate.folds "
                "or keep more users and movies"
            )
        parts.append((train, held_out & given, test))
    for train, history, test in parts:
        train_df, test_df, users, movies = encode_splits(
            ratings[train].reset_index(drop=True), ratings[test].reset_index(drop=True)
        )
        history_df = encode_held_out(ratings[history].reset_index(drop=True), users, movies)
        yield Fold(train_df, test_df, len(users), len(movies), history_df)


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


class _RatingOnly(NamedTuple):
    """What predict_folded reads of the served Ranker: its rating model (a fold has no watch model)."""

    rating: Factors


def predict_held_out_users(
    model,
    biases: BiasModel,
    reg_users: float,
    settings: FoldInSettings,
    history: pd.DataFrame,
    test: pd.DataFrame,
) -> tuple[np.ndarray, np.ndarray]:
    """predict_test for users the models never saw, folded in from their history (heldout_users),
    as the evaluate stage folds in its held-out users.

    The people and their histories are movielens.evaluation.evaluate.folded_people's (a history
    rating of a movie the models do not know is left out); each one's rating-model row is fitted
    to their history (movielens.ranking.foldin.folded_factors with `settings`), and
    movielens.evaluation.accuracy.predict_folded predicts the targets beside the bias baseline
    folded in with `reg_users` (train.baseline_reg_users), which also predicts unknown movies.

    Args:
        model: the fold's trained Keras model; biases: the fold's bias model.
        history, test: the held-out users' given and to-predict ratings (userId, movie_index
            (-1: not in training), rating); every user of `test` has a history.

    Returns:
        float64 (n_test,) predictions of the model with the fallback, and of the bias baseline.
    """
    _, histories, targets, _ = folded_people(history, test)
    rating = folded_factors(histories, standard_factors(model), settings)
    return predict_folded(_RatingOnly(rating), biases, reg_users, histories, targets)


def score_fold(
    fold: Fold,
    batch_size: int,
    model_settings: TrainSettings,
    bias_settings: BiasSettings,
    rating_scale: tuple[float, float] | None = None,
) -> dict:
    """Fit the model (its output on `rating_scale`, see train_model) and the bias baseline on a
    fold's training part and score both on its held-out ratings (metrics/cv.json's per_fold row,
    but for its number)."""
    fit = train_model(
        fold.train, fold.n_users, fold.n_movies, model_settings, rating_scale=rating_scale
    )
    biases = fit_bias_model(fold.train, fold.n_users, fold.n_movies, bias_settings)
    test, folded = fold.test, len(fold.history) > 0  # heldout_users
    if folded:
        predicted, baseline = predict_held_out_users(
            fit.model,
            biases,
            bias_settings.baseline_reg_users,
            FoldInSettings(
                model_settings.embeddings_l2, model_settings.activity_l2, fit.fitted_ratings
            ),
            fold.history,
            test,
        )
        cold = test["movie_index"].to_numpy() < 0  # the pairs the folded baseline predicts
    else:
        predicted, baseline = predict_test(fit.model, biases, test, batch_size)
        cold = test["cold"].to_numpy()
    row = {
        **fold_scores(test["rating"].to_numpy(np.float64), predicted, baseline),
        "train_ratings": len(fold.train),
        "test_ratings": len(test),
        "cold_pairs": int(cold.sum()),
        "epochs_run": len(fit.history),
    }
    if folded:
        row["history_ratings"] = len(fold.history)
    return row


def cross_validate(
    ratings: pd.DataFrame,
    split: str,
    folds: int,
    seed: int,
    batch_size: int,
    model_settings: TrainSettings,
    bias_settings: BiasSettings,
    on_fold: Callable[[dict], None] | None = None,
    *,
    history_size: float,
    rating_scale: tuple[float, float] | None = None,
) -> dict:
    """Fit and score the model and the bias baseline on each fold, as train and evaluate do.

    Each fold's model is movielens.training.fit.train_model on its training part (with its own
    validation part for early stopping), its bias model movielens.model.baseline.fit_bias_model on
    the same part; the held-out ratings are predicted by
    movielens.evaluation.accuracy.predict_test (cold pairs by the bias model), or under
    heldout_users by predict_held_out_users from each held-out user's history.

    Args:
        ratings: userId, movieId, rating, timestamp of every kept rating.
        split, folds, seed: see assign_folds; history_size: see split_history.
        batch_size: held-out pairs per model.predict call.
        model_settings: how each fold's model is fitted (the train stage's).
        bias_settings: how each fold's bias model is fitted (the train stage's).
        on_fold: called with each fold's row as it is scored (movielens.training.live.log_fold).
        rating_scale: a custom table's (lo, hi), which each fold's model spans; None: its
            training ratings' range (train_model).

    Returns:
        The summary that summarize writes to metrics/cv.json.
    """
    rows = []
    splits = fold_splits(ratings, folds, seed, split, history_size=history_size)
    for k, fold in enumerate(splits, start=1):
        start = time.perf_counter()
        scores = score_fold(fold, batch_size, model_settings, bias_settings, rating_scale)
        row = {"fold": k, **scores}
        rows.append(row)
        if on_fold is not None:
            on_fold(row)
        log.info(
            "fold %d/%d: RMSE %.4f (bias baseline %.4f) on %d held-out ratings, %d cold; %.1f s",
            k, folds, row["rmse"], row["baseline_rmse"], row["test_ratings"], row["cold_pairs"],
            time.perf_counter() - start,
        )  # fmt: skip
    return summarize(rows, split)
