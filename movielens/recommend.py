"""Recommend: a user's top-N movies not yet rated, or the N movies most similar to a movie.

Usage, from the project root after `dvc repro`:
  python -m stages.recommend --user USER_ID -n N [--json]
  python -m stages.recommend --similar-to MOVIE_ID -n N [--json]

A user's list leaves out every movie the user rated anywhere in data/processed (training split,
its validation part included, and test split). A user the model does not know (every rating in the
test split, or filtered out by preprocess.top_users / top_movies) gets a list that is not
personalised, from the saved bias model (mu + b_m), and the output says so. Equal scores go to the
lower movieId. For the standard architecture the weights are read from models/model.keras with
h5py, without TensorFlow; any other model scores with Keras itself. Bad input and missing
artifacts exit 1 with one `error:` line on stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from movielens.data.releases import get_dataset
from movielens.evaluation.ranking import TABLES, Scorer, factors_from_tables, scorer_of, top_k
from movielens.model import weights
from movielens.model.architecture import standard_problem
from movielens.model.baseline import load_bias_model
from movielens.model.layers import MOVIE_EMBEDDING, RATING, USER_EMBEDDING
from movielens.params import load_params
from movielens.plumbing import paths
from movielens.plumbing.errors import PipelineError, require, run_stage

log = logging.getLogger(__name__)

EXAMPLES = """examples:
  python -m stages.recommend --user 1 -n 10
  python -m stages.recommend --user 1 -n 10 --json
  python -m stages.recommend --similar-to 1 -n 10"""


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """One recommended movie; `score` is the predicted rating."""

    movieId: int  # camelCase: the column and JSON field name
    title: str
    genres: str
    score: float


@dataclasses.dataclass(frozen=True)
class Neighbour:
    """One similar movie; `similarity` is the cosine of the two movies' embeddings."""

    movieId: int
    title: str
    genres: str
    similarity: float


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
    scorer: Scorer, user_index: int, seen_movie_indices: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Score every movie for one user and keep the n best unseen ones.

    Returns:
        int64 (m,) movie indices, best first, and float64 (m,) their predicted ratings; m <= n.
    """
    scores = scorer.scores(np.array([user_index]))[0]
    best = top_n(scores, seen_movie_indices, n)
    return best, np.asarray(scorer.ratings(scores[best]), dtype=np.float64)


def similar_movies(vectors: np.ndarray, movie_index: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The n movies whose vectors have the highest cosine similarity to movie_index's, itself left out.

    Args:
        vectors: float (n_movies, dim), the movie embedding table; a zero row has similarity 0.
        movie_index: the movie to compare with.
        n: how many, >= 1.

    Returns:
        int64 (m,) movie indices, most similar first (ties: lower index), and float64 (m,) their
        cosine similarities; m = min(n, n_movies - 1).
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1)
    unit = np.divide(vectors, norms[:, None], out=np.zeros_like(vectors), where=norms[:, None] > 0)
    similarity = unit @ unit[movie_index]
    best = top_n(similarity, np.array([movie_index]), n)
    return best, similarity[best]


# Why a user or movie the ratings hold has no row in the model.
IN_TEST = "all its ratings fell in the test split"
FILTERED = "preprocess.top_users / top_movies filtered out its ratings"


def ratings_of(column: str, value: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training and test rows (userId, movieId) whose `column` equals `value`."""
    require(paths.TRAIN, paths.TEST)
    frames = (
        pd.read_parquet(split, columns=["userId", "movieId"], filters=[(column, "==", value)])
        for split in (paths.TRAIN, paths.TEST)
    )
    return next(frames), next(frames)


def raw_ratings_of(column: str, value: int, kind: str) -> pd.DataFrame:
    """The raw ratings whose `column` equals `value`, for a user or movie missing from the splits.

    Raises:
        PipelineError: when there are none, or the raw ratings are absent (then the cause is unknown).
    """
    dataset = get_dataset(load_params()["data"]["dataset"])
    raw = paths.raw_dir(dataset.name) / dataset.ratings
    if not raw.is_file():
        raise PipelineError(
            f"{kind} {value} is not in data/processed: either no such {column} exists or "
            f"preprocess.top_users / top_movies filtered it out ({raw} is absent, so which is unknown)"
        )
    from movielens.data.preprocess import read_raw  # only for ids absent from the splits

    ratings = read_raw(paths.raw_dir(dataset.name), dataset)[0]
    found = ratings[ratings[column] == value]
    if found.empty:
        raise PipelineError(
            f"unknown {kind} {value}: {dataset.name} has no ratings by that {column}"
        )
    return found


def unknown_user(user_id: int, test: pd.DataFrame) -> tuple[str, np.ndarray]:
    """Why the model does not know a user, and the movieIds the user rated.

    Raises:
        PipelineError: for a userId absent from the ratings (or when that cannot be told).
    """
    if len(test):
        return IN_TEST, test["movieId"].to_numpy()
    return FILTERED, raw_ratings_of("userId", user_id, "user")["movieId"].to_numpy()


