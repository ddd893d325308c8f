"""The generator's parts put together: a release's ratings, its Floor, and the files of both."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from movielens.data.releases import DATASETS
from movielens.plumbing.files import write_json
from movielens.synth import latent, streams
from movielens.synth.catalogue import generate_movies, movie_ids, user_ids
from movielens.synth.choices import estimate_ranking
from movielens.synth.oracle import Floor, Oracle
from movielens.synth.release import COMPRESS_LEVEL, write_release
from movielens.synth.sampling import LogTaste, draw_pairs, user_counts
from movielens.synth.shapes import DEFAULT_TIME_SHAPE, check_counts, time_range
from movielens.synth.timestamps import timestamps

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RatingsOptions:
    """How generate_ratings draws beyond the counts and the seed; its Args say what each means."""

    half_stars: bool = True
    min_user_ratings: int | None = None
    time_range: tuple[int, int] | None = None
    taste: float = 0.0


def generate_ratings(
    n_ratings: int, n_users: int, n_movies: int, seed: int, **options
) -> pd.DataFrame:
    """Ratings with long-tailed activity and popularity and a learnable latent structure.

    Every user rates between `min_user_ratings` and max(min_user_ratings, n_movies / 2) distinct
    movies, chosen by popularity and, with `taste` > 0, by the user's taste; each rating is
    clip(round_to_grid(GLOBAL_MEAN + b_u + b_m + p_u . q_m + noise)) (movielens.synth.latent).

    Args:
        n_ratings: exact number of rows.
        n_users: number of users; each gets at least `min_user_ratings` ratings.
        n_movies: number of movies; ids are those of `movie_ids(n_movies, seed)`, not all rated.
        seed: non-negative; the same arguments give the same table.
        **options: the fields of RatingsOptions, by keyword:
            half_stars: grid 0.5..5 in steps of 0.5 (though WHOLE_STAR_USER_SHARE of the users
                give whole stars only), else whole stars 1..5. Default True.
            min_user_ratings: the least ratings per user; None (the default): 20 where the
                sample allows it (as the releases guarantee), down to 5 for small samples.
            time_range: first and last unix timestamp, seconds; None (the default): ml-25m's.
            taste: >= 0; user u picks movie m with chance ~ popularity[m] * exp(taste * p_u . c_m),
                c_m a choice vector correlated TASTE_RATING_CORRELATION with the rating's q_m
                (latent.choice_factors), so users rate more of what they like.
                0 (popularity alone, the default) gives the same table as before the option.

    Returns:
        userId, movieId (int32), rating (float32), timestamp (int64), n_ratings rows sorted by
        userId then movieId, no (userId, movieId) pair twice.

    Raises:
        ValueError: for counts that cannot be met, naming the count to change, or a bad taste.
        TypeError: for a keyword that is not a field of RatingsOptions.
    """
    settings = RatingsOptions(**options)
    return generate_with_oracle(n_ratings, n_users, n_movies, seed, settings)[0]


def generate_ratings_and_floor(
    n_ratings: int, n_users: int, n_movies: int, seed: int, **options
) -> tuple[pd.DataFrame, Floor]:
    """generate_ratings' table (the same for the same arguments) and its Floor.

    The Floor's ranking estimate scores every movie for choices.RANKING_USERS users, which
    takes about 10 to 25 s at 62,000 movies.
    """
    settings = RatingsOptions(**options)
    generated = generate_with_oracle(n_ratings, n_users, n_movies, seed, settings)
    table, rmse, oracle, (users, movies, rating) = generated
    started = time.perf_counter()
    ranking = estimate_ranking(oracle, users, movies, rating, streams.rng(seed, streams.RANKING))
    log.info("estimated the ranking ceiling in %.1f s", time.perf_counter() - started)
    return table, Floor(*rmse, ranking)


def generate_with_oracle(
    n_ratings: int, n_users: int, n_movies: int, seed: int, options: RatingsOptions
) -> tuple[pd.DataFrame, tuple[float, float], Oracle, tuple[np.ndarray, ...]]:
    """The table, its (floor_rmse, noiseless_rmse), its Oracle, and its pairs as indices.

    Returns:
        generate_ratings' table; Floor's two RMSEs; the Oracle; (users, movies, rating), the
        rows as (n,) int32 user and movie indices and float32 ratings.
    """
    plan = draw_plan(n_ratings, n_users, n_movies, seed, options)
    model = plan.model
    keys = draw_pairs(
        plan.per_user, model.popularity, streams.rng(seed, streams.PAIRS), plan.log_taste
    )
    users, movies = np.divmod(keys, n_movies)
    del keys
    users, movies = users.astype(np.int32), movies.astype(np.int32)
    rng = streams.rng(seed, streams.NOISE)
    rating, rmse = latent.score(users, movies, model, options.half_stars, rng)
    span = options.time_range or time_range(DEFAULT_TIME_SHAPE)
    columns = {
        "userId": user_ids(n_users, seed)[users],
        "movieId": movie_ids(n_movies, seed)[movies],
        "rating": rating,
        "timestamp": timestamps(users, n_users, span, streams.rng(seed, streams.TIMES)),
    }
    oracle = Oracle(model, plan.choice, options.taste, plan.per_user, options.half_stars)
    return pd.DataFrame(columns, copy=False), rmse, oracle, (users, movies, rating)


@dataclass(frozen=True)
class Plan:
    """What a generated table draws once, O(n_users + n_movies): the latent model, each user's
    number of ratings and the taste that picks them; the pairs, ratings and times come after."""

    model: latent.LatentModel
    per_user: np.ndarray  # (n_users,) int64, user_counts'
    choice: np.ndarray  # (n_movies, LATENT_DIM) float32, latent.choice_factors'
    log_taste: LogTaste | None  # latent.log_taste_of's; None at taste 0


def draw_plan(
    n_ratings: int, n_users: int, n_movies: int, seed: int, options: RatingsOptions
) -> Plan:
    """The Plan of generate_ratings' table for these arguments, after checking them.

    Raises:
        ValueError: as generate_ratings.
    """
    min_user_ratings = check_counts(n_ratings, n_users, n_movies, seed, options.min_user_ratings)
    taste = options.taste
    if not (np.isfinite(taste) and taste >= 0):
        raise ValueError(f"taste={taste} must be a finite number >= 0")
    model = latent.latent_model(n_users, n_movies, streams.rng(seed, streams.MODEL))
    per_user = user_counts(n_ratings, model.activity, min_user_ratings, n_movies)
    choice = latent.choice_factors(model, streams.rng(seed, streams.CHOICE))
    return Plan(model, per_user, choice, latent.log_taste_of(model, choice, taste))


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
    started = time.perf_counter()
    movies = generate_movies(n_movies, seed)
    half_stars = DATASETS[dataset_name].rating_step == 0.5
    ratings, floor = generate_ratings_and_floor(
        n_ratings, n_users, n_movies, seed, half_stars=half_stars,
        time_range=time_range(dataset_name), taste=taste,
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
        "whole_star_user_share": latent.WHOLE_STAR_USER_SHARE if half_stars else 1.0,
        "latent_dim": latent.LATENT_DIM, "global_mean": latent.GLOBAL_MEAN,
        "user_bias_std": latent.USER_BIAS_STD, "movie_bias_std": latent.MOVIE_BIAS_STD,
        "factor_std": latent.FACTOR_STD, "noise_std": latent.NOISE_STD,
        "max_rating": latent.MAX_RATING, "floor_rmse": floor.floor_rmse,
        "noiseless_rmse": floor.noiseless_rmse, **floor.ranking,
    }  # fmt: skip
    write_json(floor_path(path), truth)
    log.info("floor RMSE %.4f (noiseless rating %.4f)", floor.floor_rmse, floor.noiseless_rmse)
    log.info("ranking estimate: %s", json.dumps(floor.ranking))
    return path


def floor_path(zip_path: Path) -> Path:
    """Where generate_release puts a release's parameters and Floor: <release>.floor.json."""
    zip_path = Path(zip_path)
    return zip_path.with_name(zip_path.name.removesuffix(".zip") + ".floor.json")
