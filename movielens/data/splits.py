"""The split rules (`preprocess.split`): which ratings the test split and each cross-validation
fold hold out.

random: ratings drawn by a seeded hash; user: each user's ratings split apart; time: the latest
ratings held out; heldout_users: whole users held out (seeded hash), each one's earliest ratings
given as a history (history_mask) and the rest predicted. held_out_mask gives the test split,
assign_folds and fold_parts the folds; docs/protocols.md explains them.

The test split draws with split_hash, a function of (seed, userId[, movieId]) alone, so the pandas
path and the Spark path (movielens/spark/split.py applies this very function to each batch) hold
out the same ratings, whatever the rows' order or partitioning.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from movielens.data.ids import index_in, sorted_unique
from movielens.plumbing.choices import SPLITS
from movielens.plumbing.errors import PipelineError

NEVER_HELD_OUT = -1  # the fold of a rating that is in every fold's training part

# splitmix64 (Steele, Lea and Flood 2014; Vigna's reference C): the golden-ratio increment and the
# two multipliers of its finaliser, a bijection of 64-bit words that mixes every input bit.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
_UNIT = 2.0**-53  # the top 53 bits of a word, scaled, are a float64 in [0, 1)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 words (numpy's uint64 arithmetic wraps modulo 2**64)."""
    z = (z ^ (z >> np.uint64(30))) * _MIX_1
    z = (z ^ (z >> np.uint64(27))) * _MIX_2
    return z ^ (z >> np.uint64(31))


def split_hash(seed: int, *keys: np.ndarray) -> np.ndarray:
    """A uniform draw in [0, 1) for each row, a function of `seed` and the row's keys alone.

    Each key (an integer array: userId, then movieId) is folded into the word by splitmix64:
    z = mix(z + golden) starting from the seed, then z = mix((z ^ key) + golden) per key.

    Args:
        seed: preprocess.seed (any integer; taken modulo 2**64).
        keys: equal-length integer arrays, ids in 0..2**31 - 1.

    Returns:
        float64 (n,): the top 53 bits of the word, times 2**-53.
    """
    n = len(keys[0])
    z = _mix(np.full(n, seed % 2**64, dtype=np.uint64) + _GOLDEN)
    for key in keys:
        z = _mix((z ^ np.asarray(key).astype(np.int64).astype(np.uint64)) + _GOLDEN)
    return (z >> np.uint64(11)).astype(np.float64) * _UNIT


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


def unknown_split(split: str) -> PipelineError:
    """The one-line refusal of an unknown preprocess.split (either engine)."""
    return PipelineError(f"preprocess.split={split!r} is unknown; use one of {', '.join(SPLITS)}")


def _held_out_users(user_ids: np.ndarray, test_size: float, seed: int) -> np.ndarray:
    """Whether each rating's user is held out: split_hash(seed, userId) < test_size.

    Raises:
        PipelineError: when that holds out no user or every user.
    """
    is_test = split_hash(seed, user_ids) < test_size
    refuse_no_users(test_size, len(sorted_unique(user_ids)), len(sorted_unique(user_ids[is_test])))
    return is_test


def refuse_no_users(test_size: float, n_users: int, n_held: int) -> None:
    """Refuse a heldout_users split that holds out no user or every user (either engine).

    Raises:
        PipelineError: when n_held is 0 or n_users.
    """
    if n_held == 0 or n_held == n_users:
        raise PipelineError(
            f"test_size={test_size} of {n_users} users holds out "
            f"{'no user' if n_held == 0 else 'every user, leaving no training ratings'} with "
            "preprocess.split=heldout_users; change preprocess.test_size or keep more users"
        )


def history_mask(ratings: pd.DataFrame, history_size: float) -> np.ndarray:
    """Which ratings each user gives as a history under heldout_users; bool (n,).

    Each user's earliest max(1, round(history_size * n_u)) ratings in time_order (ties as under
    `time`: by userId, then movieId), so every history rating is no later than the user's
    predicted ones and every user gives at least one; a user with one rating gives only a history.
    """
    order = time_order(ratings)
    rank, count = ranks_in_order(ratings["userId"].to_numpy(), order)
    return rank < np.maximum(1, np.rint(count * history_size))


def refuse_empty(test_size: float, n: int, n_test: int, split: str) -> None:
    """Refuse a test split that leaves no test or no training rating (either engine).

    Raises:
        PipelineError: when n_test is 0 or n.
    """
    if n_test == 0 or n_test == n:
        raise PipelineError(
            f"test_size={test_size} of {n} ratings leaves {'no test' if n_test == 0 else 'no training'} "
            f"ratings{'' if split == 'random' else f' with preprocess.split={split}'}; "
            "change preprocess.test_size or keep more users and movies"
        )


def held_out_mask(ratings: pd.DataFrame, test_size: float, seed: int, split: str) -> np.ndarray:
    """Which ratings the test split takes; bool (n,).

    - random: the ratings whose split_hash(seed, userId, movieId) < test_size, so about
      n * test_size of them (not exactly round(n * test_size)).
    - user: each user's ratings in order of split_hash(seed, userId, movieId) (ties by movieId);
      the first min(round(n_u * test_size), n_u - 1) go to test, so every test user has training
      ratings; a user with one rating stays in training.
    - time: the latest round(n * test_size) ratings in time_order, so no test rating is earlier
      than a training rating; `seed` plays no part.
    - heldout_users: every rating of the users whose split_hash(seed, userId) < test_size, so
      about n_users * test_size users; history_mask then tells the history they give from the
      ratings to predict.

    Raises:
        PipelineError: when either part would be empty, or `split` is unknown.
    """
    n = len(ratings)
    user_ids, movie_ids = ratings["userId"].to_numpy(), ratings["movieId"].to_numpy()
    if split == "random":
        is_test = split_hash(seed, user_ids, movie_ids) < test_size
        refuse_empty(test_size, n, int(is_test.sum()), split)
    elif split == "user":
        order = np.lexsort((movie_ids, split_hash(seed, user_ids, movie_ids)))
        rank, count = ranks_in_order(user_ids, order)
        # np.rint rounds half to even, as round() does for the other rules (Spark: bround).
        is_test = rank < np.minimum(np.rint(count * test_size), count - 1)
        refuse_empty(test_size, n, int(is_test.sum()), split)
    elif split == "time":
        n_test = round(n * test_size)
        refuse_empty(test_size, n, n_test, split)
        is_test = np.zeros(n, dtype=bool)
        is_test[time_order(ratings)[n - n_test :]] = True
    elif split == "heldout_users":
        is_test = _held_out_users(user_ids, test_size, seed)
    else:
        raise unknown_split(split)
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


def refuse_no_targets(
    n_test: int, n_history: int, n_history_users: int, history_size: float
) -> None:
    """Refuse a heldout_users test split whose held-out users give every rating as history.

    Args:
        n_test: the ratings left to predict; n_history, n_history_users: the history's ratings and users.

    Raises:
        PipelineError: when n_test is 0.
    """
    if n_test == 0:
        raise PipelineError(
            f"history_size={history_size} leaves no rating to predict with preprocess.split="
            f"heldout_users: the {n_history_users} held-out users' {n_history} "
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
        raise unknown_split(split)
    return fold


def fold_parts(fold: np.ndarray, k: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of fold k's training and held-out ratings, from assign_folds' `fold`.

    Under `time` only earlier blocks train; under the other rules every rating not held out does
    (under heldout_users: every rating of the other groups' users, none of group k's).
    """
    held_out = fold == k
    return (fold < k) if split == "time" else ~held_out, held_out
