"""Fast training of the rating model: each epoch is one XLA program running every Adam step.

Keras `fit` pays a dispatch per step and updates both tables through generic kernels. This module
minimises exactly the objective the Keras model declares (its MSE plus its L2 terms, read from the
model's layers) with exactly Keras' Adam update, but compiles a whole epoch, all of its mini-batch
steps, into one XLA program that works on the embedding tables in place. The result is an ordinary
Keras model: saved, loaded and plotted as before.

Per step, for the batch's rows u = U[users], m = M[movies], b_u, b_m and weights w (0 for padding):

    pred = lo + (hi - lo) * sigmoid(sum(u * m, axis=1) + b_u + b_m)
    loss = sum(w * (pred - r)^2) / sum(w)                            # Keras' MSE over the batch
         + activity_l2 * sum(w * (|u|^2 + |m|^2)) / sum(w)           # activity_regularizer
         + embeddings_l2 * (|U|^2 + |M|^2)                           # embeddings_regularizer
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from stages.layers import MOVIE_BIAS, MOVIE_EMBEDDING, USER_BIAS, USER_EMBEDDING, rating_scale

TABLES = (USER_EMBEDDING, USER_BIAS, MOVIE_EMBEDDING, MOVIE_BIAS)


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


def pad_to_batches(n: int, batch_size: int) -> int:
    """The length of n rows padded up to whole batches."""
    return -(-n // batch_size) * batch_size


class AdamTrainer:
    """Trains the model's four tables with Adam, one compiled XLA program per epoch.

    The update is Keras' Adam (`keras.optimizers.Adam` with the same beta_1, beta_2, epsilon):
    every row of every table gets its moment and weight update at every step, as in `model.fit`.
    Inside the program each side's embedding and bias tables travel as one (rows, dim + 1) table,
    so a step does one gather and one scatter per side; the gradient is written out by hand.
    """

    def __init__(
        self,
        model: keras.Model,
        learning_rate: float,
        batch_size: int,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
    ):
        self.objective = objective_of(model)
        self.tables = [model.get_layer(name).embeddings for name in TABLES]
        self.momentums = [tf.Variable(tf.zeros(t.shape, t.dtype)) for t in self.tables]
        self.velocities = [tf.Variable(tf.zeros(t.shape, t.dtype)) for t in self.tables]
        self.iterations = tf.Variable(0, dtype=tf.int64)
        self.learning_rate = float(learning_rate)
        self.batch_size = int(batch_size)
        self.betas = (float(beta_1), float(beta_2))
        self.epsilon = float(epsilon)
        dim = self.tables[0].shape[1]
        o = self.objective
        # Per-column L2 weights of the joined (embedding | bias) tables of each side.
        self._embeddings_l2 = [_columns(o.embeddings_l2[k : k + 2], dim) for k in (0, 2)]
        self._activity_l2 = [_columns(o.activity_l2[k : k + 2], dim) for k in (0, 2)]
        self._epoch = tf.function(self._run_epoch, jit_compile=True, reduce_retracing=True)
        # Plain graph mode: called once per epoch, not worth an XLA compile.
        self._sse = tf.function(self._squared_errors, reduce_retracing=True)

    def run_epoch(self, users: np.ndarray, movies: np.ndarray, ratings: np.ndarray) -> dict:
        """One pass over the rows in the order given (shuffle them first).

        Returns the epoch's mean training objective (`loss`) and training RMSE (`rmse`).
        """
        n = len(ratings)
        padded = pad_to_batches(n, self.batch_size)
        weights = np.zeros(padded, np.float32)
        weights[:n] = 1.0

        def pad(values: np.ndarray, dtype) -> tf.Tensor:
            out = np.zeros(padded, dtype)
            out[:n] = values
            return tf.constant(out)

        loss, sse = self._epoch(
            pad(users, np.int32), pad(movies, np.int32), pad(ratings, np.float32), weights
        )
        return {"loss": float(loss), "rmse": float(np.sqrt(float(sse) / n))}

    def rmse(self, users: np.ndarray, movies: np.ndarray, ratings: np.ndarray) -> float:
        """RMSE of the current weights on the given (warm) pairs."""
        sse = self._sse(
            tf.constant(users, tf.int32), tf.constant(movies, tf.int32), tf.constant(ratings)
        )
        return float(np.sqrt(float(sse) / len(ratings)))

    def _scale(self, logit):
        o = self.objective
        return o.lo + (o.hi - o.lo) * tf.sigmoid(logit)

    def _squared_errors(self, users, movies, ratings):
        u_emb, u_bias, m_emb, m_bias = (t.value for t in self.tables)
        logit = (
            tf.reduce_sum(tf.gather(u_emb, users) * tf.gather(m_emb, movies), axis=1)
            + tf.gather(u_bias, users)[:, 0]
            + tf.gather(m_bias, movies)[:, 0]
        )
        return tf.reduce_sum(tf.square(self._scale(logit) - ratings))

    def _gradients(self, u, m, ratings, weights):
        """Loss terms and gradients with respect to the looked-up rows u, m (batch, dim + 1)."""
        o = self.objective
        logit = tf.reduce_sum(u[:, :-1] * m[:, :-1], axis=1) + u[:, -1] + m[:, -1]
        unit = tf.sigmoid(logit)
        error = o.lo + (o.hi - o.lo) * unit - ratings
        count = tf.reduce_sum(weights)
        squared = tf.reduce_sum(weights * tf.square(error))
        act_u, act_m = self._activity_l2
        w = weights[:, None] / count
        penalty = tf.reduce_sum(w * (act_u * tf.square(u) + act_m * tf.square(m)))
        d_logit = (2 * (o.hi - o.lo)) * error * unit * (1 - unit) * weights / count
        ones = tf.ones_like(d_logit)[:, None]
        grad_u = d_logit[:, None] * tf.concat([m[:, :-1], ones], 1) + 2 * act_u * w * u
        grad_m = d_logit[:, None] * tf.concat([u[:, :-1], ones], 1) + 2 * act_m * w * m
        return squared / count + penalty, squared, grad_u, grad_m

    def _adam(self, weight, m, v, gradient, alpha):
        beta_1, beta_2 = self.betas
        m = m + (gradient - m) * (1 - beta_1)
        v = v + (tf.square(gradient) - v) * (1 - beta_2)
        return weight - m * alpha / (tf.sqrt(v) + self.epsilon), m, v

    def _run_epoch(self, users, movies, ratings, weights):
        batch = self.batch_size
        steps = tf.shape(ratings)[0] // batch
        beta_1, beta_2 = self.betas

        def step(i, t, sides, ms, vs, loss_sum, sse):
            window = lambda a: tf.slice(a, [i * batch], [batch])  # noqa: E731
            index = (window(users), window(movies))
            u, m = (tf.gather(side, idx) for side, idx in zip(sides, index, strict=True))
            loss, squared, grad_u, grad_m = self._gradients(u, m, window(ratings), window(weights))
            t = t + 1
            step_f = tf.cast(t, tf.float32)
            alpha = self.learning_rate * tf.sqrt(1 - beta_2**step_f) / (1 - beta_1**step_f)
            new = [], [], []
            for k, row_grad in enumerate((grad_u, grad_m)):
                table, l2 = sides[k], self._embeddings_l2[k]
                gradient = tf.math.unsorted_segment_sum(row_grad, index[k], table.shape[0])
                gradient += 2 * l2 * table
                loss += tf.reduce_sum(l2 * tf.square(table))
                for out, value in zip(
                    new, self._adam(table, ms[k], vs[k], gradient, alpha), strict=True
                ):
                    out.append(value)
            return i + 1, t, *new, loss_sum + loss, sse + squared

        join = lambda v: [tf.concat([v[k].read_value(), v[k + 1].read_value()], 1) for k in (0, 2)]  # noqa: E731
        state = (
            tf.constant(0),
            self.iterations.read_value(),
            join([t.value for t in self.tables]),
            join(self.momentums),
            join(self.velocities),
            tf.constant(0.0),
            tf.constant(0.0),
        )
        _, t, sides, ms, vs, loss_sum, sse = tf.while_loop(lambda i, *_: i < steps, step, state)
        self.iterations.assign(t)
        for variables, joined in (
            ([t.value for t in self.tables], sides),
            (self.momentums, ms),
            (self.velocities, vs),
        ):
            for k, side in enumerate(joined):
                variables[2 * k].assign(side[:, :-1])
                variables[2 * k + 1].assign(side[:, -1:])
        return loss_sum / tf.cast(steps, tf.float32), sse

    def get_weights(self) -> list[np.ndarray]:
        return [t.numpy().copy() for t in self.tables]

    def set_weights(self, weights: list[np.ndarray]) -> None:
        for table, value in zip(self.tables, weights, strict=True):
            table.assign(value)


def _columns(l2: tuple[float, float], dim: int) -> tf.Tensor:
    """Per-column weights of a joined (embedding | bias) table: l2[0] for dim columns, then l2[1]."""
    return tf.constant([l2[0]] * dim + [l2[1]], tf.float32)
