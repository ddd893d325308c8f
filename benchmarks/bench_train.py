"""Training benchmark (issue #3): our model beside Surprise's algorithms on the pipeline's own split.

Run `make bench` (or `python -m benchmarks.bench_train` from the project root after
`dvc repro preprocess`). Every model fits the rows of data/processed/train.parquet and predicts
every pair of data/processed/test.parquet; the table goes to stdout, one JSON row per model to
benchmarks/results.json and the preprocess-seed check to benchmarks/seeds.json. Then every model
fits and scores the folds of the crossvalidate stage (movielens.evaluation.crossvalidation.fold_splits, the same
params), written to benchmarks/cv.json.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from surprise import SVD, BaselineOnly, Dataset, KNNBaseline, Reader, SVDpp
from surprise.prediction_algorithms.algo_base import AlgoBase

from movielens.data.preprocess import load_release, preprocess
from movielens.data.releases import get_dataset
from movielens.evaluation.accuracy import predict_test, scores
from movielens.evaluation.crossvalidation import fold_means, fold_splits, mean_and_std
from movielens.model.baseline import fit_bias_model
from movielens.model.keras_model import build_model, model_inputs
from movielens.params import load_params
from movielens.plumbing import paths
from movielens.plumbing.errors import PipelineError, run_stage
from movielens.plumbing.files import write_json
from movielens.training.backend import accelerators, active_backend
from movielens.training.compiled.fit import warm_up_kernels
from movielens.training.engines import choose_engine
from movielens.training.fit import rating_scale_of, ratings_processed, train_model

log = logging.getLogger(__name__)

OURS = "movielens_mf"  # the Keras model's own name (movielens.model.keras_model.build_model)
ENGINES = ("compiled", "keras")  # `movielens_mf` fits with each, on the same split, in one run
COMPILED, KERAS = (f"{OURS} ({engine})" for engine in ENGINES)
JAX_ENGINE = "xla"  # then fits with this one on Keras' JAX backend, in a process of its own
XLA = f"{OURS} ({JAX_ENGINE})"
RMSE_TARGET = 0.845  # issue #10: both engines' test RMSE at most this
ENGINE_RMSE_GAP = 0.003  # and within this of each other
KERAS_FIT_RATIO_TARGET = (
    8.0  # the Keras engine's fit time at most this many times the compiled one's
)
RESULTS = Path("benchmarks/results.json")
DEFAULT_SEEDS = (1, 2, 3)
DEFAULT_SPREAD = 20  # splits of preprocess seeds 1..N that show how much the test RMSE moves
SEED_TOLERANCE = 0.01  # RMSE stars: how far another split's test RMSE may sit from the pipeline's
TRAIN_STAGE_TARGET_S = 15.0  # issue #3: `python -m stages.train`, process start to exit
ROOT = Path(__file__).resolve().parents[1]

# "Epochs" below means full passes over the training ratings that fit() makes:
#   BaselineOnly: ALS sweeps, bsl_options n_epochs (10 unless set: surprise's optimize_baselines.pyx);
#   SVD, SVDpp: SGD epochs, n_epochs (20 by default); an SVD++ epoch also walks each user's
#       implicit-feedback items, so it costs more per rating than an SVD epoch;
#   KNNBaseline: 1, the pass that accumulates the item-item pearson_baseline similarities (the ALS
#       baseline it fits first, 10 sweeps, is not counted).
# Our model: Adam epochs actually run (early stopping), over the rows left after the validation part.
ALS_DEFAULT_EPOCHS = 10


@dataclass(frozen=True)
class Peer:
    """A Surprise algorithm: how to make it, its "epochs", and the settings a row records."""

    make: Callable[[int], AlgoBase]  # seed -> a fresh, unfitted algorithm
    epochs: Callable[[AlgoBase], int]
    settings: tuple[str, ...]


PEERS = {
    "BaselineOnly": Peer(
        lambda seed: BaselineOnly(verbose=False),
        lambda algo: algo.bsl_options.get("n_epochs", ALS_DEFAULT_EPOCHS),
        ("bsl_options",),
    ),
    # random_state fixes only the factor initialisation; every hyperparameter stays the default.
    "SVD": Peer(
        lambda seed: SVD(random_state=seed),
        lambda algo: algo.n_epochs,
        ("n_factors", "n_epochs", "random_state"),
    ),
    "SVDpp": Peer(
        lambda seed: SVDpp(random_state=seed),
        lambda algo: algo.n_epochs,
        ("n_factors", "n_epochs", "random_state"),
    ),
    "KNNBaseline": Peer(
        lambda seed: KNNBaseline(
            sim_options={"name": "pearson_baseline", "user_based": False}, verbose=False
        ),
        lambda algo: 1,
        ("k", "min_k", "sim_options", "bsl_options"),
    ),
}
MODELS = (OURS, *PEERS)


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


def load_split() -> Split:
    """The split the pipeline wrote under data/processed (run `dvc repro preprocess` first)."""
    columns = ["userId", "movieId", "user_index", "movie_index", "rating"]
    try:
        return Split(
            pd.read_parquet(paths.TRAIN, columns=columns),
            pd.read_parquet(paths.TEST, columns=columns),
            len(pd.read_parquet(paths.USER_IDS)),
            len(pd.read_parquet(paths.MOVIE_IDS)),
        )
    except FileNotFoundError as err:
        raise PipelineError(
            f"{err.filename} not found; run `dvc repro preprocess` (make bench does) first"
        ) from None


def release_ratings(params: dict) -> pd.DataFrame:
    """The validated, deduplicated ratings the preprocess stage splits (its load_release)."""
    dataset = get_dataset(params["data"]["dataset"])
    ratings, _, _ = load_release(paths.raw_dir(dataset.name), dataset)
    return ratings


def resplit(ratings: pd.DataFrame, prep: dict, seed: int) -> Split:
    """Split `ratings` as the preprocess stage does with the `preprocess` params, but with `seed`."""
    _, train, test, user_ids, movie_ids = preprocess(
        ratings, prep["top_users"], prep["top_movies"], prep["test_size"], seed, prep["split"]
    )
    return Split(train, test, len(user_ids), len(movie_ids))


def same_split(a: Split, b: Split) -> bool:
    """Whether two splits hold the same training and test rows in the same order."""
    columns = ["userId", "movieId", "rating"]
    return all(
        x[columns].reset_index(drop=True).equals(y[columns].reset_index(drop=True))
        for x, y in ((a.train, b.train), (a.test, b.test))
    )


def result_row(
    model: str,
    actual: np.ndarray,
    predicted: np.ndarray,
    fit_seconds: float,
    epochs: int,
    ratings: int,
    params: dict,
) -> dict:
    """One benchmark row; ratings_per_second = ratings * epochs / fit_seconds."""
    score = scores(np.asarray(actual, np.float64), {model: predicted})[model]
    return {
        "model": model,
        "rmse": score["rmse"],
        "mae": score["mae"],
        "fit_seconds": round(fit_seconds, 6),
        "epochs": int(epochs),
        "ratings": int(ratings),
        "ratings_per_second": round(ratings * epochs / fit_seconds, 1),
        "params": params,
    }


def choose_default_engine(params: dict) -> str:
    """The engine the train stage runs for the standard model with these params, on this machine."""
    p = params["train"]
    model = build_model(2, 2, 1, p["embeddings_l2"], p["activity_l2"], (0.5, 5.0))
    return choose_engine(p["engine"], model, active_backend(), len(accelerators()))[0]


def time_kernel_warm_up() -> float:
    """Seconds to make the training kernels ready: compile them, or load them from Numba's cache.

    Numba keeps compiled code on disk beside movielens/training/compiled/kernels.py: it compiles after a change to the
    file (a few seconds, once) and loads the code in later runs. The train stage does this before
    it times the fit, and so does the benchmark, so that the fit time is the training alone, the
    way Surprise's Cython is compiled when it is installed and imported before it fits.
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


