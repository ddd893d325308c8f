"""Train stage: fit the embedding model on the training split, with early stopping on a validation part."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from movielens.model.compiled_fit import compiled_problem, fit_compiled
from movielens.model.epochs import TrainingData, fitted_ratings, training_data
from movielens.model.keras_fit import fit_keras, restart
from movielens.model.keras_model import build_model, model_inputs
from movielens.model.live import REFIT, SELECTION, epoch_hook, keras_callbacks
from movielens.plumbing.errors import PipelineError

if TYPE_CHECKING:
    from dvclive import Live

log = logging.getLogger(__name__)


# Without a validation part, the post-fit check compares the engines on this many fitting rows.
CHECK_ROWS = 100_000
CHECK_TOLERANCE = 1e-4  # RMSE stars: Keras' predictions against the compiled trainer's own
CHECK_BATCH = 65_536  # pairs per forward pass of the check


@dataclass(frozen=True)
class Fit:
    """A trained model and how it was trained.

    Attributes:
        model: the trained Keras model (uncompiled: what is saved holds no optimizer state).
        history: per-epoch figures of the run that chose the number of epochs (epoch, loss,
            rmse, and val_rmse when validating).
        engine: "keras" or "compiled"; reason: why that engine ran.
        best_epoch: the epoch whose weights early stopping kept (the last one without it).
        refit: whether the saved model was retrained on every training row for best_epoch epochs.
        fitted_ratings: ratings the saved model was fitted on, per epoch.
    """

    model: keras.Model
    history: pd.DataFrame
    engine: str
    reason: str
    best_epoch: int
    refit: bool
    fitted_ratings: int

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


def check_optimizer(p: dict) -> None:
    """Refuse a whole-table L2 weight with the lazy optimizer, which cannot apply it.

    Raises:
        PipelineError: for train.optimizer=lazy_adam with train.embeddings_l2 > 0.
    """
    if p["optimizer"] == "lazy_adam" and p["embeddings_l2"] > 0:
        raise PipelineError(
            f"train.optimizer=lazy_adam cannot apply train.embeddings_l2={p['embeddings_l2']:g}: "
            "that L2 term on the whole tables has a gradient on every row, and a lazy update "
            "touches only the rows a batch looks up; set train.embeddings_l2 to 0 "
            "(train.activity_l2 regularises per rating) or use train.optimizer=adam"
        )


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow, and make TensorFlow's kernels deterministic."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def visible_gpus() -> list:
    """The GPUs TensorFlow sees."""
    return tf.config.list_physical_devices("GPU")


def choose_engine(requested: str, model: keras.Model, n_gpus: int) -> tuple[str, str]:
    """The engine that trains `model` and why: `compiled` only for a model it implements exactly.

    Raises:
        PipelineError: when train.engine=compiled and the model is not the standard architecture.
    """
    problem = compiled_problem(model)
    if requested == "compiled":
        if problem is not None:
            raise PipelineError(
                f"train.engine=compiled cannot train this model: {problem}; "
                "train.engine=keras trains it"
            )
        return "compiled", "train.engine=compiled"
    if requested == "keras":
        return "keras", "train.engine=keras"
    if problem is not None:
        return "keras", f"the compiled engine does not implement this model: {problem}"
    if n_gpus:
        return "keras", f"{n_gpus} GPU(s) visible"
    return "compiled", "the standard architecture and no GPU visible"


def distribution_strategy(n_gpus: int) -> tf.distribute.Strategy:
    """MirroredStrategy over the GPUs when there are several, else TensorFlow's default strategy."""
    return tf.distribute.MirroredStrategy() if n_gpus > 1 else tf.distribute.get_strategy()


def check_keras_agrees(model: keras.Model, data: TrainingData, trainer_rmse: float) -> None:
    """Keras' own predictions must give the RMSE the compiled trainer computed for its weights.

    Raises:
        PipelineError: when they differ by more than CHECK_TOLERANCE, before anything is saved.
    """
    users, movies, ratings = data.part(check_rows(data))
    # The model's own forward pass, called directly: model.predict would first build and trace a
    # prediction function, which cost more than the whole compiled fit on ml-latest-small.
    predicted = np.concatenate(
        [
            np.asarray(model(model_inputs(users[i : i + CHECK_BATCH], movies[i : i + CHECK_BATCH])))
            for i in range(0, len(users), CHECK_BATCH)
        ]
    ).reshape(-1)
    keras_rmse = float(np.sqrt(np.mean((predicted.astype(np.float64) - ratings) ** 2)))
    if not abs(keras_rmse - trainer_rmse) <= CHECK_TOLERANCE:
        raise PipelineError(
            f"the model's Keras predictions score RMSE {keras_rmse:.6f} but the compiled engine "
            f"trained weights scoring {trainer_rmse:.6f}; nothing was saved; "
            "train with train.engine=keras"
        )


def check_rows(data: TrainingData) -> np.ndarray:
    """The rows the engines are compared on: the validation part, else the first fitting rows."""
    return data.val_rows if len(data.val_rows) else data.fit_rows[:CHECK_ROWS]


