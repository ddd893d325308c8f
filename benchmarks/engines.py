"""Our model timed as the benchmark rows record it: by each engine in this process, on Keras' JAX
backend in a process of its own, and the train stage as a whole process.

Whatever a process pays once (compiling the kernels, starting TensorFlow's runtime) is timed apart
from the fits, the way Surprise's Cython is compiled when it is installed and imported before it
fits.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.library import fit_biases, ratings_through, train_ours
from benchmarks.names import ENGINES, JAX_ENGINE, OURS, engine_row_name
from benchmarks.rows import result_row
from benchmarks.splits import Split
from movielens.evaluation.accuracy import predict_test
from movielens.model.keras_model import build_model, model_inputs
from movielens.plumbing import paths
from movielens.plumbing.errors import PipelineError
from movielens.training.backend import accelerators, active_backend
from movielens.training.compiled.fit import warm_up_kernels
from movielens.training.engines import choose_engine

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]


def choose_default_engine(params: dict) -> str:
    """The engine the train stage runs for the standard model with these params, on this machine."""
    p = params["train"]
    model = build_model(2, 2, 1, p["embeddings_l2"], p["activity_l2"], (0.5, 5.0))
    return choose_engine(p["engine"], model, active_backend(), len(accelerators()))[0]


def time_kernel_warm_up() -> float:
    """Seconds to make the training kernels ready: compile them, or load them from Numba's cache.

    Numba's cache of the compiled kernels lies outside the checkout, in a folder keyed by the
    content of the kernels' source (movielens.training.compiled.kernels; the cache module,
    movielens.training.compiled.cache, says how): a new content compiles once (a few seconds),
    and every later process, in this checkout or any copy of it, loads that code. The train
    stage makes the kernels ready before it times the fit, and so does the benchmark, so that
    the fit time is the training alone.
    """
    start = time.perf_counter()
    warm_up_kernels()
    return time.perf_counter() - start


def warm_up_runtime(params: dict) -> float:
    """Seconds to start TensorFlow's runtime: its devices and first ops, once per process.

    Whichever fit comes first in a process pays this; the benchmark pays it before timing either
    engine, so that neither fit time holds it (the train stage's whole time is measured apart).
    """
    p = params["train"]
    start = time.perf_counter()
    model = build_model(2, 2, p["embedding_dim"], p["embeddings_l2"], p["activity_l2"], (0.5, 5.0))
    model(model_inputs(np.zeros(1, np.int32), np.zeros(1, np.int32)))
    return time.perf_counter() - start


def bench_ours(
    split: Split, params: dict, engine: str | None = None, batch_size: int | None = None
) -> dict:
    """Fit our model with movielens.training.fit.train_model (timed) and score it as evaluate does.

    Args:
        engine: "keras" or "compiled"; None keeps train.engine from params.yaml.
        batch_size: pairs per model.predict call; None: evaluate.batch_size.

    The row's epochs count the early-stopping run and the refit; its ratings are the ratings
    the engines went through, divided by those epochs (so ratings * epochs / fit_seconds is the
    throughput).
    """
    p = dict(params["train"], engine=engine or params["train"]["engine"])
    log.info("%s: fitting on %d ratings (engine %s)", OURS, len(split.train), p["engine"])
    start = time.perf_counter()
    fit = train_ours(split.train, split.n_users, split.n_movies, p)
    seconds = time.perf_counter() - start
    biases = fit_biases(split.train, split.n_users, split.n_movies, p)
    batch_size = params["evaluate"]["batch_size"] if batch_size is None else batch_size
    predicted, _ = predict_test(fit.model, biases, split.test, batch_size)
    epochs = fit.epochs_in_all
    row = result_row(
        engine_row_name(fit.engine) if engine else OURS,
        split.test["rating"].to_numpy(),
        predicted,
        seconds,
        epochs,
        round(ratings_through(fit, len(split.train), p) / epochs),
        p,
    )
    row |= {"engine": fit.engine, "best_epoch": fit.best_epoch, "refit": fit.refit}
    log.info("%s: %.1f s, %d epochs, test RMSE %.4f", row["model"], seconds, epochs, row["rmse"])
    return row


def bench_engines(split: Split, params: dict, train_stage: bool) -> list[dict]:
    """Our model's rows: by each of ENGINES in this process, then by JAX_ENGINE on JAX.

    The kernels and TensorFlow's runtime are made ready first, and their seconds recorded beside
    the fits; with `train_stage`, the compiled row also holds the train stage's whole time.
    """
    warm_up = time_kernel_warm_up()
    log.info("%s: training kernels compiled or loaded in %.1f s", OURS, warm_up)
    runtime = warm_up_runtime(params)
    log.info("%s: TensorFlow's runtime started in %.1f s", OURS, runtime)
    rows = []
    for engine in ENGINES:
        row = bench_ours(split, params, engine) | {"runtime_warm_up_seconds": round(runtime, 3)}
        if engine == "compiled":
            row["kernel_warm_up_seconds"] = round(warm_up, 3)
            if train_stage:
                row["train_stage_seconds"] = round(time_train_stage(), 3)
        rows.append(row)
    return [*rows, bench_on_jax()]


def python_env(env: dict) -> dict:
    """`env` with this checkout first on PYTHONPATH: `python -m` finds it from any folder."""
    return {
        **env,
        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])]),
    }


def last_line(stderr: str) -> str:
    """What a failed process said last."""
    return (stderr.strip().splitlines() or ["(no output)"])[-1]


def bench_on_jax(engine: str = JAX_ENGINE) -> dict:
    """bench_ours's row for `engine` on Keras' JAX backend (`python -m benchmarks.bench_jax`).

    Raises:
        PipelineError: when that process fails; the message ends with its last output line.
    """
    env = python_env({k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"})
    command = [sys.executable, "-m", "benchmarks.bench_jax", engine]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise PipelineError(
            f"python -m benchmarks.bench_jax {engine} failed: {last_line(done.stderr)}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def time_train_stage() -> float:
    """Wall-clock seconds of `python -m stages.train`, process start to exit, in a scratch folder.

    The folder holds a copy of params.yaml and of the three files the stage reads; the stage
    writes its model and metrics there, never into the project.

    Raises:
        PipelineError: when the stage fails; the message ends with its last output line.
    """
    with tempfile.TemporaryDirectory(prefix="bench-train-stage-") as scratch:
        work = Path(scratch)
        shutil.copy2(paths.PARAMS, work / paths.PARAMS)
        for source in (paths.TRAIN, paths.USER_IDS, paths.MOVIE_IDS):
            (work / source).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, work / source)
        log.info("train stage: running python -m stages.train in %s", work)
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "stages.train"],
            cwd=work,
            env=python_env(dict(os.environ)),
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise PipelineError(
            f"python -m stages.train failed ({done.returncode}): {last_line(done.stderr)}"
        )
    log.info("train stage: %.1f s from process start to exit", seconds)
    return seconds
