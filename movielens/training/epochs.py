"""The one epoch loop of every engine, and what the engines share: the validation carve, each
epoch's order, early stopping and the per-epoch record.

An engine (movielens.training.keras_fit, compiled.fit, xla_fit) supplies its epoch step
(`EpochStep`: train one epoch, score the validation part, snapshot and restore its weights) and
`run_epochs` does the rest: validate, record the row (`EpochRecord`), stop by the one rule
(`EarlyStopping`), keep the best epoch's weights and put them back at the end. So the engines fit
the same rows in the same batches when given the same settings, stop alike, and report each
epoch through the same place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from movielens.plumbing.errors import PipelineError
from movielens.training.settings import FitSettings

log = logging.getLogger(__name__)


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


class EarlyStopping:
    """The one stopping rule of every engine: stop after `patience` epochs without a better
    validation RMSE; the best epoch's weights are the ones kept (the engine keeps them)."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best = np.inf
        self.best_epoch = 0
        self.waited = 0

    def improved(self, epoch: int, val_rmse: float) -> bool:
        """Record epoch `epoch`'s validation RMSE; True when it is the best so far."""
        if val_rmse < self.best:
            self.best, self.best_epoch, self.waited = val_rmse, epoch, 0
            return True
        self.waited += 1
        if self.done:
            log.info("early stop: val_rmse has not improved for %d epochs", self.patience)
        return False

    @property
    def done(self) -> bool:
        """Whether the last `patience` epochs brought no better validation RMSE."""
        return self.waited >= self.patience


class EpochRecord:
    """Each engine's per-epoch history: the one place an epoch's figures are logged, kept, handed
    to an optional hook (`on_epoch`, e.g. a dvclive logger), and checked for divergence.

    Rows are {"epoch": 1-based, "loss", "rmse", and "val_rmse" when validating}.
    """

    def __init__(self, epochs: int, on_epoch: Callable[[dict], None] | None = None):
        self.epochs = epochs
        self.on_epoch = on_epoch
        self.rows: list[dict] = []

    def add(self, row: dict) -> None:
        """Log, keep and hand on one epoch's row; raise if its loss diverged."""
        self.rows.append(row)
        log.info("epoch %d/%d: %s", row["epoch"], self.epochs, format_row(row))
        if self.on_epoch is not None:
            self.on_epoch(row)
        check_finite(row["epoch"], row["loss"])

    def history(self) -> pd.DataFrame:
        """The rows as a DataFrame, one row per epoch run."""
        return pd.DataFrame(self.rows)


class EpochStep(Protocol):
    """What an engine plugs into run_epochs.

    Attributes:
        host_order: whether the step trains each epoch in the order run_epochs draws (epoch_orders);
            False for a step that draws its own (the xla engine, on its device).
    """

    host_order: bool

    def run(self, epoch: int, order: np.ndarray | None) -> dict:
        """Train epoch `epoch` (1-based) over the fitting rows in `order` (None: the step's own);
        its {"loss", "rmse"}."""

    def validation_rmse(self) -> float:
        """The current weights' RMSE on the validation part."""

    def snapshot(self) -> Any:
        """The current weights, for `restore`."""

    def restore(self, snapshot: Any) -> None:
        """Put back the weights of a snapshot."""


def run_epochs(
    step: EpochStep,
    data: TrainingData,
    s: FitSettings,
    on_epoch: Callable[[dict], None] | None = None,
) -> pd.DataFrame:
    """Train `step` on `data` for up to s.epochs epochs; with a validation part, stop early and
    keep the best epoch's weights.

    Each epoch is trained on the fitting rows in the order epoch_orders draws from s.seed (unless
    the step draws its own), then scored on the validation part when there is one, and its row
    recorded (EpochRecord: logged, handed to `on_epoch`, checked for divergence). With a
    validation part the run stops s.patience epochs after its best epoch (EarlyStopping), and
    that epoch's weights are put back at the end.

    Returns:
        The per-epoch history: epoch, loss, rmse, and val_rmse when validating.
    """
    orders = epoch_orders(data.fit_rows, s.seed) if step.host_order else None
    record = EpochRecord(s.epochs, on_epoch)
    stopper = EarlyStopping(s.patience) if len(data.val_rows) else None
    best = None
    for epoch in range(1, s.epochs + 1):
        row = {"epoch": epoch, **step.run(epoch, None if orders is None else next(orders))}
        if stopper is not None:
            row["val_rmse"] = step.validation_rmse()
        record.add(row)
        if stopper is None:
            continue
        if stopper.improved(epoch, row["val_rmse"]):
            best = step.snapshot()
        if stopper.done:
            break
    if best is not None:
        step.restore(best)
    return record.history()
