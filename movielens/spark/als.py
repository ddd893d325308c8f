"""The watch model fitted on Spark: Spark ML's implicit ALS, or EASE from a Gram matrix Spark sums.

Both end in the WatchModel that implicit's ALS or the pandas EASE would give (movielens.model.watch),
saved in the same file, so fold-in, the lists, the service and evaluate read it unchanged.

Spark's implicit ALS and implicit's differ in two ways (docs/spark.md cites the lines):
- confidence: Spark weighs a rated pair 1 + alpha * r, implicit alpha * r; with r = 1 Spark's
  alpha is watch.als_alpha - 1, the same confidence.
- regularization: Spark multiplies regParam by the count of each user's (item's) ratings
  (ALS-WR), implicit does not. With every user rating n_u and every item n_i movies, Spark's
  objective is implicit's with lambda_u = regParam * n_u and lambda_i = regParam * n_i, which a
  rescaling of the factors (x / a, y * a, a^4 = n_i / n_u) turns into implicit's with
  sqrt(lambda_u * lambda_i); so regParam = als_regularization / sqrt(mean n_u * mean n_i), and
  the factors are saved rescaled, so that fold-in's als_regularization is the params' value.
  The mean counts, not the geometric-mean (typical user) or pair-weighted ones: on the validation
  part of ml-latest-small they ranked best of the three (docs/spark-als.md has the figures).
"""

from __future__ import annotations

import inspect
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from movielens.model.watch import WatchModel, checked_catalogue, ease_of_gram, fit_watch
from movielens.plumbing.errors import PipelineError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)

PAIR_COLUMNS = ("user_index", "movie_index")
# Iterations between checkpoints of ALS's factors (spark_session sets the folder): each cuts the
# lineage that otherwise grows until a task's serialisation overflows the stack.
ALS_CHECKPOINT_INTERVAL = 5


@dataclass(frozen=True)
class SparkAls:
    """Spark ALS's settings for implicit's (als_regularization, als_alpha) on given pairs.

    Attributes:
        reg_param: Spark's regParam, scaled per user and item by their counts.
        alpha: Spark's alpha (confidence 1 + alpha).
        scale: a, the factor the user factors are divided by and the item factors multiplied by.
    """

    reg_param: float
    alpha: float
    scale: float


def check_alpha(als_alpha: float) -> None:
    """Refuse an als_alpha below 1, which Spark's confidence 1 + alpha cannot express.

    Raises:
        PipelineError: naming the fixes.
    """
    if als_alpha < 1:
        raise PipelineError(
            f"watch.als_alpha={als_alpha} is below 1, which Spark's ALS (confidence 1 + alpha) "
            "cannot express; set watch.als_alpha >= 1 or compute.engine: pandas"
        )


def spark_als_settings(
    als_regularization: float, als_alpha: float, n_pairs: int, n_users: int, n_items: int
) -> SparkAls:
    """Map implicit's settings to Spark's for `n_pairs` pairs among `n_users` and `n_items` (each >= 1
    pair): the same confidence, and the same regularization at the mean user and item.

    Raises:
        PipelineError: when als_alpha < 1 (Spark's confidence 1 + alpha cannot be below 1).
    """
    check_alpha(als_alpha)
    per_user, per_item = n_pairs / n_users, n_pairs / n_items
    return SparkAls(
        reg_param=als_regularization / math.sqrt(per_user * per_item),
        alpha=als_alpha - 1.0,
        scale=(per_item / per_user) ** 0.25,
    )


def movie_counts(pairs: DataFrame, n_movies: int) -> np.ndarray:
    """int64 (n_movies,): each movie's count of distinct training pairs (one row per movie to the
    driver, as many as the id table already holds)."""
    counts = np.zeros(n_movies, dtype=np.int64)
    table = pairs.groupBy("movie_index").count().toPandas()
    counts[table["movie_index"].to_numpy()] = table["count"].to_numpy()
    return counts


def kept_pairs(pairs: DataFrame, catalogue: np.ndarray) -> DataFrame:
    """The pairs of catalogue movies, with `item`: the movie's position in the catalogue."""
    from pyspark.sql import functions as F

    spark = pairs.sparkSession
    positions = spark.createDataFrame(
        [(int(m), i) for i, m in enumerate(catalogue)], "movie_index long, item int"
    )
    return pairs.join(F.broadcast(positions), "movie_index")


