"""The Keras engine: `model.compile` and `model.fit`, for any model stages.model can build.

The model is compiled with Adam, MSE loss and an RMSE metric and fitted on a tf.data pipeline that
yields each epoch's ratings in the order stages.epochs draws from train.seed (the compiled engine
reads the same order), with early stopping on the validation part that restores the best weights.
Each epoch's steps run in one call of Keras' compiled train step (`steps_per_execution`), with
TensorFlow's op determinism on: the same params and data give the same weights, bit for bit.
"""

from __future__ import annotations

import logging
import math

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from stages.epochs import TrainingData, check_finite, epoch_orders, format_row
from stages.layers import MOVIE_INPUT, USER_INPUT
from stages.model import model_inputs

log = logging.getLogger(__name__)

RMSE = "rmse"


class DenseAdam(keras.optimizers.Adam):
    """Keras' Adam on each embedding row's summed gradient.

    A batch looks rows up through tf.gather, whose gradient is a tf.IndexedSlices with one slice
    per occurrence. Keras 3's Adam squares those slices one by one, so a row looked up k times gets
    the sum of k squares as its second moment instead of the square of its gradient. Densifying
    first (tf.convert_to_tensor sums the slices of a row) gives Adam on the true gradient, which is
    what the compiled engine computes.
    """

    def apply(self, grads, trainable_variables=None):
        # Before anything else: a MirroredStrategy then all-reduces dense gradients too.
        dense = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
        return super().apply(dense, trainable_variables)


def epochs_dataset(data: TrainingData, batch_size: int, seed: int) -> tf.data.Dataset:
    """Batches of the fitting rows, epoch after epoch, each epoch in epoch_orders' order."""
    orders = epoch_orders(data.fit_rows, seed)

    def epochs():
        for order in orders:
            users, movies, ratings = data.part(order)
            yield model_inputs(users, movies), ratings

    signature = (
        {
            USER_INPUT: tf.TensorSpec((None,), tf.int32),
            MOVIE_INPUT: tf.TensorSpec((None,), tf.int32),
        },
        tf.TensorSpec((None,), tf.float32),
    )
    one_epoch = tf.data.Dataset.from_generator(epochs, output_signature=signature)
    batches = one_epoch.flat_map(
        lambda x, y: tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    )
    return batches.prefetch(tf.data.AUTOTUNE)


class EpochLog(keras.callbacks.Callback):
    """Logs each epoch as the compiled engine does and records it; stops on a diverged loss."""

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs
        self.rows: list[dict] = []

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        row = {"epoch": epoch + 1, "loss": float(logs["loss"]), "rmse": float(logs[RMSE])}
        if f"val_{RMSE}" in logs:
            row["val_rmse"] = float(logs[f"val_{RMSE}"])
        self.rows.append(row)
        log.info("epoch %d/%d: %s", epoch + 1, self.epochs, format_row(row))
        if not np.isfinite(row["loss"]):
            self.model.stop_training = True


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """train.optimizer as a Keras optimizer: `adam` (DenseAdam) or `lazy_adam` (LazyAdam)."""
    if name == "lazy_adam":
        from stages.optimizers import LazyAdam

        return LazyAdam(learning_rate=learning_rate)
    return DenseAdam(learning_rate=learning_rate)


def compile_model(
    model: keras.Model, optimizer: str, learning_rate: float, steps_per_execution: int
) -> None:
    """Adam, MSE and RMSE; `steps_per_execution` steps in each call of the compiled train step."""
    model.compile(
        optimizer=make_optimizer(optimizer, learning_rate),
        loss="mse",
        metrics=[keras.metrics.RootMeanSquaredError(name=RMSE)],
        # Keras turns XLA off while TensorFlow's op determinism is on (seed_everything), which
        # the same-weights-every-run guarantee needs; say so rather than be overruled.
        jit_compile=False,
        steps_per_execution=steps_per_execution,
    )


def fit_keras(
    model: keras.Model, data: TrainingData, p: dict, epochs: int | None = None
) -> pd.DataFrame:
    """Compile and fit the model in place with Keras; the best validation epoch's weights stay.

    Args:
        model: any Keras model taking the user and movie index inputs and returning ratings,
            built in the distribution strategy's scope when there is one.
        data: the ratings, fitting and validation rows (stages.epochs).
        p: the `train` params section (learning_rate, batch_size, epochs, patience, seed).
        epochs: how many epochs to run instead of p["epochs"] (the refit).

    Returns:
        The per-epoch history: epoch, loss, rmse, and val_rmse when validating.
    """
    epochs = p["epochs"] if epochs is None else epochs
    steps = math.ceil(len(data.fit_rows) / p["batch_size"])
    strategy = model.distribute_strategy
    # Keras' multi-step loop fails over several replicas here (TensorFlow 2.21, a placeholder left
    # unfed in its while loop): one step a call then.
    per_call = steps if strategy.num_replicas_in_sync == 1 else 1
    with strategy.scope():  # the optimizer's variables live where the model's do
        compile_model(model, p["optimizer"], p["learning_rate"], per_call)
    record = EpochLog(epochs)
    callbacks = [record]
    validation = None
    if len(data.val_rows):
        users, movies, ratings = data.part(data.val_rows)
        validation = (model_inputs(users, movies), ratings)
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=f"val_{RMSE}", mode="min", patience=p["patience"], restore_best_weights=True
            )
        )
    model.fit(
        epochs_dataset(data, p["batch_size"], p["seed"]),
        epochs=epochs,
        steps_per_epoch=steps,
        validation_data=validation,
        validation_batch_size=p["batch_size"],
        callbacks=callbacks,
        shuffle=False,  # epochs_dataset orders each epoch
        verbose=0,
    )
    history = pd.DataFrame(record.rows)
    check_finite(int(history["epoch"].iloc[-1]), float(history["loss"].iloc[-1]))
    if len(history) < epochs and len(data.val_rows):
        log.info("early stop: val_rmse has not improved for %d epochs", p["patience"])
    return history
