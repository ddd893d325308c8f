"""The split rules (`preprocess.split`): which ratings the test split and each cross-validation
fold hold out.

random: ratings drawn at random (seeded); user: each user's ratings split apart; time: the latest
ratings held out; heldout_users: whole users held out (seeded), each one's earliest ratings given
as a history (history_mask) and the rest predicted. held_out_mask gives the test split,
assign_folds and fold_parts the folds; docs/protocols.md explains them.
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
    return ranks_in_order(user_ids, rng.permutation(len(user_ids)))


def ranks_in_order(user_ids: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each rating's rank among its user's ratings as they come in `order` (a permutation of the
    rows), and its user's number of ratings; both int64 (n,)."""
    n = len(user_ids)
    order = order[np.argsort(user_ids[order], kind="stable")]  # grouped by user, in `order` within
    grouped = user_ids[order]
    starts = np.flatnonzero(np.append(True, grouped[1:] != grouped[:-1]))
    sizes = np.diff(np.append(starts, n))
    rank, count = np.empty(n, np.int64), np.empty(n, np.int64)
    rank[order] = np.arange(n) - np.repeat(starts, sizes)
    count[order] = np.repeat(sizes, sizes)
    return rank, count


def _unknown(split: str) -> PipelineError:
    return PipelineError(f"preprocess.split={split!r} is unknown; use one of {', '.join(SPLITS)}")


def _held_out_users(user_ids: np.ndarray, test_size: float, seed: int) -> np.ndarray:
    """Whether each rating's user is one of the round(n_users * test_size) users drawn (seeded).

    Raises:
        PipelineError: when that holds out no user or every user.
    """
    users = sorted_unique(user_ids)
    n_held = round(len(users) * test_size)
    if n_held == 0 or n_held == len(users):
        raise PipelineError(
            f"test_size={test_size} of {len(users)} users holds out "
            f"{'no user' if n_held == 0 else 'every user, leaving no training ratings'} with "
            "preprocess.split=heldout_users; change preprocess.test_size or keep more users"
        )
    held = np.zeros(len(users), dtype=bool)
    held[np.random.default_rng(seed).permutation(len(users))[:n_held]] = True
    return held[index_in(users, user_ids)]


def history_mask(ratings: pd.DataFrame, history_size: float) -> np.ndarray:
    """Which ratings each user gives as a history under heldout_users; bool (n,).

    Each user's earliest max(1, round(history_size * n_u)) ratings in time_order (ties as under
    `time`: by userId, then movieId), so every history rating is no later than the user's
    predicted ones and every user gives at least one; a user with one rating gives only a history.
    """
    order = time_order(ratings)
    rank, count = ranks_in_order(ratings["userId"].to_numpy(), order)
    return rank < np.maximum(1, np.rint(count * history_size))


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
    - heldout_users: every rating of round(n_users * test_size) users drawn at random (seeded);
      history_mask then tells the history they give from the ratings to predict.

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
    elif split == "heldout_users":
        is_test = _held_out_users(ratings["userId"].to_numpy(), test_size, seed)
    else:
        raise _unknown(split)
    return is_test


def split_history(
    held_out: pd.DataFrame, split: str, history_size: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The held-out ratings' history (given at prediction time) and the ratings to predict.

    Under heldout_users the held-out users' earliest ratings (history_mask) are their history;
    under the other rules the history has no rows and `held_out` is returned.
    """
    if split != "heldout_users":
        return held_out[:0], held_out
    given = history_mask(held_out, history_size)
    return held_out[given].reset_index(drop=True), held_out[~given].reset_index(drop=True)


def refuse_no_targets(history: pd.DataFrame, test: pd.DataFrame, history_size: float) -> None:
    """Refuse a heldout_users test split whose held-out users give every rating as history.

    Raises:
        PipelineError: when `test` has no rows.
    """
    if len(test) == 0:
        raise PipelineError(
            f"history_size={history_size} leaves no rating to predict with preprocess.split="
            f"heldout_users: the {history['userId'].nunique()} held-out users' {len(history)} "
            "ratings all go to their histories (at least one each); lower preprocess.history_size, "
            "raise preprocess.test_size or keep more ratings"
        )


def assign_folds(ratings: pd.DataFrame, folds: int, seed: int, split: str) -> np.ndarray:
    """The fold 0..folds-1 that holds each rating out, or NEVER_HELD_OUT.

    - random: a seeded permutation dealt round-robin, so fold sizes differ by at most one.
    - user: each user's ratings shuffled (seeded) and dealt round-robin from a random fold, so a
      held-out fold takes at most one rating in `folds` of each user and every held-out user has
      training ratings; a user with one rating is never held out.
    - time: the ratings in time_order (ties by userId, then movieId) cut into folds + 1 equal
      blocks; fold k holds out block k + 1 and trains on the blocks before it (expanding window,
      as scikit-learn's TimeSeriesSplit); block 0 is never held out; `seed` plays no part.
    - heldout_users: the users shuffled (seeded) and dealt round-robin into `folds` disjoint
      groups (sizes differ by at most one); fold k holds out every rating of group k's users.

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
    elif split == "heldout_users":
        user_ids = ratings["userId"].to_numpy()
        users = sorted_unique(user_ids)
        group = np.empty(len(users), np.int64)
        group[rng.permutation(len(users))] = np.arange(len(users)) % folds
        fold = group[index_in(users, user_ids)]
    else:
        raise _unknown(split)
    return fold


def fold_parts(fold: np.ndarray, k: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of fold k's training and held-out ratings, from assign_folds' `fold`.

    Under `time` only earlier blocks train; under the other rules every rating not held out does
    (under heldout_users: every rating of the other groups' users, none of group k's).
    """
    held_out = fold == k
    return (fold < k) if split == "time" else ~held_out, held_out
