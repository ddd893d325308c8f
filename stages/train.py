"""The train stage: build the Keras model, train it with the engine train.engine picks, save it and its metrics.

With train.processes > 1 the stage trains nothing itself: it deals train.parquet into one shard
per process and runs that many train_worker processes on this machine (docs/distributed.md).
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from movielens.model.baseline import BiasSettings, fit_bias_model, save_bias_model
from movielens.params import load_params
from movielens.plumbing import paths
from movielens.plumbing.errors import require, run_stage
from movielens.training.backend import use_backend
from movielens.training.live import open_live
from movielens.training.processes import (
    LOOPBACK,
    check_processes,
    free_port,
    run_workers,
    split_shards,
    write_shards,
)
from movielens.training.settings import TrainSettings
from stages import train_worker

log = logging.getLogger(__name__)

# Bounds a fit across processes whose workers are all alive but stuck (a dead one stops the
# rest within POLL_S): ml-latest-small takes about a minute, ml-32m on the keras engine hours.
WORKERS_TIMEOUT_S = 12 * 3600


def main() -> None:
    section = load_params()["train"]
    settings = TrainSettings.from_params(section)
    processes = section["processes"]
    s = settings
    check_processes(processes, s.backend, s.engine, s.shard_tables, s.batch_size)
    use_backend(settings.backend)  # before Keras is imported: the modules below import it
    from movielens.training.optimizers import lazy_adam_guard

    lazy_adam_guard(settings.optimizer, settings.embeddings_l2)

    require(paths.TRAIN, paths.USER_IDS, paths.MOVIE_IDS)
    train = pd.read_parquet(paths.TRAIN, columns=["user_index", "movie_index", "rating"])
    n_users = len(pd.read_parquet(paths.USER_IDS))
    n_movies = len(pd.read_parquet(paths.MOVIE_IDS))
    log.info("training on %d ratings of %d users and %d movies", len(train), n_users, n_movies)
    if processes == 1:
        train_here(train, n_users, n_movies, settings)
    else:
        train_across(train, processes)
    biases = fit_bias_model(train, n_users, n_movies, BiasSettings.from_params(section))
    save_bias_model(biases, paths.BASELINE)


def train_here(train: pd.DataFrame, n_users: int, n_movies: int, settings: TrainSettings) -> None:
    """Fit in this process and write the model, its drawing and the metrics."""
    from movielens.training.fit import log_fit_time, prepare, save_fit, train_model

    scale = train.attrs.get(paths.RATING_SCALE_ATTR)  # a custom table's declared (lo, hi)
    prepare(settings.engine)
    start = time.perf_counter()
    with open_live(paths.LIVE_TRAIN) as live:
        fit = train_model(train, n_users, n_movies, settings, live=live, rating_scale=scale)
    log_fit_time(fit, len(train), settings.validation_size, time.perf_counter() - start)
    save_fit(fit, paths.MODEL, paths.MODEL_PLOT, paths.MODEL_DOT, paths.TRAIN_METRICS)


def train_across(train: pd.DataFrame, processes: int) -> None:
    """Fit in `processes` worker processes on 127.0.0.1, each on its shard of `train`; process 0
    writes what train_here does. Its log is printed once all have finished."""
    shards = split_shards(train, processes)
    log.info(
        "%d processes, %d ratings each (%d left out to make the shards equal)",
        processes, len(shards[0]), len(train) - processes * len(shards[0]),
    )  # fmt: skip
    coordinator = f"{LOOPBACK}:{free_port()}"
    with tempfile.TemporaryDirectory(prefix="train-shards-") as folder:
        write_shards(shards, Path(folder))
        commands = [
            [
                sys.executable,
                "-m",
                train_worker.__name__,
                coordinator,
                str(processes),
                str(p),
                folder,
            ]
            for p in range(processes)
        ]
        logs = run_workers(commands, Path(folder), WORKERS_TIMEOUT_S)
        sys.stderr.write(logs[0].read_text(errors="replace"))


if __name__ == "__main__":
    run_stage(main)