def engine_row_name(engine: str) -> str:
    """The results row of our model trained by one engine: `movielens_mf (keras)`."""
    return f"{OURS} ({engine})"


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
    fit = train_model(split.train, split.n_users, split.n_movies, p)
    seconds = time.perf_counter() - start
    biases = fit_bias_model(split.train, split.n_users, split.n_movies, p)
    batch_size = params["evaluate"]["batch_size"] if batch_size is None else batch_size
    predicted, _ = predict_test(fit.model, biases, split.test, batch_size)
    epochs = fit.epochs_in_all
    row = result_row(
        engine_row_name(fit.engine) if engine else OURS,
        split.test["rating"].to_numpy(),
        predicted,
        seconds,
        epochs,
        round(ratings_processed(fit, len(split.train), p) / epochs),
        p,
    )
    row |= {"engine": fit.engine, "best_epoch": fit.best_epoch, "refit": fit.refit}
    log.info("%s: %.1f s, %d epochs, test RMSE %.4f", row["model"], seconds, epochs, row["rmse"])
    return row


def bench_on_jax(engine: str = JAX_ENGINE) -> dict:
    """bench_ours's row for `engine` on Keras' JAX backend (`python -m benchmarks.bench_jax`).

    Raises:
        PipelineError: when that process fails; the message ends with its last output line.
    """
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    command = [sys.executable, "-m", "benchmarks.bench_jax", engine]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise PipelineError(f"python -m benchmarks.bench_jax {engine} failed: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_peer(name: str, split: Split, seed: int) -> dict:
    """Fit one Surprise algorithm on the raw ids of the training rows (timed) and predict the test.

    Test pairs with an unseen user or movie get Surprise's own fallback (`was_impossible`).
    """
    peer = PEERS[name]
    algo = peer.make(seed)
    train, test = split.train, split.test
    reader = Reader(rating_scale=rating_scale_of(train["rating"].to_numpy()))
    frame = train[["userId", "movieId", "rating"]].astype({"rating": np.float64})
    trainset = Dataset.load_from_df(frame, reader).build_full_trainset()
    pairs = zip(
        test["userId"].tolist(), test["movieId"].tolist(), test["rating"].tolist(), strict=True
    )
    log.info("%s: fitting on %d ratings", name, len(train))
    start = time.perf_counter()
    algo.fit(trainset)
    seconds = time.perf_counter() - start
    predictions = algo.test(list(pairs))
    row = result_row(
        name,
        test["rating"].to_numpy(),
        np.array([p.est for p in predictions]),
        seconds,
        peer.epochs(algo),
        len(train),
        {key: getattr(algo, key) for key in peer.settings},
    )
    row["impossible_pairs"] = sum(p.details["was_impossible"] for p in predictions)
    log.info("%s: %.1f s, test RMSE %.4f", name, seconds, row["rmse"])
    return row


def time_train_stage(root: Path = ROOT) -> float:
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
        pythonpath = [str(root), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath)}
        log.info("train stage: running python -m stages.train in %s", work)
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "stages.train"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise PipelineError(f"python -m stages.train failed ({done.returncode}): {last}")
    log.info("train stage: %.1f s from process start to exit", seconds)
    return seconds


