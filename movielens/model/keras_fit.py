"""The Keras engine: `model.compile` and `model.fit`, for any model movielens.model.keras_model can build.

The model is compiled with Adam, MSE loss and an RMSE metric and fitted on a tf.data pipeline that
yields each epoch's ratings in the order movielens.model.epochs draws from train.seed (the compiled engine
reads the same order), with early stopping on the validation part that restores the best weights.
Each epoch's steps run in one call of Keras' compiled train step (`steps_per_execution`), with
TensorFlow's op determinism on: the same params and data give the same weights, bit for bit. The
refit fits the same compiled model again from its initial weights (`restart`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from movielens.model.epochs import TrainingData, check_finite, epoch_orders, format_row
from movielens.model.keras_model import model_inputs
from movielens.model.layers import MOVIE_INPUT, USER_INPUT

log = logging.getLogger(__name__)

RMSE = "rmse"
VALIDATION_BATCH = 65536  # validation pairs per batch of the test step


class DenseAdam(keras.optimizers.Adam):
    """Keras' Adam on each embedding row's summed gradient, each variable updated in one kernel.

    A batch looks rows up through tf.gather, whose gradient is a tf.IndexedSlices with one slice
    per occurrence. Keras 3's Adam squares those slices one by one, so a row looked up k times gets
    the sum of k squares as its second moment instead of the square of its gradient. Densifying
    first (tf.convert_to_tensor sums the slices of a row) gives Adam on the true gradient, which is
    what the compiled engine computes.

    On one device each variable's update is TensorFlow's fused Adam kernel (ResourceApplyAdam):
    Keras' own formula, m += (g - m)(1 - beta_1), v += (g^2 - v)(1 - beta_2),
    w -= alpha m / (sqrt(v) + epsilon) with alpha = lr sqrt(1 - beta_2^t) / (1 - beta_1^t), in one
    pass over the table instead of about ten (an epoch on ml-latest-small 1.1 times faster). Under
    a distribution strategy with several replicas it is Keras' own update_step.
    """

    def apply(self, grads, trainable_variables=None):
        # Before anything else: a MirroredStrategy then all-reduces dense gradients too.
        dense = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
        return super().apply(dense, trainable_variables)

    def update_step(self, gradient, variable, learning_rate):
        if tf.distribute.get_strategy().num_replicas_in_sync > 1:
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable),
            m=_handle(self._momentums[index]),
            v=_handle(self._velocities[index]),
            beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype),
        )


def _handle(variable) -> tf.Tensor:
    """The resource handle of a Keras variable or of the tf.Variable it wraps."""
    return (variable.value if isinstance(variable, keras.Variable) else variable).handle


def restart(model: keras.Model, weights: list[np.ndarray]) -> None:
    """Put the model back to `weights` and its Adam optimizer, if compiled, to step 0.

    The model keeps its compiled train function, so fitting it again traces nothing: the refit
    costs its epochs only.
    """
    model.set_weights(weights)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return
    optimizer.iterations.assign(0)
    for moment in [*optimizer._momentums, *optimizer._velocities]:
        moment.assign(tf.zeros_like(moment))


class EpochBatches:
    """The fitting rows' batches for one epoch at a time, each epoch in epoch_orders' order.

    Keras opens a new iterator on the dataset at each epoch (the dataset ends with the epoch), and
    may open one more before training to build the model; so the epoch whose order an iterator
    yields is set by the EpochStart callback, not counted by the iterators. Python hands over an
    epoch at once, its whole batches as the rows of (batches, batch_size) arrays and the shorter
    last batch apart, and tf.data cuts the rows one per batch: neither element by element (which
    cost a quarter of an epoch on ml-latest-small) nor one Python call per batch (a tenth).
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

    def __call__(self):
        """The current epoch as one element: users, movies, ratings in whole batches, then the rest."""
        columns = self.data.part(self.order(self.epoch))
        whole = len(columns[2]) - self.rest
        yield (
            *(column[:whole].reshape(-1, self.batch_size) for column in columns),
            *(column[whole:] for column in columns),
        )

    def dataset(self) -> tf.data.Dataset:
        """One epoch of batches (the cardinality known to Keras), prefetched."""
        # Batch shapes stay unknown, so that the refit's epochs (another length) reuse the trace.
        signature = tuple(
            tf.TensorSpec(shape, dtype)
            for shape in ((None, None), (None,))
            for dtype in (tf.int32, tf.int32, tf.float32)
        )

        def labelled(users, movies, ratings):
            return {USER_INPUT: users, MOVIE_INPUT: movies}, ratings

        def batches(users, movies, ratings, users_rest, movies_rest, ratings_rest):
            whole = tf.data.Dataset.from_tensor_slices(labelled(users, movies, ratings))
            if not self.rest:
                return whole
            last = labelled(users_rest, movies_rest, ratings_rest)
            return whole.concatenate(tf.data.Dataset.from_tensors(last))

        epoch = tf.data.Dataset.from_generator(self, output_signature=signature)
        batched = epoch.flat_map(batches)
        batched = batched.apply(tf.data.experimental.assert_cardinality(self.steps))
        return batched.prefetch(tf.data.AUTOTUNE)


