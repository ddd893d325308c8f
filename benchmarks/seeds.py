"""The seed study: how far our test RMSE moves when preprocess.seed draws another random split.

Beside our model, Surprise's BaselineOnly fits every split too: how hard a split is, model aside.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from benchmarks.engines import bench_ours
from benchmarks.names import OURS
from benchmarks.peers import bench_peer
from benchmarks.splits import (
    Split,
    load_split,
    release_ratings,
    resplit,
    same_split,
    std_of_test_ratings,
)
from movielens.plumbing.errors import PipelineError

log = logging.getLogger(__name__)

SEED_TOLERANCE = 0.01  # RMSE stars: how far another split's test RMSE may sit from the pipeline's


def split_scores(split: Split, seed: int, rmse: float) -> dict:
    """A split's row: our RMSE on it, BaselineOnly's and its test ratings' spread."""
    return {
        "seed": seed,
        "rmse": rmse,
        "baseline_only_rmse": bench_peer("BaselineOnly", split, seed)["rmse"],
        "test_rating_std": std_of_test_ratings(split),
    }


def split_run(ratings: pd.DataFrame, params: dict, seed: int) -> dict:
    """Our model and Surprise's BaselineOnly (how hard the split is, model aside) on one split.

    The split is what the preprocess stage makes of `ratings` with preprocess.seed = `seed`.
    """
    log.info("seed check: preprocess.seed=%d", seed)
    split = resplit(ratings, params["preprocess"], seed)
    row = bench_ours(split, params)
    fit = {k: row[k] for k in ("rmse", "mae", "fit_seconds", "epochs")}
    return {"seed": seed, **fit, **split_scores(split, seed, row["rmse"])}


def pipeline_split(params: dict, ratings: pd.DataFrame) -> Split:
    """data/processed's split, checked to be what resplit gives for preprocess.seed.

    Raises:
        PipelineError: when data/processed does not match the raw data and params.
    """
    seed, pipeline = params["preprocess"]["seed"], load_split()
    if not same_split(resplit(ratings, params["preprocess"], seed), pipeline):
        raise PipelineError(
            f"data/processed does not match preprocess.seed={seed} and data/raw; "
            "run `dvc repro preprocess` first"
        )
    return pipeline


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
    seed = params["preprocess"]["seed"]
    ratings = release_ratings(params)
    pipeline = pipeline_split(params, ratings)
    if reference_rmse is None:
        reference_rmse = bench_ours(pipeline, params)["rmse"]
    reference = split_scores(pipeline, seed, reference_rmse)
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