def std_of_test_ratings(split: Split) -> float:
    """The standard deviation of the test ratings: the RMSE of predicting their own mean.

    A split's difficulty before any model: a test split whose ratings spread less is easier for
    every model.
    """
    return round(float(split.test["rating"].std(ddof=0)), 6)


def split_run(ratings: pd.DataFrame, params: dict, seed: int) -> dict:
    """Our model and Surprise's BaselineOnly (how hard the split is, model aside) on one split.

    The split is what the preprocess stage makes of `ratings` with preprocess.seed = `seed`.
    """
    log.info("seed check: preprocess.seed=%d", seed)
    split = resplit(ratings, params["preprocess"], seed)
    row = bench_ours(split, params)
    return {
        "seed": seed,
        **{k: row[k] for k in ("rmse", "mae", "fit_seconds", "epochs")},
        "baseline_only_rmse": bench_peer("BaselineOnly", split, seed)["rmse"],
        "test_rating_std": std_of_test_ratings(split),
    }


def check_seeds(
    params: dict, seeds: list[int], reference_rmse: float | None, spread: int = 0
) -> dict:
    """Test RMSE of our model on the splits other preprocess seeds give, beside the pipeline's.

    The pipeline's split must be what resplit gives for preprocess.seed (else data/processed is
    stale); reference_rmse is our model's RMSE on it, computed here when None. With spread > 0,
    the splits of preprocess seeds 1..spread are fitted too, and `spread` in the result says how
    much the test RMSE moves from split to split (split_spread).

    Raises:
        PipelineError: when data/processed does not match the raw data and params.
    """
    seed, prep = params["preprocess"]["seed"], params["preprocess"]
    ratings, pipeline = release_ratings(params), load_split()
    if not same_split(resplit(ratings, prep, seed), pipeline):
        raise PipelineError(
            f"data/processed does not match preprocess.seed={seed} and data/raw; "
            "run `dvc repro preprocess` first"
        )
    if reference_rmse is None:
        reference_rmse = bench_ours(pipeline, params)["rmse"]
    reference = {
        "seed": seed,
        "rmse": reference_rmse,
        "baseline_only_rmse": bench_peer("BaselineOnly", pipeline, seed)["rmse"],
        "test_rating_std": std_of_test_ratings(pipeline),
    }
    others = sorted((set(seeds) | set(range(1, spread + 1))) - {seed})
    by_seed = {other: split_run(ratings, params, other) for other in others}
    check = {
        "model": OURS,
        "reference_seed": seed,
        "reference_rmse": reference_rmse,
        "reference_baseline_only_rmse": reference["baseline_only_rmse"],
        "reference_test_rating_std": reference["test_rating_std"],
        "tolerance": SEED_TOLERANCE,
        "runs": [
            seed_delta(by_seed[other], reference, SEED_TOLERANCE)
            for other in seeds
            if other != seed
        ],
    }
    spread_runs = [by_seed[other] for other in range(1, spread + 1) if other != seed]
    if spread_runs:
        check["spread"] = split_spread(reference, spread_runs, SEED_TOLERANCE)
    return check