def _factor_matrix(frame: DataFrame, size: int, rank: int) -> np.ndarray:
    """float32 (size, rank) from an ALS factor table (id, features); ids it lacks get zeros."""
    table = frame.toPandas()  # rows placed by id: their order does not matter
    out = np.zeros((size, rank), dtype=np.float32)
    if len(table):
        out[table["id"].to_numpy()] = np.stack(table["features"].to_numpy()).astype(np.float32)
    return out


def fit_spark_als(
    kept: DataFrame,
    n_users: int,
    n_items: int,
    als_factors: int,
    als_regularization: float,
    als_alpha: float,
    als_iterations: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Spark ML's implicit ALS on the pairs (user_index, item) of `kept`, mapped to implicit's model.

    Returns:
        user factors float32 (n_users, als_factors), item factors float32 (n_items, factors), on
        the scale implicit's regularization gives (spark_als_settings).
    """
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import functions as F

    stats = kept.agg(
        F.count("*").alias("pairs"),
        F.countDistinct("user_index").alias("users"),
        F.countDistinct("item").alias("items"),
    ).first()
    mapped = spark_als_settings(
        als_regularization, als_alpha, stats["pairs"], stats["users"], stats["items"]
    )
    # Two blocks (one per core of local[2]): the item and user Gram matrices are sums of the
    # blocks' parts merged in task-finishing order, and a sum of two is the same in either order.
    blocks = min(2, kept.sparkSession.sparkContext.defaultParallelism)
    als = ALS(
        rank=als_factors,
        maxIter=als_iterations,
        regParam=mapped.reg_param,
        alpha=mapped.alpha,
        implicitPrefs=True,
        numUserBlocks=blocks,
        numItemBlocks=blocks,
        seed=seed,
        checkpointInterval=ALS_CHECKPOINT_INTERVAL,
        userCol="user_index",
        itemCol="item",
        ratingCol="rating",
    )
    model = als.fit(kept.select("user_index", "item", F.lit(1.0).alias("rating")))
    users = _factor_matrix(model.userFactors, n_users, als_factors) / np.float32(mapped.scale)
    items = _factor_matrix(model.itemFactors, n_items, als_factors) * np.float32(mapped.scale)
    return users, items


def gram_of(kept: DataFrame, n_items: int) -> np.ndarray:
    """float64 (n_items, n_items): X^T X of the binary user x item matrix of `kept`'s pairs,
    summed over the users on Spark's executors (RowMatrix.computeGramianMatrix), to the driver."""
    from pyspark.mllib.linalg import Vectors
    from pyspark.mllib.linalg.distributed import RowMatrix
    from pyspark.sql import functions as F

    rows = (
        kept.groupBy("user_index")
        .agg(F.array_sort(F.collect_list("item")).alias("items"))
        .rdd.map(lambda row: Vectors.sparse(n_items, row["items"], [1.0] * len(row["items"])))
    )
    return RowMatrix(rows, numCols=n_items).computeGramianMatrix().toArray().astype(np.float64)


def fit_watch_spark(pairs: DataFrame, n_users: int, n_movies: int, **watch) -> WatchModel:
    """fit_watch on Spark: the watch model on the training pairs (user_index, movie_index).

    Args:
        pairs: the training pairs; a pair listed twice counts once, as in history_matrix.
        n_users, n_movies: the id spaces' sizes.
        **watch: fit_watch's arguments after `history` (params.yaml's watch section, key for key),
            checked against its signature, so the two engines take the same keys.

    Raises:
        PipelineError: as fit_watch, and for an als_alpha Spark cannot express.
        TypeError: for a key fit_watch does not take, or one missing.
    """
    w = inspect.signature(fit_watch).bind(None, **watch).arguments
    if w["model"] == "als":
        check_alpha(w["als_alpha"])  # before any work
    distinct = pairs.select(*PAIR_COLUMNS).distinct()
    counts = movie_counts(distinct, n_movies)
    catalogue = checked_catalogue(counts, w["model"], w["min_ratings"], w["ease_max_movies"])
    kept = kept_pairs(distinct, catalogue)
    if w["model"] == "ease":
        weights = ease_of_gram(gram_of(kept, len(catalogue)), w["ease_l2"])
        return WatchModel(
            "ease", catalogue, n_users, n_movies, weights, np.zeros((0, 0), np.float32)
        )
    als = {key: w[key] for key in ("als_factors", "als_regularization", "als_alpha")}
    user_factors, item_weights = fit_spark_als(
        kept, n_users, len(catalogue), **als, als_iterations=w["als_iterations"], seed=w["seed"]
    )
    settings = (w["als_regularization"], w["als_alpha"])
    return WatchModel("als", catalogue, n_users, n_movies, item_weights, user_factors, *settings)