class EpochStart(keras.callbacks.Callback):
    """Tells EpochBatches which epoch Keras is starting."""

    def __init__(self, batches: EpochBatches):
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.epoch = epoch


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


def validation_batches(data: TrainingData) -> tf.data.Dataset:
    """The validation part in batches of VALIDATION_BATCH pairs, cut once for every epoch.

    Given NumPy arrays, Keras would build a slicing pipeline over them anew at every epoch; on
    ml-latest-small that was an eighth of the whole fit.
    """
    users, movies, ratings = data.part(data.val_rows)
    batches = [
        tf.data.Dataset.from_tensors(
            (
                model_inputs(users[i : i + VALIDATION_BATCH], movies[i : i + VALIDATION_BATCH]),
                ratings[i : i + VALIDATION_BATCH],
            )
        )
        for i in range(0, len(ratings), VALIDATION_BATCH)
    ]
    dataset = batches[0]
    for batch in batches[1:]:
        dataset = dataset.concatenate(batch)
    return dataset


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """train.optimizer as a Keras optimizer: `adam` (DenseAdam) or `lazy_adam` (LazyAdam)."""
    if name == "lazy_adam":
        from movielens.model.optimizers import LazyAdam

        return LazyAdam(learning_rate=learning_rate)
    return DenseAdam(learning_rate=learning_rate)


def compile_model(
    model: keras.Model, optimizer: str, learning_rate: float, steps_per_execution: int
) -> None:
    """Adam, MSE and RMSE; `steps_per_execution` steps in each call of the compiled train step.

    The optimizer's slots are made here, not by the first train step: a tf.function that creates
    variables is traced twice, and a trace of the train step costs about half a second.
    """
    model.compile(
        optimizer=make_optimizer(optimizer, learning_rate),
        loss="mse",
        metrics=[keras.metrics.RootMeanSquaredError(name=RMSE)],
        # Keras turns XLA off while TensorFlow's op determinism is on (seed_everything), which
        # the same-weights-every-run guarantee needs; say so rather than be overruled.
        jit_compile=False,
        steps_per_execution=steps_per_execution,
    )
    model.optimizer.build(model.trainable_variables)


def fit_keras(
    model: keras.Model,
    data: TrainingData,
    p: dict,
    epochs: int | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> pd.DataFrame:
    """Fit the model in place with Keras; the best validation epoch's weights stay.

    An uncompiled model is compiled first; a compiled one is fitted as it is, optimizer state
    included (`restart` puts it back to step 0 for the refit).

    Args:
        model: any Keras model taking the user and movie index inputs and returning ratings,
            built in the distribution strategy's scope when there is one.
        data: the ratings, fitting and validation rows (movielens.model.epochs).
        p: the `train` params section (learning_rate, batch_size, epochs, patience, seed).
        epochs: how many epochs to run instead of p["epochs"] (the refit).
        callbacks: more Keras callbacks, called after the history's own at each epoch's end
            (movielens.model.live.keras_callbacks).

    Returns:
        The per-epoch history: epoch, loss, rmse, and val_rmse when validating.
    """
    epochs = p["epochs"] if epochs is None else epochs
    strategy = model.distribute_strategy
    if not model.compiled:
        # One call of the train step runs an epoch, the refit's longer one (every training row)
        # included, so that the refit reuses the traced function. Keras' multi-step loop fails
        # over several replicas here (TensorFlow 2.21, a placeholder left unfed in its while
        # loop): one step a call then.
        per_call = math.ceil(len(data.ratings) / p["batch_size"])
        with strategy.scope():  # the optimizer's variables live where the model's do
            compile_model(
                model,
                p["optimizer"],
                p["learning_rate"],
                per_call if strategy.num_replicas_in_sync == 1 else 1,
            )
    batches = EpochBatches(data, p["batch_size"], p["seed"])
    record = EpochLog(epochs)
    callbacks = [EpochStart(batches), record, *callbacks]
    validation = None
    if len(data.val_rows):
        validation = validation_batches(data)
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=f"val_{RMSE}", mode="min", patience=p["patience"], restore_best_weights=True
            )
        )
    model.fit(
        batches.dataset(),
        epochs=epochs,
        validation_data=validation,
        callbacks=callbacks,
        shuffle=False,  # EpochBatches orders each epoch
        verbose=0,
    )
    history = pd.DataFrame(record.rows)
    check_finite(int(history["epoch"].iloc[-1]), float(history["loss"].iloc[-1]))
    if len(history) < epochs and len(data.val_rows):
        log.info("early stop: val_rmse has not improved for %d epochs", p["patience"])
    return history