def explain_unknown_movie(movie_id: int) -> str:
    """Why the model has no vector for `movie_id`: the error message."""
    _, test = ratings_of("movieId", movie_id)
    if len(test):
        return f"movie {movie_id} is unknown to the model: {IN_TEST}"
    raw_ratings_of("movieId", movie_id, "movie")
    return f"movie {movie_id} is unknown to the model: {FILTERED}"


def index_of(value: int, ids: np.ndarray) -> int | None:
    """The position of `value` in the sorted `ids` (row i holds index i's id), or None."""
    position = int(np.searchsorted(ids, value))
    return position if position < len(ids) and ids[position] == value else None


def indices_of(values: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The positions in the sorted `ids` of those `values` that it holds."""
    position = np.minimum(np.searchsorted(ids, values), max(len(ids) - 1, 0))
    return position[ids[position] == values] if len(ids) else np.zeros(0, np.int64)


def load_scorer(path: Path, n_users: int, n_movies: int) -> Scorer:
    """The saved model's scorer, checked against the processed data's id tables.

    The standard architecture's tables are read with h5py (no TensorFlow); any other model is
    loaded with Keras and scores with its own predict.
    """
    config = weights.read_config(path)
    problem = standard_problem(config)
    if problem is None:
        scorer = factors_from_tables(
            weights.weight_tables(path, config, list(TABLES)), weights.rescaling_of(config, RATING)
        )
        check_sizes(path, scorer.n_users, scorer.n_movies, n_users, n_movies)
        return scorer
    log.info("the model is not the standard architecture (%s): scoring with Keras", problem)
    model = load_keras(path)
    names = {layer.name for layer in model.layers}
    if {USER_EMBEDDING, MOVIE_EMBEDDING} <= names:
        tables = (model.get_layer(name).input_dim for name in (USER_EMBEDDING, MOVIE_EMBEDDING))
        check_sizes(path, *tables, n_users, n_movies)
    return scorer_of(model, n_users, n_movies, load_params()["evaluate"]["batch_size"])


def check_sizes(path: Path, users: int, movies: int, n_users: int, n_movies: int) -> None:
    if (users, movies) != (n_users, n_movies):
        raise PipelineError(
            f"{path} has {users} users and {movies} movies but data/processed "
            f"has {n_users} and {n_movies}; rerun the pipeline (dvc repro)"
        )


def load_keras(path: Path):
    """The Keras model (imports TensorFlow), for models the NumPy reader does not cover."""
    from movielens.model.keras_model import load_model

    try:
        return load_model(path)
    except (OSError, ValueError, KeyError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise PipelineError(f"{path} cannot be loaded ({first}); rebuild it (dvc repro)") from None


def load_movie_vectors(path: Path, n_movies: int) -> np.ndarray:
    """The model's movie embedding table, float32 (n_movies, dim)."""
    config = weights.read_config(path)
    if standard_problem(config) is None:
        vectors = weights.weight_tables(path, config, [MOVIE_EMBEDDING])[MOVIE_EMBEDDING]
    else:
        model = load_keras(path)
        if MOVIE_EMBEDDING not in {layer.name for layer in model.layers}:
            raise PipelineError(f"{path} has no '{MOVIE_EMBEDDING}' layer to compare movies by")
        vectors = np.asarray(model.get_layer(MOVIE_EMBEDDING).get_weights()[0], np.float32)
    if len(vectors) != n_movies:
        raise PipelineError(
            f"{path} has {len(vectors)} movies but data/processed has {n_movies}; "
            "rerun the pipeline (dvc repro)"
        )
    if not np.isfinite(vectors).all():
        raise PipelineError(f"{path} has NaN or infinite weights; retrain (dvc repro train)")
    return vectors


def movie_info(movie_ids: np.ndarray, movies: pd.DataFrame) -> pd.DataFrame:
    """title and genres of each movieId, in order, from `movies` (movieId, title, genres)."""
    info = movies.drop_duplicates("movieId").set_index("movieId").reindex(movie_ids)
    if info["title"].isna().any():
        raise PipelineError(f"{paths.MOVIES} lacks some movies; rerun the pipeline (dvc repro)")
    return info


def describe(movie_ids: np.ndarray, values: np.ndarray, movies: pd.DataFrame, kind=Recommendation):
    """`kind` rows (Recommendation or Neighbour) with title and genres from `movies`."""
    info = movie_info(movie_ids, movies)
    return [
        kind(int(m), str(t), str(g), round(float(v), 4))
        for m, t, g, v in zip(movie_ids, info["title"], info["genres"], values, strict=True)
    ]


def format_table(rows: list, value_header: str = "predicted", digits: int = 2) -> str:
    """An aligned text table: rank, movieId and the value right-aligned, text left-aligned."""
    header = ("#", "movieId", value_header, "title", "genres")
    cells = [
        (str(i), str(r.movieId), f"{dataclasses.astuple(r)[3]:.{digits}f}", r.title, r.genres)
        for i, r in enumerate(rows, 1)
    ]
    widths = [max(len(row[c]) for row in [header, *cells]) for c in range(len(header))]
    lines = []
    for row in [header, *cells]:
        line = [row[c].rjust(widths[c]) for c in range(3)] + [row[3].ljust(widths[3]), row[4]]
        lines.append("  ".join(line).rstrip())
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


def parse_args(
    argv: list[str] | None = None, prog: str = "movielens recommend"
) -> argparse.Namespace:
    parser = _Parser(
        prog=prog,
        description=__doc__.splitlines()[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--user", type=int, help="recommend for this userId (as in the ratings)")
    target.add_argument(
        "--similar-to", type=int, metavar="MOVIE_ID", help="list the movies most like this movieId"
    )
    parser.add_argument("-n", type=positive_int, default=10, help="how many movies (default 10)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser.parse_args(argv)


def user_list(user_id: int, n: int) -> dict:
    """The --user answer: userId, personalised, reason, rated (count) and the recommendations."""
    require(paths.USER_IDS, paths.MOVIE_IDS, paths.TRAIN, paths.TEST, paths.MOVIES, paths.MODEL)
    user_ids = pd.read_parquet(paths.USER_IDS)["userId"].to_numpy()
    movie_ids = pd.read_parquet(paths.MOVIE_IDS)["movieId"].to_numpy()
    train, test = ratings_of("userId", user_id)
    user = index_of(user_id, user_ids)
    if user is not None:
        reason, rated = None, np.concatenate([train["movieId"], test["movieId"]])
        scorer = load_scorer(paths.MODEL, len(user_ids), len(movie_ids))
        best, ratings = recommend(scorer, user, indices_of(rated, movie_ids), n)
    else:
        reason, rated = unknown_user(user_id, test)
        require(paths.BASELINE)
        biases = load_bias_model(paths.BASELINE, len(user_ids), len(movie_ids))
        popular = biases.mu + biases.movie_bias  # an average user's predicted rating
        best = top_n(popular, indices_of(rated, movie_ids), n)
        ratings = popular[best]
    if len(best) < n:
        log.warning("user %d has only %d unrated movies left", user_id, len(best))
    found = describe(movie_ids[best], ratings, pd.read_parquet(paths.MOVIES))
    return {
        "userId": user_id,
        "personalised": reason is None,
        "reason": reason,
        "rated": len(np.unique(rated)),
        "recommendations": [dataclasses.asdict(r) for r in found],
    }


def user_header(answer: dict, n_rows: int) -> str:
    """The table's first line: whose list it is, what it leaves out, and whether it is personal."""
    who = f"Top {n_rows} movies for user {answer['userId']} among those it has not rated"
    if answer["personalised"]:
        lo, hi = load_scorer_scale()
        return f"{who} ({answer['rated']} rated; predicted rating on the {lo:g}-{hi:g} scale)"
    return (
        f"{who} ({answer['rated']} rated). NOT PERSONALISED: the model does not know this user "
        f"({answer['reason']}); ranked by the saved bias model's mu + b_m, the predicted rating "
        "of an average user"
    )


def load_scorer_scale() -> tuple[float, float]:
    """The rating scale of the saved model, from its Rescaling layer's config."""
    return weights.rescaling_of(weights.read_config(paths.MODEL), RATING)


def similar_list(movie_id: int, n: int) -> dict:
    """The --similar-to answer: the movie's movieId, title, genres and its `similar` movies."""
    require(paths.MOVIE_IDS, paths.MOVIES, paths.MODEL)
    movie_ids = pd.read_parquet(paths.MOVIE_IDS)["movieId"].to_numpy()
    movie = index_of(movie_id, movie_ids)
    if movie is None:
        raise PipelineError(explain_unknown_movie(movie_id))
    vectors = load_movie_vectors(paths.MODEL, len(movie_ids))
    best, similarity = similar_movies(vectors, movie, n)
    movies = pd.read_parquet(paths.MOVIES)
    info = movie_info(np.array([movie_id]), movies)
    found = describe(movie_ids[best], similarity, movies, Neighbour)
    return {
        "movieId": movie_id,
        "title": str(info["title"].iloc[0]),
        "genres": str(info["genres"].iloc[0]),
        "similar": [dataclasses.asdict(r) for r in found],
    }


def main(argv: list[str] | None = None, prog: str = "movielens recommend") -> None:
    args = parse_args(argv, prog)
    if args.user is not None:
        answer = user_list(args.user, args.n)
        rows = [Recommendation(**r) for r in answer["recommendations"]]
        header, value, digits = user_header(answer, len(rows)), "predicted", 2
    else:
        answer = similar_list(args.similar_to, args.n)
        rows = [Neighbour(**r) for r in answer["similar"]]
        value, digits = "similarity", 3
        header = (
            f"{len(rows)} movies most similar to {answer['movieId']} {answer['title']} "
            f"({answer['genres']}), by cosine similarity of the model's movie embeddings"
        )
    if args.json:
        print(json.dumps(answer, indent=2, ensure_ascii=False))
        return
    print(f"{header}\n")
    print(format_table(rows, value, digits))


if __name__ == "__main__":
    run_stage(main)
