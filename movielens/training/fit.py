"""Fitting the rating model: build it, train it with the engine train.engine picks, refit it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np
import pandas as pd

from movielens.model.keras_model import build_model
from movielens.model.saving import plot_model, save_model
from movielens.plumbing.errors import PipelineError
from movielens.plumbing.files import write_json
from movielens.training.backend import (
    accelerators,
    active_backend,
    default_distribution,
    seed_everything,
)
from movielens.training.engines import check_rows, choose_engine, run_engine
from movielens.training.epochs import TrainingData, fitted_ratings, training_data
from movielens.training.keras_fit import restart
from movielens.training.live import REFIT, SELECTION, epoch_hook
from movielens.training.optimizers import lazy_adam_guard
from movielens.training.settings import FitSettings, TrainSettings

if TYPE_CHECKING:
    from dvclive import Live

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fit:
    """A trained model and how it was trained.

    Attributes:
        model: the trained Keras model (uncompiled: what is saved holds no optimizer state).
        history: per-epoch figures of the run that chose the number of epochs (epoch, loss,
            rmse, and val_rmse when validating).
        engine: "keras", "compiled" or "xla"; reason: why that engine ran.
        backend: the Keras backend it ran on ("tensorflow" or "jax").
        best_epoch: the epoch whose weights early stopping kept (the last one without it).
        refit: whether the saved model was retrained on every training row for best_epoch epochs.
        fitted_ratings: ratings the saved model was fitted on, per epoch.
        processes: the processes that trained it together (train.processes).
    """

    model: keras.Model
    history: pd.DataFrame
    engine: str
    reason: str
    backend: str
    best_epoch: int
    refit: bool
    fitted_ratings: int
    processes: int = 1

    @property
    def epochs_in_all(self) -> int:
        """Epochs trained: the selection run's and the refit's."""
        return len(self.history) + (self.best_epoch if self.refit else 0)


def rating_scale_of(ratings: np.ndarray) -> tuple[float, float]:
    """The rating range the model's sigmoid is scaled to: the lowest and highest training rating."""
    lo, hi = float(np.min(ratings)), float(np.max(ratings))
    if lo == hi:
        raise PipelineError(
            f"every training rating is {lo:g}; the model needs at least two distinct ratings"
        )
    return lo, hi


def best_epoch_of(history: pd.DataFrame) -> int:
    """The epoch whose weights were kept: the best validation RMSE, else the last epoch."""
    if "val_rmse" not in history:
        return int(history["epoch"].iloc[-1])
    return int(history["epoch"].iloc[int(history["val_rmse"].to_numpy().argmin())])


def output_scale(rating_scale, fit_ratings: np.ndarray) -> tuple[float, float]:
    """The output's (lo, hi) from train_model's `rating_scale`: as declared (a custom table's), or
    that function of the fitting ratings (several processes: all of theirs), or for None
    rating_scale_of's."""
    if rating_scale is None or callable(rating_scale):
        return (rating_scale or rating_scale_of)(fit_ratings)
    return tuple(rating_scale)


def train_model(
    train: pd.DataFrame,
    n_users: int,
    n_movies: int,
    settings: TrainSettings,
    build: Callable[..., keras.Model] = build_model,
    distribution=None,
    live: Live | None = None,
    rating_scale: tuple[float, float] | Callable[[np.ndarray], tuple[float, float]] | None = None,
) -> Fit:
    """Build the model and train it with the engine settings.engine picks; refit it when asked.

    Args:
        train: user_index, movie_index (int32) and rating (float32) of the training split.
        n_users, n_movies: sizes of the encoded id spaces.
        settings: the train settings; their backend must be the one Keras runs on
            (movielens.training.backend.use_backend).
        build: builds the model from (n_users, n_movies, embedding_dim, embeddings_l2,
            activity_l2, rating_scale); keras_model.build_model unless a test edits the model.
        distribution: where the model is built and trained: a tf.distribute.Strategy
            (TensorFlow) or a keras.distribution.Distribution (JAX); by default
            backend.default_distribution.
        live: a dvclive Live that logs every epoch of the selection run and of the refit
            (movielens.training.live).
        rating_scale: see output_scale.

    Raises:
        PipelineError: for settings the backend or the engine cannot run.
    """
    s = settings
    lazy_adam_guard(s.optimizer, s.embeddings_l2)
    backend = active_backend()
    if s.backend != backend:
        raise PipelineError(f"train.backend={s.backend} but Keras runs on {backend}")
    data = training_data(
        train["user_index"].to_numpy(),
        train["movie_index"].to_numpy(),
        train["rating"].to_numpy(),
        s.validation_size,
        s.seed,
    )
    scale = output_scale(rating_scale, data.ratings[data.fit_rows])
    n_accelerators = len(accelerators())
    distribution = distribution or default_distribution(s.shard_tables)
    replicas = getattr(distribution, "num_replicas_in_sync", 1)  # a TensorFlow strategy's
    scope = distribution.scope() if distribution is not None else contextlib.nullcontext()
    with scope:
        seed_everything(s.seed)  # the same initial weights every time
        model = build(n_users, n_movies, s.embedding_dim, s.embeddings_l2, s.activity_l2, scale)
        engine, reason = choose_engine(s.engine, model, backend, n_accelerators)
        log.info("engine: %s on %s (%s)", engine, backend, reason)
        fitted = Trainer(engine, model, data, s.fitting(), replicas)
        history = fitted.select(epoch_hook(live, SELECTION))
        best = best_epoch_of(history)
        refit = bool(s.refit) and len(data.val_rows) > 0
        if refit:
            fitted.refit(best, epoch_hook(live, REFIT))
        bare = uncompiled(model)  # in the scope: its variables keep the distribution's layouts
    n_fitted = len(data.ratings) if refit else len(data.fit_rows)
    return Fit(bare, history, engine, reason, backend, best, refit, n_fitted)


