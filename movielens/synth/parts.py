"""Generated ratings as a folder of Parquet parts, one block of users at a time: the memory follows
the block, not the table, so 100 M ratings are written without ever being held at once."""

from __future__ import annotations

import functools
import itertools
import logging
import secrets
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from movielens.data.archive import swap_dir
from movielens.plumbing.files import atomic_path, write_json, write_parquet
from movielens.synth import latent, streams
from movielens.synth.catalogue import generate_movies, movie_ids, user_ids
from movielens.synth.generate import Plan, RatingsOptions, draw_plan
from movielens.synth.sampling import Alias, LogTaste, alias_table, draw_pairs
from movielens.synth.shapes import DEFAULT_TIME_SHAPE, time_range
from movielens.synth.timestamps import activity_windows, place

log = logging.getLogger(__name__)

# About 4 M ratings a block: ~0.5 GB at the peak, and 25 parts of ~30 MB for 100 M ratings.
DEFAULT_BLOCK_RATINGS = 4_000_000
RATINGS_DIR, ITEMS_FILE, SUMMARY_FILE = "ratings", "items.parquet", "generator.json"
PART_NAME = "part-{:05d}.parquet"  # sorted by name = sorted by block = sorted by userId
# generate_ratings' columns and types; the data.custom block maps them one to one.
SCHEMA = pa.schema(
    [("userId", pa.int32()), ("movieId", pa.int32()), ("rating", pa.float32()),
     ("timestamp", pa.int64())]
)  # fmt: skip
COLUMNS = {"user": "userId", "item": "movieId", "rating": "rating", "timestamp": "timestamp"}
# zstd: ~25% smaller than snappy on these columns, and every Parquet reader the pipeline uses
# (pyarrow, Spark) reads it.
COMPRESSION = "zstd"


def user_blocks(per_user: np.ndarray, block_ratings: int) -> np.ndarray:
    """Bounds of consecutive blocks of whole users, about `block_ratings` ratings each.

    Block k holds the users whose running total of ratings ends in (k * block_ratings,
    (k + 1) * block_ratings], so a block has at most block_ratings plus one user's ratings.

    Returns:
        (n_blocks + 1,) int64, from 0 to n_users: block k is users bounds[k]..bounds[k + 1] - 1.
    """
    total = np.cumsum(per_user)
    cuts = np.searchsorted(total, np.arange(block_ratings, total[-1], block_ratings), "right")
    return np.unique(np.concatenate([[0], cuts, [len(per_user)]]))


def write_parts(
    n_ratings: int,
    n_users: int,
    n_movies: int,
    seed: int,
    out_dir: Path,
    block_ratings: int = DEFAULT_BLOCK_RATINGS,
    **options,
) -> dict[str, Any]:
    """Write a generated table as out_dir/ratings/part-NNNNN.parquet, out_dir/items.parquet and
    out_dir/generator.json, one block of users (user_blocks) at a time.

    The Plan (latent model, per-user counts, taste) is drawn once as generate_ratings draws it,
    and so are the users' activity windows; block k's pairs, noise and times come from the
    streams (seed, PAIRS | NOISE | TIMES, k). So the folder is the same bytes for the same
    arguments and block_ratings, every user has exactly the ratings user_counts gives it, and
    no pair repeats (a block's pairs are distinct, blocks share no user). It is not
    generate_ratings' table: the pairs come from other streams. The ratings folder appears
    whole or not at all (built beside, then swapped in); each part is written atomically.

    Args:
        n_ratings, n_users, n_movies, seed, **options: as generate_ratings.
        out_dir: created if missing; its ratings folder and two files are replaced.
        block_ratings: >= 1, ratings per block, about; the peak memory grows with it.

    Returns:
        The params.yaml `data.custom` block that reads the folder: ratings, items, columns,
        rating_scale.

    Raises:
        ValueError: as generate_ratings, or for a block_ratings below 1.
    """
    settings = RatingsOptions(**options)
    if block_ratings < 1:
        raise ValueError(f"block_ratings={block_ratings} must be at least 1")
    plan = draw_plan(n_ratings, n_users, n_movies, seed, settings)
    span = settings.time_range or time_range(DEFAULT_TIME_SHAPE)
    windows = activity_windows(n_users, span, streams.rng(seed, streams.TIMES))  # checks span
    out_dir = Path(out_dir)
    write_parquet(out_dir / ITEMS_FILE, generate_movies(n_movies, seed))
    bounds = user_blocks(plan.per_user, block_ratings)
    stage = _staging_dir(out_dir)
    try:
        sse = _write_blocks(plan, bounds, seed, settings.half_stars, windows, stage)
        swap_dir(stage, out_dir / RATINGS_DIR, stage.with_name(stage.name + ".old"))
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    custom = custom_block(out_dir, settings.half_stars)
    summary = {
        "n_ratings": n_ratings, "n_users": n_users, "n_movies": n_movies, "seed": seed,
        "half_stars": settings.half_stars, "taste": settings.taste,
        "block_ratings": block_ratings, "parts": len(bounds) - 1,
        "floor_rmse": float(np.sqrt(sse[0] / n_ratings)),
        "noiseless_rmse": float(np.sqrt(sse[1] / n_ratings)), "custom": custom,
    }  # fmt: skip
    write_json(out_dir / SUMMARY_FILE, summary)
    log.info("wrote %d ratings in %d parts to %s", n_ratings, len(bounds) - 1, out_dir)
    return custom


