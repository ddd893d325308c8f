"""Top-k lists: each user's k best-scored movies, the excluded (already rated) ones left out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from movielens.plumbing.errors import PipelineError
from movielens.ranking.scorers import Scorer


def kth_largest(scores: np.ndarray, k: int) -> np.ndarray:
    """Each row's k-th largest value, float (rows, 1); 1 <= k <= n_items.

    np.partition moves no indices, so it beats argpartition; but its pivots degrade on long runs
    of equal values (the movies a watch model leaves unscored all score 0), so one row (a served
    list) is first cut to its values above its mean, when at least k are: the k largest are
    among them.
    """
    n_items = scores.shape[1]
    if len(scores) == 1:
        row = scores[0]
        finite = row[np.isfinite(row)]
        above = row[row > finite.mean()] if len(finite) else row[:0]
        if len(above) >= k:
            return np.partition(above, len(above) - k)[len(above) - k].reshape(1, 1)
    return np.partition(scores, n_items - k, axis=1)[:, n_items - k, None]


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """The columns of each row's k highest scores, best first; equal scores go to the lower column.

    Args:
        scores: float (rows, n_items), no NaN; -inf marks an item that must not be recommended.
        k: how many items per row, >= 1.

    Returns:
        int64 (rows, min(k, n_items)); -1 fills the tail of a row with fewer than k finite scores.
    """
    scores = np.asarray(scores)
    rows, n_items = scores.shape
    k = min(k, n_items)
    if rows == 0 or k == 0:
        return np.zeros((rows, k), dtype=np.int64)
    if np.isnan(scores.max(axis=1)).any():  # max propagates NaN, without a mask as large as scores
        raise ValueError("scores contain NaN")
    kth = kth_largest(scores, k)
    keep = scores >= kth  # exactly k per row, unless values equal to the k-th straddle position k
    crowded = np.flatnonzero(np.count_nonzero(keep, axis=1) > k)
    if len(crowded):  # re-choose the tied items by lowest column, on those rows only
        above = scores[crowded] > kth[crowded]
        at_kth = scores[crowded] == kth[crowded]
        room = k - above.sum(axis=1)  # >= 1: at most k-1 items beat the k-th value
        keep[crowded] = above | (at_kth & (np.cumsum(at_kth, axis=1) <= room[:, None]))
    # Flat positions are row-major, so each row's k columns come out together, ascending.
    cols = (np.flatnonzero(keep) % n_items).reshape(rows, k)
    order = np.argsort(-np.take_along_axis(scores, cols, axis=1), axis=1, kind="stable")
    cols = np.take_along_axis(cols, order, axis=1)
    cols[np.take_along_axis(scores, cols, axis=1) == -np.inf] = -1
    return cols


def top_n(scores: np.ndarray, seen: np.ndarray, n: int) -> np.ndarray:
    """The n best-scored items not in `seen`, best first; equal scores go to the lower index.

    Args:
        scores: float (n_items,).
        seen: int (n_seen,), item indices to leave out.
        n: how many, >= 1.

    Returns:
        int64 (min(n, n_items - n_unique_seen),) item indices.
    """
    masked = np.array(scores, dtype=np.float64)
    masked[np.asarray(seen, dtype=np.int64)] = -np.inf
    best = top_k(masked[None, :], n)[0]
    return best[best >= 0]


def sample_users(n_users: int, ranking_users: int | None, seed: int) -> np.ndarray | None:
    """The users to rank: `ranking_users` of 0..n_users-1 drawn at random with `seed`, ascending.

    Returns:
        int64 (ranking_users,), or None (rank every user) when ranking_users is None or not below
        n_users.
    """
    if ranking_users is None or ranking_users >= n_users:
        return None
    return np.sort(np.random.default_rng(seed).choice(n_users, ranking_users, replace=False))


def _rows_of(users: np.ndarray, movies: np.ndarray, start: int, stop: int) -> tuple:
    """The (row in block, movie) pairs of users start..stop-1; `users` must be sorted."""
    lo, hi = np.searchsorted(users, [start, stop])
    return users[lo:hi] - start, movies[lo:hi]


def by_user(users: np.ndarray, movies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(users, kind="stable")
    return np.asarray(users)[order], np.asarray(movies)[order]


def check_range(name: str, index: np.ndarray, size: int) -> None:
    bad = index[(index < 0) | (index >= size)]
    if len(bad):
        raise PipelineError(
            f"{name} index {int(bad[0])} is outside the model's 0..{size - 1}: the model and "
            "data/processed disagree; rerun the pipeline (dvc repro)"
        )


def only_users(users: np.ndarray, pairs: tuple[np.ndarray, np.ndarray], n_users: int) -> tuple:
    """The (user, movie) pairs of the sorted `users`, with each user renumbered by its position."""
    position = np.full(n_users, -1, dtype=np.int64)
    position[users] = np.arange(len(users))
    renumbered = position[pairs[0]]
    kept = renumbered >= 0
    return renumbered[kept], pairs[1][kept]


@dataclass(frozen=True)
class TopLists:
    """Each ranked user's top-k list, what evaluate scores and recommend serves.

    Attributes:
        users: int64 (n,), the users, in the order ranked.
        movies: int64 (n, k), each user's movies best first; -1 pads a list with fewer than k.
        scores: float32 (n, k), their scores; -inf where movies is -1.
    """

    users: np.ndarray
    movies: np.ndarray
    scores: np.ndarray


def top_lists(
    scorer: Scorer,
    users: np.ndarray,
    excluded: tuple[np.ndarray, np.ndarray],
    k: int,
    block_size: int,
) -> TopLists:
    """Rank every movie for each user, leave out the excluded pairs, keep the k best.

    Users are scored block_size at a time, so memory is O(block_size * n_movies), and a user's
    list does not depend on which block it falls in.

    Args:
        scorer: scores of every movie for a block of users (higher is better).
        users: int (n,), distinct users to rank.
        excluded: int (m,) users and int (m,) movies never to list (what the user has rated).
        k: the list length, >= 1.
        block_size: users scored per block, >= 1.
    """
    if k < 1 or block_size < 1:
        raise ValueError(f"k={k} and block_size={block_size} must be positive")
    users = np.asarray(users, dtype=np.int64)
    excluded = by_user(*only_users(users, excluded, scorer.n_users))  # rows: positions in `users`
    movies, scores = [], []
    for start in range(0, len(users), block_size):
        stop = min(start + block_size, len(users))
        block = np.asarray(scorer.scores(users[start:stop]), dtype=np.float32)
        block[_rows_of(*excluded, start, stop)] = -np.inf
        top = top_k(block, k)
        movies.append(top)
        scores.append(np.where(top >= 0, np.take_along_axis(block, np.maximum(top, 0), 1), -np.inf))
    width = min(k, scorer.n_movies)
    return TopLists(
        users,
        np.concatenate(movies) if movies else np.zeros((0, width), np.int64),
        np.concatenate(scores).astype(np.float32) if scores else np.zeros((0, width), np.float32),
    )
