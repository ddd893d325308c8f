"""What both training engines read: the validation carve and the order of the ratings in each epoch.

One home for both, so that the Keras engine (movielens.model.keras_fit) and the compiled one (movielens.model.compiled_fit)
fit the same rows in the same batches when they are given the same params.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from movielens.plumbing.errors import PipelineError


@dataclass(frozen=True)
class TrainingData:
    """The training split as the engines take it.

    Attributes:
        users, movies: int32 (n,) encoded indices; ratings: float32 (n,).
        fit_rows: int64 sorted positions the model is fitted on.
        val_rows: int64 sorted positions of the validation part (empty: no early stopping).
    """

    users: np.ndarray
    movies: np.ndarray
    ratings: np.ndarray
    fit_rows: np.ndarray
    val_rows: np.ndarray

    def part(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """users, movies and ratings of the given positions."""
        return self.users[rows], self.movies[rows], self.ratings[rows]

    def whole(self) -> TrainingData:
        """The same ratings with every row fitted and none held out (the refit)."""
        every = np.arange(len(self.ratings))
        return TrainingData(self.users, self.movies, self.ratings, every, every[:0])


def fitted_ratings(n: int, validation_size: float) -> int:
    """How many of n training rows the model fits on: all but the validation part."""
    return n - round(n * validation_size)


def carve_validation(n: int, validation_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split row positions 0..n-1 at random into fitting and validation positions (both sorted).

    validation_size=0 gives no validation rows.
    """
    n_val = n - fitted_ratings(n, validation_size)
    if n_val >= n:
        raise PipelineError(f"train.validation_size={validation_size} leaves no ratings to fit on")
    held_out = np.zeros(n, dtype=bool)
    held_out[np.random.default_rng(seed).permutation(n)[:n_val]] = True  # a mask: no sort of n rows
    return np.flatnonzero(~held_out), np.flatnonzero(held_out)


def training_data(
    users: np.ndarray, movies: np.ndarray, ratings: np.ndarray, validation_size: float, seed: int
) -> TrainingData:
    """The engines' input: the columns as int32, int32, float32 and the validation carve."""
    fit_rows, val_rows = carve_validation(len(ratings), validation_size, seed)
    return TrainingData(
        np.ascontiguousarray(users, np.int32),
        np.ascontiguousarray(movies, np.int32),
        np.ascontiguousarray(ratings, np.float32),
        fit_rows,
        val_rows,
    )


def epoch_orders(rows: np.ndarray, seed: int) -> Iterator[np.ndarray]:
    """The rows in a new random order for each epoch, drawn from `seed`: epoch 1, 2, ... forever."""
    shuffle = np.random.default_rng(seed)
    while True:
        yield shuffle.permutation(rows)


def format_row(row: dict) -> str:
    """An epoch's figures for the log: `loss=0.9000 rmse=0.9000 val_rmse=0.9100`."""
    return " ".join(f"{k}={v:.4f}" for k, v in row.items() if k != "epoch")


def check_finite(epoch: int, loss: float) -> None:
    """Raise a PipelineError when an epoch's loss is NaN or infinite (training diverged)."""
    if not np.isfinite(loss):
        raise PipelineError(
            f"training diverged at epoch {epoch} (loss {loss}); "
            "lower train.learning_rate or raise the L2 weights"
        )