def custom_block(out_dir: Path, half_stars: bool) -> dict[str, Any]:
    """The params.yaml data.custom block that reads write_parts' folder `out_dir`."""
    return {
        "ratings": str(out_dir / RATINGS_DIR), "items": str(out_dir / ITEMS_FILE),
        "columns": dict(COLUMNS), "rating_scale": [0.5 if half_stars else 1.0, latent.MAX_RATING],
    }  # fmt: skip


def _staging_dir(out_dir: Path) -> Path:
    """A new empty folder beside the ratings folder, after removing those of killed runs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(f".{RATINGS_DIR}.*.tmp*"):
        shutil.rmtree(stale, ignore_errors=True)
    stage = out_dir / f".{RATINGS_DIR}.{secrets.token_hex(4)}.tmp"
    stage.mkdir()
    return stage


def _write_blocks(
    plan: Plan,
    bounds: np.ndarray,
    seed: int,
    half_stars: bool,
    windows: tuple[np.ndarray, np.ndarray],
    folder: Path,
) -> tuple[float, float]:
    """Write each block's part into `folder`; the floor's and noiseless squared errors summed.

    `windows` are activity_windows' for every user, drawn once from the stream (seed, TIMES).
    """
    n_users, n_movies = len(plan.per_user), len(plan.model.popularity)
    ids = (user_ids(n_users, seed), movie_ids(n_movies, seed))
    alias = alias_table(plan.model.popularity)
    floor_sse = noiseless_sse = 0.0
    for block, (first, stop) in enumerate(itertools.pairwise(bounds)):
        users, movies = block_pairs(plan, int(first), int(stop), seed, block, alias)
        rng = streams.rng(seed, streams.NOISE, block)
        rating, (floor, noiseless) = latent.score(users, movies, plan.model, half_stars, rng)
        stamps = place(users, windows, streams.rng(seed, streams.TIMES, block))
        columns = [ids[0][users], ids[1][movies], rating, stamps]
        with atomic_path(folder / PART_NAME.format(block)) as tmp:
            pq.write_table(pa.table(columns, schema=SCHEMA), tmp, compression=COMPRESSION)
        floor_sse += floor**2 * len(users)
        noiseless_sse += noiseless**2 * len(users)
        log.info("block %d: users %d..%d, %d ratings", block, first, stop - 1, len(users))
    return floor_sse, noiseless_sse


def block_pairs(
    plan: Plan, first: int, stop: int, seed: int, block: int, alias: Alias
) -> tuple[np.ndarray, np.ndarray]:
    """draw_pairs for users first..stop-1 from the block's stream, as generate_ratings draws all.

    Returns:
        (users, movies): (n,) int32 user and movie indices, sorted by user then movie.
    """
    n_movies = len(plan.model.popularity)
    log_taste = (
        None if plan.log_taste is None else functools.partial(_shifted, plan.log_taste, first)
    )
    rng = streams.rng(seed, streams.PAIRS, block)
    keys = draw_pairs(plan.per_user[first:stop], plan.model.popularity, rng, log_taste, alias)
    users, movies = np.divmod(keys, n_movies)
    del keys
    return (users + first).astype(np.int32), movies.astype(np.int32)


def _shifted(log_taste: LogTaste, first: int, users: np.ndarray, movies: np.ndarray) -> np.ndarray:
    """log_taste of the block's users, whom draw_pairs numbers from 0 and the Plan from `first`."""
    return log_taste(users + first, movies)
