"""The train_watch stage: fit the will-watch model on who rated what in the training split."""

from __future__ import annotations

import logging
import time

import pandas as pd

from movielens.model.watch import WatchModel, fit_watch, history_matrix, save_watch
from movielens.params import load_params
from movielens.plumbing import paths
from movielens.plumbing.errors import require, run_stage
from movielens.plumbing.files import write_json
from movielens.spark.als import PAIR_COLUMNS, fit_watch_spark
from movielens.spark.session import SparkSettings, spark_session

log = logging.getLogger(__name__)


def fit_on_spark(compute: dict, watch: dict, n_users: int, n_movies: int) -> tuple[WatchModel, int]:
    """The watch model fitted on Spark from data/processed/train.parquet, and its distinct pairs."""
    settings = SparkSettings(master=compute["spark_master"], memory=compute["spark_memory"])
    with spark_session(settings, app_name="train_watch") as spark:
        train = spark.read.parquet(str(paths.TRAIN)).select(*PAIR_COLUMNS)
        model = fit_watch_spark(train, n_users, n_movies, **watch)
        pairs = train.distinct().count()
    return model, pairs


def main() -> None:
    params = load_params()
    p, compute = params["watch"], params["compute"]
    require(paths.TRAIN, paths.USER_IDS, paths.MOVIE_IDS)
    n_users = len(pd.read_parquet(paths.USER_IDS))
    n_movies = len(pd.read_parquet(paths.MOVIE_IDS))
    start = time.perf_counter()
    if compute["engine"] == "spark":
        model, pairs = fit_on_spark(compute, p, n_users, n_movies)
    else:
        train = pd.read_parquet(paths.TRAIN, columns=list(PAIR_COLUMNS))
        history = history_matrix(train["user_index"], train["movie_index"], n_users, n_movies)
        model = fit_watch(history, **p)  # the watch section is fit_watch's arguments, key for key
        pairs = int(history.nnz)
    seconds = time.perf_counter() - start
    log.info("watch model (%s, %s) fitted in %.1f s", model.kind, compute["engine"], seconds)
    save_watch(model, paths.WATCH_MODEL)
    write_json(
        paths.WATCH_METRICS,
        {
            "model": model.kind,
            "movies_scored": len(model.catalogue),
            "movies": n_movies,
            "users": n_users,
            "pairs": pairs,
        },
    )


if __name__ == "__main__":
    run_stage(main)
