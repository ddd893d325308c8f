"""Which engine trains the model, and running it: `keras`, `compiled` (Numba, CPU) or `xla` (JAX).

`choose_engine` is the one place the choice is made, from train.engine, the backend, the model and
the accelerators the backend sees, and it says why; `run_engine` runs the one chosen and checks
the compiled engine's write-back against the Keras model's own predictions.
"""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd

from movielens.model.keras_model import model_inputs
from movielens.plumbing.errors import PipelineError
from movielens.training.compiled.fit import compiled_problem, fit_compiled
from movielens.training.epochs import TrainingData
from movielens.training.keras_fit import fit_keras
from movielens.training.settings import FitSettings

# Without a validation part, the post-fit check compares the engines on this many fitting rows.
CHECK_ROWS = 100_000
CHECK_TOLERANCE = 1e-4  # RMSE stars: Keras' predictions against the compiled trainer's own
CHECK_BATCH = 65_536  # pairs per forward pass of the check


def choose_engine(
    requested: str, model: keras.Model, backend: str, n_accelerators: int
) -> tuple[str, str]:
    """The engine that trains `model` and why.

    `auto` takes `xla` where JAX sees a GPU or TPU, `compiled` for the standard model on a CPU,
    and otherwise the engine that trains any model on the backend (`xla` on JAX, `keras` on
    TensorFlow).

    Raises:
        PipelineError: for train.engine=compiled and a model it does not implement, or
            train.engine=xla on a backend other than JAX.
    """
    problem = compiled_problem(model)
    if requested == "compiled" and problem is not None:
        raise PipelineError(
            f"train.engine=compiled cannot train this model: {problem}; "
            "train.engine=keras trains it"
        )
    if requested == "xla" and backend != "jax":
        raise PipelineError(
            f"train.engine=xla runs on JAX, not {backend}; set train.backend=jax "
            "or train.engine=keras"
        )
    if requested != "auto":
        return requested, f"train.engine={requested}"
    any_model = "xla" if backend == "jax" else "keras"
    if n_accelerators:
        return any_model, f"{backend} sees {n_accelerators} GPU/TPU device(s)"
    if problem is not None:
        return any_model, f"the compiled engine does not implement this model: {problem}"
    return "compiled", "the standard architecture and no GPU or TPU visible"


def check_rows(data: TrainingData) -> np.ndarray:
    """The rows the compiled engine's write-back is checked on: the validation part, else the
    first CHECK_ROWS fitting rows."""
    return data.val_rows if len(data.val_rows) else data.fit_rows[:CHECK_ROWS]


def check_keras_agrees(
    model: keras.Model, data: TrainingData, rows: np.ndarray, trainer_rmse: float
) -> None:
    """Keras' own predictions on `rows` must give the RMSE the compiled trainer computed there.

    Raises:
        PipelineError: when they differ by more than CHECK_TOLERANCE, before anything is saved.
    """
    users, movies, ratings = data.part(rows)
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


def run_engine(
    engine: str,
    model: keras.Model,
    data: TrainingData,
    s: FitSettings,
    checked_on: np.ndarray,
    on_epoch=None,
    replicas: int = 1,
) -> pd.DataFrame:
    """Train `model` in place with one engine and return its per-epoch history.

    The compiled engine, which writes its own tables back into the model, is then checked on
    the rows `checked_on` (check_keras_agrees); the other two train the Keras model itself.
    """
    if engine == "keras":
        return fit_keras(model, data, s, on_epoch, replicas)
    if engine == "xla":
        from movielens.training.xla_fit import fit_xla

        return fit_xla(model, data, s, on_epoch)
    history, trainer_rmse = fit_compiled(model, data, s, checked_on, on_epoch)
    check_keras_agrees(model, data, checked_on, trainer_rmse)
    return history
