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
`Adam` does with dense gradients (adam_epoch). The lazy variant (lazy_adam_epoch, TensorFlow
Addons' LazyAdam) updates the moments and weights of only the rows the batch looked up, each with
the sum of its row gradients, so a step costs the batch, not the tables; the step count stays
global. It has no whole-table term (that term's gradient is on every row) and refuses one.

Results depend neither on the number of threads (a batch is cut into CHUNKS fixed parts, each
summing into its own buffers; Adam's rows into BLOCKS fixed blocks, their partial sums added in
order) nor on whether Numba compiled the code or loaded it from its cache (a folder named by this
file's content, outside the checkout: movielens.training.compiled.cache), which
fast-math does not promise: tests/test_fit.py checks it (docs/pipeline.md).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from movielens.training.compiled.cache import use_content_keyed_cache

# Numba picks a function's cache folder when @njit(cache=True) decorates it: register first.
use_content_keyed_cache()

# Their OpenMP threads wait passively between loops: movielens.plumbing.runtime.set_up sets that.

CHUNKS = 2  # parts of a batch whose row gradients are summed apart, in parallel
assert CHUNKS == 2, "_adam_rows reads the two chunks' gradients by name"
BLOCKS = 64  # blocks of table rows that Adam updates in parallel
# Fast-math flags that let LLVM vectorise the row loops (reassociating the dot product) but keep
# NaN and infinity meaningful, so that a diverging run is still seen as one.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


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
def _batch_gradients(ratings, rows, start, end, sides, gradients, counts, lo, span, act):
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


@njit(cache=True, fastmath=FASTMATH, nogil=True, inline="always")
def _step_size(learning_rate, beta_1, beta_2, iterations):
    """Keras' Adam step size at step t: learning_rate * sqrt(1 - beta_2^t) / (1 - beta_1^t)."""
    t = np.float32(iterations)
    return learning_rate * np.sqrt(np.float32(1.0) - beta_2**t) / (np.float32(1.0) - beta_1**t)


@njit(cache=True, fastmath=FASTMATH, nogil=True, inline="always")
def _adam_update(weight, m, v, k, g, alpha, keep_1, keep_2, epsilon):
    """Keras' Adam for one weight with gradient g: updates m[k], v[k]; returns the new weight."""
    m_k = m[k] + (g - m[k]) * keep_1
    v_k = v[k] + (g * g - v[k]) * keep_2
    m[k] = m_k
    v[k] = v_k
    return weight - m_k * alpha / (np.sqrt(v_k) + epsilon)


@njit(cache=True, fastmath=FASTMATH, nogil=True, inline="always")
def _adam_looked_up(w, m, v, g_0, g_1, looked_up, l2, act, alpha, keep_1, keep_2, epsilon):
    """Adam on one row a batch looked up `looked_up` times, gradient g_0 + g_1 + 2 * l2 * w.

    Zeroes g_0 and g_1; returns the row's sum(l2 * w^2) and looked_up * sum(act * w^2).
    """
    two = np.float32(2.0)
    table = np.float32(0.0)
    activity = np.float32(0.0)
    for k in range(w.shape[0]):
        x = w[k]
        table += l2[k] * x * x
        activity += looked_up * act[k] * x * x
        g = two * l2[k] * x + g_0[k]
        g += g_1[k]
        w[k] = _adam_update(x, m, v, k, g, alpha, keep_1, keep_2, epsilon)
    g_0[:] = 0.0
    g_1[:] = 0.0
    return table, activity


@njit(cache=True, fastmath=FASTMATH, nogil=True, inline="always")
def _adam_untouched(w, m, v, l2_tiled, alpha, keep_1, keep_2, epsilon):
    """Adam on consecutive rows the batch did not look up, as one flat loop over their weights.

    w, m, v: flat views of the rows; l2_tiled: the per-column L2 weights repeated row after row,
    at least as long. The only gradient is the whole-table term's. Returns sum(l2 * w^2).
    """
    two = np.float32(2.0)
    table = np.float32(0.0)
    for k in range(w.shape[0]):
        x = w[k]
        table += l2_tiled[k] * x * x
        w[k] = _adam_update(x, m, v, k, two * l2_tiled[k] * x, alpha, keep_1, keep_2, epsilon)
    return table


@njit(cache=True, fastmath=FASTMATH, nogil=True, inline="always")
def _adam_rows(W, m, v, G, counts, l2, l2_tiled, act, first, last, alpha, keep_1, keep_2, epsilon):
    """Keras' Adam on rows first..last-1 of W, gradient sum(G) + 2 * l2 * W; zeroes their G, counts.

    A row whose counts are 0 has no gradient in G, which is then not read: a small batch touches
    few rows, and reading G is a large share of the memory traffic. A run of such rows is updated
    as one flat loop, not row by row (one short remainder per run, not per row). The loops over
    weights are straight elementwise loops, so that LLVM vectorises them; docs/benchmarks.md
    ("How the kernels are shaped") has the timings behind each of these choices.

    Returns, for the weights before the update, the whole-table penalty sum(l2 * W^2) and the
    activity sum over the batch's ratings, sum(counts * act * W^2) (not yet divided by count).
    """
    columns = W.shape[1]
    W_flat, m_flat, v_flat = W.reshape(-1), m.reshape(-1), v.reshape(-1)
    table = np.float32(0.0)
    activity = np.float32(0.0)
    i = first
    while i < last:
        looked_up = counts[0, i] + counts[1, i]
        if looked_up:
            counts[0, i] = 0
            counts[1, i] = 0
            row_table, row_activity = _adam_looked_up(
                W[i], m[i], v[i], G[0, i], G[1, i], looked_up, l2, act, alpha, keep_1, keep_2,
                epsilon,
            )  # fmt: skip
            table += row_table
            activity += row_activity
            i += 1
        else:
            end = i + 1
            while end < last and counts[0, end] + counts[1, end] == 0:
                end += 1
            run = slice(i * columns, end * columns)
            table += _adam_untouched(
                W_flat[run], m_flat[run], v_flat[run], l2_tiled, alpha, keep_1, keep_2, epsilon
            )
            i = end
    return table, activity


@njit(cache=True, fastmath=FASTMATH, nogil=True, parallel=True)
def _adam(
    sides, momentums, velocities, gradients, counts, l2, l2_tiled, act, alpha, beta_1, beta_2,
    epsilon,
):  # fmt: skip
    """Keras' Adam on every row of both tables, in one parallel loop over BLOCKS blocks of each.

    The blocks of the two tables alternate, so that each thread's contiguous share of the loop
    holds as many blocks of one table as of the other (the user table is the smaller).
    Returns per table (users, movies) the penalty and activity sums of _adam_rows.
    """
    keep_1 = np.float32(1.0) - beta_1
    keep_2 = np.float32(1.0) - beta_2
    partial = np.zeros((2 * BLOCKS, 2))
    for job in prange(2 * BLOCKS):
        side = job % 2  # interleaved: each thread's share of jobs holds blocks of both tables
        block = job // 2
        W = sides[side]
        per_block = _rows_per_block(W.shape[0])
        first = block * per_block
        last = min(W.shape[0], first + per_block)
        table, activity = _adam_rows(
            W, momentums[side], velocities[side], gradients[side], counts[side], l2[side],
            l2_tiled[side], act[side], first, last, alpha, keep_1, keep_2, epsilon,
        )  # fmt: skip
        partial[job, 0] = table
        partial[job, 1] = activity
    penalty = np.zeros(2)
    activity_sum = np.zeros(2)
    for job in range(2 * BLOCKS):
        penalty[job % 2] += partial[job, 0]
        activity_sum[job % 2] += partial[job, 1]
    return penalty, activity_sum


@njit(cache=True, nogil=True)
def _list_rows(index, start, end, counts, listed, looked_up):
    """The rows index[start:end] looked up, in order of first look-up, with their look-up counts.

    Writes them into listed[:n] and looked_up[:n], zeroes their counts (both chunks), returns n.
    """
    n = 0
    for j in range(start, end):
        i = index[j]
        count = counts[0, i] + counts[1, i]
        if count:
            counts[0, i] = 0
            counts[1, i] = 0
            listed[n] = i
            looked_up[n] = count
            n += 1
    return n


@njit(cache=True, fastmath=FASTMATH, nogil=True, parallel=True)
def _lazy_adam(
    sides, momentums, velocities, gradients, listed, looked_up, n_listed, zero_l2, act, alpha,
    beta_1, beta_2, epsilon,
):  # fmt: skip
    """Adam on the listed rows of both tables only, in one parallel loop over BLOCKS parts of each.

    Each row's update is _adam_looked_up's, with no whole-table term (zero_l2: zeros), so a row
    gets the very arithmetic of the dense update's looked-up rows; rows not listed, moments
    included, are not touched. Parts are fixed shares of each list, summed in order.
    Returns per table (users, movies) the activity sum of _adam_rows.
    """
    keep_1 = np.float32(1.0) - beta_1
    keep_2 = np.float32(1.0) - beta_2
    partial = np.zeros(2 * BLOCKS)
    for job in prange(2 * BLOCKS):
        side = job % 2
        block = job // 2
        W, m, v, G = sides[side], momentums[side], velocities[side], gradients[side]
        rows, counts, l2, a = listed[side], looked_up[side], zero_l2[side], act[side]
        per_block = (n_listed[side] + BLOCKS - 1) // BLOCKS
        first = block * per_block
        last = min(n_listed[side], first + per_block)
        activity = np.float32(0.0)
        for r in range(first, last):
            i = rows[r]
            _, row_activity = _adam_looked_up(
                W[i], m[i], v[i], G[0, i], G[1, i], counts[r], l2, a, alpha, keep_1, keep_2,
                epsilon,
            )  # fmt: skip
            activity += row_activity
        partial[job] = activity
    activity_sum = np.zeros(2)
    for job in range(2 * BLOCKS):
        activity_sum[job % 2] += partial[job]
    return activity_sum


@njit(cache=True, nogil=True, inline="always")
def _rows_per_block(rows):
    return (rows + BLOCKS - 1) // BLOCKS


@njit(cache=True, nogil=True)
def _tiled(l2, rows):
    """The per-column weights l2 repeated for `rows` rows: (rows * len(l2),) float32."""
    out = np.empty(rows * l2.shape[0], np.float32)
    for i in range(rows):
        out[i * l2.shape[0] : (i + 1) * l2.shape[0]] = l2
    return out


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
    lo, span, learning_rate = hyper.lo, hyper.span, hyper.learning_rate
    act_u, act_m, l2_u, l2_m = hyper.act_u, hyper.act_m, hyper.l2_u, hyper.l2_m
    beta_1, beta_2, epsilon = hyper.beta_1, hyper.beta_2, hyper.epsilon
    rows = (users, movies)
    counts = (
        np.zeros((CHUNKS, sides[0].shape[0]), np.int32),
        np.zeros((CHUNKS, sides[1].shape[0]), np.int32),
    )  # ratings per row and chunk in the current batch
    l2_tiled = (  # for the flat loops over runs of rows, at most one block long
        _tiled(l2_u, _rows_per_block(sides[0].shape[0])),
        _tiled(l2_m, _rows_per_block(sides[1].shape[0])),
    )
    n = ratings.shape[0]
    loss = 0.0
    sse = 0.0
    steps = 0
    for start in range(0, n, batch_size):
        end = min(n, start + batch_size)
        squared = _batch_gradients(
            ratings, rows, start, end, sides, gradients, counts, lo, span, (act_u, act_m)
        )
        iterations += 1
        alpha = _step_size(learning_rate, beta_1, beta_2, iterations)
        loss += squared / (end - start)
        table, activity = _adam(
            sides, momentums, velocities, gradients, counts, (l2_u, l2_m), l2_tiled,
            (act_u, act_m), alpha, beta_1, beta_2, epsilon,
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
    lo, span, learning_rate = hyper.lo, hyper.span, hyper.learning_rate
    act_u, act_m, l2_u, l2_m = hyper.act_u, hyper.act_m, hyper.l2_u, hyper.l2_m
    beta_1, beta_2, epsilon = hyper.beta_1, hyper.beta_2, hyper.epsilon
    if np.any(l2_u != 0) or np.any(l2_m != 0):
        raise ValueError("lazy_adam_epoch: the whole-table L2 weights must be 0")
    rows = (users, movies)
    counts = (
        np.zeros((CHUNKS, sides[0].shape[0]), np.int32),
        np.zeros((CHUNKS, sides[1].shape[0]), np.int32),
    )
    most = min(batch_size, ratings.shape[0])  # rows one batch can look up, per side
    listed = (np.empty(most, np.int32), np.empty(most, np.int32))
    looked_up = (np.empty(most, np.int32), np.empty(most, np.int32))
    n_listed = np.zeros(2, np.int64)
    n = ratings.shape[0]
    loss = 0.0
    sse = 0.0
    steps = 0
    for start in range(0, n, batch_size):
        end = min(n, start + batch_size)
        squared = _batch_gradients(
            ratings, rows, start, end, sides, gradients, counts, lo, span, (act_u, act_m)
        )
        for side in range(2):
            n_listed[side] = _list_rows(
                rows[side], start, end, counts[side], listed[side], looked_up[side]
            )
        iterations += 1
        alpha = _step_size(learning_rate, beta_1, beta_2, iterations)
        activity = _lazy_adam(
            sides, momentums, velocities, gradients, listed, looked_up, n_listed, (l2_u, l2_m),
            (act_u, act_m), alpha, beta_1, beta_2, epsilon,
        )  # fmt: skip
        loss += (squared + activity[0] + activity[1]) / (end - start)
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
        error = lo + span * _sigmoid(_dot(u, m, dim) + u[dim] + m[dim]) - ratings[j]
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
