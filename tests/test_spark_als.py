"""The watch model on Spark: Spark ML's implicit ALS against implicit's, EASE's Gram matrix on Spark."""

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

from movielens.evaluation.ranking_metrics import metrics_of_lists
from movielens.model.watch import fit_watch, history_matrix, load_watch, save_watch
from movielens.plumbing.errors import PipelineError
from movielens.ranking.lists import top_lists
from movielens.ranking.served import WatchScorer
from movielens.spark.als import fit_watch_spark, spark_als_settings
from movielens.spark.session import SparkSettings, spark_session
from movielens.synth import generate_ratings

# The project's ALS settings (params.yaml) at a rank and size a test affords.
SETTINGS = {
    "min_ratings": 2,
    "ease_l2": 5.0,
    "ease_max_movies": 1000,
    "als_factors": 16,
    "als_regularization": 20.0,
    "als_alpha": 4.0,
    "als_iterations": 15,
    "seed": 0,
}


@pytest.fixture(scope="module")
def spark():
    with spark_session(SparkSettings(master="local[2]", memory="1g")) as session:
        yield session


def split_pairs(n_ratings: int, n_users: int, n_movies: int) -> dict[str, np.ndarray]:
    """Generated pairs with taste (users rate what they like), a seeded fifth held out per pair."""
    ratings = generate_ratings(n_ratings, n_users, n_movies, seed=3, taste=2.0)
    users = pd.factorize(ratings["userId"], sort=True)[0].astype(np.int64)
    movies = pd.factorize(ratings["movieId"], sort=True)[0].astype(np.int64)
    test = np.random.default_rng(0).random(len(users)) < 0.2
    return {"users": users, "movies": movies, "test": test}


def train_parts(data: dict[str, np.ndarray]):
    users, movies, test = data["users"], data["movies"], data["test"]
    n_users, n_movies = int(users.max()) + 1, int(movies.max()) + 1
    history = history_matrix(users[~test], movies[~test], n_users, n_movies)
    return history, users[~test], movies[~test]


def spark_pairs(spark, users: np.ndarray, movies: np.ndarray):
    return spark.createDataFrame(pd.DataFrame({"user_index": users, "movie_index": movies}))


def ndcg_at_10(watch, history, data) -> float:
    users, movies, test = data["users"], data["movies"], data["test"]
    everyone = np.arange(history.shape[0])
    lists = top_lists(WatchScorer(watch, history), everyone, history.nonzero(), 10, 128)
    return metrics_of_lists(
        lists, (users[test], movies[test]), history.shape[1], 10, 0.0
    ).ndcg.mean()


@pytest.mark.slow
def test_spark_als_ranks_within_a_hundredth_of_ndcg_of_implicits_at_the_same_settings(spark):
    data = split_pairs(20_000, 300, 600)
    history, users, movies = train_parts(data)
    implicit_model = fit_watch(history, "als", **SETTINGS)
    spark_model = fit_watch_spark(
        spark_pairs(spark, users, movies), *history.shape, model="als", **SETTINGS
    )
    ours, theirs = ndcg_at_10(spark_model, history, data), ndcg_at_10(implicit_model, history, data)
    assert theirs > 0.3  # the data has structure both must find
    assert abs(ours - theirs) <= 0.01, (ours, theirs)
    # Rescaled to implicit's balance: the factors' sizes agree within a third.
    pairs = [(spark_model.user_factors, implicit_model.user_factors)]
    pairs.append((spark_model.item_weights, implicit_model.item_weights))
    for a, b in pairs:
        assert 0.75 < np.linalg.norm(a) / np.linalg.norm(b) < 1.33


@pytest.fixture(scope="module")
def tiny(spark):
    data = split_pairs(3000, 60, 120)
    history, users, movies = train_parts(data)
    # Each pair twice: a pair counts once, as history_matrix counts it.
    pairs = spark_pairs(spark, np.tile(users, 2), np.tile(movies, 2))
    return history, pairs


