"""Numba kernels of the training loop: a batch's row gradients and Keras' Adam, on NumPy arrays.

Each side of the model (users, movies) is one float32 table of shape (rows, dim + 1): the
embedding in columns 0..dim-1 and the bias in the last column, so that a rating reads one row per
side. For a batch of `count` ratings with rows u, m and rating r:

    logit = sum(u[:dim] * m[:dim]) + u[dim] + m[dim]
    pred  = lo + span * sigmoid(logit)
    loss  = sum((pred - r)^2) / count                     # Keras' MSE over the batch
          + sum(act_u * u^2 + act_m * m^2) / count        # activity_regularizer, per column
          + sum(l2_u * U^2) + sum(l2_m * M^2)             # embeddings_regularizer, whole tables

The gradient of the first two terms is summed row by row into gradient buffers; Adam then
updates every row of both tables (the whole-table term reaches every row), exactly as Keras'
`Adam` does with dense gradients.

Results do not depend on the number of threads: a batch is cut into CHUNKS fixed parts, each
summing into its own buffer, and Adam's rows are cut into BLOCKS fixed blocks whose partial sums
are added in order. Numba caches the compiled code beside this file (`__pycache__`), so only the
first run after a change compiles (a second or two).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# Fast-math flags that let LLVM vectorise the row loops (reassociating the dot product) but keep
# NaN and infinity meaningful, so a diverging run is still seen as one.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
CHUNKS = 2  # parts of a batch whose row gradients are summed apart, in parallel
BLOCKS = 64  # blocks of table rows that Adam updates in parallel


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _sigmoid(x):
    return np.float32(1.0) / (np.float32(1.0) + np.exp(-x))


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _accumulate(
    users,
    movies,
    ratings,
    start,
    end,
    inv_count,
    U,
    M,
    GU,
    GM,
    hit_u,
    hit_m,
    lo,
    span,
    act_u,
    act_m,
):
    """Add the rows' loss gradients of ratings start..end-1 into GU, GM (one chunk, in order).

    hit_u, hit_m flag the rows that got a gradient (chunks may flag a row at once: both write 1).
    Returns the chunk's sum of squared errors and its activity penalty (already / count).
    """
    dim = U.shape[1] - 1
    two = np.float32(2.0)
    squared = 0.0
    penalty = 0.0
    for j in range(start, end):
        u, m = U[users[j]], M[movies[j]]
        gu, gm = GU[users[j]], GM[movies[j]]
        hit_u[users[j]] = 1
        hit_m[movies[j]] = 1
        dot = np.float32(0.0)
        for k in range(dim):
            dot += u[k] * m[k]
        norm = np.float32(0.0)
        for k in range(dim + 1):
            norm += act_u[k] * u[k] * u[k] + act_m[k] * m[k] * m[k]
        unit = _sigmoid(dot + u[dim] + m[dim])
        error = lo + span * unit - ratings[j]
        squared += error * error
        penalty += norm
        d_logit = two * span * error * unit * (np.float32(1.0) - unit) * inv_count
        for k in range(dim):
            gu[k] += d_logit * m[k] + two * inv_count * act_u[k] * u[k]
            gm[k] += d_logit * u[k] + two * inv_count * act_m[k] * m[k]
        gu[dim] += d_logit + two * inv_count * act_u[dim] * u[dim]
        gm[dim] += d_logit + two * inv_count * act_m[dim] * m[dim]
    return squared, penalty * inv_count


@njit(cache=True, fastmath=FASTMATH, nogil=True, parallel=True)
def _batch_gradients(
    users, movies, ratings, start, end, U, M, GU, GM, hit_u, hit_m, lo, span, act_u, act_m
):
    """Row gradients of one batch into GU[c], GM[c] for each chunk c; returns (sse, penalty)."""
    count = end - start
    inv_count = np.float32(1.0) / np.float32(count)
    part = (count + CHUNKS - 1) // CHUNKS
    sums = np.zeros((CHUNKS, 2))
    for c in prange(CHUNKS):
        lo_row = min(end, start + c * part)
        hi_row = min(end, lo_row + part)
        sums[c, 0], sums[c, 1] = _accumulate(
            users,
            movies,
            ratings,
            lo_row,
            hi_row,
            inv_count,
            U,
            M,
            GU[c],
            GM[c],
            hit_u,
            hit_m,
            lo,
            span,
            act_u,
            act_m,
        )
    squared = 0.0
    penalty = 0.0
    for c in range(CHUNKS):
        squared += sums[c, 0]
        penalty += sums[c, 1]
    return squared, penalty


@njit(cache=True, fastmath=FASTMATH, nogil=True, parallel=True)
def _adam(W, m, v, G, hit, l2, alpha, beta_1, beta_2, epsilon):
    """Keras' Adam on every row of W with gradient sum(G) + 2 * l2 * W; zeroes G and hit.

    Rows whose `hit` flag is 0 have no gradient in G, which is then not read: a small batch
    touches few rows, and reading G is a large share of the memory traffic.

    Returns the whole-table penalty sum(l2 * W^2) of the weights before the update.
    """
    rows, columns = W.shape
    per_block = (rows + BLOCKS - 1) // BLOCKS
    keep_1 = np.float32(1.0) - beta_1
    keep_2 = np.float32(1.0) - beta_2
    two = np.float32(2.0)
    partial = np.zeros(BLOCKS)
    for block in prange(BLOCKS):
        total = np.float32(0.0)
        for i in range(block * per_block, min(rows, (block + 1) * per_block)):
            w, m_i, v_i = W[i], m[i], v[i]
            got_gradient = hit[i] != 0
            hit[i] = 0
            for k in range(columns):
                g = two * l2[k] * w[k]
                if got_gradient:
                    for c in range(CHUNKS):
                        g += G[c, i, k]
                        G[c, i, k] = 0.0
                total += l2[k] * w[k] * w[k]
                m_i[k] += (g - m_i[k]) * keep_1
                v_i[k] += (g * g - v_i[k]) * keep_2
                w[k] -= m_i[k] * alpha / (np.sqrt(v_i[k]) + epsilon)
        partial[block] = total
    penalty = 0.0
    for block in range(BLOCKS):
        penalty += partial[block]
    return penalty


@njit(cache=True, fastmath=FASTMATH, nogil=True)
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
        hyper: (lo, span, act_u, act_m, l2_u, l2_m, learning_rate, beta_1, beta_2, epsilon):
            float32 scalars, and for act_* and l2_* float32 (dim + 1,) per-column L2 weights of
            the activity and whole-table terms of each side.
        iterations: Adam's step count before this epoch.

    Returns:
        (mean objective over the steps, sum of squared errors, step count after the epoch).
    """
    lo, span, act_u, act_m, l2_u, l2_m, learning_rate, beta_1, beta_2, epsilon = hyper
    U, M = sides
    hits = (np.zeros(U.shape[0], np.uint8), np.zeros(M.shape[0], np.uint8))  # rows with a gradient
    n = ratings.shape[0]
    loss = 0.0
    sse = 0.0
    steps = 0
    for start in range(0, n, batch_size):
        end = min(n, start + batch_size)
        squared, penalty = _batch_gradients(
            users,
            movies,
            ratings,
            start,
            end,
            U,
            M,
            gradients[0],
            gradients[1],
            hits[0],
            hits[1],
            lo,
            span,
            act_u,
            act_m,
        )
        iterations += 1
        t = np.float32(iterations)
        alpha = learning_rate * np.sqrt(np.float32(1.0) - beta_2**t) / (np.float32(1.0) - beta_1**t)
        for side, l2 in ((0, l2_u), (1, l2_m)):
            penalty += _adam(
                sides[side], momentums[side], velocities[side], gradients[side], hits[side], l2,
                alpha, beta_1, beta_2, epsilon,
            )  # fmt: skip
        loss += squared / (end - start) + penalty
        sse += squared
        steps += 1
    return loss / max(steps, 1), sse, iterations


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def squared_error(users, movies, ratings, U, M, lo, span):
    """Sum of squared errors of the tables' predictions on the given pairs."""
    dim = U.shape[1] - 1
    total = 0.0
    for j in range(ratings.shape[0]):
        u, m = U[users[j]], M[movies[j]]
        dot = np.float32(0.0)
        for k in range(dim):
            dot += u[k] * m[k]
        error = lo + span * _sigmoid(dot + u[dim] + m[dim]) - ratings[j]
        total += error * error
    return total


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


def warm_up() -> None:
    """Compile the kernels (or load them from Numba's cache) for the types AdamTrainer passes.

    Args are tiny arrays of exactly those types, so a later real call finds the code ready.
    """
    f32 = np.float32
    index = np.zeros(3, np.int32)
    ratings = np.ones(3, np.float32)
    sides = (np.zeros((2, 3), f32), np.zeros((2, 3), f32))
    state = tuple(tuple(np.zeros_like(s) for s in sides) for _ in range(2))
    gradients = tuple(np.zeros((CHUNKS, *s.shape), f32) for s in sides)
    columns = np.zeros(3, f32)
    hyper = (f32(1), f32(4), columns, columns, columns, columns, f32(1e-3), f32(0.9), f32(0.999), f32(1e-7))  # fmt: skip
    adam_epoch(index, index, ratings, 2, sides, *state, gradients, hyper, 0)
    squared_error(index, index, ratings, *sides, f32(1), f32(4))
    gather(np.arange(3), index, index, ratings, index.copy(), index.copy(), ratings.copy())