def seed_delta(run: dict, reference: dict, tolerance: float) -> dict:
    """A split's run with its distance from the reference split's RMSE, ours and BaselineOnly's."""
    delta = run["rmse"] - reference["rmse"]
    return {
        **run,
        "delta": round(delta, 6),
        "within_tolerance": bool(abs(delta) <= tolerance),
        "baseline_only_delta": round(
            run["baseline_only_rmse"] - reference["baseline_only_rmse"], 6
        ),
    }


def split_spread(reference: dict, runs: list[dict], tolerance: float) -> dict:
    """How our test RMSE varies over random splits, and where the reference split sits.

    reference and runs: {"seed", "rmse", "baseline_only_rmse"} of the pipeline's split and of the
    others. reference_rank is 1 for the split with the highest RMSE (the hardest), counted among
    all of them; within_tolerance counts the other splits whose RMSE is within `tolerance` of the
    reference's.
    """
    ours = np.array([reference["rmse"], *(r["rmse"] for r in runs)])
    baseline = np.array([reference["baseline_only_rmse"], *(r["baseline_only_rmse"] for r in runs)])
    varies = len(ours) > 2 and ours.std() > 0 and baseline.std() > 0
    correlation = round(float(np.corrcoef(ours, baseline)[0, 1]), 4) if varies else None
    return {
        "seeds": [reference["seed"], *(r["seed"] for r in runs)],
        "rmse_mean": round(float(ours.mean()), 6),
        "rmse_std": round(float(ours.std(ddof=1)), 6) if len(ours) > 1 else 0.0,
        "rmse_min": round(float(ours.min()), 6),
        "rmse_max": round(float(ours.max()), 6),
        "baseline_only_rmse_mean": round(float(baseline.mean()), 6),
        "baseline_only_rmse_std": round(float(baseline.std(ddof=1)), 6) if len(ours) > 1 else 0.0,
        "correlation_with_baseline_only": correlation,
        "reference_rank": 1 + int(np.sum(ours[1:] > ours[0])),
        "within_tolerance": int(np.sum(np.abs(ours[1:] - ours[0]) <= tolerance)),
    }


