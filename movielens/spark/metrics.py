"""The test metrics on Spark: the ranking metrics of the served lists per user, averaged, and the RMSE
of the test pairs, each block of users scored on the executors by the project's own NumPy code
(metrics_of_lists, the Factors formula); Spark's RankingEvaluator as a cross-check of NDCG@k.

Only means and counts come back to the driver, never a per-user table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from movielens.evaluation.ranking_metrics import metrics_of_lists
from movielens.ranking.lists import TopLists
from movielens.ranking.scorers import Factors

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

METRIC_SCHEMA = "user_index long, precision double, recall double, ndcg double"
ERROR_SCHEMA = "squared_error double"


def _block(block_size: int) -> Column:
    from pyspark.sql import functions as F

    return F.floor(F.col("user_index") / block_size).alias("block")


def lists_of_rows(rows: pd.DataFrame, k: int) -> TopLists:
    """The TopLists of a block's list rows (user_index, movie_index, rank, score), -1 padded."""
    users, position = np.unique(rows["user_index"].to_numpy(np.int64), return_inverse=True)
    ranks = rows["rank"].to_numpy(np.int64) - 1
    movies = np.full((len(users), k), -1, np.int64)
    scores = np.full((len(users), k), -np.inf, np.float32)
    movies[position, ranks] = rows["movie_index"].to_numpy(np.int64)
    scores[position, ranks] = rows["score"].to_numpy(np.float32)
    return TopLists(users, movies, scores)


def block_metrics(
    rows: pd.DataFrame, relevant: pd.DataFrame, n_movies: int, k: int, relevance_threshold: float
) -> pd.DataFrame:
    """METRIC_SCHEMA for one block: metrics_of_lists of its lists against its relevant test pairs."""
    if rows.empty:
        return pd.DataFrame({name: [] for name in ("user_index", "precision", "recall", "ndcg")})
    pairs = relevant["user_index"].to_numpy(np.int64), relevant["movie_index"].to_numpy(np.int64)
    metrics = metrics_of_lists(lists_of_rows(rows, k), pairs, n_movies, k, relevance_threshold)
    return pd.DataFrame(
        {
            "user_index": metrics.user_index,
            "precision": metrics.precision,
            "recall": metrics.recall,
            "ndcg": metrics.ndcg,
        }
    )


def relevant_pairs(test: DataFrame, relevance_threshold: float) -> DataFrame:
    """The test pairs that make a movie relevant: rating >= threshold, user and movie known."""
    from pyspark.sql import functions as F

    warm = (F.col("user_index") >= 0) & (F.col("movie_index") >= 0)
    liked = F.col("rating") >= relevance_threshold
    return test.where(warm & liked).select("user_index", "movie_index")


def per_user_metrics(
    lists: DataFrame,
    test: DataFrame,
    n_movies: int,
    k: int,
    relevance_threshold: float,
    block_size: int,
) -> DataFrame:
    """precision@k, recall@k and NDCG@k of each listed user with a relevant test movie.

    Args:
        lists: served_lists' rows (user_index, movie_index, rank, score).
        test: user_index, movie_index (-1: unseen in training) and rating of the test pairs.
    """
    relevant = relevant_pairs(test, relevance_threshold)
    listed = lists.select("user_index", "movie_index", "rank", "score", _block(block_size))
    return (
        listed.groupBy("block")
        .cogroup(relevant.select("*", _block(block_size)).groupBy("block"))
        .applyInPandas(
            lambda rows, pairs: block_metrics(rows, pairs, n_movies, k, relevance_threshold),
            METRIC_SCHEMA,
        )
    )


def ranking_summary(
    lists: DataFrame, users: DataFrame, test: DataFrame, n_movies: int, k: int, threshold: float
) -> dict[str, float | int]:
    """RankingMetrics.summary()'s figures on Spark: the means of per_user_metrics' rows (`users`),
    the listed users and movies of `lists`, the relevant test pairs unseen in training."""
    from pyspark.sql import functions as F

    means = users.agg(*(F.avg(name).alias(name) for name in ("precision", "recall", "ndcg")))
    means = means.first().asDict()
    listed = lists.agg(F.countDistinct("user_index"), F.countDistinct("movie_index")).first()
    warm = (F.col("user_index") >= 0) & (F.col("movie_index") >= 0)
    cold = test.where(~warm & (F.col("rating") >= threshold)).count()
    evaluated = users.count()

    def mean(name: str) -> float:
        value = means[name]
        return round(float(value), 6) if value is not None else float("nan")

    return {
        "k": k,
        "relevance_threshold": threshold,
        "precision": mean("precision"),
        "recall": mean("recall"),
        "ndcg": mean("ndcg"),
        "coverage": round(listed[1] / n_movies, 6) if n_movies else float("nan"),
        "users_ranked": listed[0],
        "users_evaluated": evaluated,
        "users_without_relevant": listed[0] - evaluated,
        "relevant_cold_pairs": cold,
    }


def evaluator_ndcg(lists: DataFrame, test: DataFrame, k: int, relevance_threshold: float) -> float:
    """Spark's RankingEvaluator's NDCG@k of the same lists, over the users with a relevant movie.

    Its binary NDCG is ours (docs/spark.md: the gain 1/log(i + 2), the ideal over
    min(k, relevant) places); it counts a user without a relevant movie as 0, so they are left out,
    as ours leaves them out.
    """
    from pyspark.ml.evaluation import RankingEvaluator
    from pyspark.sql import functions as F

    ranked = lists.groupBy("user_index").agg(
        F.array_sort(F.collect_list(F.struct("rank", "movie_index"))).alias("ranked")
    )
    predicted = ranked.select(
        "user_index",
        F.transform("ranked", lambda r: r["movie_index"].cast("double")).alias("predicted"),
    )
    labels = (
        relevant_pairs(test, relevance_threshold)
        .groupBy("user_index")
        .agg(F.collect_set(F.col("movie_index").cast("double")).alias("relevant"))
    )
    evaluator = RankingEvaluator(
        metricName="ndcgAtK", k=k, predictionCol="predicted", labelCol="relevant"
    )
    return evaluator.evaluate(predicted.join(labels, "user_index"))


def block_errors(pairs: pd.DataFrame, rating: Factors) -> pd.DataFrame:
    """ERROR_SCHEMA: each test pair's squared error, the rating predicted by the Factors formula
    (every movie's rating for the block's users, read at the pairs' movies)."""
    users, position = np.unique(pairs["user_index"].to_numpy(np.int64), return_inverse=True)
    predicted = rating.ratings(rating.scores(users))[
        position, pairs["movie_index"].to_numpy(np.int64)
    ]
    error = np.asarray(predicted, np.float64) - pairs["rating"].to_numpy(np.float64)
    return pd.DataFrame({"squared_error": error**2})


def warm_rmse(test: DataFrame, rating: Factors, block_size: int) -> float:
    """RMSE of the warm test pairs (user and movie seen in training), the Factors broadcast once;
    NaN for none."""
    from pyspark.sql import functions as F

    shared = test.sparkSession.sparkContext.broadcast(rating)
    warm = test.where((F.col("user_index") >= 0) & (F.col("movie_index") >= 0))
    errors = (
        warm.select("user_index", "movie_index", "rating", _block(block_size))
        .groupBy("block")
        .applyInPandas(lambda pairs: block_errors(pairs, shared.value), ERROR_SCHEMA)
    )
    mean = errors.agg(F.avg("squared_error")).first()[0]
    return float(np.sqrt(mean)) if mean is not None else float("nan")
