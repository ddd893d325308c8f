"""Comparisons people can trust: a paired bootstrap interval of a difference in per-user NDCG, and the
beyond-accuracy figures the field reports beside accuracy (popularity, long tail, genre diversity).

Every figure is a mean over users of a per-user value, so the users weigh the same whatever their
list or test size (the convention of LensKit, Elliot and RecBole).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from movielens.evaluation.ranking_metrics import RankingMetrics

LEVEL = 0.95  # the comparisons' interval: the 95 % the field reports
# Abdollahpouri, Burke and Mobasher (RecSys 2017, "Controlling popularity bias in learning-to-rank
# recommendation"): the short head is the most-rated items that together hold 80 % of the
# training ratings (the Pareto principle), the long tail the rest; Elliot's APLT uses the same cut.
HEAD_SHARE = 0.8
NO_GENRES = "(no genres listed)"  # MovieLens' label of a movie without genres: an empty set


def aligned_by_user(
    users_a: np.ndarray, values_a: np.ndarray, users_b: np.ndarray, values_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The users evaluated by both rankers, ascending, with each ranker's value of them.

    Args:
        users_a, users_b: int (n_a,), (n_b,), distinct user ids; values_a, values_b: float, the same
            lengths, each user's value (e.g. NDCG@10).

    Returns:
        int64 (n,) users, float64 (n,) values of a, float64 (n,) values of b.
    """
    users, in_a, in_b = np.intersect1d(
        np.asarray(users_a), np.asarray(users_b), assume_unique=True, return_indices=True
    )
    return (
        users.astype(np.int64),
        np.asarray(values_a, np.float64)[in_a],
        np.asarray(values_b, np.float64)[in_b],
    )


