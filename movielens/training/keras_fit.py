"""The Keras engine: `model.compile` and `model.fit`, for any model movielens.model.keras_model can
build, on any Keras backend.

The model is compiled with the project's Adam (movielens.training.optimizers), MSE loss and an RMSE
metric, and fitted on each epoch's ratings in the order movielens.training.epochs draws from
train.seed (the other engines read the same order), with early stopping on the validation part
that keeps the best weights. On TensorFlow the batches come through tf.data
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
from movielens.training.epochs import (
    EarlyStopping,
    EpochRecord,
    FitSettings,
    TrainingData,
    epoch_orders,
)
from movielens.training.optimizers import make_optimizer

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
    """The fitting rows' batches for one epoch at a time, each epoch in epoch_orders' order.

    Keras opens a new iterator at each epoch, and may open one more before training to build the
    model; so the epoch whose order an iterator yields is set by the EpochStart callback, not
    counted by the iterators.
    """

    def __init__(self, data: TrainingData, batch_size: int, seed: int):
        self.data = data
        self.batch_size = batch_size
        self.steps = math.ceil(len(data.fit_rows) / batch_size)
        self.rest = len(data.fit_rows) % batch_size  # ratings in the short last batch; 0: none
        self.epoch = 0  # set by EpochStart
        self._orders = epoch_orders(data.fit_rows, seed)
        self._drawn = -1
        self._order = data.fit_rows

    def order(self, epoch: int) -> np.ndarray:
        """Epoch `epoch`'s order (0-based); epochs are asked for in increasing order."""
        if epoch < self._drawn:
            raise ValueError(f"epoch {epoch}'s order was asked for after epoch {self._drawn}'s")
        while self._drawn < epoch:
            self._order = next(self._orders)
            self._drawn += 1
        return self._order

    def __call__(self) -> tuple[np.ndarray, ...]:
        """The current epoch: users, movies, ratings in whole batches, then the short batch's."""
        columns = self.data.part(self.order(self.epoch))
        whole = len(columns[2]) - self.rest
        return (
            *(column[:whole].reshape(-1, self.batch_size) for column in columns),
            *(column[whole:] for column in columns),
        )

    def batch(self, index: int) -> tuple[dict, np.ndarray]:
        """Batch `index` of the current epoch as (inputs, ratings)."""
        rows = self.order(self.epoch)[index * self.batch_size : (index + 1) * self.batch_size]
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


class EpochStart(keras.callbacks.Callback):
    """Tells EpochBatches which epoch Keras is starting."""

    def __init__(self, batches: EpochBatches):
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.epoch = epoch


class EpochEnd(keras.callbacks.Callback):
    """Records each epoch (EpochRecord) and applies the shared stopping rule (EarlyStopping),
    keeping the best epoch's weights and putting them back when training ends."""

    def __init__(self, record: EpochRecord, stopper: EarlyStopping | None):
        super().__init__()
        self.record = record
        self.stopper = stopper
        self.best_weights = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        row = {"epoch": epoch + 1, "loss": float(logs["loss"]), "rmse": float(logs[RMSE])}
        if f"val_{RMSE}" in logs:
            row["val_rmse"] = float(logs[f"val_{RMSE}"])
        self.record.add(row)
        if self.stopper is None:
            return
        if self.stopper.improved(row["epoch"], row["val_rmse"]):
            self.best_weights = self.model.get_weights()
        self.model.stop_training = self.stopper.done

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


def validation_data(data: TrainingData):
    """The validation pairs as Keras takes them: batched once (tf.data) on TensorFlow."""
    users, movies, ratings = data.part(data.val_rows)
    inputs = model_inputs(users, movies)
    if keras.backend.backend() == "tensorflow":
        from movielens.training import tf_backend

        return tf_backend.validation_dataset(inputs, ratings, VALIDATION_BATCH)
    return inputs, ratings


def compile_model(model: keras.Model, s: FitSettings, steps_per_execution: int) -> None:
    """The project's Adam, MSE and RMSE; `steps_per_execution` steps in each call of the step.

    The optimizer's slots are made here, not by the first train step: a tf.function that creates
    variables is traced twice, and a trace of the train step costs about half a second.
    """
    model.compile(
        optimizer=make_optimizer(s.optimizer, s.learning_rate),
        loss="mse",
        metrics=[keras.metrics.RootMeanSquaredError(name=RMSE)],
        # Keras turns XLA off while TensorFlow's op determinism is on (seed_everything), which
        # the same-weights-every-run guarantee needs; say so rather than be overruled.
        jit_compile=False if keras.backend.backend() == "tensorflow" else "auto",
        steps_per_execution=steps_per_execution,
    )
    model.optimizer.build(model.trainable_variables)


def fit_keras(
    model: keras.Model, data: TrainingData, s: FitSettings, on_epoch=None, replicas: int = 1
) -> pd.DataFrame:
    """Fit the model in place with Keras; the best validation epoch's weights stay.

    An uncompiled model is compiled first; a compiled one is fitted as it is, optimizer state
    included (`restart` puts it back to step 0 for the refit).

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
    if not model.compiled:
        # One call of the train step runs an epoch, the refit's longer one (every training row)
        # included, so that the refit reuses the traced function. Keras' multi-step loop fails
        # over several TensorFlow replicas (TensorFlow 2.21, a placeholder left unfed in its
        # while loop): one step a call then.
        per_call = math.ceil(len(data.ratings) / s.batch_size)
        compile_model(model, s, per_call if replicas == 1 else 1)
    batches = EpochBatches(data, s.batch_size, s.seed)
    record = EpochRecord(s.epochs, on_epoch)
    validating = len(data.val_rows) > 0
    end = EpochEnd(record, EarlyStopping(s.patience) if validating else None)
    model.fit(
        batches.dataset(),
        epochs=s.epochs,
        validation_data=validation_data(data) if validating else None,
        validation_batch_size=None if keras.backend.backend() == "tensorflow" else VALIDATION_BATCH,
        callbacks=[EpochStart(batches), end],
        shuffle=False,  # EpochBatches orders each epoch
        verbose=0,
    )
    return record.history()
