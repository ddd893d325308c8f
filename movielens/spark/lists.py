"""Every user's served list on Spark: the project's own scorers and top_lists, run on Spark's executors
over blocks of users, the models' arrays broadcast.

Nothing of the ranking is written again here: a block's lists are movielens.ranking.lists.top_lists
of movielens.ranking.served.Ranker (max(watch, 0) * like ** like_weight, the rated movies left out),
exactly as the pandas path computes them; Spark only cuts the users into blocks, brings each block
its training pairs (the rated movies, and EASE's history rows) and collects the rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from movielens.model.watch import WatchModel, history_matrix
from movielens.ranking.lists import top_lists
from movielens.ranking.scorers import Factors
from movielens.ranking.served import Ranker, WatchScorer, lists_frame

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# topn.parquet's columns (lists_frame), then the indices the metrics join on.
LIST_COLUMNS = ("userId", "movieId", "rank", "score")
LIST_SCHEMA = "userId long, movieId long, rank int, score float, user_index long, movie_index long"


@dataclass(frozen=True)
class ServedModels:
    """What an executor needs to rank any block of users, broadcast once.

    Attributes:
        rating: the rating model's tables (NumPy Factors: the standard architecture).
        watch: the watch model; like_weight: ranking.like_weight.
        user_ids, movie_ids: int (n_users,), (n_movies,): each index's id (data/processed's tables).
    """

    rating: Factors
    watch: WatchModel
    like_weight: float
    user_ids: np.ndarray
    movie_ids: np.ndarray


def block_lists(models: ServedModels, rated: pd.DataFrame, k: int, block_size: int) -> pd.DataFrame:
    """The served lists of one block of users, as the pandas path ranks them.

    Args:
        rated: user_index and movie_index of the block's training pairs; a user without any has
            one row with movie_index -1.
        k: the list length; block_size: users per matrix product.

    Returns:
        LIST_SCHEMA's columns, best first within each user.
    """
    users = np.unique(rated["user_index"].to_numpy(np.int64))
    given = rated["movie_index"].to_numpy(np.int64) >= 0
    pairs = (
        rated["user_index"].to_numpy(np.int64)[given],
        rated["movie_index"].to_numpy(np.int64)[given],
    )
    watch = models.watch
    history = history_matrix(*pairs, watch.n_users, watch.n_movies)  # the block's rows only
    ranker = Ranker(WatchScorer(watch, history), models.rating, models.like_weight)
    lists = top_lists(ranker, users, pairs, k, block_size)
    frame = lists_frame(lists, models.user_ids, models.movie_ids)
    rows, ranks = np.nonzero(lists.movies >= 0)  # lists_frame's rows, in its order
    return frame.assign(user_index=lists.users[rows], movie_index=lists.movies[rows, ranks])


def served_lists(
    spark: SparkSession,
    models: ServedModels,
    train: DataFrame,
    users: np.ndarray | None,
    k: int,
    block_size: int,
) -> DataFrame:
    """Every user's (or `users`') served top-k list, ranked on the executors.

    Args:
        train: the training pairs (user_index, movie_index): the movies never served to each user.
        users: int, the users to rank (sample_users); None: every user of the watch model.
        k: the list length; block_size: the users of one block, ranked by one task's call.

    Returns:
        A DataFrame of LIST_SCHEMA: topn.parquet's columns (LIST_COLUMNS) and the indices.
    """
    from pyspark.sql import functions as F

    if users is None:
        ranked = spark.range(models.watch.n_users).withColumnRenamed("id", "user_index")
    else:
        ranked = spark.createDataFrame(pd.DataFrame({"user_index": np.asarray(users, np.int64)}))
    shared = spark.sparkContext.broadcast(models)
    rated = (
        ranked.join(train.select("user_index", "movie_index"), "user_index", "left")
        .fillna(-1, ["movie_index"])
        .withColumn("block", F.floor(F.col("user_index") / block_size))
    )
    return rated.groupBy("block").applyInPandas(
        lambda frame: block_lists(shared.value, frame, k, block_size), LIST_SCHEMA
    )
