"""Sorted id tables: the distinct ids of an array, and where each id stands in such a table.

One home for the lookup that encodes ids (preprocess), deals folds per user (cross-validation),
finds a user's or a movie's row (recommend) and tells drawn pairs apart (synth).
"""

from __future__ import annotations

import numpy as np

# A table with one slot per id 0..max is used when max < 2 * count + this many.
DENSE_ID_SLOTS = 1 << 20


def _dense(high: int, n: int) -> bool:
    """Whether a table with one slot per id 0..high is cheap next to n values (MovieLens ids are)."""
    return high < 2 * n + DENSE_ID_SLOTS


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """The distinct values of an integer array, ascending, in the array's dtype.

    Counting (O(n + max)) when the values are non-negative and dense, sorting otherwise; both are
    much faster than np.unique, which hashes integer arrays from numpy 2.3 on.
    """
    if len(values) == 0:
        return values[:0].copy()
    if values.min() >= 0 and _dense(int(values.max()), len(values)):
        return np.flatnonzero(np.bincount(values)).astype(values.dtype)
    ordered = np.sort(values)
    return ordered[np.append(True, ordered[1:] != ordered[:-1])]


def index_in(vocabulary: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The position of each value in the sorted, distinct `vocabulary`, int32; -1 where absent.

    Args:
        vocabulary: (k,) ascending distinct integers, as sorted_unique gives them.
        values: (n,) integers to look up.

    Returns:
        (n,) int32.
    """
    if len(vocabulary) == 0:
        return np.full(len(values), -1, dtype=np.int32)
    high = int(vocabulary[-1])
    if vocabulary[0] >= 0 and _dense(high, len(values)):
        # Slot high + 1 answers -1; values below 0 clip to -1, which also indexes that last slot.
        table = np.full(high + 2, -1, dtype=np.int32)
        table[vocabulary] = np.arange(len(vocabulary), dtype=np.int32)
        return table[np.clip(values, -1, high + 1)]
    position = np.minimum(np.searchsorted(vocabulary, values), len(vocabulary) - 1)
    return np.where(vocabulary[position] == values, position, -1).astype(np.int32)