def bootstrap_means(differences: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """The mean of each bootstrap resample of the per-user differences, float64 (n_resamples,).

    Resample r draws n users with replacement, `np.random.default_rng(seed).integers(0, n, n)` for
    r = 0, 1, ... in turn, so the same seed draws the same users for every pair of rankers compared
    over the same users (common random numbers: the intervals of one run are comparable).
    """
    differences = np.asarray(differences, np.float64)
    rng = np.random.default_rng(seed)
    n = len(differences)
    return np.array([differences[rng.integers(0, n, n)].mean() for _ in range(n_resamples)])


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, n_resamples: int, seed: int, level: float = LEVEL
) -> dict[str, float]:
    """The mean per-user difference a - b and its paired bootstrap percentile interval.

    Paired: each resample draws users, and a user brings both rankers' values, so what the users
    share (how easy their test movies are) cancels out of the difference (Efron and Tibshirani
    1993, ch. 13; Sakai 2014 on bootstrap tests for IR). The interval is the (1 - level) / 2 and
    (1 + level) / 2 quantiles of the resample means (numpy's linear interpolation between order
    statistics).

    Args:
        a, b: float (n,), each user's value under the two rankers, aligned by user (aligned_by_user).
        n_resamples: resamples drawn, >= 1; seed: their random generator's seed.
        level: the interval's coverage, in (0, 1).

    Returns:
        {"mean_difference", "low", "high"}: floats, NaN when there are no users.

    Raises:
        ValueError: for arrays of different lengths, n_resamples < 1 or a level outside (0, 1).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be aligned 1-d arrays, got shapes {a.shape} and {b.shape}")
    if n_resamples < 1 or not 0.0 < level < 1.0:
        raise ValueError(f"n_resamples={n_resamples} must be >= 1 and level={level} in (0, 1)")
    if len(a) == 0:
        return {"mean_difference": float("nan"), "low": float("nan"), "high": float("nan")}
    differences = a - b
    means = bootstrap_means(differences, n_resamples, seed)
    low, high = np.quantile(means, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return {"mean_difference": float(differences.mean()), "low": float(low), "high": float(high)}


def comparisons(
    rankings: dict[str, RankingMetrics],
    reference: str,
    n_resamples: int,
    seed: int,
    level: float = LEVEL,
) -> dict:
    """scores.json's "comparisons": the reference ranker against each other, by per-user NDCG@k.

    Each "<reference>_vs_<other>" entry is paired_bootstrap of the users both evaluated (with the
    same seed, so every entry resamples the same users when the rankers evaluated the same ones):
    mean_difference > 0 when the reference ranks better; an interval that excludes 0 says the
    difference is not a chance of which users were drawn.

    Args:
        rankings: each ranker's per-user metrics, over the same ranked users.
        reference: the ranker compared with the others ("served").
    """
    base = rankings[reference]
    out: dict = {"metric": f"ndcg@{base.k}", "level": level, "resamples": n_resamples}
    for name, other in rankings.items():
        if name == reference:
            continue
        users, a, b = aligned_by_user(base.user_index, base.ndcg, other.user_index, other.ndcg)
        result = paired_bootstrap(a, b, n_resamples, seed, level)
        out[f"{reference}_vs_{name}"] = {
            **{key: round(value, 6) for key, value in result.items()},
            "users": len(users),
        }
    return out


def long_tail(counts: np.ndarray, head_share: float = HEAD_SHARE) -> np.ndarray:
    """bool (n_movies,): the movies outside the short head, the long tail.

    The short head is the fewest most-rated movies whose training ratings reach head_share of all
    (Abdollahpouri et al. 2017; Elliot's Popularity.get_short_head): movies are taken by count,
    highest first (equal counts: the lower index first), until the running total reaches
    head_share * total. Movies without a training rating are always in the tail.

    Args:
        counts: int (n_movies,), training ratings per movie.
    """
    counts = np.asarray(counts, np.int64)
    tail = np.ones(len(counts), dtype=bool)
    if counts.sum() == 0:
        return tail
    order = np.argsort(-counts, kind="stable")
    running = np.cumsum(counts[order])
    # the head ends at the first movie whose running total reaches the share
    n_head = int(np.searchsorted(running, head_share * running[-1], side="left")) + 1
    tail[order[:n_head]] = False
    return tail


def per_list_mean(movies: np.ndarray, values: np.ndarray) -> np.ndarray:
    """float64 (n_lists,): each list's mean of values[movie] over its movies; NaN for an empty list.

    Args:
        movies: int (n_lists, k), the lists; -1 pads a list with fewer than k movies.
        values: float (n_movies,), a value per movie.
    """
    movies = np.asarray(movies, np.int64)
    listed = movies >= 0
    per_movie = np.where(listed, np.asarray(values, np.float64)[np.maximum(movies, 0)], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return per_movie.sum(axis=1) / listed.sum(axis=1)


def genre_matrix(genres: Sequence[str]) -> np.ndarray:
    """bool (n_movies, n_genres): which genres each movie has, from MovieLens' "A|B|C" strings.

    NO_GENRES and an empty or missing string give an empty set; genres are sorted by name.
    """
    sets = [
        set() if not isinstance(g, str) or g in ("", NO_GENRES) else set(g.split("|"))
        for g in genres
    ]
    names = sorted(set().union(*sets))
    column = {name: j for j, name in enumerate(names)}
    matrix = np.zeros((len(sets), len(names)), dtype=bool)
    for i, found in enumerate(sets):
        matrix[i, [column[name] for name in found]] = True
    return matrix


def intra_list_diversity(movies: np.ndarray, genres: np.ndarray) -> np.ndarray:
    """float64 (n_lists,): each list's mean pairwise Jaccard distance of its movies' genre sets.

    Intra-list diversity (Smyth and McClave 2001; Ziegler et al. 2005) with the distance
    1 - |G_i & G_j| / |G_i | G_j| (two movies without genres: distance 0). 0: every movie has the same
    genres; 1: no two share one. NaN for a list of fewer than two movies.

    Args:
        movies: int (n_lists, k), the lists; -1 pads a list with fewer than k movies.
        genres: bool (n_movies, n_genres), genre_matrix's.
    """
    movies = np.asarray(movies, np.int64)
    listed = movies >= 0
    sets = np.where(listed[..., None], genres[np.maximum(movies, 0)], False).astype(np.float32)
    shared = np.einsum("ukg,ulg->ukl", sets, sets)
    sizes = sets.sum(axis=2)
    union = sizes[:, :, None] + sizes[:, None, :] - shared
    distance = np.where(union > 0, 1.0 - shared / np.maximum(union, 1.0), 0.0)
    pairs = listed[:, :, None] & listed[:, None, :]
    pairs &= ~np.eye(movies.shape[1], dtype=bool)[None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (distance * pairs).sum(axis=(1, 2)) / pairs.sum(axis=(1, 2))


def beyond_accuracy(
    movies: np.ndarray, counts: np.ndarray, genres: np.ndarray, block_size: int = 4096
) -> dict[str, float]:
    """The lists' average popularity, long-tail share and genre diversity, each a mean over lists.

    - average_popularity: ARP (Abdollahpouri et al. 2019; Elliot's ARP), each list's mean
      training ratings per listed movie;
    - long_tail_share: APLT (Abdollahpouri et al. 2017), each list's share of long_tail movies;
    - genre_diversity: intra_list_diversity (lists of fewer than two movies left out).

    Args:
        movies: int (n_lists, k), the lists; -1 pads. counts: int (n_movies,), training ratings per
            movie. genres: bool (n_movies, n_genres). block_size: lists per block (memory).
    """
    movies = np.asarray(movies, np.int64)
    tail = long_tail(counts).astype(np.float64)
    diversity = np.concatenate(
        [np.zeros(0)]
        + [
            intra_list_diversity(movies[start : start + block_size], genres)
            for start in range(0, len(movies), block_size)
        ]
    )
    return {
        "average_popularity": _mean(per_list_mean(movies, counts)),
        "long_tail_share": _mean(per_list_mean(movies, tail)),
        "genre_diversity": _mean(diversity),
    }


def _mean(values: np.ndarray) -> float:
    """The mean of the defined values, rounded for stable diffs; NaN when none is defined."""
    defined = values[~np.isnan(values)]
    return round(float(defined.mean()), 6) if len(defined) else float("nan")


@dataclass(frozen=True)
class Comparing:
    """What the comparisons and the beyond-accuracy figures need beside the rankings.

    Attributes:
        train_counts: int (n_movies,), training ratings per movie (popularity, long tail).
        genres: bool (n_movies, n_genres), compare.genre_matrix of each movie index.
        bootstrap_resamples, seed: the paired bootstrap's (evaluate.bootstrap_resamples, .seed).
    """

    train_counts: np.ndarray
    genres: np.ndarray
    bootstrap_resamples: int
    seed: int

    @classmethod
    def of(cls, train_movies, movie_genres, n_movies: int, bootstrap_resamples: int, seed: int):
        """From the training ratings' movie indices and each movie index's "A|B" genre string."""
        counts = np.bincount(np.asarray(train_movies, np.int64), minlength=n_movies)
        return cls(counts, genre_matrix(movie_genres), bootstrap_resamples, seed)

    def figures(self, rankings: dict[str, RankingMetrics]) -> dict:
        """scores.json's "comparisons" and "beyond_accuracy" blocks."""
        return {
            "comparisons": comparisons(rankings, "served", self.bootstrap_resamples, self.seed),
            "beyond_accuracy": {
                "long_tail_movies": int(long_tail(self.train_counts).sum()),
                **{
                    name: beyond_accuracy(metrics.lists.movies, self.train_counts, self.genres)
                    for name, metrics in rankings.items()
                },
            },
        }
