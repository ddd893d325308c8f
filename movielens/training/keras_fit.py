"""The Keras engine: `model.compile` and `model.fit`, for any model movielens.model.keras_model can
build, on any Keras backend.

The model is compiled with the project's Adam (movielens.training.optimizers), MSE loss and an RMSE
metric. The shared epoch loop (movielens.training.epochs.run_epochs) drives it: each epoch is one
`model.fit` call for that epoch (initial_epoch=epoch - 1, epochs=epoch) on the ratings in the
order movielens.training.epochs draws from train.seed (the other engines read the same order),
and the validation part is scored by `model.evaluate`, as fit's own validation does; the loop
stops early and keeps the best weights. On TensorFlow the batches come through tf.data
(movielens.training.tf_backend) and an epoch's steps run in one call of the compiled train step; on
other backends a keras.utils.PyDataset hands them over. The refit fits the same compiled model
again from its initial weights (`restart`).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pandas as pd

from movielens.model.keras_model import model_inputs
from movielens.training.epochs import TrainingData, run_epochs
from movielens.training.optimizers import make_optimizer
from movielens.training.settings import FitSettings

RMSE = "rmse"
VALIDATION_BATCH = 65536  # validation pairs per batch of the test step


def restart(model: keras.Model, weights: list[np.ndarray]) -> None:
    """Put the model back to `weights` and its optimizer, if compiled, to step 0.

    The model keeps its compiled train function, so fitting it again traces nothing: the refit
    costs its epochs only.
    """
    model.set_weights(weights)
    if getattr(model, "optimizer", None) is not None:
        model.optimizer.restart()


class EpochBatches:
    """The fitting rows' batches of one epoch, in the order set for it (`order`).

    Keras opens a new iterator at each epoch, and may open one more before training to build the
    model (under a distribution strategy); every iterator reads the order set for the epoch, not
    one counted by the iterators.
    """

    def __init__(self, data: TrainingData, batch_size: int):
        self.data = data
        self.batch_size = batch_size
        self.steps = math.ceil(len(data.fit_rows) / batch_size)
        self.rest = len(data.fit_rows) % batch_size  # ratings in the short last batch; 0: none
        self.order = data.fit_rows  # the current epoch's; set before each epoch

    def __call__(self) -> tuple[np.ndarray, ...]:
        """The current epoch: users, movies, ratings in whole batches, then the short batch's."""
        columns = self.data.part(self.order)
        whole = len(columns[2]) - self.rest
        return (
            *(column[:whole].reshape(-1, self.batch_size) for column in columns),
            *(column[whole:] for column in columns),
        )

    def batch(self, index: int) -> tuple[dict, np.ndarray]:
        """Batch `index` of the current epoch as (inputs, ratings)."""
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        users, movies, ratings = self.data.part(rows)
        return model_inputs(users, movies), ratings

    def dataset(self):
        """The epoch as Keras takes it: tf.data on TensorFlow, a PyDataset elsewhere."""
        if keras.backend.backend() == "tensorflow":
            from movielens.training import tf_backend

            return tf_backend.epoch_dataset(self, self.steps, self.rest)
        return BatchSequence(self)


class BatchSequence(keras.utils.PyDataset):
    """EpochBatches' current epoch, one batch per index, read in order in this process."""

    def __init__(self, batches: EpochBatches):
        super().__init__(workers=1, use_multiprocessing=False)
        self.batches = batches

    def __len__(self) -> int:
        return self.batches.steps

    def __getitem__(self, index: int):
        return self.batches.batch(index)


def validation_data(data: TrainingData) -> dict:
    """The validation pairs as model.evaluate's arguments: batched once (tf.data) on TensorFlow,
    else arrays with the batch size."""
    users, movies, ratings = data.part(data.val_rows)
    inputs = model_inputs(users, movies)
    if keras.backend.backend() == "tensorflow":
        from movielens.training import tf_backend

        return {"x": tf_backend.validation_dataset(inputs, ratings, VALIDATION_BATCH)}
    return {"x": inputs, "y": ratings, "batch_size": VALIDATION_BATCH}


def compile_model(
    model: keras.Model, optimizer: str, learning_rate: float, steps_per_execution: int
) -> None:
    """The project's Adam, MSE and RMSE; `steps_per_execution` steps in each call of the step.

    The optimizer's slots are made here, not by the first train step: a tf.function that creates
    variables is traced twice, and a trace of the train step costs about half a second.
    """
    model.compile(
        optimizer=make_optimizer(optimizer, learning_rate),
        loss="mse",
        metrics=[keras.metrics.RootMeanSquaredError(name=RMSE)],
        # Keras turns XLA off while TensorFlow's op determinism is on (seed_everything), which
        # the same-weights-every-run guarantee needs; say so rather than be overruled.
        jit_compile=False if keras.backend.backend() == "tensorflow" else "auto",
        steps_per_execution=steps_per_execution,
    )
    model.optimizer.build(model.trainable_variables)


class KerasEpochs:
    """The Keras engine's epoch step (movielens.training.epochs.EpochStep): one `model.fit` call
    per epoch, and `model.evaluate` on the validation part.

    An uncompiled model is compiled first; a compiled one is fitted as it is, optimizer state
    included (`restart` puts it back to step 0 for the refit).
    """

    host_order = True

    def __init__(self, model: keras.Model, data: TrainingData, s: FitSettings, replicas: int = 1):
        if not model.compiled:
            # One call of the train step runs an epoch, the refit's longer one (every training
            # row) included, so that the refit reuses the traced function. Keras' multi-step loop
            # fails over several TensorFlow replicas (TensorFlow 2.21, a placeholder left unfed in
            # its while loop): one step a call then.
            per_call = math.ceil(len(data.ratings) / s.batch_size)
            compile_model(model, s.optimizer, s.learning_rate, per_call if replicas == 1 else 1)
        self.model = model
        self.batches = EpochBatches(data, s.batch_size)
        self.dataset = self.batches.dataset()
        self.validation = validation_data(data) if len(data.val_rows) else None

    def run(self, epoch: int, order: np.ndarray) -> dict:
        self.batches.order = order
        logs = self.model.fit(
            self.dataset,
            initial_epoch=epoch - 1,  # Keras counts epochs from 0
            epochs=epoch,
            shuffle=False,  # EpochBatches orders each epoch
            verbose=0,
        ).history
        return {"loss": float(logs["loss"][-1]), "rmse": float(logs[RMSE][-1])}

    def validation_rmse(self) -> float:
        logs = self.model.evaluate(**self.validation, verbose=0, return_dict=True)
        return float(logs[RMSE])

    def snapshot(self) -> list[np.ndarray]:
        return self.model.get_weights()

    def restore(self, snapshot: list[np.ndarray]) -> None:
        self.model.set_weights(snapshot)


def fit_keras(
    model: keras.Model, data: TrainingData, s: FitSettings, on_epoch=None, replicas: int = 1
) -> pd.DataFrame:
    """Fit the model in place with Keras' model.fit, epoch by epoch; the best validation epoch's
    weights stay.

    Args:
        model: any Keras model taking the user and movie index inputs and returning ratings,
            built in the distribution's scope when there is one.
        data: the ratings, fitting and validation rows (movielens.training.epochs).
        s: the fit settings (epochs, batch_size, learning_rate, optimizer, patience, seed).
        on_epoch: called with each epoch's history row (EpochRecord).
        replicas: devices of a TensorFlow distribution strategy the model was built under.

    Returns:
        The per-epoch history: epoch, loss, rmse, and val_rmse when validating.
    """
    return run_epochs(KerasEpochs(model, data, s, replicas), data, s, on_epoch)
