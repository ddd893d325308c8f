"""Synthetic MovieLens-shaped releases: latent-factor ratings zipped in each release's own layout.

Run `python -m movielens.synth.generate --dataset ml-25m --ratings 25000000 --out DIR` to get
`DIR/ml-25m.zip` and `DIR/ml-25m.zip.md5`, a directory usable as MOVIELENS_MIRROR, and
`DIR/ml-25m.floor.json`: the generator's parameters, the RMSE a perfect model would score and
the NDCG@10 a perfect ranker and popularity would (synth_ranking). `--taste T` makes the movies a
user rates follow the user's taste as well as popularity.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import logging
import os
import sys
import time
import urllib.parse
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import ndtr

from movielens.data.download import file_md5
from movielens.data.ids import index_in, sorted_unique
from movielens.data.releases import DATASETS, ML100K_GENRES, Dataset
from movielens.synth.choices import (
    RELEVANT_RATING,
    estimate_ranking,
    keep_by_taste,
    log_held_out,
    log_inclusion,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReleaseShape:
    """The size and time span of a real release, which synthetic ones imitate by default."""

    ratings: int
    users: int
    movies: int
    first_timestamp: int
    last_timestamp: int


RELEASE_SHAPES = {
    "ml-latest-small": ReleaseShape(100_836, 610, 9_742, 828_124_615, 1_537_799_250),
    "ml-latest": ReleaseShape(33_832_162, 330_975, 86_537, 789_652_009, 1_689_842_142),
    "ml-100k": ReleaseShape(100_000, 943, 1_682, 874_724_710, 893_286_638),
    "ml-1m": ReleaseShape(1_000_209, 6_040, 3_883, 956_703_932, 1_046_454_590),
    "ml-10m": ReleaseShape(10_000_054, 69_878, 10_681, 823_185_196, 1_231_131_736),
    "ml-20m": ReleaseShape(20_000_263, 138_493, 27_278, 789_652_009, 1_427_784_002),
    "ml-25m": ReleaseShape(25_000_095, 162_541, 62_423, 789_652_009, 1_574_327_703),
    "ml-32m": ReleaseShape(32_000_204, 200_948, 87_585, 789_652_009, 1_697_164_147),
}
MAX_RATING = 5.0

# Movies per release grow slower than ratings: movies ~ ratings ** MOVIE_SCALE_EXPONENT.
MOVIE_SCALE_EXPONENT = 0.6
# Ids are sorted random draws from 1..ceil(count * spread), so they have gaps like real ones.
USER_ID_SPREAD = 1.02
MOVIE_ID_SPREAD = 3.3

# Activity and popularity: log-normal weights; a user rates at most a share of all movies.
USER_ACTIVITY_SIGMA = 1.3
MOVIE_POPULARITY_SIGMA = 2.0
MAX_USER_SHARE = 0.5
MIN_USER_RATINGS = (5, 20)  # the floor for small samples, and the releases' own guarantee
POPULARITY_ROUNDS = 3  # top-up rounds that follow popularity before falling back to uniform
TOP_UP_HIT_RATE = 0.7  # assumed share of new movies among a top-up's popularity draws
TOP_UP_OVERSAMPLING = 1.25
MAX_ROUNDS = 60
# taste > 0: popularity draws per wanted rating, which keep_by_taste thins to the wanted count,
# and draws per chunk of users (memory ~ 100 bytes a draw).
TASTE_OVERSAMPLING = 8
# The correlation of a movie's choice vector with its rating vector q_m (see _choice_factors).
TASTE_RATING_CORRELATION = 0.3
TASTE_DRAWS_PER_CHUNK = 1 << 22

# rating = clip(round_to_grid(GLOBAL_MEAN + b_u + b_m + p_u . q_m + noise))
LATENT_DIM = 8
GLOBAL_MEAN = 3.5
USER_BIAS_STD = 0.35
MOVIE_BIAS_STD = 0.45
FACTOR_STD = 0.46  # LATENT_DIM * FACTOR_STD**4 ~ 0.36, the variance of the interaction term
NOISE_STD = 0.5
WHOLE_STAR_USER_SHARE = 0.4  # where half stars exist, these users still give whole stars only
# A user's ratings start at a uniform time and spread over a log-normal number of days.
ACTIVE_DAYS_MEDIAN = 2.0
ACTIVE_DAYS_SIGMA = 2.5
DAY_S = 86_400

ROWS_PER_CHUNK = 1 << 20
COMPRESS_LEVEL = 1  # deflate level 1 is ~5x faster than 6 and only ~10% larger on ratings files
ZIP_DATE = (2000, 1, 1, 0, 0, 0)  # fixed member times make the zip bytes a function of the data
ZIP64_ABOVE_BYTES = 1024**3
# "0000".."9999" as 4-byte cells, for _int_chars.
_FOUR_DIGITS = np.frombuffer(b"".join(b"%04d" % i for i in range(10_000)), np.uint32)

# Independent random streams, so movies and ratings agree without sharing draws.
_MOVIE_IDS, _USER_IDS, _TITLES, _MODEL, _PAIRS, _NOISE, _TIMES, _RANKING, _CHOICE = range(9)

TITLE_ADJECTIVES = (
    "Silent", "Last", "Broken", "Golden", "Dark", "Lost", "Wild", "Little", "Secret", "Long",
    "Red", "Final", "Hidden", "Crazy", "Lonely", "Electric", "Frozen", "Sweet", "Bitter", "Big",
)  # fmt: skip
TITLE_NOUNS = (
    "Night", "River", "Kingdom", "Stranger", "Summer", "Heart", "City", "Road", "Garden", "Ghost",
    "Detective", "Island", "Dream", "Machine", "Mountain", "Letter", "Empire", "Wedding", "Storm",
    "Journey", "Planet", "Witness", "Shadow", "Window", "Horizon",
)  # fmt: skip
LATIN1_WORDS = (
    "Café", "Amélie", "Señor", "Über", "Naïve", "Garçon", "Mañana", "Fräulein", "Déjà Vu",
    "Smörgås",
)  # fmt: skip
ARTICLES = ("The", "A", "An")
FIRST_YEAR, LAST_YEAR = 1915, 2019
NO_GENRES = ML100K_GENRES[0]
GENRES = ML100K_GENRES[1:]
NO_GENRES_SHARE = 0.015
# Title patterns; the first movies take them in this order so that even a tiny release has each.
_LATIN1, _ARTICLE, _QUOTED, _SUBTITLE, _PLAIN = range(5)
_PATTERN_SHARES = (0.08, 0.12, 0.03, 0.12, 0.65)


def default_counts(dataset_name: str, n_ratings: int) -> tuple[int, int]:
    """Users and movies for `n_ratings` ratings, scaled from the real release.

    Users scale linearly (the release's ratings per user are kept), movies sub-linearly; users
    are then raised if needed so that no user must rate more than MAX_USER_SHARE of the movies.

    Returns:
        (n_users, n_movies); the real counts when `n_ratings` is the real number of ratings.
    """
    shape = RELEASE_SHAPES[dataset_name]
    scale = n_ratings / shape.ratings
    n_movies = max(2 * MIN_USER_RATINGS[0], round(shape.movies * scale**MOVIE_SCALE_EXPONENT))
    n_users = max(1, round(shape.users * scale))
    n_users = max(n_users, -(-n_ratings // _max_user_ratings(n_movies, MIN_USER_RATINGS[0])))
    return n_users, n_movies


def _max_user_ratings(n_movies: int, min_user_ratings: int) -> int:
    return min(n_movies, max(min_user_ratings, int(n_movies * MAX_USER_SHARE)))


def _default_min_user_ratings(n_ratings: int, n_users: int) -> int:
    low, high = MIN_USER_RATINGS
    return min(high, max(low, n_ratings // (low * n_users)))


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


def _sparse_ids(count: int, spread: float, rng: np.random.Generator) -> np.ndarray:
    """`count` sorted distinct ids from 1..ceil(count * spread), int32."""
    population = int(np.ceil(count * spread))
    return np.sort(rng.choice(population, size=count, replace=False)).astype(np.int32) + 1


def movie_ids(n_movies: int, seed: int) -> np.ndarray:
    """The movieIds generate_movies and generate_ratings share for a seed, (n_movies,) int32."""
    return _sparse_ids(n_movies, MOVIE_ID_SPREAD, _rng(seed, _MOVIE_IDS))


def generate_movies(n_movies: int, seed: int) -> pd.DataFrame:
    """A movies table: titles with years, '|'-joined genres drawn from ML100K_GENRES.

    Titles use Latin-1 characters only, so every layout can encode them; the first few movies
    cover the awkward cases (accented letters, a comma as in "Heart, The (1990)", double quotes
    and a colon), the rest draw a pattern at random. No title contains '::', '|' or a newline.

    Args:
        n_movies: number of movies, at least 1.
        seed: the same seed as generate_ratings gives the same movieIds.

    Returns:
        movieId (int32, sorted, with gaps), title (str), genres (str), n_movies rows.
    """
    if n_movies < 1:
        raise ValueError(f"n_movies={n_movies} must be at least 1")
    rng = _rng(seed, _TITLES)
    patterns = rng.choice(len(_PATTERN_SHARES), size=n_movies, p=_PATTERN_SHARES)
    first = min(n_movies, len(_PATTERN_SHARES))
    patterns[:first] = np.arange(first)
    words = np.column_stack([
        rng.integers(len(TITLE_ADJECTIVES), size=n_movies),
        rng.integers(len(TITLE_NOUNS), size=n_movies),
        rng.integers(len(TITLE_NOUNS), size=n_movies),
        rng.integers(len(LATIN1_WORDS), size=n_movies),
        rng.integers(len(ARTICLES), size=n_movies),
    ])  # fmt: skip
    years = rng.integers(FIRST_YEAR, LAST_YEAR + 1, size=n_movies)
    titles = [_title(p, w, y) for p, w, y in zip(patterns, words, years, strict=True)]
    return pd.DataFrame({
        "movieId": movie_ids(n_movies, seed), "title": titles, "genres": _genres(n_movies, rng),
    })  # fmt: skip


def _title(pattern: int, words: np.ndarray, year: int) -> str:
    adjective, noun = TITLE_ADJECTIVES[words[0]], TITLE_NOUNS[words[1]]
    body = {
        _LATIN1: f"{LATIN1_WORDS[words[3]]} {noun}",
        _ARTICLE: f"{adjective} {noun}, {ARTICLES[words[4]]}",
        _QUOTED: f'"{adjective}" {noun}',
        _SUBTITLE: f"{noun}: {adjective} {TITLE_NOUNS[words[2]]}",
        _PLAIN: f"{adjective} {noun}",
    }[pattern]
    return f"{body} ({year})"


def _genres(n_movies: int, rng: np.random.Generator) -> list[str]:
    """1 to 3 distinct genres per movie, or NO_GENRES for a few."""
    order = np.argsort(rng.random((n_movies, len(GENRES))), axis=1)
    counts = rng.choice([1, 2, 3], size=n_movies, p=[0.45, 0.35, 0.2])
    unknown = rng.random(n_movies) < NO_GENRES_SHARE
    names = np.array(GENRES, dtype=object)
    return [
        NO_GENRES if none else "|".join(names[np.sort(row[:k])])
        for row, k, none in zip(order, counts, unknown, strict=True)
    ]


@dataclass(frozen=True)
class _LatentModel:
    """Per-user and per-movie parameters of the rating model."""

    user_bias: np.ndarray  # (n_users,) float32
    movie_bias: np.ndarray  # (n_movies,) float32
    user_factors: np.ndarray  # (n_users, LATENT_DIM) float32
    movie_factors: np.ndarray  # (n_movies, LATENT_DIM) float32
    activity: np.ndarray  # (n_users,) float64, unnormalised
    popularity: np.ndarray  # (n_movies,) float64, unnormalised
    whole_stars_only: np.ndarray  # (n_users,) bool, users who never give half stars


def _latent_model(n_users: int, n_movies: int, rng: np.random.Generator) -> _LatentModel:
    def normal(std: float, *shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    return _LatentModel(
        user_bias=normal(USER_BIAS_STD, n_users),
        movie_bias=normal(MOVIE_BIAS_STD, n_movies),
        user_factors=normal(FACTOR_STD, n_users, LATENT_DIM),
        movie_factors=normal(FACTOR_STD, n_movies, LATENT_DIM),
        activity=rng.lognormal(0.0, USER_ACTIVITY_SIGMA, n_users),
        popularity=rng.lognormal(0.0, MOVIE_POPULARITY_SIGMA, n_movies),
        whole_stars_only=rng.random(n_users) < WHOLE_STAR_USER_SHARE,
    )


def _affinity(model: _LatentModel, users: np.ndarray, movies: np.ndarray) -> np.ndarray:
    """p_u . q_m, (n,) float32: the interaction term of the rating."""
    return np.einsum("ij,ij->i", model.user_factors[users], model.movie_factors[movies])


def _choice_factors(model: _LatentModel, rng: np.random.Generator) -> np.ndarray:
    """Movies' choice vectors c_m, (n_movies, LATENT_DIM) float32: taste's affinity is p_u . c_m.

    c_m = rho * q_m + sqrt(1 - rho^2) * s_m, s_m drawn like q_m and rho TASTE_RATING_CORRELATION:
    p_u . c_m has the spread of p_u . q_m and correlation rho with it, so users choose movies
    they like more often without every rating being chosen for being high.
    """
    rho = TASTE_RATING_CORRELATION
    own = rng.standard_normal(model.movie_factors.shape, dtype=np.float32) * FACTOR_STD
    return (rho * model.movie_factors + np.sqrt(1.0 - rho**2) * own).astype(np.float32)


@dataclass(frozen=True)
class Floor:
    """How well a perfect model can do on generated ratings: its RMSE, and its top-N ranking.

    floor_rmse: the RMSE of the Bayes-optimal prediction E[rating | user, movie], computed
        exactly from the generator's own noise, rounding and clipping (expected_rating): what a
        model that knew every b_u, b_m, p_u, q_m would score; no prediction does better on average.
    noiseless_rmse: the RMSE of the noiseless rating clip(GLOBAL_MEAN + b_u + b_m + p_u . q_m)
        (clipped to the user's grid); above floor_rmse on average, since rounding and clipping
        shift the rating's mean away from it near the ends of the scale.
    ranking: synth_ranking.estimate_ranking's precision@10 and NDCG@10 of the oracle (_Oracle,
        approximately the Bayes-optimal ranker) and of the most-popular ranker, on a sample.
    """

    floor_rmse: float
    noiseless_rmse: float
    ranking: dict[str, float | int]


def expected_rating(mean: np.ndarray, step: np.ndarray | float) -> np.ndarray:
    """E[clip(round_to_grid(mean + noise))], noise ~ N(0, NOISE_STD), float64 like `mean`.

    The grid is step, 2 * step, ..., MAX_RATING; the rating passes the threshold (k + 0.5) * step
    (k = 1 .. MAX_RATING / step - 1) with probability Phi((mean - threshold) / NOISE_STD), and
    each threshold passed adds one step to the lowest rating.
    """
    mean = np.asarray(mean, np.float64)
    step = np.broadcast_to(np.asarray(step, np.float64), mean.shape)
    expected = step.copy()
    for k in range(1, round(MAX_RATING / 0.5)):
        threshold = (k + 0.5) * step
        passed = ndtr((mean - threshold) / NOISE_STD)
        expected += np.where(threshold < MAX_RATING, step * passed, 0.0)
    return expected


def log_relevant(mean: np.ndarray, step: np.ndarray | float) -> np.ndarray:
    """log P(clip(round_to_grid(mean + noise)) >= RELEVANT_RATING), exact like expected_rating.

    RELEVANT_RATING is on both grids, so the rating reaches it when mean + noise passes
    RELEVANT_RATING - step / 2. Computed in mean's precision (float32 is ~5x faster).
    """
    mean = np.asarray(mean)
    threshold = (RELEVANT_RATING - np.asarray(step, mean.dtype) / 2).astype(mean.dtype)
    return np.log(ndtr((mean - threshold) / mean.dtype.type(NOISE_STD)))


@dataclass(frozen=True)
class _Oracle:
    """A Scorer that knows the generator: log P(movie in u's test split and rated >= 4).

    The chance to be chosen is log_inclusion's of weight popularity * exp(taste * p_u . c_m)
    among the user's per_user[u] picks, turned into the chance to be held out given that the
    movie is not in training (log_held_out); the chance of the rating is log_relevant's.
    """

    model: _LatentModel
    choice_factors: np.ndarray  # (n_movies, LATENT_DIM) float32, _choice_factors'
    taste: float
    per_user: np.ndarray  # (n_users,) int64
    half_stars: bool

    @property
    def n_users(self) -> int:
        return len(self.per_user)

    @property
    def n_movies(self) -> int:
        return len(self.model.popularity)

    def scores(self, user_index: np.ndarray) -> np.ndarray:
        """float32 (len(user_index), n_movies)."""
        model, users = self.model, np.asarray(user_index)
        affinity = model.user_factors[users] @ model.movie_factors.T  # float32
        wanted = self.per_user[users]
        if self.taste:
            log_taste = self.taste * (model.user_factors[users] @ self.choice_factors.T)
            chosen = log_inclusion(model.popularity, wanted, log_taste, wanted * TASTE_OVERSAMPLING)
        else:
            chosen = log_inclusion(model.popularity, wanted)
        mean = affinity + (GLOBAL_MEAN + model.user_bias[users, None] + model.movie_bias)
        step = np.where(model.whole_stars_only[users], 1.0, 0.5) if self.half_stars else 1.0
        liked = log_relevant(mean, np.broadcast_to(step, users.shape)[:, None])
        return (log_held_out(chosen) + liked).astype(np.float32)


def generate_ratings(
    n_ratings: int,
    n_users: int,
    n_movies: int,
    seed: int,
    half_stars: bool = True,
    min_user_ratings: int | None = None,
    time_range: tuple[int, int] | None = None,
    taste: float = 0.0,
) -> pd.DataFrame:
    """Ratings with long-tailed activity and popularity and a learnable latent structure.

    Every user rates between `min_user_ratings` and max(min_user_ratings, n_movies / 2) distinct
    movies, chosen by popularity and, with `taste` > 0, by the user's taste; each rating is
    clip(round_to_grid(GLOBAL_MEAN + b_u + b_m + p_u . q_m + noise)).

    Args:
        n_ratings: exact number of rows.
        n_users: number of users; each gets at least `min_user_ratings` ratings.
        n_movies: number of movies; ids are those of `movie_ids(n_movies, seed)`, not all rated.
        seed: non-negative; the same arguments give the same table.
        half_stars: grid 0.5..5 in steps of 0.5 (though WHOLE_STAR_USER_SHARE of the users
            give whole stars only), else whole stars 1..5.
        min_user_ratings: the least ratings per user; None: 20 where the sample allows it
            (as the releases guarantee), down to 5 for small samples.
        time_range: first and last unix timestamp, seconds; None: ml-25m's.
        taste: >= 0; user u picks movie m with chance ~ popularity[m] * exp(taste * p_u . c_m),
            c_m a choice vector correlated TASTE_RATING_CORRELATION with the rating's q_m
            (_choice_factors), so users rate more of what they like.
            0 (popularity alone) gives the same table as before the parameter existed.

    Returns:
        userId, movieId (int32), rating (float32), timestamp (int64), n_ratings rows sorted by
        userId then movieId, no (userId, movieId) pair twice.

    Raises:
        ValueError: for counts that cannot be met, naming the count to change, or a bad taste.
    """
    args = (n_ratings, n_users, n_movies, seed, half_stars, min_user_ratings, time_range, taste)
    return _generate(*args)[0]


def generate_ratings_and_floor(
    n_ratings: int,
    n_users: int,
    n_movies: int,
    seed: int,
    half_stars: bool = True,
    min_user_ratings: int | None = None,
    time_range: tuple[int, int] | None = None,
    taste: float = 0.0,
) -> tuple[pd.DataFrame, Floor]:
    """generate_ratings' table (the same for the same arguments) and its Floor.

    The Floor's ranking estimate scores every movie for synth_ranking.RANKING_USERS users, which
    takes about 10 to 25 s at 62,000 movies.
    """
    args = (n_ratings, n_users, n_movies, seed, half_stars, min_user_ratings, time_range, taste)
    table, rmse, oracle, (users, movies, rating) = _generate(*args)
    started = time.perf_counter()
    ranking = estimate_ranking(oracle, users, movies, rating, _rng(seed, _RANKING))
    log.info("estimated the ranking ceiling in %.1f s", time.perf_counter() - started)
    return table, Floor(*rmse, ranking)


def _generate(
    n_ratings: int,
    n_users: int,
    n_movies: int,
    seed: int,
    half_stars: bool,
    min_user_ratings: int | None,
    time_range: tuple[int, int] | None,
    taste: float,
) -> tuple[pd.DataFrame, tuple[float, float], _Oracle, tuple[np.ndarray, ...]]:
    """The table, its (floor_rmse, noiseless_rmse), its _Oracle, and its pairs as indices."""
    min_user_ratings = _check_counts(n_ratings, n_users, n_movies, seed, min_user_ratings)
    if not (np.isfinite(taste) and taste >= 0):
        raise ValueError(f"taste={taste} must be a finite number >= 0")
    model = _latent_model(n_users, n_movies, _rng(seed, _MODEL))
    per_user = _user_counts(n_ratings, model.activity, min_user_ratings, n_movies)
    choice = _choice_factors(model, _rng(seed, _CHOICE))
    log_taste = None
    if taste:

        def log_taste(u: np.ndarray, m: np.ndarray) -> np.ndarray:
            return taste * np.einsum("ij,ij->i", model.user_factors[u], choice[m])

    keys = _draw_pairs(per_user, model.popularity, _rng(seed, _PAIRS), log_taste)
    users, movies = np.divmod(keys, n_movies)
    del keys
    users, movies = users.astype(np.int32), movies.astype(np.int32)
    rating, rmse = _score(users, movies, model, half_stars, _rng(seed, _NOISE))
    shape = RELEASE_SHAPES["ml-25m"]
    time_range = time_range or (shape.first_timestamp, shape.last_timestamp)
    timestamp = _timestamps(users, n_users, time_range, _rng(seed, _TIMES))
    user_ids = _sparse_ids(n_users, USER_ID_SPREAD, _rng(seed, _USER_IDS))
    columns = {
        "userId": user_ids[users],
        "movieId": movie_ids(n_movies, seed)[movies],
        "rating": rating,
        "timestamp": timestamp,
    }
    oracle = _Oracle(model, choice, taste, per_user, half_stars)
    return pd.DataFrame(columns, copy=False), rmse, oracle, (users, movies, rating)


def _check_counts(
    n_ratings: int, n_users: int, n_movies: int, seed: int, min_user_ratings: int | None
) -> int:
    """Validate the counts and return the least ratings per user."""
    for name, value in (("n_ratings", n_ratings), ("n_users", n_users), ("n_movies", n_movies)):
        if value < 1:
            raise ValueError(f"{name}={value} must be at least 1")
    if seed < 0:
        raise ValueError(f"seed={seed} must be non-negative")
    if min_user_ratings is None:
        min_user_ratings = _default_min_user_ratings(n_ratings, n_users)
    if not 1 <= min_user_ratings <= n_movies:
        raise ValueError(f"min_user_ratings={min_user_ratings} must be in 1..n_movies={n_movies}")
    if n_users * min_user_ratings > n_ratings:
        raise ValueError(
            f"n_ratings={n_ratings} is too few for n_users={n_users} with at least "
            f"{min_user_ratings} ratings each; use at most {n_ratings // min_user_ratings} users"
        )
    most = n_users * _max_user_ratings(n_movies, min_user_ratings)
    if n_ratings > most:
        raise ValueError(
            f"n_ratings={n_ratings} is more than n_users={n_users} can give when each rates at "
            f"most {MAX_USER_SHARE:g} of n_movies={n_movies}; use more users or movies"
        )
    return min_user_ratings


def _user_counts(
    n_ratings: int, activity: np.ndarray, min_user_ratings: int, n_movies: int
) -> np.ndarray:
    """Ratings per user, (n_users,) int64: the floor plus shares of the rest by activity, capped."""
    cap = _max_user_ratings(n_movies, min_user_ratings) - min_user_ratings
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


def _draw_pairs(
    per_user: np.ndarray,
    popularity: np.ndarray,
    rng: np.random.Generator,
    log_taste: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Distinct (user, movie) pairs, `per_user[u]` for user u, as sorted int64 u * n_movies + m.

    One draw per wanted rating by popularity, deduplicated (or, with `log_taste`, _draw_by_taste's
    pairs), then top-up rounds for the users left short: by popularity first, then uniformly,
    which reaches the movies a heavy user's popularity draws keep missing.
    """
    n_users, n_movies = len(per_user), len(popularity)
    alias = _alias_table(popularity)
    if log_taste is None:
        users = np.repeat(np.arange(n_users, dtype=np.int64), per_user)
        keys = sorted_unique(users * n_movies + _sample(alias, len(users), rng))
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
    per_user: np.ndarray,
    alias: tuple[np.ndarray, np.ndarray],
    log_taste: Callable[[np.ndarray, np.ndarray], np.ndarray],
    rng: np.random.Generator,
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
        keys = np.sort(users * n_movies + _sample(alias, len(users), rng))
        parts.append(keep_by_taste(keys, per_user, n_movies, log_taste, rng))
    return np.concatenate(parts)


def _alias_table(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def _sample(
    alias: tuple[np.ndarray, np.ndarray], size: int, rng: np.random.Generator
) -> np.ndarray:
    """Movie indices by popularity from an _alias_table, (size,) int64."""
    probability, other = alias
    index = rng.integers(len(probability), size=size)
    return np.where(rng.random(size) < probability[index], index, other[index])


def _top_up(
    deficit: np.ndarray,
    have: np.ndarray,
    known: tuple[np.ndarray, np.ndarray],
    n_movies: int,
    alias: tuple[np.ndarray, np.ndarray] | None,
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
        movies = _sample(alias, len(users), rng)
    candidates = sorted_unique(users * n_movies + movies)
    candidates = candidates[
        (index_in(known[0], candidates) < 0) & (index_in(known[1], candidates) < 0)
    ]
    owner = candidates // n_movies
    order = np.argsort(owner + rng.random(len(owner)))  # random order within each user
    candidates, owner = candidates[order], owner[order]
    rank = np.arange(len(candidates)) - np.searchsorted(owner, owner, side="left")
    return candidates[rank < deficit[owner]]


def _score(
    users: np.ndarray,
    movies: np.ndarray,
    model: _LatentModel,
    half_stars: bool,
    rng: np.random.Generator,
) -> tuple[np.ndarray, tuple[float, float]]:
    """Ratings on the grid, (n,) float32, in chunks to bound memory; Floor's floor and noiseless RMSE.

    With half stars, the users of `model.whole_stars_only` still round to whole stars, as many
    real users do.
    """
    rating = np.empty(len(users), dtype=np.float32)
    bayes_sse = noiseless_sse = 0.0
    for start in range(0, len(users), ROWS_PER_CHUNK):
        u, m = users[start : start + ROWS_PER_CHUNK], movies[start : start + ROWS_PER_CHUNK]
        raw = _affinity(model, u, m)
        raw += GLOBAL_MEAN + model.user_bias[u] + model.movie_bias[m]
        mean = raw.astype(np.float64)
        raw += rng.standard_normal(len(u), dtype=np.float32) * NOISE_STD
        step = np.where(model.whole_stars_only[u], 1.0, 0.5) if half_stars else 1.0
        chunk = np.clip(np.round(raw / step) * step, step, MAX_RATING)
        rating[start : start + len(u)] = chunk
        bayes_sse += float(np.sum((chunk - expected_rating(mean, step)) ** 2))
        noiseless_sse += float(np.sum((chunk - np.clip(mean, step, MAX_RATING)) ** 2))
    n = max(len(users), 1)
    return rating, (float(np.sqrt(bayes_sse / n)), float(np.sqrt(noiseless_sse / n)))


def _timestamps(
    users: np.ndarray, n_users: int, time_range: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """Unix seconds, (n,) int64: each user is active over a log-normal span inside time_range."""
    first, last = time_range
    if last < first:
        raise ValueError(f"time_range={time_range} must not end before it starts")
    start = rng.integers(first, last + 1, size=n_users)
    span = rng.lognormal(np.log(ACTIVE_DAYS_MEDIAN * DAY_S), ACTIVE_DAYS_SIGMA, n_users)
    span = np.minimum(span, last - start)
    return start[users] + (rng.random(len(users)) * span[users]).astype(np.int64)


def write_release(
    dataset_name: str,
    ratings: pd.DataFrame,
    movies: pd.DataFrame,
    out_dir: Path,
    compress_level: int = COMPRESS_LEVEL,
) -> Path:
    """Zip ratings and movies in the layout of one release and publish its .md5 beside it.

    The zip holds `<folder>/README.txt` (saying the data is synthetic), the movies file and the
    ratings file, named and encoded as `DATASETS[dataset_name]` says; member times are fixed,
    so the same tables give the same bytes. Both files are written under temporary names and
    renamed, so an interrupted run leaves no finished-looking zip.

    Args:
        dataset_name: a key of DATASETS.
        ratings: userId, movieId, rating, timestamp; ids and timestamps non-negative integers,
            ratings on the release's grid (Dataset.rating_scale, Dataset.rating_step).
        movies: movieId, title, genres ('|'-joined; for ml-100k only names in ML100K_GENRES).
        out_dir: created if missing.
        compress_level: deflate level 0..9.

    Returns:
        The path of `<out_dir>/<dataset_name>.zip`; its md5 is in the same path plus `.md5`.

    Raises:
        ValueError: for an unknown release, ratings off its grid, or a title or genre the
            layout cannot hold.
    """
    if dataset_name not in DATASETS:
        raise ValueError(f"unknown dataset {dataset_name!r}; choose one of {', '.join(DATASETS)}")
    dataset = DATASETS[dataset_name]
    codes = _rating_codes(ratings["rating"].to_numpy(), dataset)
    movies_text = _movies_text(movies, dataset).encode(dataset.encoding)
    readme = _readme(dataset, len(ratings), len(movies)).encode("utf-8")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / dataset.zip_name
    partial = path.with_name(path.name + ".tmp")
    try:
        with zipfile.ZipFile(partial, "w") as zf:
            zf.writestr(_zip_info(f"{dataset.folder}/", compress_level, directory=True), b"")
            for name, data in (("README.txt", readme), (dataset.movies, movies_text)):
                zf.writestr(_zip_info(f"{dataset.folder}/{name}", compress_level), data)
            info = _zip_info(f"{dataset.folder}/{dataset.ratings}", compress_level)
            large = len(ratings) * 40 > ZIP64_ABOVE_BYTES  # 40 bytes bound a row of any layout
            with zf.open(info, "w", force_zip64=large) as member:
                for chunk in _ratings_chunks(ratings, codes, dataset):
                    member.write(chunk)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, path)
    md5 = path.with_name(path.name + ".md5")
    md5_partial = md5.with_name(md5.name + ".tmp")
    md5_partial.write_text(f"MD5 ({path.name}) = {file_md5(path)}\n", encoding="utf-8")
    os.replace(md5_partial, md5)
    return path


def _zip_info(name: str, compress_level: int, directory: bool = False) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    # ZipFile.open(info, "w") compresses at the ZipInfo's level, not the ZipFile's, and the
    # attribute is public (compress_level) only from Python 3.13 on.
    info._compresslevel = compress_level
    info.create_system = 3  # Unix, so the mode bits below mean what they say on every host
    info.external_attr = (0o40755 << 16) | 0x10 if directory else 0o100644 << 16
    info.compress_type = zipfile.ZIP_STORED if directory else zipfile.ZIP_DEFLATED
    return info


def _readme(dataset: Dataset, n_ratings: int, n_movies: int) -> str:
    return (
        f"SYNTHETIC DATA in the layout of the MovieLens {dataset.name} release.\n\n"
        f"{dataset.folder}/{dataset.ratings} ({n_ratings} ratings) and {dataset.folder}/"
        f"{dataset.movies} ({n_movies} movies) were generated by movielens/synth/generate.py from a\n"
        "random latent-factor model. They contain no real ratings, users or GroupLens data\n"
        "and are meant only for benchmarking and testing the pipeline.\n"
    )


def _rating_codes(rating: np.ndarray, dataset: Dataset) -> np.ndarray:
    """Half-star index 2 * rating (1..10), (n,) int8, after checking the release's grid."""
    (low, high), step = dataset.rating_scale, dataset.rating_step
    doubled = np.asarray(rating, dtype=np.float64) * 2
    codes = np.rint(doubled)
    off = (codes != doubled) | (codes < 2 * low) | (codes > 2 * high) | (codes % (2 * step) != 0)
    if off.any():
        bad = rating[np.flatnonzero(off)[0]]
        raise ValueError(
            f"rating {bad!r} is off the {dataset.name} grid {low:g}..{high:g} in steps of {step:g}"
        )
    return codes.astype(np.int8)


def _movies_text(movies: pd.DataFrame, dataset: Dataset) -> str:
    rows = zip(movies["movieId"], movies["title"], movies["genres"], strict=True)
    if dataset.layout == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["movieId", "title", "genres"])
        writer.writerows((int(i), t, g) for i, t, g in rows)
        return buffer.getvalue()
    lines = []
    for movie_id, title, genres in rows:
        _check_title(title, dataset)
        if dataset.layout == "dat":
            lines.append(f"{int(movie_id)}::{title}::{genres}\n")
        else:
            lines.append(_u_item_line(int(movie_id), title, genres))
    return "".join(lines)


def _check_title(title: str, dataset: Dataset) -> None:
    separator = "::" if dataset.layout == "dat" else "|"
    if separator in title or "\n" in title or title.endswith(":"):
        raise ValueError(
            f"title {title!r} cannot be written to {dataset.name}'s {dataset.movies}: it holds "
            f"{separator!r}, a newline or a trailing ':'"
        )


def _u_item_line(movie_id: int, title: str, genres: str) -> str:
    """One line of ml-100k's u.item: id|title|release date|video release date|URL|19 flags."""
    flags = ["0"] * len(ML100K_GENRES)
    for genre in genres.split("|"):
        if genre not in ML100K_GENRES:
            raise ValueError(f"genre {genre!r} of movie {movie_id} is not one of ML100K_GENRES")
        flags[ML100K_GENRES.index(genre)] = "1"
    year = title[-5:-1] if title.endswith(")") and title[-5:-1].isdigit() else ""
    released = f"01-Jan-{year}" if year else ""
    url = "http://us.imdb.com/M/title-exact?" + urllib.parse.quote(title, encoding="latin-1")
    return f"{movie_id}|{title}|{released}||{url}|{'|'.join(flags)}\n"


def _ratings_chunks(ratings: pd.DataFrame, codes: np.ndarray, dataset: Dataset) -> Iterator[bytes]:
    """The ratings file's bytes in chunks; the next chunk is formatted while one is compressed."""
    if dataset.layout == "csv":
        separator, tokens = b",", [f"{c / 2:.1f}".encode() for c in range(11)]
        yield b"userId,movieId,rating,timestamp\n"
    else:
        separator = b"::" if dataset.layout == "dat" else b"\t"
        tokens = [f"{c / 2:g}".encode() for c in range(11)]
    columns = [ratings[name].to_numpy() for name in ("userId", "movieId", "timestamp")]

    def encode(start: int) -> bytes:
        stop = start + ROWS_PER_CHUNK
        user, movie, stamp = (c[start:stop] for c in columns)
        fields = [_int_chars(user), _int_chars(movie), _token_chars(codes[start:stop], tokens)]
        return _join_rows([*fields, _int_chars(stamp)], separator)

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(encode, 0)
        for start in range(ROWS_PER_CHUNK, len(ratings) + ROWS_PER_CHUNK, ROWS_PER_CHUNK):
            chunk = pending.result()
            if start < len(ratings):
                pending = pool.submit(encode, start)
            yield chunk


def _int_chars(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decimal digits right-aligned in a (n, width) uint8 block, and the (n, width) mask of digits.

    Four digits at a time come from a table of "0000".."9999", which is ~5x faster than one
    division per digit.

    Raises:
        ValueError: for negative or non-integer values.
    """
    if len(values) == 0:
        return np.zeros((0, 1), np.uint8), np.zeros((0, 1), bool)
    as_int = values.astype(np.int64)
    if (as_int != values).any() or as_int.min() < 0:
        raise ValueError("ids and timestamps must be non-negative integers")
    width = len(str(int(as_int.max())))
    groups = -(-width // 4)
    packed = np.empty((len(as_int), groups), np.uint32)
    rest = as_int
    for group in range(groups - 1, -1, -1):
        rest, low = np.divmod(rest, 10_000)
        packed[:, group] = _FOUR_DIGITS[low]
    chars = packed.view(np.uint8)[:, groups * 4 - width :]
    n_digits = 1 + np.searchsorted(10 ** np.arange(1, width, dtype=np.int64), as_int, "right")
    return chars, np.arange(width) >= (width - n_digits)[:, None]


def _token_chars(codes: np.ndarray, tokens: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """The tokens of `codes`, right-aligned like _int_chars."""
    width = max(len(t) for t in tokens)
    table = np.frombuffer(b"".join(t.rjust(width) for t in tokens), np.uint8).reshape(-1, width)
    lengths = np.array([len(t) for t in tokens])
    return table[codes], np.arange(width) >= (width - lengths[codes])[:, None]


def _join_rows(fields: list[tuple[np.ndarray, np.ndarray]], separator: bytes) -> bytes:
    """Rows of the fields joined by `separator`, each ending in a newline."""
    n = len(fields[0][0])
    sep = np.broadcast_to(np.frombuffer(separator, np.uint8), (n, len(separator)))
    newline = np.full((n, 1), ord("\n"), np.uint8)
    blocks, masks = [], []
    for chars, used in fields:
        blocks += [chars, sep]
        masks += [used, np.ones(sep.shape, bool)]
    blocks[-1], masks[-1] = newline, np.ones((n, 1), bool)
    return np.concatenate(blocks, axis=1)[np.concatenate(masks, axis=1)].tobytes()


def generate_release(
    dataset_name: str,
    n_ratings: int,
    n_users: int,
    n_movies: int,
    seed: int,
    out_dir: Path,
    compress_level: int = COMPRESS_LEVEL,
    taste: float = 0.0,
) -> Path:
    """Generate a release's movies and ratings and write them with write_release.

    Beside the zip it writes floor_path(zip): the generator's parameters (taste as in
    generate_ratings) and its Floor, the ranking estimates under their own keys.

    Returns:
        The zip's path.
    """
    shape = RELEASE_SHAPES[dataset_name]
    started = time.perf_counter()
    movies = generate_movies(n_movies, seed)
    half_stars = DATASETS[dataset_name].rating_step == 0.5
    ratings, floor = generate_ratings_and_floor(
        n_ratings, n_users, n_movies, seed, half_stars=half_stars,
        time_range=(shape.first_timestamp, shape.last_timestamp), taste=taste,
    )  # fmt: skip
    log.info("generated %d ratings in %.1f s", len(ratings), time.perf_counter() - started)
    started = time.perf_counter()
    path = write_release(dataset_name, ratings, movies, out_dir, compress_level)
    log.info(
        "wrote %s (%d bytes) in %.1f s", path, path.stat().st_size, time.perf_counter() - started
    )
    truth = {
        "dataset": dataset_name, "n_ratings": n_ratings, "n_users": n_users,
        "n_movies": n_movies, "seed": seed, "half_stars": half_stars, "taste": taste,
        "whole_star_user_share": WHOLE_STAR_USER_SHARE if half_stars else 1.0,
        "latent_dim": LATENT_DIM, "global_mean": GLOBAL_MEAN, "user_bias_std": USER_BIAS_STD,
        "movie_bias_std": MOVIE_BIAS_STD, "factor_std": FACTOR_STD, "noise_std": NOISE_STD,
        "max_rating": MAX_RATING, "floor_rmse": floor.floor_rmse,
        "noiseless_rmse": floor.noiseless_rmse, **floor.ranking,
    }  # fmt: skip
    floor_file = floor_path(path)
    partial = floor_file.with_name(floor_file.name + ".tmp")
    partial.write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, floor_file)
    log.info("floor RMSE %.4f (noiseless rating %.4f)", floor.floor_rmse, floor.noiseless_rmse)
    log.info("ranking estimate: %s", json.dumps(floor.ranking))
    return path


def floor_path(zip_path: Path) -> Path:
    """Where generate_release puts a release's parameters and Floor: <release>.floor.json."""
    zip_path = Path(zip_path)
    return zip_path.with_name(zip_path.name.removesuffix(".zip") + ".floor.json")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="movielens synth", description=__doc__)
    parser.add_argument("--dataset", required=True, choices=sorted(RELEASE_SHAPES))
    parser.add_argument("--ratings", type=int, help="default: as many as the real release")
    parser.add_argument("--users", type=int, help="default: scaled from the real release")
    parser.add_argument("--movies", type=int, help="default: scaled from the real release")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--taste", default="0",
        help="a number >= 0: users pick movies ~ popularity * exp(taste * p_u . c_m), c_m a choice "
        f"vector correlated {TASTE_RATING_CORRELATION:g} with the rating's q_m; 0: by popularity "
        "alone (the default)",
    )  # fmt: skip
    parser.add_argument("--compress-level", type=int, default=COMPRESS_LEVEL, choices=range(10))
    parser.add_argument("--out", type=Path, required=True, help="directory for <dataset>.zip(.md5)")
    return parser.parse_args(argv)


def _number(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a number") from None


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = _parse_args(argv)
    n_ratings = RELEASE_SHAPES[args.dataset].ratings if args.ratings is None else args.ratings
    n_users, n_movies = default_counts(args.dataset, n_ratings)
    n_users = n_users if args.users is None else args.users
    n_movies = n_movies if args.movies is None else args.movies
    try:
        path = generate_release(
            args.dataset, n_ratings, n_users, n_movies, args.seed, args.out, args.compress_level,
            taste=_number("taste", args.taste),
        )  # fmt: skip
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    with zipfile.ZipFile(path) as archive:
        declared = sum(info.file_size for info in archive.infolist())
    if declared > DATASETS[args.dataset].extracted_bytes:
        log.warning(
            "%s unpacks to %d bytes, more than the %d the download stage allows for %s",
            path.name, declared, DATASETS[args.dataset].extracted_bytes, args.dataset,
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
