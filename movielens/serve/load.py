"""Loading what recommendations are served from: the saved models, the id tables, who rated what."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from movielens.data.custom import CustomTable, raw_ratings_path, read_raw_ratings
from movielens.data.releases import Dataset
from movielens.model import weights
from movielens.model.architecture import standard_problem
from movielens.model.baseline import load_bias_model
from movielens.model.layers import MOVIE_EMBEDDING, RATING, TABLES, USER_EMBEDDING
from movielens.model.watch import WatchModel, load_watch
from movielens.plumbing import paths
from movielens.plumbing.errors import PipelineError, require
from movielens.ranking.scorers import Scorer, factors_from_tables, scorer_of
from movielens.ranking.served import Ranker, non_personal_scores, served_ranker

log = logging.getLogger(__name__)

# Why a user or movie the ratings hold has no row in the model.
IN_TEST = "all its ratings fell in the test split"
FILTERED = "preprocess.top_users / top_movies filtered out its ratings"


@dataclass(frozen=True)
class Catalogue:
    """The processed data's id tables and who rated what (training and test splits).

    Attributes:
        user_ids, movie_ids: int (n,), the id of each user and movie index, ascending.
        ratings: userId, movieId, user_index, movie_index of every rating in both splits
            (index -1: not in the model's id space), the training split's first.
        n_train: how many of them are the training split's.
        movies: movieId, title, genres.
    """

    user_ids: np.ndarray
    movie_ids: np.ndarray
    ratings: pd.DataFrame
    n_train: int
    movies: pd.DataFrame

    @property
    def train(self) -> pd.DataFrame:
        """The training split's rows of `ratings`: the pairs the models were fitted on."""
        return self.ratings.iloc[: self.n_train]


def load_catalogue() -> Catalogue:
    require(paths.USER_IDS, paths.MOVIE_IDS, paths.TRAIN, paths.TEST, paths.MOVIES)
    columns = ["userId", "movieId", "user_index", "movie_index"]
    train, test = (pd.read_parquet(split, columns=columns) for split in (paths.TRAIN, paths.TEST))
    return Catalogue(
        pd.read_parquet(paths.USER_IDS)["userId"].to_numpy(),
        pd.read_parquet(paths.MOVIE_IDS)["movieId"].to_numpy(),
        pd.concat([train, test], ignore_index=True),
        len(train),
        pd.read_parquet(paths.MOVIES),
    )


def load_ranker(catalogue: Catalogue, like_weight: float, batch_size: int) -> Ranker:
    """The served ranker over the saved watch and rating models (batch_size: as load_scorer's)."""
    require(paths.MODEL, paths.WATCH_MODEL)
    n_users, n_movies = len(catalogue.user_ids), len(catalogue.movie_ids)
    watch = load_watch(paths.WATCH_MODEL, n_users, n_movies)
    train = catalogue.train
    rating = load_scorer(paths.MODEL, n_users, n_movies, batch_size)
    return served_ranker(rating, watch, train["user_index"], train["movie_index"], like_weight)


def load_non_personal(catalogue: Catalogue, like_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """For a user no model knows: the served formula's scores, float32 (n_movies,), and the
    average user's predicted rating of each movie (the bias model's mu + b_m), float64."""
    require(paths.BASELINE)
    n_users, n_movies = len(catalogue.user_ids), len(catalogue.movie_ids)
    biases = load_bias_model(paths.BASELINE, n_users, n_movies)
    average = biases.mu + biases.movie_bias
    counts = np.bincount(catalogue.train["movie_index"].to_numpy(), minlength=n_movies)
    return non_personal_scores(counts, average, rating_scale(), like_weight), average


def load_watch_model(n_users: int, n_movies: int) -> WatchModel:
    require(paths.WATCH_MODEL)
    return load_watch(paths.WATCH_MODEL, n_users, n_movies)


def raw_ratings_of(
    column: str, value: int, kind: str, dataset: Dataset | CustomTable
) -> pd.DataFrame:
    """The raw ratings whose `column` equals `value`, for a user or movie missing from the splits.

    Args:
        dataset: the release or custom table the processed data came from (data.dataset).

    Raises:
        PipelineError: when there are none, or the raw ratings are absent (then the cause is unknown).
    """
    raw = raw_ratings_path(dataset)
    if not raw.exists():
        raise PipelineError(
            f"{kind} {value} is not in data/processed: either no such {column} exists or "
            f"preprocess.top_users / top_movies filtered it out ({raw} is absent, so which is unknown)"
        )
    ratings = read_raw_ratings(dataset)
    found = ratings[ratings[column] == value]
    if found.empty:
        raise PipelineError(
            f"unknown {kind} {value}: {dataset.name} has no ratings by that {column}"
        )
    return found


def unknown_user(
    user_id: int, rated_in_splits: pd.DataFrame, dataset: Dataset | CustomTable
) -> tuple[str, np.ndarray]:
    """Why the model does not know a user, and the movieIds the user rated (dataset: data.dataset).

    Raises:
        PipelineError: for a userId absent from the ratings (or when that cannot be told).
    """
    if len(rated_in_splits):
        return IN_TEST, rated_in_splits["movieId"].to_numpy()
    return FILTERED, raw_ratings_of("userId", user_id, "user", dataset)["movieId"].to_numpy()


def explain_unknown_movie(
    movie_id: int, catalogue: Catalogue, dataset: Dataset | CustomTable
) -> str:
    """Why the model has no vector for `movie_id`: the error message (dataset: data.dataset)."""
    if (catalogue.ratings["movieId"] == movie_id).any():
        return f"movie {movie_id} is unknown to the model: {IN_TEST}"
    raw_ratings_of("movieId", movie_id, "movie", dataset)
    return f"movie {movie_id} is unknown to the model: {FILTERED}"


def load_scorer(path: Path, n_users: int, n_movies: int, batch_size: int) -> Scorer:
    """The saved rating model's scorer, checked against the processed data's id tables.

    The standard architecture's tables are read with h5py (no TensorFlow); any other model is
    loaded with Keras and scores with its own predict, batch_size pairs per call.
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
    return scorer_of(model, n_users, n_movies, batch_size)


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
    """The rating model's movie embedding table, float32 (n_movies, dim)."""
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


def rating_scale() -> tuple[float, float]:
    """The rating scale of the saved model, from its Rescaling layer's config."""
    return weights.rescaling_of(weights.read_config(paths.MODEL), RATING)
