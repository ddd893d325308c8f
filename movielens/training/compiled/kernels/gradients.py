"""A batch's loss gradients, row by row, and the squared error of the tables' predictions.

For a batch of `count` ratings with rows u (users' table), m (movies') and rating r:

    logit = sum(u[:dim] * m[:dim]) + u[dim] + m[dim]
    pred  = lo + span * sigmoid(logit)
    loss  = sum((pred - r)^2) / count                     # Keras' MSE over the batch
          + sum(act_u * u^2 + act_m * m^2) / count        # activity_regularizer, per column

Each row's gradient of these terms is summed into its chunk's buffers (layout.CHUNKS chunks);
the whole-table L2 term's is added by the Adam kernels (movielens.training.compiled.kernels.adam).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from movielens.training.compiled.kernels.layout import CHUNKS, FASTMATH


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _sigmoid(x):
    return np.float32(1.0) / (np.float32(1.0) + np.exp(-x))


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _dot(a, b, n):
    """sum(a[:n] * b[:n])."""
    total = np.float32(0.0)
    for k in range(n):
        total += a[k] * b[k]
    return total


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _accumulate(ratings, rows, start, end, inv_count, sides, gradients, counts, lo, span, act):
    """Add the loss gradients of ratings start..end-1 to one chunk's buffers, in order.

    rows: the (users, movies) index arrays; gradients and counts: this chunk's (rows, dim + 1)
    gradient and (rows,) rating-count buffers of each side. Returns the sum of squared errors.
    """
    (users, movies), (U, M), (GU, GM), (count_u, count_m), (act_u, act_m) = (
        rows, sides, gradients, counts, act
    )  # fmt: skip
    dim = U.shape[1] - 1
    two = np.float32(2.0)
    reg_u = two * inv_count * act_u  # d(activity penalty)/d(row) = reg * row
    reg_m = two * inv_count * act_m
    squared = 0.0
    for j in range(start, end):
        user, movie = users[j], movies[j]
        u, m, gu, gm = U[user], M[movie], GU[user], GM[movie]
        count_u[user] += 1
        count_m[movie] += 1
        unit = _sigmoid(_dot(u, m, dim) + u[dim] + m[dim])
        error = lo + span * unit - ratings[j]
        squared += error * error
        d_logit = two * span * error * unit * (np.float32(1.0) - unit) * inv_count
        for k in range(dim):
            gu[k] += d_logit * m[k] + reg_u[k] * u[k]
        for k in range(dim):
            gm[k] += d_logit * u[k] + reg_m[k] * m[k]
        gu[dim] += d_logit + reg_u[dim] * u[dim]
        gm[dim] += d_logit + reg_m[dim] * m[dim]
    return squared


@njit(cache=True, fastmath=FASTMATH, nogil=True, parallel=True)
def batch_gradients(ratings, rows, start, end, sides, gradients, counts, lo, span, act):
    """Row gradients and rating counts of one batch, chunk c into gradients[s][c], counts[s][c].

    Returns the batch's sum of squared errors.
    """
    count = end - start
    inv_count = np.float32(1.0) / np.float32(count)
    part = (count + CHUNKS - 1) // CHUNKS
    squared = np.zeros(CHUNKS)
    for c in prange(CHUNKS):
        first = min(end, start + c * part)
        chunk_gradients = (gradients[0][c], gradients[1][c])
        chunk_counts = (counts[0][c], counts[1][c])
        squared[c] = _accumulate(
            ratings, rows, first, min(end, first + part), inv_count, sides, chunk_gradients,
            chunk_counts, lo, span, act,
        )  # fmt: skip
    total = 0.0
    for c in range(CHUNKS):
        total += squared[c]
    return total


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def squared_error(users, movies, ratings, U, M, lo, span):
    """Sum of squared errors of the tables' predictions on the given pairs."""
    dim = U.shape[1] - 1
    total = 0.0
    for j in range(ratings.shape[0]):
        u, m = U[users[j]], M[movies[j]]
        error = lo + span * _sigmoid(_dot(u, m, dim) + u[dim] + m[dim]) - ratings[j]
        total += error * error
    return total
