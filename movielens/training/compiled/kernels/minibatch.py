"""An epoch of mini-batch Adam or lazy Adam over ratings in a given order: what the engine calls.

A step sums the batch's row gradients (gradients.batch_gradients), then updates the tables with
Keras' Adam on every row (adam.update_every_row) or lazy Adam on the looked-up rows only
(adam.update_looked_up_rows); the step count behind the bias correction is global either way.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from movielens.training.compiled.kernels.adam import (
    list_rows,
    step_size,
    tiled,
    update_every_row,
    update_looked_up_rows,
)
from movielens.training.compiled.kernels.gradients import batch_gradients
from movielens.training.compiled.kernels.layout import BLOCKS, CHUNKS, rows_per_block


def adam_state(sides):
    """Zero Adam moments and gradient buffers for two (rows, dim + 1) tables, as adam_epoch takes.

    Returns (momentums, velocities, gradients): two float32 arrays each, the gradients with a
    leading CHUNKS axis.
    """
    momentums = tuple(np.zeros_like(side) for side in sides)
    velocities = tuple(np.zeros_like(side) for side in sides)
    gradients = tuple(np.zeros((CHUNKS, *side.shape), np.float32) for side in sides)
    return momentums, velocities, gradients


class Hyperparameters(NamedTuple):
    """What the kernels compute with beside the tables, in the dtypes their code is built for.

    Attributes:
        lo, span: float32; the rating scale: pred = lo + span * sigmoid(logit).
        act_u, act_m: float32 (dim + 1,) per-column weights of each side's activity (per rating)
            L2 term; the last column is the bias's.
        l2_u, l2_m: float32 (dim + 1,) per-column weights of each side's whole-table L2 term.
        learning_rate, beta_1, beta_2, epsilon: float32; Adam's.
    """

    lo: np.float32
    span: np.float32
    act_u: np.ndarray
    act_m: np.ndarray
    l2_u: np.ndarray
    l2_m: np.ndarray
    learning_rate: np.float32
    beta_1: np.float32
    beta_2: np.float32
    epsilon: np.float32


def hyperparameters(
    lo, span, act_u, act_m, l2_u, l2_m, learning_rate, beta_1, beta_2, epsilon
) -> Hyperparameters:
    """The kernels' Hyperparameters, each value cast to the dtype their compiled code takes."""
    f32 = np.float32
    act_u, act_m, l2_u, l2_m = (np.asarray(w, f32) for w in (act_u, act_m, l2_u, l2_m))
    return Hyperparameters(
        f32(lo), f32(span), act_u, act_m, l2_u, l2_m,
        f32(learning_rate), f32(beta_1), f32(beta_2), f32(epsilon),
    )  # fmt: skip


@njit(cache=True, nogil=True)
def _zero_counts(sides):
    """Per side, each row's ratings in each chunk of the current batch: (CHUNKS, rows) int32."""
    return (
        np.zeros((CHUNKS, sides[0].shape[0]), np.int32),
        np.zeros((CHUNKS, sides[1].shape[0]), np.int32),
    )


@njit(cache=True, nogil=True, inline="always")
def _gradient_step(ratings, rows, start, end, sides, gradients, counts, hyper, iterations):
    """Batch start..end-1's row gradients into `gradients` and `counts`, and the Adam step size of
    step iterations + 1. Returns (the batch's sum of squared errors, the step size)."""
    squared = batch_gradients(
        ratings, rows, start, end, sides, gradients, counts, hyper.lo, hyper.span,
        (hyper.act_u, hyper.act_m),
    )  # fmt: skip
    return squared, step_size(hyper.learning_rate, hyper.beta_1, hyper.beta_2, iterations + 1)


