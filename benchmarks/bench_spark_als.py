"""Spark's ALS against implicit's at the same factors and iterations (issue 31), on the pipeline's
split: the watch model alone ranking every user, NDCG@10 per user, the difference with its paired
bootstrap interval (docs/spark-als.md).

Run after `dvc repro preprocess` (it reads data/processed and params.yaml's watch, evaluate and
train sections; watch.model is taken as als):

    python -m benchmarks.bench_spark_als                      # the test split, seed 42
    python -m benchmarks.bench_spark_als --part validation    # the fit's own validation part
    python -m benchmarks.bench_spark_als --seeds 42 1         # each seed on both engines

`--part validation` fits on the training split less its `train.validation_size` part (drawn as
the train stage draws it, `carve_validation` with `train.seed`) and ranks against that part: the
place to choose between settings without reading the test split. Figures go to
benchmarks/spark_als.json.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from movielens.evaluation.compare import paired_bootstrap
from movielens.evaluation.ranking_metrics import metrics_of_lists
from movielens.model.watch import fit_watch, history_matrix
from movielens.params import load_params
from movielens.plumbing import paths
from movielens.plumbing.files import write_json
from movielens.plumbing.runtime import set_up
from movielens.ranking.lists import top_lists
from movielens.ranking.served import WatchScorer
from movielens.training.epochs import carve_validation

log = logging.getLogger(__name__)
RESULTS = Path(__file__).resolve().parent / "spark_als.json"


def fit_and_test(part: str, params: dict) -> tuple[pd.DataFrame, pd.DataFrame, int, int]:
    """The pairs to fit and the ratings to rank against: the test split, or the validation part."""
    train, test = pd.read_parquet(paths.TRAIN), pd.read_parquet(paths.TEST)
    n_users, n_movies = len(pd.read_parquet(paths.USER_IDS)), len(pd.read_parquet(paths.MOVIE_IDS))
    if part == "validation":
        fit_rows, held = carve_validation(
            len(train), params["train"]["validation_size"], params["train"]["seed"]
        )
        train, test = train.iloc[fit_rows], train.iloc[held].assign(cold=False)
    return train, test, n_users, n_movies


def per_user_ndcg(model, history, test: pd.DataFrame, evaluate: dict) -> tuple[np.ndarray, ...]:
    """(users, NDCG@k) of the watch model alone ranking every user, training movies left out."""
    k, threshold = evaluate["k"], evaluate["relevance_threshold"]
    liked = (test["rating"] >= threshold).to_numpy() & ~test["cold"].to_numpy()
    relevant = (test["user_index"].to_numpy()[liked], test["movie_index"].to_numpy()[liked])
    everyone = np.arange(history.shape[0])
    scorer = WatchScorer(model, history)
    lists = top_lists(scorer, everyone, history.nonzero(), k, evaluate["block_size"])
    metrics = metrics_of_lists(lists, relevant, history.shape[1], k, threshold)
    return metrics.user_index, metrics.ndcg


def fit_both(train: pd.DataFrame, n_users: int, n_movies: int, watch: dict, compute: dict):
    """implicit's and Spark's watch models on the same pairs, and each fit's seconds."""
    from movielens.spark.als import fit_watch_spark
    from movielens.spark.session import SparkSettings, spark_session

    users, movies = train["user_index"].to_numpy(), train["movie_index"].to_numpy()
    history = history_matrix(users, movies, n_users, n_movies)
    started = time.perf_counter()
    ours = fit_watch(history, **watch)
    implicit_s = time.perf_counter() - started
    settings = SparkSettings(compute["spark_master"], compute["spark_memory"])
    with spark_session(settings, app_name="bench-spark-als") as spark:
        pairs = spark.createDataFrame(pd.DataFrame({"user_index": users, "movie_index": movies}))
        started = time.perf_counter()
        theirs = fit_watch_spark(pairs, n_users, n_movies, **watch)
        spark_s = time.perf_counter() - started
    return history, (ours, implicit_s), (theirs, spark_s)


def compare(part: str, seed: int, params: dict) -> dict:
    """One row: both engines' NDCG@k at `seed` on `part`, Spark minus implicit with its interval."""
    train, test, n_users, n_movies = fit_and_test(part, params)
    watch = {**params["watch"], "model": "als", "seed": seed}
    history, (ours, ours_s), (theirs, theirs_s) = fit_both(
        train, n_users, n_movies, watch, params["compute"]
    )
    evaluate = params["evaluate"]
    users, implicit_ndcg = per_user_ndcg(ours, history, test, evaluate)
    same_users, spark_ndcg = per_user_ndcg(theirs, history, test, evaluate)
    assert np.array_equal(users, same_users)  # the same users have a relevant movie either way
    difference = paired_bootstrap(
        spark_ndcg, implicit_ndcg, evaluate["bootstrap_resamples"], evaluate["seed"]
    )
    k = evaluate["k"]
    return {
        "part": part, "seed": seed, "users": len(users),
        f"implicit_ndcg@{k}": round(float(implicit_ndcg.mean()), 4),
        f"spark_ndcg@{k}": round(float(spark_ndcg.mean()), 4),
        "spark_minus_implicit": {key: round(value, 4) for key, value in difference.items()},
        "implicit_fit_s": round(ours_s, 1), "spark_fit_s": round(theirs_s, 1),
    }  # fmt: skip


def format_row(row: dict) -> str:
    k = next(key for key in row if key.startswith("implicit_ndcg@")).removeprefix("implicit_")
    d = row["spark_minus_implicit"]
    interval = f"{d['mean_difference']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
    return (
        f"| {row['part']} | {row['seed']} | {row['users']} | {row[f'implicit_{k}']:.4f} "
        f"| {row[f'spark_{k}']:.4f} | {interval} | {row['implicit_fit_s']} | {row['spark_fit_s']} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_spark_als", description=__doc__
    )
    parser.add_argument("--part", choices=("test", "validation"), nargs="+", default=["test"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    params = load_params()
    rows = [compare(part, seed, params) for part in args.part for seed in args.seeds]
    print("| part | seed | users | implicit NDCG@10 | Spark NDCG@10 | Spark - implicit [95 %] "
          "| implicit fit s | Spark fit s |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(format_row(row))
    write_json(args.out, {"watch": params["watch"], "rows": rows})
    return 0


if __name__ == "__main__":
    set_up()
    sys.exit(main())
