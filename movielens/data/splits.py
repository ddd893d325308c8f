"""The split rules (`preprocess.split`): which ratings the test split and each cross-validation
fold hold out.

random: ratings drawn at random (seeded); user: each user's ratings split apart; time: the latest
ratings held out. held_out_mask gives the test split, assign_folds and fold_parts the folds;
docs/protocols.md explains them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from movielens.data.ids import index_in, sorted_unique
from movielens.plumbing.choices import SPLITS
from movielens.plumbing.errors import PipelineError

NEVER_HELD_OUT = -1  # the fold of a rating that is in every fold's training part


def time_order(ratings: pd.DataFrame) -> np.ndarray:
    """Row positions from the earliest rating to the latest; ties by userId, then movieId.

    After drop_duplicates a (userId, movieId) pair is unique, so the order is total: the same
    ratings give the same order whatever their order in the file.
    """
    return np.lexsort(
        (
            ratings["movieId"].to_numpy(),
            ratings["userId"].to_numpy(),
            ratings["timestamp"].to_numpy(),
        )
    )


def ranks_within_users(
    user_ids: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A random rank of each rating among its user's ratings, and its user's number of ratings.

    Returns:
        rank int64 (n,): 0..n_u - 1 over each user's n_u ratings, a random order drawn from `rng`;
        count int64 (n,): n_u of the rating's user.
    """
    n = len(user_ids)
    order = rng.permutation(n)
    order = order[np.argsort(user_ids[order], kind="stable")]  # grouped by user, shuffled within
    grouped = user_ids[order]
    starts = np.flatnonzero(np.append(True, grouped[1:] != grouped[:-1]))
    sizes = np.diff(np.append(starts, n))
    rank, count = np.empty(n, np.int64), np.empty(n, np.int64)
    rank[order] = np.arange(n) - np.repeat(starts, sizes)
    count[order] = np.repeat(sizes, sizes)
    return rank, count


def _unknown(split: str) -> PipelineError:
    return PipelineError(f"preprocess.split={split!r} is unknown; use one of {', '.join(SPLITS)}")


def _refuse_empty(test_size: float, n: int, n_test: int, split: str) -> None:
    if n_test == 0 or n_test == n:
        raise PipelineError(
            f"test_size={test_size} of {n} ratings leaves {'no test' if n_test == 0 else 'no training'} "
            f"ratings{'' if split == 'random' else f' with preprocess.split={split}'}; "
            "change preprocess.test_size or keep more users and movies"
        )


def held_out_mask(ratings: pd.DataFrame, test_size: float, seed: int, split: str) -> np.ndarray:
    """Which ratings the test split takes; bool (n,).

    - random: round(n * test_size) ratings drawn at random (seeded).
    - user: each user's ratings are split apart: min(round(n_u * test_size), n_u - 1) of them,
      drawn at random (seeded), so every test user has training ratings; a user with one rating
      stays in training.
    - time: the latest round(n * test_size) ratings in time_order, so no test rating is earlier
      than a training rating; `seed` plays no part.

    Raises:
        PipelineError: when either part would be empty, or `split` is unknown.
    """
    n = len(ratings)
    is_test = np.zeros(n, dtype=bool)
    if split == "random":
        n_test = round(n * test_size)
        _refuse_empty(test_size, n, n_test, split)
        is_test[np.random.default_rng(seed).permutation(n)[:n_test]] = True
    elif split == "user":
        rank, count = ranks_within_users(ratings["userId"].to_numpy(), np.random.default_rng(seed))
        # np.rint rounds half to even, as round() does for the other rules.
        is_test = rank < np.minimum(np.rint(count * test_size), count - 1)
        _refuse_empty(test_size, n, int(is_test.sum()), split)
    elif split == "time":
        n_test = round(n * test_size)
        _refuse_empty(test_size, n, n_test, split)
        is_test[time_order(ratings)[n - n_test :]] = True
    else:
        raise _unknown(split)
    return is_test


def assign_folds(ratings: pd.DataFrame, folds: int, seed: int, split: str) -> np.ndarray:
    """The fold 0..folds-1 that holds each rating out, or NEVER_HELD_OUT.

    - random: a seeded permutation dealt round-robin, so fold sizes differ by at most one.
    - user: each user's ratings shuffled (seeded) and dealt round-robin from a random fold, so a
      held-out fold takes at most one rating in `folds` of each user and every held-out user has
      training ratings; a user with one rating is never held out.
    - time: the ratings in time_order (ties by userId, then movieId) cut into folds + 1 equal
      blocks; fold k holds out block k + 1 and trains on the blocks before it (expanding window,
      as scikit-learn's TimeSeriesSplit); block 0 is never held out; `seed` plays no part.

    Returns:
        int64 (n,).

    Raises:
        PipelineError: when `split` is unknown.
    """
    n = len(ratings)
    fold = np.empty(n, np.int64)
    rng = np.random.default_rng(seed)
    if split == "random":
        fold[rng.permutation(n)] = np.arange(n) % folds
    elif split == "user":
        user_ids = ratings["userId"].to_numpy()
        rank, count = ranks_within_users(user_ids, rng)
        users = sorted_unique(user_ids)
        offset = rng.integers(0, folds, len(users))[index_in(users, user_ids)]
        fold = np.where(count > 1, (rank + offset) % folds, NEVER_HELD_OUT)
    elif split == "time":
        fold[time_order(ratings)] = np.arange(n) * (folds + 1) // n - 1
    else:
        raise _unknown(split)
    return fold


def fold_parts(fold: np.ndarray, k: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of fold k's training and held-out ratings, from assign_folds' `fold`.

    Under `time` only earlier blocks train; under the other rules every rating not held out does.
    """
    held_out = fold == k
    return (fold < k) if split == "time" else ~held_out, held_out