def kept_ratings() -> pd.DataFrame:
    """Every rating the preprocess stage kept (data/processed/ratings.parquet), the folds' source."""
    try:
        return pd.read_parquet(paths.RATINGS)
    except FileNotFoundError:
        raise PipelineError(
            f"{paths.RATINGS} not found; run `dvc repro preprocess` (make bench does) first"
        ) from None


def cross_validation(params: dict, models: list[str]) -> dict:
    """Every model on the crossvalidate stage's folds: fitted on each fold's training part, scored
    on its held-out part (ours as the stage scores it, the peers with their own fallback)."""
    cv, split = params["crossvalidate"], params["preprocess"]["split"]
    ratings = kept_ratings()
    runs: dict[str, list[dict]] = {name: [] for name in models}
    folds = fold_splits(ratings, cv["folds"], cv["seed"], split)
    for k, (train, test, n_users, n_movies) in enumerate(folds, start=1):
        log.info("cross-validation: fold %d of %d", k, cv["folds"])
        fold = Split(train, test, n_users, n_movies)
        for name in models:
            if name == OURS:
                row = bench_ours(fold, params, batch_size=cv["batch_size"])
            else:
                row = bench_peer(name, fold, params["train"]["seed"])
            keys = ("rmse", "mae", "fit_seconds", "epochs")
            runs[name].append({"fold": k, **{key: row[key] for key in keys}})
    return {
        "protocol": {
            "dataset": params["data"]["dataset"],
            "split": split,
            "folds": cv["folds"],
            "seed": cv["seed"],
            "ratings": len(ratings),
        },
        "models": {name: fold_summary(rows) for name, rows in runs.items()},
        **({"ours_minus_peer": paired_differences(runs)} if OURS in runs else {}),
    }


def fold_summary(rows: list[dict]) -> dict:
    """A model's folds with the mean and standard deviation of its RMSE and MAE over them."""
    return {
        **fold_means(rows, ("rmse", "mae")),
        "fit_seconds_mean": mean_and_std([row["fit_seconds"] for row in rows])["mean"],
        "per_fold": rows,
    }


def paired_differences(runs: dict[str, list[dict]]) -> dict:
    """Our RMSE minus each peer's, fold by fold: mean, std and on how many folds ours is lower."""
    ours = np.array([r["rmse"] for r in runs[OURS]])
    out = {}
    for name, rows in runs.items():
        if name == OURS:
            continue
        differences = ours - np.array([r["rmse"] for r in rows])
        stats = mean_and_std(differences.tolist())
        out[name] = {
            "rmse_differences": [round(float(d), 6) for d in differences],
            "rmse_mean": stats["mean"],
            "rmse_std": stats["std"],
            "folds_lower": int(np.sum(differences < 0)),
        }
    return out


def cv_lines(result: dict, spread: dict | None) -> list[str]:
    """The cross-validation table, the paired differences and ours' fold std beside the split spread."""
    p = result["protocol"]
    lines = [
        f"{p['folds']}-fold cross-validation (split={p['split']}, seed {p['seed']}) of "
        f"{p['ratings']:,} ratings; every model on the same folds",
        f"{'model':<14} {'RMSE mean':>9} {'std':>7} {'MAE mean':>9} {'fit s':>7}  RMSE per fold",
    ]
    for name, row in result["models"].items():
        folds = " ".join(f"{r['rmse']:.4f}" for r in row["per_fold"])
        lines.append(
            f"{name:<14} {row['rmse_mean']:>9.4f} {row['rmse_std']:>7.4f} {row['mae_mean']:>9.4f} "
            f"{row['fit_seconds_mean']:>7.2f}  {folds}"
        )
    for name, diff in result.get("ours_minus_peer", {}).items():
        lines.append(
            f"  {OURS} - {name}: {diff['rmse_mean']:+.4f} (std {diff['rmse_std']:.4f}), lower on "
            f"{diff['folds_lower']} of {p['folds']} folds"
        )
    if OURS in result["models"] and spread is not None:
        lines.append(
            f"{OURS}: std of the test RMSE over the {p['folds']} folds "
            f"{result['models'][OURS]['rmse_std']:.4f}, over {len(spread['seeds'])} random "
            f"90/10 splits {spread['rmse_std']:.4f}"
        )
    return lines


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo, or what platform says elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    """Where the figures were measured: platform, CPU, load and library versions."""
    versions = {
        name: importlib.metadata.version(name)
        for name in ("tensorflow", "keras", "numba", "scikit-surprise", "numpy")
    }
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        **versions,
    }


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


