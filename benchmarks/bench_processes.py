"""The train stage in 1 and in 2 JAX processes on the same training split: test RMSE and wall time.

    MOVIELENS_MIRROR=<folder with the release zip> python -m benchmarks.bench_processes [--processes 1 2]

It copies the project to a temporary folder (benchmarks.project_copy), runs the download and
preprocess stages there, then the train stage once per process count with train.backend=jax and
train.engine=keras, and scores each saved model on the test split as the evaluate stage does (the
model on warm pairs, the bias model on cold ones). It prints one JSON line per run; this checkout
is never touched (docs/distributed.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from benchmarks.project_copy import make_project, project_env, set_params
from movielens.plumbing import paths
from movielens.plumbing.errors import PipelineError, run_stage
from movielens.training.backend import use_backend


def run(project: Path, module: str, env: dict) -> float:
    """Run `python -m module` in `project`; its wall time in seconds."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", module], cwd=project, env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise PipelineError(f"{module} failed: {done.stderr.strip().splitlines()[-1]}")
    return time.perf_counter() - start


def score(project: Path) -> dict:
    """The saved model's test RMSE (with the bias model for cold pairs) and on warm pairs only."""
    from movielens.evaluation.accuracy import predict_test, rmse
    from movielens.model.baseline import load_bias_model
    from movielens.model.keras_model import load_model

    test = pd.read_parquet(project / paths.TEST)
    n_users = len(pd.read_parquet(project / paths.USER_IDS))
    n_movies = len(pd.read_parquet(project / paths.MOVIE_IDS))
    biases = load_bias_model(project / paths.BASELINE, n_users, n_movies)
    predicted, _ = predict_test(load_model(project / paths.MODEL), biases, test, 65536)
    warm = ((test["user_index"] >= 0) & (test["movie_index"] >= 0)).to_numpy()
    ratings = test["rating"].to_numpy()
    return {
        "test_rmse": round(rmse(ratings, predicted), 4),
        "warm_rmse": round(rmse(ratings[warm], predicted[warm]), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    if "MOVIELENS_MIRROR" not in os.environ:
        raise PipelineError("set MOVIELENS_MIRROR to a folder holding the release's zip and .md5")
    use_backend("jax")  # the saved models are scored here, on the backend they trained on
    env = project_env(Path(os.environ["MOVIELENS_MIRROR"]))
    env.pop("KERAS_BACKEND", None)  # params.yaml chooses it in the copy
    with tempfile.TemporaryDirectory(prefix="bench-processes-") as folder:
        project = make_project(Path(folder), {"train.backend": "jax", "train.engine": "keras"}, env)
        run(project, "stages.download", env)
        run(project, "stages.preprocess", env)
        for processes in args.processes:
            set_params(project / paths.PARAMS, {"train.processes": processes})
            wall = run(project, "stages.train", env)
            metrics = json.loads((project / paths.TRAIN_METRICS).read_text())
            row = {"processes": processes, "train_stage_s": round(wall, 1), **score(project)}
            row |= {k: metrics[k] for k in ("epochs_run", "best_epoch", "fitted_ratings")}
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    run_stage(main)
