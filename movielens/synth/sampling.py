"""Who rates what: ratings per user, and distinct (user, movie) pairs drawn by popularity and taste."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable

import numpy as np

from movielens.data.ids import index_in, sorted_unique
from movielens.synth.choices import keep_by_taste
from movielens.synth.shapes import max_user_ratings

log = logging.getLogger(__name__)

POPULARITY_ROUNDS = 3  # top-up rounds that follow popularity before falling back to uniform
TOP_UP_HIT_RATE = 0.7  # assumed share of new movies among a top-up's popularity draws
TOP_UP_OVERSAMPLING = 1.25
MAX_ROUNDS = 60
# taste > 0: popularity draws per wanted rating, which keep_by_taste thins to the wanted count,
# and draws per chunk of users (memory ~ 100 bytes a draw).
TASTE_OVERSAMPLING = 8
TASTE_DRAWS_PER_CHUNK = 1 << 22

Alias = tuple[np.ndarray, np.ndarray]  # alias_table's (probability, alias)
LogTaste = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (users, movies) -> float (n,)


def user_counts(
    n_ratings: int, activity: np.ndarray, min_user_ratings: int, n_movies: int
) -> np.ndarray:
    """Ratings per user, (n_users,) int64: the floor plus shares of the rest by activity, capped."""
    cap = max_user_ratings(n_movies, min_user_ratings) - min_user_ratings
    counts = np.zeros(len(activity), dtype=np.int64)
    while (left := n_ratings - min_user_ratings * len(activity) - int(counts.sum())) > 0:
        room = cap - counts
        share = np.where(room > 0, activity, 0.0)
        share *= left / share.sum()
        add = np.minimum(np.floor(share).astype(np.int64), room)
        if not add.any():  # fewer ratings left than users with room: the most active get one
            add[np.argsort(-share, kind="stable")[:left]] = 1
        counts += add
    return counts + min_user_ratings


def draw_pairs(
    per_user: np.ndarray,
    popularity: np.ndarray,
    rng: np.random.Generator,
    log_taste: LogTaste | None = None,
    alias: Alias | None = None,
) -> np.ndarray:
    """Distinct (user, movie) pairs, `per_user[u]` for user u, as sorted int64 u * n_movies + m.

    One draw per wanted rating by popularity, deduplicated (or, with `log_taste`, _draw_by_taste's
    pairs), then top-up rounds for the users left short: by popularity first, then uniformly,
    which reaches the movies a heavy user's popularity draws keep missing. `alias`, when given,
    is alias_table(popularity), built once by a caller that draws block after block.
    """
    n_users, n_movies = len(per_user), len(popularity)
    alias = alias_table(popularity) if alias is None else alias
    if log_taste is None:
        users = np.repeat(np.arange(n_users, dtype=np.int64), per_user)
        keys = sorted_unique(users * n_movies + sample(alias, len(users), rng))
        del users
    else:
        keys = _draw_by_taste(per_user, alias, log_taste, rng)
    have = np.bincount(keys // n_movies, minlength=n_users)
    extra = np.empty(0, dtype=np.int64)
    for round_ in range(MAX_ROUNDS):
        deficit = per_user - have
        if not deficit.any():
            log.debug("pairs complete after %d top-up rounds", round_)
            return np.sort(np.concatenate([keys, extra]))
        uniform = round_ >= POPULARITY_ROUNDS
        taken = _top_up(deficit, have, (keys, extra), n_movies, None if uniform else alias, rng)
        extra = np.sort(np.concatenate([extra, taken]))
        have += np.bincount(taken // n_movies, minlength=n_users)
    raise RuntimeError(f"could not draw distinct pairs in {MAX_ROUNDS} rounds")


def _draw_by_taste(
    per_user: np.ndarray, alias: Alias, log_taste: LogTaste, rng: np.random.Generator
) -> np.ndarray:
    """TASTE_OVERSAMPLING popularity draws per wanted rating, thinned by keep_by_taste.

    Users go in chunks of about TASTE_DRAWS_PER_CHUNK draws, which bounds the memory.

    Returns:
        Sorted int64 keys u * n_movies + m, at most per_user[u] for user u.
    """
    n_users, n_movies = len(per_user), len(alias[0])
    draws = per_user * TASTE_OVERSAMPLING
    total = np.cumsum(draws)
    cuts = np.searchsorted(
        total, np.arange(TASTE_DRAWS_PER_CHUNK, total[-1], TASTE_DRAWS_PER_CHUNK)
    )
    bounds = np.unique(np.concatenate([[0], cuts, [n_users]]))
    parts = []
    for first, stop in itertools.pairwise(bounds):
        users = np.repeat(np.arange(first, stop, dtype=np.int64), draws[first:stop])
        keys = np.sort(users * n_movies + sample(alias, len(users), rng))
        parts.append(keep_by_taste(keys, per_user, n_movies, log_taste, rng))
    return np.concatenate(parts)


def alias_table(weights: np.ndarray) -> Alias:
    """Walker's alias table (Vose's construction) for drawing index i with chance ~ weights[i].

    Returns:
        (probability (n,) float64, alias (n,) int64): draw i uniformly, keep it with
        `probability[i]`, else take `alias[i]`.
    """
    n = len(weights)
    scaled = (weights * (n / weights.sum())).tolist()
    probability, alias = np.ones(n), np.arange(n)
    small = [i for i, p in enumerate(scaled) if p < 1.0]
    large = [i for i, p in enumerate(scaled) if p >= 1.0]
    while small and large:
        low, high = small.pop(), large[-1]
        probability[low], alias[low] = scaled[low], high
        scaled[high] -= 1.0 - scaled[low]
        if scaled[high] < 1.0:
            small.append(large.pop())
    return probability, alias


def sample(alias: Alias, size: int, rng: np.random.Generator) -> np.ndarray:
    """Movie indices by popularity from an alias_table, (size,) int64."""
    probability, other = alias
    index = rng.integers(len(probability), size=size)
    return np.where(rng.random(size) < probability[index], index, other[index])


def _top_up(
    deficit: np.ndarray,
    have: np.ndarray,
    known: tuple[np.ndarray, np.ndarray],
    n_movies: int,
    alias: Alias | None,
    rng: np.random.Generator,
) -> np.ndarray:
    """New pairs for the users short of ratings, at most `deficit[u]` each, none in `known`.

    Draws by popularity from `alias`, or uniformly where it is None; a user who draws more new
    movies than it lacks keeps a random subset of them.

    Args:
        deficit, have: (n_users,) int64, ratings still wanted and already drawn per user.
        known: two sorted int64 arrays of the pairs drawn so far.
    """
    short = np.flatnonzero(deficit)
    # Oversample by the chance that a draw hits a movie the user has not rated yet.
    hit = 1.0 - have[short] / n_movies if alias is None else TOP_UP_HIT_RATE
    draws = np.ceil(deficit[short] * TOP_UP_OVERSAMPLING / hit).astype(np.int64) + 2
    users = np.repeat(short.astype(np.int64), draws)
    if alias is None:
        movies = rng.integers(n_movies, size=len(users))
    else:
        movies = sample(alias, len(users), rng)
    candidates = sorted_unique(users * n_movies + movies)
    candidates = candidates[
        (index_in(known[0], candidates) < 0) & (index_in(known[1], candidates) < 0)
    ]
    owner = candidates // n_movies
    order = np.argsort(owner + rng.random(len(owner)))  # random order within each user
    candidates, owner = candidates[order], owner[order]
    rank = np.arange(len(candidates)) - np.searchsorted(owner, owner, side="left")
    return candidates[rank < deficit[owner]]
