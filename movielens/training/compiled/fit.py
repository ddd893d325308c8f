"""Fast training of the rating model: mini-batch Adam in Numba-compiled loops (compiled.kernels).

Keras `fit` pays a dispatch per step and updates both tables through generic kernels. This module
minimises exactly the objective the Keras model declares (its MSE plus its L2 terms, read from the
model's layers) with exactly Keras' Adam update, in Numba-compiled loops over NumPy copies of the
model's tables that use both cores. The result is an ordinary Keras model: the trained tables are
written back into it (`AdamTrainer.to_model`), then saved, loaded and plotted as before.

Per step, for the batch's rows u = U[users], m = M[movies], biases b_u, b_m, over `count` ratings:

    pred = lo + (hi - lo) * sigmoid(sum(u * m, axis=1) + b_u + b_m)
    loss = sum((pred - r)^2) / count                                 # Keras' MSE over the batch
         + activity_l2 * sum(|u|^2 + |m|^2) / count                  # activity_regularizer
         + embeddings_l2 * (|U|^2 + |M|^2)                           # embeddings_regularizer
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd

from movielens.model.architecture import standard_problem
from movielens.model.layers import TABLES, rating_scale
from movielens.training.compiled import kernels
from movielens.training.epochs import TrainingData, run_epochs
from movielens.training.settings import FitSettings

# train.optimizer -> the compiled epoch: Keras' Adam on the dense gradient, or lazy Adam (only the
# rows a batch looked up; movielens.training.optimizers.LazyAdam is the same update for Keras).
EPOCHS = {"adam": kernels.adam_epoch, "lazy_adam": kernels.lazy_adam_epoch}

log = logging.getLogger(__name__)


def warm_up_kernels() -> None:
    """Compile the kernels (or load them from Numba's cache) for the types AdamTrainer passes.

    Args are tiny arrays of exactly those types, so a later real call finds the code ready.
    """
    index = np.zeros(3, np.int32)
    ratings = np.ones(3, np.float32)
    sides = (np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32))
    momentums, velocities, gradients = kernels.adam_state(sides)
    columns = np.zeros(3)
    hyper = kernels.hyperparameters(
        1, 4, columns, columns, columns, columns, 1e-3, 0.9, 0.999, 1e-7
    )
    kernels.adam_epoch(index, index, ratings, 2, sides, momentums, velocities, gradients, hyper, 0)
    kernels.lazy_adam_epoch(
        index, index, ratings, 2, sides, momentums, velocities, gradients, hyper, 0
    )
    kernels.squared_error(index, index, ratings, *sides, hyper.lo, hyper.span)
    kernels.gather(np.arange(3), index, index, ratings, index.copy(), index.copy(), ratings.copy())


@functools.cache
def ready_kernels() -> None:
    """Compile the kernels, or load them from Numba's cache, once per process; log how long."""
    start = time.perf_counter()
    warm_up_kernels()
    log.info(
        "training kernels ready in %.1f s (compiled once, then cached)", time.perf_counter() - start
    )


def compiled_problem(model: keras.Model) -> str | None:
    """Why the compiled engine cannot train `model` exactly, or None when it can.

    It implements the standard architecture of movielens.model.keras_model and nothing else: the
    four tables, Dot without normalisation, Add, sigmoid, Rescaling, L2 regularizers only, no
    other layers, constraints or trainable weights.
    """
    problem = standard_problem(model.get_config())
    if problem is None and len(model.trainable_weights) != len(TABLES):
        names = sorted(w.path for w in model.trainable_weights)
        problem = f"its trainable weights are {', '.join(names)}, not the four tables"
    return problem


@dataclass(frozen=True)
class Objective:
    """What the model declares about its own training loss."""

    lo: float
    hi: float
    embeddings_l2: tuple[float, ...]  # per table in TABLES order: L2 on the whole table
    activity_l2: tuple[float, ...]  # per table: L2 on the rows a batch looks up, per rating


def _l2_of(regularizer) -> float:
    if regularizer is None:
        return 0.0
    if not isinstance(regularizer, keras.regularizers.L2):
        raise TypeError(f"only L2 regularizers are supported, got {type(regularizer).__name__}")
    return float(regularizer.l2)


def objective_of(model: keras.Model) -> Objective:
    """Read the rating range and the L2 weights from the model's layers (one source of truth)."""
    lo, hi = rating_scale(model)
    layers = [model.get_layer(name) for name in TABLES]
    return Objective(
        lo=lo,
        hi=hi,
        embeddings_l2=tuple(_l2_of(layer.embeddings_regularizer) for layer in layers),
        activity_l2=tuple(_l2_of(layer.activity_regularizer) for layer in layers),
    )


class AdamTrainer:
    """Trains the model's four tables with Keras' Adam, one compiled loop per epoch.

    The update is Keras' Adam (`keras.optimizers.Adam` with the same beta_1, beta_2, epsilon) on the
    dense gradient: every row of every table gets its moment and weight update at every step, as in
    `model.fit`. Each side's embedding and bias tables are held as one (rows, dim + 1) float32
    array, so a rating reads one row per side. The Keras model's variables are read once, at
    the start, and written by `to_model`.

    With optimizer="lazy_adam" a step updates the moments and weights of only the rows the batch
    looked up (kernels.lazy_adam_epoch); the model must then have no whole-table L2 term.

    Raises:
        ValueError: for an unknown optimizer, or lazy_adam on a model with embeddings_l2.
    """

    def __init__(
        self,
        model: keras.Model,
        learning_rate: float,
        batch_size: int,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        optimizer: str = "adam",
    ):
        if optimizer not in EPOCHS:
            raise ValueError(f"optimizer={optimizer!r}; choose one of {', '.join(EPOCHS)}")
        o = self.objective = objective_of(model)
        if optimizer == "lazy_adam" and any(o.embeddings_l2):
            raise ValueError("lazy_adam cannot apply a whole-table L2 term (embeddings_l2)")
        self.epoch = EPOCHS[optimizer]
        self.variables = [model.get_layer(name).embeddings for name in TABLES]
        self.sides = self._join([v.numpy() for v in self.variables])
        self.momentums, self.velocities, self.gradients = kernels.adam_state(self.sides)
        self.iterations = 0
        self.batch_size = int(batch_size)
        dim = self.sides[0].shape[1] - 1
        self.hyper = kernels.hyperparameters(
            lo=o.lo,
            span=o.hi - o.lo,
            act_u=_columns(o.activity_l2[0:2], dim),
            act_m=_columns(o.activity_l2[2:4], dim),
            l2_u=_columns(o.embeddings_l2[0:2], dim),
            l2_m=_columns(o.embeddings_l2[2:4], dim),
            learning_rate=learning_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
        )

    def run_epoch(self, users: np.ndarray, movies: np.ndarray, ratings: np.ndarray) -> dict:
        """One pass over the rows in the order given (shuffle them first); `to_model` publishes it.

        Returns the epoch's mean training objective (`loss`) and training RMSE (`rmse`).
        """
        loss, sse, self.iterations = self.epoch(
            *_kernel_input(users, movies, ratings),
            self.batch_size,
            self.sides,
            self.momentums,
            self.velocities,
            self.gradients,
            self.hyper,
            self.iterations,
        )
        return {"loss": float(loss), "rmse": float(np.sqrt(sse / len(ratings)))}

    def rmse(self, users: np.ndarray, movies: np.ndarray, ratings: np.ndarray) -> float:
        """RMSE of the current weights on the given (warm) pairs."""
        lo, span = self.hyper.lo, self.hyper.span
        sse = kernels.squared_error(*_kernel_input(users, movies, ratings), *self.sides, lo, span)
        return float(np.sqrt(sse / len(ratings)))

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        """A copy of the current weights, for `restore`."""
        return tuple(side.copy() for side in self.sides)

    def restore(self, snapshot: tuple[np.ndarray, np.ndarray]) -> None:
        """Put back the weights of a `snapshot` (the Adam state stays as it is)."""
        for side, saved in zip(self.sides, snapshot, strict=True):
            side[...] = saved

    @staticmethod
    def _join(tables: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(embedding | bias) of each side as one C-contiguous float32 array."""
        return tuple(
            np.ascontiguousarray(np.concatenate(tables[k : k + 2], axis=1), np.float32)
            for k in (0, 2)
        )

    def to_model(self) -> None:
        """Copy the current weights into the Keras model's variables."""
        for k, side in enumerate(self.sides):
            self.variables[2 * k].assign(side[:, :-1])
            self.variables[2 * k + 1].assign(side[:, -1:])


def _kernel_input(users, movies, ratings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The index and rating columns as the C-contiguous int32, int32, float32 the kernels take."""
    return (
        np.ascontiguousarray(users, np.int32),
        np.ascontiguousarray(movies, np.int32),
        np.ascontiguousarray(ratings, np.float32),
    )


def _columns(l2: tuple[float, float], dim: int) -> np.ndarray:
    """Per-column weights of a joined (embedding | bias) table: l2[0] for dim columns, then l2[1]."""
    return np.array([l2[0]] * dim + [l2[1]], np.float32)


class CompiledEpochs:
    """The compiled engine's epoch step (movielens.training.epochs.EpochStep): AdamTrainer over a
    copy of the ratings gathered in each epoch's order."""

    host_order = True

    def __init__(self, trainer: AdamTrainer, data: TrainingData):
        self.trainer = trainer
        self.columns = (data.users, data.movies, data.ratings)
        self.validation = data.part(data.val_rows)
        self.shuffled = [np.empty(len(data.fit_rows), a.dtype) for a in self.columns]

    def run(self, epoch: int, order: np.ndarray) -> dict:
        kernels.gather(order, *self.columns, *self.shuffled)
        return self.trainer.run_epoch(*self.shuffled)

    def validation_rmse(self) -> float:
        return self.trainer.rmse(*self.validation)

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        return self.trainer.snapshot()

    def restore(self, snapshot: tuple[np.ndarray, np.ndarray]) -> None:
        self.trainer.restore(snapshot)


def fit_compiled(
    model: keras.Model,
    data: TrainingData,
    s: FitSettings,
    check_rows: np.ndarray,
    on_epoch=None,
) -> tuple[pd.DataFrame, float]:
    """Train the model's four tables with AdamTrainer and write them back into the model.

    Args:
        model: a model that compiled_problem accepts.
        data: the ratings, fitting and validation rows (movielens.training.epochs).
        s: the fit settings (epochs, batch_size, learning_rate, optimizer, patience, seed).
        check_rows: positions of the ratings to score the final weights on.
        on_epoch: called with each epoch's history row (EpochRecord).

    Returns:
        The per-epoch history (epoch, loss, rmse, and val_rmse when validating), and the
        trainer's own RMSE of the weights it wrote into the model on `check_rows`, for the caller
        to check against Keras' predictions.
    """
    ready_kernels()
    trainer = AdamTrainer(model, s.learning_rate, s.batch_size, optimizer=s.optimizer)
    history = run_epochs(CompiledEpochs(trainer, data), data, s, on_epoch)
    trainer.to_model()
    return history, trainer.rmse(*data.part(check_rows))
