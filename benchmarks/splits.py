"""The train/test splits the benchmarks fit on: the pipeline's own, and others made the same way.

The pipeline's split is what the preprocess stage wrote under data/processed; resplit makes the
split another preprocess.seed would give, from the same raw ratings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from movielens.data.preprocess import load_release, preprocess
from movielens.data.releases import get_dataset
from movielens.plumbing import paths
from movielens.plumbing.errors import PipelineError

SPLIT_COLUMNS = ["userId", "movieId", "user_index", "movie_index", "rating"]


@dataclass(frozen=True)
class Split:
    """A train/test split as the preprocess stage writes it.

    train and test hold userId, movieId (raw ids), user_index, movie_index (int32; -1 in test for
    ids unseen in training) and rating (float32).
    """

    train: pd.DataFrame
    test: pd.DataFrame
    n_users: int
    n_movies: int


def read_processed(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """One file the preprocess stage writes.

    Raises:
        PipelineError: naming the file when it is missing.
    """
    try:
        return pd.read_parquet(path, columns=columns)
    except FileNotFoundError:
        raise PipelineError(
            f"{path} not found; run `dvc repro preprocess` (make bench does) first"
        ) from None


def load_split() -> Split:
    """The split the pipeline wrote under data/processed (run `dvc repro preprocess` first)."""
    return Split(
        read_processed(paths.TRAIN, SPLIT_COLUMNS),
        read_processed(paths.TEST, SPLIT_COLUMNS),
        len(read_processed(paths.USER_IDS)),
        len(read_processed(paths.MOVIE_IDS)),
    )


def kept_ratings() -> pd.DataFrame:
    """Every rating the preprocess stage kept (data/processed/ratings.parquet), the folds' source."""
    return read_processed(paths.RATINGS)


def release_ratings(params: dict) -> pd.DataFrame:
    """The validated, deduplicated ratings the preprocess stage splits (its load_release)."""
    dataset = get_dataset(params["data"]["dataset"])
    ratings, _, _ = load_release(paths.raw_dir(dataset.name), dataset)
    return ratings


def resplit(ratings: pd.DataFrame, prep: dict, seed: int) -> Split:
    """Split `ratings` as the preprocess stage does with the `preprocess` params, but with `seed`."""
    done = preprocess(
        ratings,
        prep["top_users"],
        prep["top_movies"],
        prep["test_size"],
        seed,
        prep["split"],
        history_size=prep["history_size"],
    )
    return Split(done.train, done.test, len(done.user_ids), len(done.movie_ids))


def same_split(a: Split, b: Split) -> bool:
    """Whether two splits hold the same training and test rows in the same order."""
    columns = ["userId", "movieId", "rating"]
    return all(
        x[columns].reset_index(drop=True).equals(y[columns].reset_index(drop=True))
        for x, y in ((a.train, b.train), (a.test, b.test))
    )


def std_of_test_ratings(split: Split) -> float:
    """The standard deviation of the test ratings: the RMSE of predicting their own mean.

    A split's difficulty before any model: a test split whose ratings spread less is easier for
    every model.
    """
    return round(float(split.test["rating"].std(ddof=0)), 6)


def protocol(params: dict, split: Split) -> dict:
    """What every row was measured on: dataset, split parameters and sizes."""
    prep = params["preprocess"]
    return {
        "dataset": params["data"]["dataset"],
        "split": {"test_size": prep["test_size"], "seed": prep["seed"]},
        "top_users": prep["top_users"],
        "top_movies": prep["top_movies"],
        "n_train": len(split.train),
        "n_test": len(split.test),
        "cold_test_pairs": int(
            ((split.test["user_index"] < 0) | (split.test["movie_index"] < 0)).sum()
        ),
    }
