"""The generator's command line, `movielens synth` (and `python -m movielens.synth`)."""

from __future__ import annotations

import argparse
import logging
import sys
import zipfile
from pathlib import Path

import yaml

from movielens.data.releases import DATASETS
from movielens.plumbing import paths
from movielens.plumbing.choices import CUSTOM
from movielens.synth.generate import generate_release
from movielens.synth.latent import TASTE_RATING_CORRELATION
from movielens.synth.parts import DEFAULT_BLOCK_RATINGS, write_parts
from movielens.synth.release import COMPRESS_LEVEL
from movielens.synth.shapes import RELEASE_SHAPES, default_counts, time_range

log = logging.getLogger(__name__)

DESCRIPTION = """Synthetic MovieLens-shaped releases: latent-factor ratings zipped in each
release's own layout.

Run `movielens synth --dataset ml-25m --ratings 25000000 --out DIR` to get
`DIR/ml-25m.zip` and `DIR/ml-25m.zip.md5`, a directory usable as MOVIELENS_MIRROR, and
`DIR/ml-25m.floor.json`: the generator's parameters, the RMSE a perfect model would score and
the NDCG@10 a perfect ranker and popularity would (movielens.synth.choices). `--taste T` makes
the movies a user rates follow the user's taste as well as popularity.

`--parts` writes a table of your own instead of a zip, without holding it in memory: run
`movielens synth --dataset ml-25m --ratings 100000000 --parts --out DIR` to get
`DIR/ratings/part-00000.parquet ...` (one block of about `--block-ratings` ratings each),
`DIR/items.parquet` and `DIR/generator.json`, and the params.yaml `data:` block that reads them
as `dataset: custom` on stdout (docs/releases.md).
"""


def main(argv: list[str] | None = None) -> int:
    """Generate one release as the arguments say; 1 with one `error:` line on stderr for bad input.

    Logging is the entry point's to set up (movielens.plumbing.runtime.set_up).
    """
    args = _parse_args(argv)
    n_ratings = RELEASE_SHAPES[args.dataset].ratings if args.ratings is None else args.ratings
    try:
        n_users, n_movies = default_counts(args.dataset, n_ratings)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    n_users = n_users if args.users is None else args.users
    n_movies = n_movies if args.movies is None else args.movies
    if args.parts:
        return _write_parts(args, n_ratings, n_users, n_movies)
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


def _write_parts(args: argparse.Namespace, n_ratings: int, n_users: int, n_movies: int) -> int:
    """write_parts as the arguments say, its data block printed as YAML; 1 for bad input."""
    try:
        custom = write_parts(
            n_ratings, n_users, n_movies, args.seed, args.out, args.block_ratings,
            half_stars=DATASETS[args.dataset].rating_step == 0.5,
            time_range=time_range(args.dataset), taste=_number("taste", args.taste),
        )  # fmt: skip
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if not args.out.resolve().is_relative_to(paths.CUSTOM_DIR.resolve()):
        log.warning(
            "the pipeline reads a custom table only inside %s: move %s there (or generate into "
            "it) and change the paths below (docs/custom-data.md)", paths.CUSTOM_DIR, args.out,
        )  # fmt: skip
    block = {"data": {"dataset": CUSTOM, "custom": custom}}
    print(yaml.safe_dump(block, sort_keys=False, default_flow_style=None), end="")
    return 0


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="movielens synth", description=DESCRIPTION)
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
    parser.add_argument(
        "--parts", action="store_true",
        help="write a folder of Parquet parts read as data.dataset: custom, block by block, "
        "instead of the zip (the dataset gives the counts, the time span and the star grid)",
    )  # fmt: skip
    parser.add_argument(
        "--block-ratings", type=int, default=DEFAULT_BLOCK_RATINGS,
        help="with --parts: ratings generated and written at once, about (one part each); the "
        "peak memory grows with it, not with --ratings",
    )  # fmt: skip
    parser.add_argument(
        "--out", type=Path, required=True,
        help="directory for <dataset>.zip(.md5), or with --parts for ratings/, items.parquet",
    )  # fmt: skip
    return parser.parse_args(argv)


def _number(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a number") from None
