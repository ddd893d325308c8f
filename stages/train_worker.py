"""One process of the train stage across processes (train.processes > 1), started by stages.train.

    python -m stages.train_worker COORDINATOR PROCESSES PROCESS_ID SHARDS_FOLDER

It joins the others through process 0's COORDINATOR (host:port), fits the rating model on its
shard in SHARDS_FOLDER (movielens.training.distributed), and process 0 writes the model and the
metrics where the single-process stage does.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd

from movielens.params import load_params
from movielens.plumbing import paths
from movielens.plumbing.errors import PipelineError, require, run_stage
from movielens.training.backend import use_backend
from movielens.training.live import open_live
from movielens.training.processes import check_processes, shard_path
from movielens.training.settings import TrainSettings


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 4:
        raise PipelineError("usage: python -m stages.train_worker COORDINATOR PROCESSES ID SHARDS")
    coordinator, processes, process_id, folder = args[0], int(args[1]), int(args[2]), Path(args[3])
    settings = TrainSettings.from_params(load_params()["train"])
    s = settings
    check_processes(processes, s.backend, s.engine, s.shard_tables, s.batch_size)
    use_backend(settings.backend)
    require(shard_path(folder, process_id), paths.USER_IDS, paths.MOVIE_IDS)
    # Read before joining: a process that cannot read its shard fails before the others wait.
    shard = pd.read_parquet(shard_path(folder, process_id))
    scale = shard.attrs.get(paths.RATING_SCALE_ATTR)  # a custom table's declared (lo, hi)
    n_users = len(pd.read_parquet(paths.USER_IDS))
    n_movies = len(pd.read_parquet(paths.MOVIE_IDS))
    from movielens.training.distributed import fit_shard, join
    from movielens.training.fit import log_fit_time, save_fit

    join(coordinator, processes, process_id)
    start = time.perf_counter()
    if process_id != 0:
        fit_shard(shard, n_users, n_movies, settings, rating_scale=scale)
        return
    with open_live(paths.LIVE_TRAIN) as live:
        fit = fit_shard(shard, n_users, n_movies, settings, live=live, rating_scale=scale)
    log_fit_time(fit, len(shard) * processes, s.validation_size, time.perf_counter() - start)
    save_fit(fit, paths.MODEL, paths.MODEL_PLOT, paths.MODEL_DOT, paths.TRAIN_METRICS)


if __name__ == "__main__":
    run_stage(main)