def run_engine(
    engine: str,
    model: keras.Model,
    data: TrainingData,
    p: dict,
    epochs: int | None = None,
    check: bool = True,
    live: Live | None = None,
    phase: str = SELECTION,
) -> pd.DataFrame:
    """Train `model` in place with one engine; the compiled one is checked against Keras.

    check=False skips that check, for weights that will not be saved (a run the refit replaces).
    With a dvclive `live`, every epoch is logged under `phase` (movielens.model.live).
    """
    if engine == "keras":
        return fit_keras(model, data, p, epochs, callbacks=keras_callbacks(live, phase))
    history, trainer_rmse = fit_compiled(
        model, data, p, check_rows(data), epochs, on_epoch=epoch_hook(live, phase)
    )
    if check:
        check_keras_agrees(model, data, trainer_rmse)
    return history


def best_epoch_of(history: pd.DataFrame) -> int:
    """The epoch whose weights were kept: the best validation RMSE, else the last epoch."""
    if "val_rmse" not in history:
        return int(history["epoch"].iloc[-1])
    return int(history["epoch"].iloc[int(history["val_rmse"].to_numpy().argmin())])


def train_model(
    train: pd.DataFrame,
    n_users: int,
    n_movies: int,
    p: dict,
    build: Callable[..., keras.Model] = build_model,
    strategy: tf.distribute.Strategy | None = None,
    live: Live | None = None,
) -> Fit:
    """Build the model and train it with the engine train.engine picks; refit it when asked.

    Args:
        train: user_index, movie_index (int32) and rating (float32) of the training split.
        n_users, n_movies: sizes of the encoded id spaces.
        p: the `train` params section.
        build: builds the model from (n_users, n_movies, embedding_dim, embeddings_l2,
            activity_l2, rating_scale); movielens.model.keras_model.build_model unless a test edits the model.
        strategy: where the Keras engine trains; by default MirroredStrategy over the GPUs when
            there are several.
        live: a dvclive Live that logs every epoch of the selection fit and of the refit.
    """
    check_optimizer(p)
    seed_everything(p["seed"])
    data = training_data(
        train["user_index"].to_numpy(),
        train["movie_index"].to_numpy(),
        train["rating"].to_numpy(),
        p["validation_size"],
        p["seed"],
    )
    scale = rating_scale_of(data.ratings[data.fit_rows])
    n_gpus = len(visible_gpus())
    strategy = strategy or distribution_strategy(n_gpus)

    def initial_model() -> keras.Model:
        keras.utils.set_random_seed(p["seed"])  # the same initial weights every time
        with strategy.scope():
            return build(
                n_users, n_movies, p["embedding_dim"], p["embeddings_l2"], p["activity_l2"], scale
            )

    model = initial_model()
    initial_weights = model.get_weights()
    engine, reason = choose_engine(p["engine"], model, n_gpus)
    log.info("engine: %s (%s)", engine, reason)
    refit = bool(p["refit"]) and len(data.val_rows) > 0
    history = run_engine(engine, model, data, p, check=not refit, live=live)  # refit's is saved
    best = best_epoch_of(history)
    if refit:
        log.info("refit: %d epochs on all %d training ratings", best, len(data.ratings))
        restart(model, initial_weights)  # a compiled Keras model keeps its traced train step
        run_engine(engine, model, data.whole(), p, epochs=best, live=live, phase=REFIT)
    fitted = len(data.ratings) if refit else len(data.fit_rows)
    return Fit(uncompiled(model), history, engine, reason, best, refit, fitted)


def uncompiled(model: keras.Model) -> keras.Model:
    """The model without its optimizer and compile settings (what the Keras engine added)."""
    if getattr(model, "optimizer", None) is None:
        return model
    bare = model.__class__.from_config(model.get_config())  # the same layers and names
    bare.set_weights(model.get_weights())
    return bare


def fit_model(
    train: pd.DataFrame, n_users: int, n_movies: int, p: dict
) -> tuple[keras.Model, pd.DataFrame]:
    """train_model's model and history, for callers that need no more (benchmarks, folds)."""
    fit = train_model(train, n_users, n_movies, p)
    return fit.model, fit.history


def summarize_fit(fit: Fit) -> dict:
    """The train stage's metrics: the engine, epochs run, best epoch, RMSEs there, the refit."""
    history = fit.history
    best = fit.best_epoch - 1
    summary = {
        "engine": fit.engine,
        "epochs_run": len(history),
        "best_epoch": fit.best_epoch,
        "train_rmse": float(history["rmse"].iloc[best]),
    }
    if "val_rmse" in history:
        summary["val_rmse"] = float(history["val_rmse"].iloc[best])
    summary |= {"refit": fit.refit, "fitted_ratings": fit.fitted_ratings}
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in summary.items()}


def ratings_processed(fit: Fit, n_train: int, p: dict) -> int:
    """Ratings the engines went through: each epoch of the selection run, then the refit's."""
    selection = fitted_ratings(n_train, p["validation_size"]) * len(fit.history)
    return selection + (n_train * fit.best_epoch if fit.refit else 0)
