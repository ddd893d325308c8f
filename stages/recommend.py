"""Recommend: the top-N movies a user has not rated in training, by the trained model's predicted rating.

Usage: python -m stages.recommend --user USER_ID -n N [--json], from the project root after
`dvc repro`. Movies are ranked by the model's logit (the same order as the predicted rating); equal
scores go to the lower movieId (movie indices follow sorted movieIds). A user with no training
ratings (filtered out by preprocess.top_users / top_movies, or with every rating in the test split)
is an error, not a fallback to popular movies: the model has no vector for that user, and a silent
non-personal list would look like a personal one. Bad input and missing artifacts exit 1 with one
`error:` line on stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from stages import paths
from stages.common import PipelineError, load_params, require, run_stage
from stages.datasets import get_dataset
from stages.ranking import Factors, factors_from_model, top_k

log = logging.getLogger(__name__)

NO_PERSONALISATION = "the model cannot personalise for it"


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """One recommended movie; `score` is the predicted rating."""

    movieId: int  # camelCase: the column and JSON field name
    title: str
    genres: str
    score: float


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


def recommend(
    factors: Factors, user_index: int, seen_movie_indices: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Score every movie for one user in one product and keep the n best unseen ones.

    Returns:
        int64 (m,) movie indices, best first, and float64 (m,) their predicted ratings; m <= n.
    """
    logits = factors.logits(np.array([user_index]))[0]
    best = top_n(logits, seen_movie_indices, n)
    return best, factors.ratings(logits[best].astype(np.float64))


def explain_unknown_user(user_id: int) -> str:
    """Why `user_id`, absent from the training ids, has no recommendations: the error message."""
    require(paths.TEST)
    in_test = pd.read_parquet(paths.TEST, columns=["userId"])["userId"].eq(user_id).any()
    if in_test:
        return (
            f"user {user_id} has no ratings in the training data (all its ratings fell in the test "
            f"split); {NO_PERSONALISATION}"
        )
    dataset = get_dataset(load_params()["data"]["dataset"])
    raw = paths.raw_dir(dataset.name) / dataset.ratings
    if not raw.is_file():
        return (
            f"user {user_id} is not in data/processed: either no such userId exists or "
            f"preprocess.top_users / top_movies filtered it out ({raw} is absent, so which is unknown)"
        )
    from stages.preprocess import read_raw  # only on this error path

    if read_raw(paths.raw_dir(dataset.name), dataset)[0]["userId"].eq(user_id).any():
        return (
            f"user {user_id} has no ratings in the training data (preprocess.top_users / top_movies "
            f"filtered it out); {NO_PERSONALISATION}"
        )
    return f"unknown user {user_id}: {dataset.name} has no ratings by that userId"


def user_index_of(user_id: int, user_ids: np.ndarray) -> int:
    """The model's index of `user_id`; `user_ids` is sorted (row i holds index i's id).

    Raises:
        PipelineError: explaining why the user has no index (explain_unknown_user).
    """
    position = int(np.searchsorted(user_ids, user_id))
    if position < len(user_ids) and user_ids[position] == user_id:
        return position
    raise PipelineError(explain_unknown_user(user_id))


def load_factors(path: Path, n_users: int, n_movies: int) -> Factors:
    """The saved model's factors, checked against the processed data's id tables."""
    from stages.model import load_model  # TensorFlow loads only once the inputs are known good

    try:
        model = load_model(path)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise PipelineError(f"{path} cannot be loaded ({first}); rebuild it (dvc repro)") from None
    factors = factors_from_model(model)
    if (factors.n_users, factors.n_movies) != (n_users, n_movies):
        raise PipelineError(
            f"{path} has {factors.n_users} users and {factors.n_movies} movies but data/processed "
            f"has {n_users} and {n_movies}; rerun the pipeline (dvc repro)"
        )
    return factors


def describe(movie_ids: np.ndarray, ratings: np.ndarray, movies: pd.DataFrame) -> list:
    """Recommendations with title and genres from `movies` (movieId, title, genres)."""
    info = movies.drop_duplicates("movieId").set_index("movieId").reindex(movie_ids)
    if info["title"].isna().any():
        raise PipelineError(f"{paths.MOVIES} lacks some movies; rerun the pipeline (dvc repro)")
    return [
        Recommendation(int(m), str(t), str(g), round(float(s), 4))
        for m, t, g, s in zip(movie_ids, info["title"], info["genres"], ratings, strict=True)
    ]


def format_table(recommendations: list[Recommendation]) -> str:
    """An aligned text table: rank, movieId and predicted rating right-aligned, text left-aligned."""
    header = ("#", "movieId", "predicted", "title", "genres")
    rows = [
        (str(i), str(r.movieId), f"{r.score:.2f}", r.title, r.genres)
        for i, r in enumerate(recommendations, 1)
    ]
    widths = [max(len(row[c]) for row in [header, *rows]) for c in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [row[c].rjust(widths[c]) for c in range(3)] + [row[3].ljust(widths[3]), row[4]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors become a PipelineError: one `error:` line and exit 1."""

    def error(self, message: str):
        raise PipelineError(f"{message} (see --help)")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = _Parser(prog="python -m stages.recommend", description=__doc__.splitlines()[0])
    parser.add_argument("--user", type=int, required=True, help="the userId (as in the ratings)")
    parser.add_argument("-n", type=positive_int, default=10, help="how many movies (default 10)")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    require(paths.USER_IDS, paths.MOVIE_IDS, paths.TRAIN, paths.MOVIES, paths.MODEL)
    user_ids = pd.read_parquet(paths.USER_IDS)["userId"].to_numpy()
    movie_ids = pd.read_parquet(paths.MOVIE_IDS)["movieId"].to_numpy()
    user = user_index_of(args.user, user_ids)
    seen = pd.read_parquet(
        paths.TRAIN, columns=["movie_index"], filters=[("user_index", "==", user)]
    )
    factors = load_factors(paths.MODEL, len(user_ids), len(movie_ids))
    best, ratings = recommend(factors, user, seen["movie_index"].to_numpy(), args.n)
    if len(best) < args.n:
        log.warning("user %d has only %d unrated movies left", args.user, len(best))
    found = describe(movie_ids[best], ratings, pd.read_parquet(paths.MOVIES))
    if args.json:
        print(json.dumps([dataclasses.asdict(r) for r in found], indent=2, ensure_ascii=False))
        return
    lo, hi = factors.rating_scale
    print(
        f"Top {len(found)} movies for user {args.user} among those it has not rated "
        f"({len(seen)} rated in training; predicted rating on the {lo:g}-{hi:g} scale)\n"
    )
    print(format_table(found))


if __name__ == "__main__":
    run_stage(main)