def prepare(engine: str) -> None:
    """Get ready what `engine` (train.engine) may pick needs before the first fit (the compiled
    engine's kernels), so that the time fits take is the fits' own."""
    if engine in ("auto", "compiled"):
        from movielens.training.compiled.fit import ready_kernels

        ready_kernels()


@dataclass
class Trainer:
    """One engine's selection run and refit of one model, from the same initial weights."""

    engine: str
    model: keras.Model
    data: TrainingData
    settings: FitSettings
    replicas: int

    def __post_init__(self):
        self.initial_weights = self.model.get_weights()
        self.checked_on = check_rows(self.data)  # the compiled engine's write-back check

    def select(self, on_epoch=None) -> pd.DataFrame:
        """The run with early stopping on the validation part; its history."""
        return run_engine(
            self.engine, self.model, self.data, self.settings, self.checked_on, on_epoch,
            self.replicas,
        )  # fmt: skip

    def refit(self, epochs: int, on_epoch=None) -> None:
        """Train again from the initial weights on every training row for `epochs` epochs."""
        log.info("refit: %d epochs on all %d training ratings", epochs, len(self.data.ratings))
        restart(self.model, self.initial_weights)  # a compiled Keras model keeps its traced step
        run_engine(
            self.engine, self.model, self.data.whole(), self.settings.for_epochs(epochs),
            self.checked_on, on_epoch, self.replicas,
        )  # fmt: skip


def uncompiled(model: keras.Model) -> keras.Model:
    """The model without its optimizer and compile settings (what the Keras engine added)."""
    if getattr(model, "optimizer", None) is None:
        return model
    bare = model.__class__.from_config(model.get_config())  # the same layers and names
    bare.set_weights(model.get_weights())
    return bare


def fit_model(
    train: pd.DataFrame, n_users: int, n_movies: int, settings: TrainSettings
) -> tuple[keras.Model, pd.DataFrame]:
    """train_model's model and history, for callers that need no more (benchmarks, folds)."""
    fit = train_model(train, n_users, n_movies, settings)
    return fit.model, fit.history


def summarize_fit(fit: Fit) -> dict:
    """The train stage's metrics: the engine and backend, epochs run, best epoch, RMSEs there, the refit."""
    history = fit.history
    best = fit.best_epoch - 1
    summary = {
        "engine": fit.engine,
        "backend": fit.backend,
        "epochs_run": len(history),
        "best_epoch": fit.best_epoch,
        "train_rmse": float(history["rmse"].iloc[best]),
    }
    if "val_rmse" in history:
        summary["val_rmse"] = float(history["val_rmse"].iloc[best])
    summary |= {"refit": fit.refit, "fitted_ratings": fit.fitted_ratings}
    if fit.processes > 1:  # one process's summary keeps its keys
        summary["processes"] = fit.processes
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in summary.items()}


def ratings_processed(fit: Fit, n_train: int, validation_size: float) -> int:
    """Ratings the engines went through: each epoch of the selection run, then the refit's."""
    selection = fitted_ratings(n_train, validation_size) * len(fit.history)
    return selection + (n_train * fit.best_epoch if fit.refit else 0)


def log_fit_time(fit: Fit, n_train: int, validation_size: float, seconds: float) -> None:
    """Log how long the fit took and how many ratings a second it went through."""
    processed = ratings_processed(fit, n_train, validation_size)
    log.info(
        "fit took %.1f s (%.0f ratings/s) with the %s engine on %s, %d epochs in all",
        seconds, processed / seconds, fit.engine, fit.backend, fit.epochs_in_all,
    )  # fmt: skip


def save_fit(fit: Fit, model: Path, plot: Path, dot: Path, metrics: Path) -> None:
    """Write the trained model, its drawing (png and dot) and the train stage's metrics."""
    save_model(fit.model, model)
    plot_model(fit.model, plot, dot)
    write_json(metrics, summarize_fit(fit))
