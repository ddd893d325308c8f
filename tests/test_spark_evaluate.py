"""Every user's served list and the test metrics on Spark, against the pandas path on small data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from movielens.model.watch import fit_watch, history_matrix
from movielens.ranking.lists import top_lists
from movielens.ranking.scorers import Factors
from movielens.ranking.served import lists_frame, served_ranker
from movielens.spark.lists import LIST_COLUMNS, ServedModels, served_lists
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
