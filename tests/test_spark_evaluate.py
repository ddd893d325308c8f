"""Every user's served list and the test metrics on Spark, against the pandas path on small data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from movielens.evaluation.accuracy import rmse
from movielens.evaluation.ranking_metrics import ranking_metrics
from movielens.model.watch import fit_watch, history_matrix
from movielens.plumbing import paths
from movielens.ranking.lists import top_lists
from movielens.ranking.scorers import Factors
from movielens.ranking.served import lists_frame, served_ranker
from movielens.spark.lists import LIST_COLUMNS, ServedModels, served_lists
from movielens.spark.metrics import evaluator_ndcg, per_user_metrics, ranking_summary, warm_rmse
from movielens.spark.session import SparkSettings, spark_session

N_USERS, N_MOVIES, K = 70, 90, 5
# The watch section, small enough to fit in a blink
WATCH = {"min_ratings": 2, "ease_l2": 5.0, "ease_max_movies": 1000, "als_factors": 4}
WATCH |= {"als_regularization": 1.0, "als_alpha": 5.0, "als_iterations": 5, "seed": 0}


@pytest.fixture(scope="module")
def spark():
    with spark_session(SparkSettings(master="local[2]", memory="1g")) as session:
        yield session


@pytest.fixture(scope="module")
def small():
    """Random training pairs (user 0 rates nothing), a random rating model, ids that are not indices."""
    rng = np.random.default_rng(7)
    pairs = np.unique(rng.integers([1, 0], [N_USERS, N_MOVIES], size=(1500, 2)), axis=0)
    rating = Factors(
        rng.normal(size=(N_USERS, 3)).astype(np.float32),
        rng.normal(size=(N_MOVIES, 3)).astype(np.float32),
        rng.normal(size=N_USERS).astype(np.float32),
        rng.normal(size=N_MOVIES).astype(np.float32),
        (0.5, 5.0),
    )
    ids = (np.arange(N_USERS) * 3 + 11, np.arange(N_MOVIES) * 7 + 5)
    return pairs[:, 0], pairs[:, 1], rating, ids


def pandas_lists(small, watch, users, block_size):
    train_users, train_movies, rating, (user_ids, movie_ids) = small
    ranker = served_ranker(rating, watch, train_users, train_movies, like_weight=2.0)
    lists = top_lists(ranker, users, (train_users, train_movies), K, block_size)
    return lists_frame(lists, user_ids, movie_ids)


@pytest.mark.parametrize("model", ["ease", "als"])
def test_spark_serves_every_user_the_pandas_paths_list(spark, small, model):
    train_users, train_movies, rating, (user_ids, movie_ids) = small
    history = history_matrix(train_users, train_movies, N_USERS, N_MOVIES)
    watch = fit_watch(history, model, **WATCH)
    models = ServedModels(rating, watch, 2.0, user_ids, movie_ids)
    train = spark.createDataFrame(
        pd.DataFrame({"user_index": train_users, "movie_index": train_movies})
    )
    ours = served_lists(spark, models, train, None, K, block_size=16).toPandas()
    theirs = pandas_lists(small, watch, np.arange(N_USERS), block_size=64)
    key = ["userId", "rank"]
    ours = ours[list(LIST_COLUMNS)].sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(
        ours, theirs.sort_values(key).reset_index(drop=True), check_dtype=False
    )
    assert ours["userId"].nunique() == N_USERS  # user 0, with no training pair, gets a list too
    rated = set(zip(user_ids[train_users], movie_ids[train_movies], strict=True))
    assert not rated & set(zip(ours["userId"], ours["movieId"], strict=True))


@pytest.fixture(scope="module")
def test_split(small):
    """Test pairs: ratings 1-5, some of a movie unseen in training (-1)."""
    rng = np.random.default_rng(8)
    users = rng.integers(0, N_USERS, 400)
    movies = np.where(rng.random(400) < 0.05, -1, rng.integers(0, N_MOVIES, 400))
    return pd.DataFrame(
        {"user_index": users, "movie_index": movies, "rating": rng.integers(1, 6, 400) * 1.0}
    )


@pytest.fixture(scope="module")
def served(spark, small, test_split):
    """The EASE-served lists on Spark for a sample of users, and the same ranker in pandas."""
    train_users, train_movies, rating, (user_ids, movie_ids) = small
    history = history_matrix(train_users, train_movies, N_USERS, N_MOVIES)
    watch = fit_watch(history, "ease", **WATCH)
    users = np.arange(0, N_USERS, 2)
    models = ServedModels(rating, watch, 2.0, user_ids, movie_ids)
    train = spark.createDataFrame(
        pd.DataFrame({"user_index": train_users, "movie_index": train_movies})
    )
    lists = served_lists(spark, models, train, users, K, block_size=16).cache()
    ranker = served_ranker(rating, watch, train_users, train_movies, like_weight=2.0)
    split = [train_users, train_movies, *(test_split[c].to_numpy() for c in test_split)]
    theirs = ranking_metrics(ranker, *split, K, 4.0, block_size=64, users=users)
    return lists, spark.createDataFrame(test_split), theirs


def test_the_ranking_metrics_on_spark_are_the_pandas_paths(served):
    lists, test, theirs = served
    summary = theirs.summary()
    assert summary["users_evaluated"] > 10 and summary["relevant_cold_pairs"] > 0  # both cases
    users = per_user_metrics(lists, test, N_MOVIES, K, 4.0, block_size=16)
    assert ranking_summary(lists, users, test, N_MOVIES, K, 4.0) == summary


def test_spark_rankingevaluator_agrees_on_ndcg(served):
    lists, test, theirs = served
    assert evaluator_ndcg(lists, test, K, 4.0) == pytest.approx(theirs.ndcg.mean(), abs=1e-12)


def test_the_test_rmse_on_spark_is_the_factors_formulas(spark, small, test_split):
    rating = small[2]
    warm = test_split[test_split["movie_index"] >= 0]
    users, movies = warm["user_index"].to_numpy(), warm["movie_index"].to_numpy()
    predicted = rating.ratings(rating.scores(users))[np.arange(len(users)), movies]
    expected = rmse(warm["rating"].to_numpy(), predicted)
    ours = warm_rmse(spark.createDataFrame(test_split), rating, block_size=16)
    assert ours == pytest.approx(expected, rel=1e-6)


def run_stage(name: str, folder, env: dict) -> None:
    command = [sys.executable, "-m", f"stages.{name}"]
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_the_evaluate_stage_on_spark_writes_the_pandas_paths_lists_and_scores(
    small_mirror, tmp_path
):
    """download -> train_watch with pandas, then evaluate once per engine: the same topn.parquet
    rows, and the Spark section's served figures are the pandas path's."""
    root = Path(__file__).resolve().parents[1]
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"] |= {"embedding_dim": 4, "epochs": 2, "patience": 1}
    params["compute"]["spark_memory"] = "1g"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(root), "MOVIELENS_MIRROR": str(small_mirror)}
    for name in ("download", "preprocess", "train", "train_watch", "evaluate"):
        run_stage(name, tmp_path, env)
    pandas_scores = json.loads((tmp_path / paths.SCORES).read_text())
    pandas_lists = pd.read_parquet(tmp_path / paths.TOPN)
    params["compute"]["engine"] = "spark"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    run_stage("evaluate", tmp_path, env)
    scores = json.loads((tmp_path / paths.SCORES).read_text())
    spark_lists = pd.read_parquet(tmp_path / paths.TOPN)
    pd.testing.assert_frame_equal(spark_lists, pandas_lists)
    assert scores["spark"]["served"] == pandas_scores["ranking"]["served"]
    assert scores["spark"]["ndcg@10_ranking_evaluator"] == scores["ndcg@10"]
    assert scores["spark"]["rmse_warm"] == pytest.approx(scores["rmse_warm"], abs=1e-5)
    assert {k: v for k, v in scores.items() if k != "spark"} == pandas_scores


@pytest.mark.slow
def test_dvc_repro_runs_the_pipeline_on_a_local_cluster(small_mirror, tmp_path):
    """`dvc repro evaluate` with compute.engine: spark on local-cluster[2,1,1024] (two executor
    JVMs, their own Python workers): preprocessing, Spark ML's ALS and every user's list on the
    executors; the lists' figures computed there are the driver's for the same users."""
    from benchmarks.project_copy import make_project, project_env

    env = {**project_env(small_mirror), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    overrides = {
        "compute.engine": "spark", "compute.spark_master": "local-cluster[2,1,1024]",
        "compute.spark_memory": "1g", "watch.model": "als", "watch.als_factors": 8,
        "watch.als_iterations": 5, "train.embedding_dim": 4, "train.epochs": 2,
    }  # fmt: skip
    repo = make_project(tmp_path / "project", overrides, env)
    done = subprocess.run(
        ["dvc", "repro", "evaluate"], cwd=repo, env=env, capture_output=True, text=True,
        timeout=1200,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert json.loads((repo / "metrics" / "watch.json").read_text())["model"] == "als"
    scores = json.loads((repo / paths.SCORES).read_text())
    assert scores["ranking_users"]["ranked"] == scores["ranking_users"]["of"]  # all 80 users
    assert scores["spark"]["served"] == scores["ranking"]["served"]
    assert scores["spark"]["ndcg@10_ranking_evaluator"] == scores["ndcg@10"]
    lists = pd.read_parquet(repo / paths.TOPN)
    assert lists["userId"].nunique() == scores["ranking_users"]["of"]