@njit(cache=True, nogil=True)
def adam_epoch(
    users, movies, ratings, batch_size, sides, momentums, velocities, gradients, hyper, iterations
):
    """One pass of mini-batch Adam over the ratings in the order given.

    Args:
        users, movies: int32 (n,) row indices into sides[0] and sides[1].
        ratings: float32 (n,).
        batch_size: ratings per step; the last step takes what is left.
        sides: the two float32 tables (rows, dim + 1), updated in place; momentums and velocities
            alike; gradients: two float32 (CHUNKS, rows, dim + 1) buffers, zero on entry and exit.
        hyper: the Hyperparameters (`hyperparameters` makes them).
        iterations: Adam's step count before this epoch.

    Returns:
        (mean objective over the steps, sum of squared errors, step count after the epoch).
    """
    rows = (users, movies)
    counts = _zero_counts(sides)
    l2_tiled = (  # for the flat loops over runs of rows, at most one block long
        tiled(hyper.l2_u, rows_per_block(sides[0].shape[0])),
        tiled(hyper.l2_m, rows_per_block(sides[1].shape[0])),
    )
    n = ratings.shape[0]
    loss = 0.0
    sse = 0.0
    steps = 0
    for start in range(0, n, batch_size):
        end = min(n, start + batch_size)
        squared, alpha = _gradient_step(
            ratings, rows, start, end, sides, gradients, counts, hyper, iterations
        )
        iterations += 1
        loss += squared / (end - start)
        table, activity = update_every_row(
            sides, momentums, velocities, gradients, counts, (hyper.l2_u, hyper.l2_m), l2_tiled,
            (hyper.act_u, hyper.act_m), alpha, hyper.beta_1, hyper.beta_2, hyper.epsilon,
        )  # fmt: skip
        for side in range(2):
            loss += table[side] + activity[side] / (end - start)
        sse += squared
        steps += 1
    return loss / max(steps, 1), sse, iterations


@njit(cache=True, nogil=True)
def lazy_adam_epoch(
    users, movies, ratings, batch_size, sides, momentums, velocities, gradients, hyper, iterations
):
    """One pass of mini-batch lazy Adam (TensorFlow Addons' LazyAdam) over the ratings in order.

    Takes and returns what adam_epoch does, but a step updates the moments and weights of only
    the rows the batch looked up, each with the sum of its gradients over its look-ups in the
    batch; the other rows and their moments stay as they are. The step count (bias correction)
    is global, as in adam_epoch. The cost of a step follows the batch, not the tables.

    Raises:
        ValueError: when hyper's whole-table weights l2_u, l2_m are not all zero (that term has
            a gradient on every row, which a lazy update cannot apply).
    """
    if np.any(hyper.l2_u != 0) or np.any(hyper.l2_m != 0):
        raise ValueError("lazy_adam_epoch: the whole-table L2 weights must be 0")
    most = min(batch_size, ratings.shape[0])  # rows one batch can look up, per side
    listed = (np.empty(most, np.int32), np.empty(most, np.int32))
    looked_up = (np.empty(most, np.int32), np.empty(most, np.int32))
    n_listed = np.zeros(2, np.int64)
    rows = (users, movies)
    counts = _zero_counts(sides)
    loss = 0.0
    sse = 0.0
    for start in range(0, ratings.shape[0], batch_size):
        end = min(ratings.shape[0], start + batch_size)
        squared, alpha = _gradient_step(
            ratings, rows, start, end, sides, gradients, counts, hyper, iterations
        )
        for side in range(2):
            n_listed[side] = list_rows(
                rows[side], start, end, counts[side], listed[side], looked_up[side]
            )
        iterations += 1
        activity = update_looked_up_rows(
            sides, momentums, velocities, gradients, listed, looked_up, n_listed,
            (hyper.l2_u, hyper.l2_m), (hyper.act_u, hyper.act_m), alpha, hyper.beta_1,
            hyper.beta_2, hyper.epsilon,
        )  # fmt: skip
        loss += (squared + activity[0] + activity[1]) / (end - start)
        sse += squared
    steps = -(-ratings.shape[0] // batch_size)  # one per batch, the short last one included
    return loss / max(steps, 1), sse, iterations


@njit(cache=True, nogil=True, parallel=True)
def gather(order, users, movies, ratings, out_users, out_movies, out_ratings):
    """out_x[j] = x[order[j]] for the three columns, in parallel (a shuffled copy for an epoch)."""
    n = order.shape[0]
    per_block = (n + BLOCKS - 1) // BLOCKS
    for block in prange(BLOCKS):
        for j in range(block * per_block, min(n, (block + 1) * per_block)):
            i = order[j]
            out_users[j] = users[i]
            out_movies[j] = movies[i]
            out_ratings[j] = ratings[i]