def format_table(rows: list[dict]) -> str:
    """The rows as an aligned text table, one line per model."""
    header = (
        f"{'model':<24} {'test RMSE':>9} {'MAE':>7} {'fit s':>7} {'epochs':>6} {'ratings/s':>11}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['model']:<24} {r['rmse']:>9.4f} {r['mae']:>7.4f} {r['fit_seconds']:>7.2f} "
            f"{r['epochs']:>6d} {r['ratings_per_second']:>11,.0f}"
        )
    return "\n".join(lines)


def summary_lines(rows: list[dict]) -> list[str]:
    """The train stage's time against its target and our fit time against Surprise SVD's."""
    by_model = {r["model"]: r for r in rows}
    lines = []
    stage = by_model.get(COMPILED, {}).get("train_stage_seconds")
    if stage is not None:
        verdict = "within" if stage <= TRAIN_STAGE_TARGET_S else "over"
        lines.append(
            f"train stage (python -m stages.train, process start to exit): {stage:.1f} s, "
            f"{verdict} the {TRAIN_STAGE_TARGET_S:g} s target"
        )
    compiled, keras = by_model.get(COMPILED), by_model.get(KERAS)
    if compiled and "SVD" in by_model:
        ratio = compiled["fit_seconds"] / by_model["SVD"]["fit_seconds"]
        lines.append(f"{COMPILED} fit time / Surprise SVD fit time (this run): {ratio:.2f}x")
    if compiled and keras:
        ratio = keras["fit_seconds"] / compiled["fit_seconds"]
        verdict = "within" if ratio <= KERAS_FIT_RATIO_TARGET else "over"
        lines.append(
            f"{KERAS} fit time / {COMPILED} fit time (this run): {ratio:.2f}x, {verdict} the "
            f"{KERAS_FIT_RATIO_TARGET:g}x target"
        )
        gap = abs(keras["rmse"] - compiled["rmse"])
        verdict = "within" if gap <= ENGINE_RMSE_GAP else "over"
        lines.append(
            f"test RMSE: keras {keras['rmse']:.4f}, compiled {compiled['rmse']:.4f} (target "
            f"<= {RMSE_TARGET}); gap {gap:.4f}, {verdict} {ENGINE_RMSE_GAP}"
        )
    return lines


def seed_lines(check: dict) -> list[str]:
    lines = [
        f"seed check: test RMSE of {check['model']} per preprocess seed, tolerance "
        f"{check['tolerance']:g} of seed {check['reference_seed']}'s {check['reference_rmse']:.4f} "
        f"(its test ratings' std {check['reference_test_rating_std']:.4f})"
    ]
    for run in check["runs"]:
        verdict = "ok" if run["within_tolerance"] else "OUTSIDE tolerance"
        lines.append(
            f"  seed {run['seed']:>3}: {run['rmse']:.4f} ({run['delta']:+.4f}) {verdict}; "
            f"BaselineOnly on the same split {run['baseline_only_rmse']:.4f} "
            f"({run['baseline_only_delta']:+.4f}); test ratings' std {run['test_rating_std']:.4f}"
        )
    if "spread" in check:
        lines.extend(spread_lines(check["spread"], check["reference_seed"], check["tolerance"]))
    return lines


