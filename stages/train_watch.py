"""The train_watch stage: fit the will-watch model on who rated what in the training split."""

from __future__ import annotations

import logging
import time

import pandas as pd

from movielens.model.watch import fit_watch, history_matrix, save_watch
from movielens.params import load_params
from movielens.plumbing import paths
from movielens.plumbing.errors import require, run_stage
from movielens.plumbing.files import write_json

log = logging.getLogger(__name__)


def main() -> None:
    p = load_params()["watch"]
    require(paths.TRAIN, paths.USER_IDS, paths.MOVIE_IDS)
    train = pd.read_parquet(paths.TRAIN, columns=["user_index", "movie_index"])
    n_users = len(pd.read_parquet(paths.USER_IDS))
    n_movies = len(pd.read_parquet(paths.MOVIE_IDS))
    history = history_matrix(train["user_index"], train["movie_index"], n_users, n_movies)
    start = time.perf_counter()
    model = fit_watch(history, **p)  # the watch section is fit_watch's arguments, key for key
    seconds = time.perf_counter() - start
    log.info("watch model (%s) fitted in %.1f s", model.kind, seconds)
    save_watch(model, paths.WATCH_MODEL)
    write_json(
        paths.WATCH_METRICS,
        {
            "model": model.kind,
            "movies_scored": len(model.catalogue),
            "movies": n_movies,
            "users": n_users,
            "pairs": int(history.nnz),
        },
    )


if __name__ == "__main__":
    run_stage(main)
