"""Accelerator benchmark of the xla engine (issue 23): ratings/s, epoch time and RMSE, on JAX.

Trains the project's own model (movielens.model.keras_model.build_model) through
movielens.training.fit.train_model with train.backend=jax and train.engine=xla, on

- ml-latest-small: the pipeline's split in data/processed (`dvc repro preprocess` first; skipped
  when absent), with params.yaml's train section (refit off, so the fit timed is one run);
- ratings generated in the ml-25m shape (movielens.synth.generate, 162,541 users and 62,423 movies at
  25 M), at embedding_dim 8 and batch_size 32768 with dense Adam and embeddings_l2 = 0, beside
  the generator's floor (the RMSE a perfect model would score).

An epoch's time is measured from one epoch's end to the next (its validation RMSE included); the
first epoch also compiles the program, so "steady" is the median of the others. Sized to finish
within 5 minutes on one GPU; on a CPU run it small:

    python -m benchmarks.gpu --ratings 200000 --epochs 3 --out /tmp/gpu.json

It never estimates: every figure in its output is measured in the run that wrote it, on the
device it names.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from benchmarks.library import train_ours
from movielens import synth
from movielens.params import load_params
from movielens.plumbing import paths
from movielens.plumbing.files import write_json
from movielens.plumbing.runtime import set_up
from movielens.training.backend import use_backend

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

GENERATED = {"embedding_dim": 8, "batch_size": 32768, "optimizer": "adam", "embeddings_l2": 0.0}


class EpochClock:
    """When each epoch ended: train_model's `live` hook, which steps once an epoch."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def log_metric(self, *args, **kwargs) -> None:
        pass  # the figures are the fit's history; only the time is new

    def next_step(self) -> None:
        self.ends.append(time.perf_counter())


def device() -> dict:
    """The device the run trained on, in words, and the versions that ran."""
    import jax  # after main chose the JAX backend, as every Keras import here
    import keras

    devices = jax.devices()
    return {
        "device": devices[0].device_kind,
        "platform": devices[0].platform,
        "devices": len(devices),
        "jax": jax.__version__,
        "keras": keras.__version__,
    }


def timed_fit(train: pd.DataFrame, n_users: int, n_movies: int, p: dict) -> dict:
    """Fit with train_model; the epoch times, ratings/s and RMSEs of the run."""
    clock = EpochClock()
    start = time.perf_counter()
    fit = train_ours(train, n_users, n_movies, p, live=clock)
    seconds = time.perf_counter() - start
    epochs = np.diff([start, *clock.ends])
    steady = float(np.median(epochs[1:])) if len(epochs) > 1 else float(epochs[0])
    fitted = round(len(train) * (1 - p["validation_size"]))
    return {
        "engine": fit.engine,
        "epochs": len(fit.history),
        "fit_seconds": round(seconds, 3),
        "first_epoch_seconds": round(float(epochs[0]), 4),
        "steady_epoch_seconds": round(steady, 4),
        "ratings_per_second": round(fitted / steady),
        "val_rmse": round(float(fit.history["val_rmse"].min()), 4),
        "model": fit.model,
    }


def rmse_on_test(model: keras.Model, test: pd.DataFrame) -> float:
    """RMSE on the test pairs whose user and movie the model knows."""
    known = test[(test["user_index"] >= 0) & (test["movie_index"] >= 0)]
    inputs = {
        "user_index": known["user_index"].to_numpy(),
        "movie_index": known["movie_index"].to_numpy(),
    }
    predicted = model.predict(inputs, batch_size=65536, verbose=0).reshape(-1)
    return round(float(np.sqrt(np.mean((predicted - known["rating"].to_numpy()) ** 2))), 4)


def bench_small(p: dict) -> dict | None:
    """ml-latest-small's pipeline split, params.yaml's training settings; None without it."""
    if not paths.TRAIN.exists():
        log.warning("%s not found (run dvc repro preprocess): ml-latest-small skipped", paths.TRAIN)
        return None
    columns = ["user_index", "movie_index", "rating"]
    train = pd.read_parquet(paths.TRAIN, columns=columns)
    n_users, n_movies = len(pd.read_parquet(paths.USER_IDS)), len(pd.read_parquet(paths.MOVIE_IDS))
    row = timed_fit(train, n_users, n_movies, p)
    row["test_rmse"] = rmse_on_test(row.pop("model"), pd.read_parquet(paths.TEST, columns=columns))
    return {"data": "ml-latest-small", "ratings": len(train), **row}


def bench_generated(p: dict, n_ratings: int, seed: int) -> dict:
    """n_ratings generated in the ml-25m shape; the floor is the generator's own."""
    n_users, n_movies = synth.default_counts("ml-25m", n_ratings)
    start = time.perf_counter()
    ratings, floor = synth.generate_ratings_and_floor(n_ratings, n_users, n_movies, seed)
    train = pd.DataFrame({
        "user_index": np.unique(ratings["userId"], return_inverse=True)[1].astype(np.int32),
        "movie_index": np.unique(ratings["movieId"], return_inverse=True)[1].astype(np.int32),
        "rating": ratings["rating"].to_numpy(np.float32),
    })  # fmt: skip
    log.info("generated %d ratings in %.1f s", n_ratings, time.perf_counter() - start)
    row = timed_fit(train, n_users, n_movies, p | GENERATED)
    row.pop("model")
    return {
        "data": f"generated, ml-25m shape ({n_users} users, {n_movies} movies)",
        "ratings": n_ratings,
        **row,
        "floor_rmse": round(floor.floor_rmse, 4),
        **{k: v for k, v in GENERATED.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", type=int, default=25_000_000, help="generated ratings")
    parser.add_argument("--epochs", type=int, default=8, help="at most this many epochs each")
    parser.add_argument("--seed", type=int, default=42, help="the generator's seed")
    parser.add_argument("--out", default="benchmarks/gpu.json", help="where the JSON goes")
    args = parser.parse_args()
    use_backend("jax")  # before Keras is imported: the fit and device() import it
    p = load_params()["train"] | {"backend": "jax", "engine": "xla", "refit": False}
    p["epochs"] = args.epochs
    result = {**device(), "runs": [r for r in (bench_small(p),) if r is not None]}
    result["runs"].append(bench_generated(p, args.ratings, args.seed))
    for run in result["runs"]:
        print(json.dumps(run))
    write_json(args.out, result)


if __name__ == "__main__":
    set_up()
    main()