def spread_lines(spread: dict, reference_seed: int, tolerance: float) -> list[str]:
    n = len(spread["seeds"])
    correlation = spread["correlation_with_baseline_only"]
    return [
        f"split spread over {n} random splits (preprocess seeds {spread['seeds'][1]}.."
        f"{spread['seeds'][-1]} and {reference_seed}): test RMSE mean {spread['rmse_mean']:.4f}, "
        f"std {spread['rmse_std']:.4f}, from {spread['rmse_min']:.4f} to {spread['rmse_max']:.4f}",
        f"  seed {reference_seed}'s split ranks {spread['reference_rank']} of {n} by test RMSE "
        f"(1 = hardest); {spread['within_tolerance']} of the {n - 1} others are within "
        f"{tolerance:g} of it",
        f"  BaselineOnly on the same splits: mean {spread['baseline_only_rmse_mean']:.4f}, std "
        f"{spread['baseline_only_rmse_std']:.4f}; correlation with ours "
        f"{'n/a' if correlation is None else format(correlation, '.2f')}",
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_train", description=__doc__)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON (a list of rows)")
    parser.add_argument(
        "--seeds",
        nargs="*",
        type=int,
        default=list(DEFAULT_SEEDS),
        help="preprocess seeds for the seed check; none disables it",
    )
    parser.add_argument(
        "--spread",
        type=int,
        default=DEFAULT_SPREAD,
        metavar="N",
        help="also fit the splits of preprocess seeds 1..N and report how the test RMSE varies "
        "over them (with the seed check; 0 disables)",
    )
    parser.add_argument(
        "--seeds-out", type=Path, help="seed check JSON; default: seeds.json beside --out"
    )
    parser.add_argument(
        "--cv",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also fit every model on the crossvalidate stage's folds",
    )
    parser.add_argument(
        "--cv-out", type=Path, help="cross-validation JSON; default: cv.json beside --out"
    )
    parser.add_argument(
        "--train-stage",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"also time `python -m stages.train` as a process (with {OURS})",
    )
    args = parser.parse_args(argv)
    if args.spread < 0:
        parser.error(f"--spread must be 0 or more, got {args.spread}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    params = load_params()
    split = load_split()
    context = {"protocol": protocol(params, split), "machine": machine_info()}
    rows = []
    for name in args.models:
        if name == OURS:
            warm_up = time_kernel_warm_up()
            log.info("%s: training kernels compiled or loaded in %.1f s", OURS, warm_up)
            runtime = warm_up_runtime(params)
            log.info("%s: TensorFlow's runtime started in %.1f s", OURS, runtime)
            for engine in ENGINES:
                row = bench_ours(split, params, engine) | {
                    "runtime_warm_up_seconds": round(runtime, 3)
                }
                if engine == "compiled":
                    row["kernel_warm_up_seconds"] = round(warm_up, 3)
                    if args.train_stage:
                        row["train_stage_seconds"] = round(time_train_stage(), 3)
                rows.append({**row, **context})
            rows.append({**bench_on_jax(), **context})
        else:
            rows.append({**bench_peer(name, split, params["train"]["seed"]), **context})
    write_json(args.out, rows)
    print(format_table(rows))
    print("\n".join(summary_lines(rows)))
    log.info("wrote %s", args.out)
    spread = None
    if args.seeds:
        default = engine_row_name(choose_default_engine(params))
        ours = next((r["rmse"] for r in rows if r["model"] == default), None)
        check = {**check_seeds(params, args.seeds, ours, args.spread), **context}
        seeds_out = args.seeds_out or args.out.with_name("seeds.json")
        write_json(seeds_out, check)
        print("\n".join(seed_lines(check)))
        log.info("wrote %s", seeds_out)
        spread = check.get("spread")
    if args.cv:
        result = cross_validation(params, args.models)
        if OURS in result["models"] and spread is not None:
            result["ours_rmse_std"] = {
                "over_folds": result["models"][OURS]["rmse_std"],
                "over_random_splits": spread["rmse_std"],
                "random_splits": len(spread["seeds"]),
            }
        cv_out = args.cv_out or args.out.with_name("cv.json")
        write_json(cv_out, {**result, "machine": context["machine"]})
        print("\n".join(cv_lines(result, spread)))
        log.info("wrote %s", cv_out)


if __name__ == "__main__":
    logging.getLogger("movielens.model").setLevel(logging.WARNING)  # one progress line per fit
    run_stage(main)
