"""The xla engine (JAX backend): an epoch as one compiled program over Keras' stateless API.

Any model movielens.model.keras_model can build trains here, edited ones too, because the math is
the model's own: each step is the model's `stateless_call(..., return_losses=True)` (its output
and its regularisation losses, as Keras' own JAX train step computes them, keras/src/backend/jax/
trainer.py:56-66) under `jax.value_and_grad`, then the Keras optimizer's `stateless_apply`. An
epoch is one `jax.jit` program: the epoch's order is drawn on the device from train.seed
(`jax.random.permutation`, keyed by the seed and the epoch), gathers the ratings already there, a
`jax.lax.scan` runs the whole batches, and the short last batch follows in the same program. The
order is not the NumPy one the other engines share (movielens.training.epochs): drawing 25 M rows'
permutation on the host and sending it takes longer than a GPU's whole epoch. The
variables are assigned back to the Keras model once per epoch, so the trained model is the Keras
model itself.

Under a keras.distribution (DataParallel, or ModelParallel with row-sharded tables) each batch is
laid out as the distribution's data layout says; the variables keep the layouts they were built
with, and XLA adds the collectives.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pandas as pd

from movielens.model.layers import MOVIE_INPUT, USER_INPUT
from movielens.training.epochs import TrainingData, run_epochs
from movielens.training.optimizers import make_optimizer
from movielens.training.settings import FitSettings


class EpochProgram:
    """The compiled programs of one fit: an epoch of steps, and the RMSE of given pairs.

    The state is (trainable, non_trainable, optimizer) variable values, as JAX arrays.
    """

    def __init__(self, model: keras.Model, optimizer, batch_size: int):
        self.model = model
        self.optimizer = optimizer
        self.batch_size = batch_size
        distribution = keras.distribution.distribution()
        self.layout = (
            None
            if distribution is None
            else distribution.get_data_layout((batch_size,)).backend_layout
        )
        self.epoch = jax.jit(self._epoch)
        self.sse = jax.jit(self._sse)

    def _inputs(self, users, movies) -> dict:
        if self.layout is not None and users.shape[0] == self.batch_size:
            users = jax.lax.with_sharding_constraint(users, self.layout)
            movies = jax.lax.with_sharding_constraint(movies, self.layout)
        return {USER_INPUT: users, MOVIE_INPUT: movies}

    def _step(self, state, batch):
        trainable, non_trainable, optimizer_state = state
        users, movies, ratings = batch

        def objective(trainable):
            predicted, updated, losses = self.model.stateless_call(
                trainable,
                non_trainable,
                self._inputs(users, movies),
                training=True,
                return_losses=True,
            )
            error = jnp.reshape(predicted, ratings.shape) - ratings
            squared = jnp.sum(jnp.square(error))
            loss = squared / ratings.shape[0] + sum(losses)  # Keras' MSE + the model's losses
            return loss, (updated, squared)

        (loss, (non_trainable, squared)), grads = jax.value_and_grad(objective, has_aux=True)(
            trainable
        )
        trainable, optimizer_state = self.optimizer.stateless_apply(
            optimizer_state, grads, trainable
        )
        return (trainable, non_trainable, optimizer_state), (loss * ratings.shape[0], squared)

    def _epoch(self, state, columns, rows, key):
        """One epoch over the `rows` of `columns` in an order drawn from `key`: the new state, the
        summed loss (per rating) and the summed squared error."""
        order = jax.random.permutation(key, rows)
        users, movies, ratings = (column[order] for column in columns)
        whole = (order.shape[0] // self.batch_size) * self.batch_size
        batches = tuple(x[:whole].reshape(-1, self.batch_size) for x in (users, movies, ratings))
        state, (losses, squared) = jax.lax.scan(self._step, state, batches)
        loss, sse = jnp.sum(losses), jnp.sum(squared)
        if whole < order.shape[0]:  # the short last batch, a step of its own as in model.fit
            state, (last_loss, last_squared) = self._step(
                state, (users[whole:], movies[whole:], ratings[whole:])
            )
            loss, sse = loss + last_loss, sse + last_squared
        return state, loss, sse

    def _sse(self, state, users, movies, ratings):
        trainable, non_trainable, _ = state
        predicted, _ = self.model.stateless_call(
            trainable, non_trainable, {USER_INPUT: users, MOVIE_INPUT: movies}, training=False
        )
        return jnp.sum(jnp.square(jnp.reshape(predicted, ratings.shape) - ratings))


def values(variables) -> list:
    """The current values of Keras variables, as backend arrays."""
    return [v.value for v in variables]


def assign(variables, arrays) -> None:
    """Assign arrays to Keras variables, in order."""
    for variable, array in zip(variables, arrays, strict=True):
        variable.assign(array)


class XlaEpochs:
    """The xla engine's epoch step (movielens.training.epochs.EpochStep): an EpochProgram per
    epoch, its weights assigned back to the Keras model after each one."""

    host_order = False  # each epoch's order is drawn on the device, keyed by seed and epoch

    def __init__(self, model: keras.Model, data: TrainingData, s: FitSettings):
        optimizer = make_optimizer(s.optimizer, s.learning_rate)
        optimizer.build(model.trainable_variables)
        self.model = model
        self.program = EpochProgram(model, optimizer, s.batch_size)
        self.state = (
            values(model.trainable_variables),
            values(model.non_trainable_variables),
            values(optimizer.variables),
        )
        self.columns = tuple(jnp.asarray(x) for x in (data.users, data.movies, data.ratings))
        self.validation = tuple(jnp.asarray(x) for x in data.part(data.val_rows))
        self.rows = jnp.asarray(data.fit_rows, jnp.int32)
        self.key = jax.random.key(s.seed)
        self.n_fit, self.n_val = len(data.fit_rows), len(data.val_rows)

    def run(self, epoch: int, order: None) -> dict:
        key = jax.random.fold_in(self.key, epoch)
        self.state, loss, sse = self.program.epoch(self.state, self.columns, self.rows, key)
        self.restore(self.snapshot())  # the Keras model holds every epoch's weights
        n = self.n_fit
        return {"loss": float(loss) / n, "rmse": float(np.sqrt(float(sse) / n))}

    def validation_rmse(self) -> float:
        return float(np.sqrt(float(self.program.sse(self.state, *self.validation)) / self.n_val))

    def snapshot(self) -> tuple:
        """The trainable and non-trainable values (JAX arrays: never changed in place)."""
        return self.state[0], self.state[1]

    def restore(self, snapshot: tuple) -> None:
        """Assign a snapshot's values to the Keras model's variables."""
        assign(self.model.trainable_variables, snapshot[0])
        assign(self.model.non_trainable_variables, snapshot[1])


def fit_xla(
    model: keras.Model,
    data: TrainingData,
    s: FitSettings,
    on_epoch: Callable[[dict], None] | None = None,
) -> pd.DataFrame:
    """Fit the model in place, an epoch per compiled program; the best validation epoch's weights stay.

    Args:
        model: any Keras model taking the user and movie index inputs and returning ratings
            (built under the keras.distribution, when there is one).
        data: the ratings, fitting and validation rows (movielens.training.epochs).
        s: the fit settings (epochs, batch_size, learning_rate, optimizer, patience, seed).
        on_epoch: called with each epoch's history row (EpochRecord).

    Returns:
        The per-epoch history: epoch, loss, rmse, and val_rmse when validating.
    """
    return run_epochs(XlaEpochs(model, data, s), data, s, on_epoch)