def test_spark_ease_is_the_pandas_ease_exactly(tiny):
    history, pairs = tiny
    ours = fit_watch_spark(pairs, *history.shape, model="ease", **SETTINGS)
    theirs = fit_watch(history, "ease", **SETTINGS)
    np.testing.assert_array_equal(ours.catalogue, theirs.catalogue)
    np.testing.assert_allclose(ours.item_weights, theirs.item_weights, atol=1e-6)


def test_the_spark_als_file_is_implicits_format_byte_for_byte_run_after_run(tiny, tmp_path):
    history, pairs = tiny
    quick = {**SETTINGS, "als_iterations": 3}
    saved = []
    for run in range(2):
        save_watch(
            fit_watch_spark(pairs, *history.shape, model="als", **quick), tmp_path / f"{run}.npz"
        )
        saved.append((tmp_path / f"{run}.npz").read_bytes())
    assert saved[0] == saved[1]
    model = load_watch(tmp_path / "0.npz", *history.shape)
    reference = fit_watch(history, "als", **quick)
    np.testing.assert_array_equal(model.catalogue, reference.catalogue)
    assert model.user_factors.shape == reference.user_factors.shape
    assert model.item_weights.shape == reference.item_weights.shape
    assert (model.als_regularization, model.als_alpha) == (20.0, 4.0)  # fold-in solves with these
    folded = model.fold_in(history[:5])
    assert folded.scores(np.arange(5), history[:5]).shape == (5, history.shape[1])


def test_the_settings_keep_the_confidence_and_the_regularization_at_the_mean_user_and_item():
    mapped = spark_als_settings(20.0, 4.0, n_pairs=1000, n_users=10, n_items=1000)
    assert mapped.alpha == 3.0  # 1 + alpha = implicit's confidence alpha
    # per user 100 pairs, per item 1: regParam * sqrt(100 * 1) = 20
    assert mapped.reg_param == pytest.approx(2.0)
    assert mapped.scale == pytest.approx(0.1**0.5)


def test_an_alpha_below_one_is_refused_naming_the_fix(tiny):
    history, pairs = tiny
    low = {**SETTINGS, "als_alpha": 0.5}
    with pytest.raises(PipelineError, match=r"watch\.als_alpha=0\.5 .* set watch\.als_alpha >= 1"):
        fit_watch_spark(pairs, *history.shape, model="als", **low)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["pandas", "spark"])
def test_the_train_watch_stage_fits_on_the_engine_params_name(tmp_path, engine):
    """The stage as DVC runs it, in a folder of its own: the file the engine writes loads, and the
    metrics count each pair once."""
    root = Path(__file__).resolve().parents[1]
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["compute"] |= {"engine": engine, "spark_memory": "1g"}
    params["watch"] |= {**SETTINGS, "model": "als", "als_iterations": 3}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    data = split_pairs(3000, 60, 120)
    processed = tmp_path / "data" / "processed"
    processed.mkdir(parents=True)
    train = pd.DataFrame({"user_index": data["users"], "movie_index": data["movies"]})
    pd.concat([train, train.head(10)]).to_parquet(processed / "train.parquet")  # 10 pairs twice
    pd.DataFrame({"userId": np.arange(60)}).to_parquet(processed / "user_ids.parquet")
    pd.DataFrame({"movieId": np.arange(120)}).to_parquet(processed / "movie_ids.parquet")
    env = {**os.environ, "PYTHONPATH": str(root)}
    command = [sys.executable, "-m", "stages.train_watch"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    model = load_watch(tmp_path / "models" / "watch.npz", 60, 120)
    assert model.kind == "als" and (model.als_regularization, model.als_alpha) == (20.0, 4.0)
    metrics = json.loads((tmp_path / "metrics" / "watch.json").read_text())
    assert metrics["pairs"] == len(train)
    assert f"(als, {engine})" in done.stderr


def test_a_local_session_gives_als_a_checkpoint_folder_for_its_lineage(spark):
    """Without one ALS never checkpoints, and its growing lineage once overflowed the stack."""
    assert spark.sparkContext.getCheckpointDir() is not None
