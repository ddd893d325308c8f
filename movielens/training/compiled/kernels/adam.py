"""Keras' Adam on the tables: on every row (dense), or on the rows a batch looked up (lazy).

update_every_row updates every row of both tables, exactly as Keras' `Adam` does with dense
gradients (the whole-table L2 term reaches every row); update_looked_up_rows (TensorFlow Addons'
LazyAdam) updates the moments and weights of only the rows the batch looked up, each with the
sum of its row gradients, so a step costs the batch, not the tables. The rows are cut into
layout.BLOCKS blocks, updated in parallel and summed in order.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from movielens.training.compiled.kernels.layout import BLOCKS, FASTMATH, rows_per_block


@njit(cache=True, fastmath=FASTMATH, nogil=True, inline="always")
def step_size(learning_rate, beta_1, beta_2, iterations):
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
def update_every_row(
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
        per_block = rows_per_block(W.shape[0])
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
def list_rows(index, start, end, counts, listed, looked_up):
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
def update_looked_up_rows(
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


@njit(cache=True, nogil=True)
def tiled(l2, rows):
    """The per-column weights l2 repeated for `rows` rows: (rows * len(l2),) float32."""
    out = np.empty(rows * l2.shape[0], np.float32)
    for i in range(rows):
        out[i * l2.shape[0] : (i + 1) * l2.shape[0]] = l2
    return out
