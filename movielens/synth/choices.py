"""Taste: which movies a user rates, and what a perfect top-N ranker scores on generated data."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from movielens.evaluation.ranking_metrics import ranking_metrics

# The pipeline's ranking protocol (params.yaml: preprocess.test_size, evaluate.k and
# evaluate.relevance_threshold), which the estimate imitates.
TEST_SHARE = 0.1
TOP_K = 10
RELEVANT_RATING = 4.0
RANKING_USERS = 2_000  # users the estimate ranks
RANKING_BLOCK = 64  # users scored at once: memory ~ RANKING_BLOCK * n_movies * 40 bytes
INCLUSION_ITERATIONS = 50  # at most: Newton steps for a user's rate in log_inclusion
INCLUSION_TOLERANCE = 1e-3  # of the wanted count


def keep_by_taste(
    keys: np.ndarray,
    wanted: np.ndarray,
    n_movies: int,
    log_taste: Callable[[np.ndarray, np.ndarray], np.ndarray],
    rng: np.random.Generator,
) -> np.ndarray:
    """Each user's `wanted` distinct movies among draws by popularity, by Gumbel-top-k on taste.

    A movie drawn c times by popularity gets the key log(c) + log_taste(u, m) + Gumbel noise and
    each user keeps its highest keys: sampling without replacement with chance ~ c * exp(
    log_taste), which tends to popularity * exp(log_taste) as the draws per user grow.

    Args:
        keys: int64 (n,), sorted u * n_movies + m, repeats allowed.
        wanted: int64 (n_users,), the movies each user keeps at most.
        log_taste: (users, movies) -> float (n,), the log of the weight taste adds to a pair.

    Returns:
        Sorted distinct int64 keys: min(wanted[u], distinct movies drawn for u) for user u.
    """
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    distinct = keys[starts]
    count = np.diff(np.append(starts, len(keys)))
    users, movies = np.divmod(distinct, n_movies)
    key = np.log(count) + log_taste(users, movies) + rng.gumbel(size=len(distinct))
    # Sort by user, then by falling key: one argsort of a float that holds both (~5x faster
    # than np.lexsort); users stay apart by more than the keys' range.
    span = key.max() - key.min() + 1.0
    order = np.argsort((users - users[0]) * span + (key.max() - key))
    rank = np.arange(len(order)) - np.searchsorted(users, users, side="left")
    return distinct[np.sort(order[rank < wanted[users]])]


def log_inclusion(
    popularity: np.ndarray,
    wanted: np.ndarray,
    log_taste: np.ndarray | None = None,
    draws: np.ndarray | None = None,
) -> np.ndarray:
    """log P(movie m is among a user's `wanted` picks), (rows, n_movies) float32.

    Each movie is taken independently with chance pi = 1 - exp(-y), the user's rate r set so
    that sum(pi) = wanted (a Poisson approximation of drawing without replacement):
    - taste 0 (log_taste None), picks by popularity p: y = r * p;
    - taste > 0, keep_by_taste's `draws` by popularity, then picks with weight
      w = exp(log_taste) among them: a movie drawn C ~ Poisson(draws * p) times is kept with
      chance 1 - exp(-r * C * w), so y = draws * p * (1 - exp(-r * w)). A user who wants more
      movies than those draws hold also takes top-ups by popularity: y = draws * p + r * p.

    Args:
        popularity: float (n_movies,), unnormalised.
        wanted: int (rows,).
        log_taste: float (rows, n_movies), the log of the weight taste gives each pair.
        draws: int (rows,), with log_taste.

    The (rows, n_movies) arithmetic is float32 (4x faster than float64), its sums float64.
    """
    p = (np.asarray(popularity, np.float64) / np.sum(popularity)).astype(np.float32)
    wanted = np.asarray(wanted, np.float64)[:, None]
    if log_taste is None:
        return _log_taken(_rate(wanted, lambda r: (r * p, p)) * p)
    drawn = np.asarray(draws, np.float32)[:, None] * p
    weight = np.exp(log_taste - log_taste.max(axis=1, keepdims=True), dtype=np.float32)
    short = -np.expm1(-drawn).sum(axis=1) <= wanted[:, 0]
    y = np.empty_like(drawn)
    if short.any():
        d = drawn[short]
        y[short] = d + _rate(wanted[short], lambda r: (d + r * p, p)) * p
    if not short.all():
        d, w = drawn[~short], weight[~short]

        def kept(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            passed = d * np.exp(-r * w)
            return d - passed, w * passed

        y[~short] = kept(_rate(wanted[~short], kept))[0]
    return _log_taken(y)


def _log_taken(y: np.ndarray) -> np.ndarray:
    """log(1 - exp(-y)), y float32 > 0; an underflowing y counts as the least float32."""
    tiny = np.finfo(np.float32).tiny
    return np.log(-np.expm1(-np.maximum(y, tiny, dtype=np.float32)))


def _rate(wanted: np.ndarray, y_of: Callable) -> np.ndarray:
    """The r >= 0 at which sum(1 - exp(-y(r))) = wanted, (rows, 1), by Newton's method.

    y_of(r) gives y and dy/dr. The sum is concave and increasing in r and below `wanted` at
    r = 0, so Newton's steps from there stay below the root and rise to it.
    """
    rate = np.zeros_like(wanted)
    for _ in range(INCLUSION_ITERATIONS):
        y, slope = y_of(rate.astype(np.float32))
        missed = np.exp(-y)
        gap = wanted - (1.0 - missed).sum(axis=1, keepdims=True, dtype=np.float64)
        slope = (missed * slope).sum(axis=1, keepdims=True, dtype=np.float64)
        rate += gap / np.maximum(slope, np.finfo(np.float64).tiny)
        if np.all(np.abs(gap) <= INCLUSION_TOLERANCE * wanted):
            break
    return rate.astype(np.float32)


def log_held_out(log_pi: np.ndarray) -> np.ndarray:
    """log P(in the test split | not in the training split), up to a constant, from log pi.

    A pair lands in the test split with chance TEST_SHARE * pi and misses training with chance
    1 - (1 - TEST_SHARE) * pi.
    """
    return log_pi - np.log1p(-(1.0 - TEST_SHARE) * np.exp(log_pi))


class Popularity:
    """The most-popular ranker as a Scorer: every user gets the movies' training counts."""

    def __init__(self, counts: np.ndarray, n_users: int):
        self.counts = np.asarray(counts, np.float32)
        self.n_users, self.n_movies = n_users, len(self.counts)

    def scores(self, user_index: np.ndarray) -> np.ndarray:
        """float32 (len(user_index), n_movies), a new array."""
        return np.tile(self.counts, (len(user_index), 1))


def estimate_ranking(
    oracle, users: np.ndarray, movies: np.ndarray, ratings: np.ndarray, rng: np.random.Generator
) -> dict[str, float | int]:
    """The oracle's and popularity's precision@k and NDCG@k on RANKING_USERS random users.

    Each sampled user's pairs go to the test split with chance TEST_SHARE; every movie not in a
    user's training part is ranked, and a test pair rated >= RELEVANT_RATING is relevant
    (movielens.evaluation.ranking_metrics.ranking_metrics, as the evaluate stage does). Popularity ranks
    by the number of pairs outside the sampled users' test splits.

    Args:
        oracle: a Scorer (n_users, n_movies, scores(user_index) -> float32 (rows, n_movies)).
        users, movies: int (n,), the generated pairs as indices; ratings: float (n,).

    Returns:
        oracle_precision@k, oracle_ndcg@k, popularity_precision@k, popularity_ndcg@k,
        ranking_users (users with a relevant test pair, whose means these are).
    """
    n_users, n_movies = oracle.n_users, oracle.n_movies
    sample = np.sort(rng.choice(n_users, min(RANKING_USERS, n_users), replace=False))
    chosen = np.zeros(n_users, dtype=bool)
    chosen[sample] = True
    mine = np.flatnonzero(chosen[users])
    held = rng.random(len(mine)) < TEST_SHARE
    train, test = mine[~held], mine[held]
    counts = np.bincount(movies, minlength=n_movies) - np.bincount(movies[test], minlength=n_movies)
    result: dict[str, float | int] = {}
    for name, scorer in (("oracle", oracle), ("popularity", Popularity(counts, n_users))):
        summary = ranking_metrics(
            scorer, users[train], movies[train], users[test], movies[test], ratings[test],
            TOP_K, RELEVANT_RATING, RANKING_BLOCK, users=sample,
        ).summary()  # fmt: skip
        result[f"{name}_precision@{TOP_K}"] = summary["precision"]
        result[f"{name}_ndcg@{TOP_K}"] = summary["ndcg"]
        result["ranking_users"] = summary["users_evaluated"]
    return result
