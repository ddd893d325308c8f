"""Preprocessing on Spark (`compute.engine: spark`): the pandas path's rules
(movielens/data/preprocess.py) on a table past one machine's memory.

Read and validate the ratings, keep the latest of repeated (user, movie) pairs, keep the top users
and movies, split (movielens/spark/split.py), encode the ids on the training split and write
data/processed's rating tables. Only id lists and counts reach the driver.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd

from movielens.data.preprocess import refuse_empty_filter
from movielens.plumbing import paths
from movielens.spark.read import ROW_ID, TableSource, read_table
from movielens.spark.split import IS_TEST, held_out, split_history
from movielens.spark.validate import RatingRules, validate_ratings
from movielens.spark.write import write_table

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitSettings:
    """The preprocess params: the top users and movies kept, then the test split's rule."""

    top_users: int | None
    top_movies: int | None
    test_size: float
    seed: int
    split: str
    history_size: float


class SparkPreprocessed(NamedTuple):
    """preprocess_on_spark's tables (each with ROW_ID, the file order) and id tables."""

    kept: DataFrame  # the ratings filter_top kept: userId, movieId, rating, timestamp
    train: DataFrame  # + user_index, movie_index
    test: DataFrame  # + user_index, movie_index (-1 where not in training), cold
    history: DataFrame  # held-out users' given ratings, as `test`; no rows but for heldout_users
    user_ids: np.ndarray  # the sorted training userIds, int32: index i holds the id of index i
    movie_ids: np.ndarray  # the same for movieIds
    rated_movie_ids: np.ndarray  # every movie rated after the duplicate repair (for movies.parquet)
    counts: dict  # ratings_read, duplicates_dropped


def drop_duplicates(ratings: DataFrame) -> DataFrame:
    """One row per (userId, movieId): the latest by timestamp, then the last in file order."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    pair = Window.partitionBy("userId", "movieId")
    latest = pair.orderBy(F.col("timestamp").desc(), F.col(ROW_ID).desc())
    first = ratings.select("*", (F.row_number().over(latest) == 1).alias("_latest"))
    return first.where("_latest").drop("_latest")


def top_ids(ratings: DataFrame, column: str, top: int | None) -> DataFrame:
    """The `top` ids of `column` with the most rows (ties: smaller id first), or every id."""
    from pyspark.sql import functions as F

    counts = ratings.groupBy(column).count()
    if top is not None:  # the k smallest of (count desc, id): each task keeps k, then one merge
        counts = counts.orderBy(F.col("count").desc(), F.col(column)).limit(top)
    return counts.select(column)


def filter_top(ratings: DataFrame, top_users: int | None, top_movies: int | None) -> DataFrame:
    """Ratings of the top users on the top movies, both ranked on the full table."""
    if top_users is None and top_movies is None:
        return ratings
    users = top_ids(ratings, "userId", top_users)
    movies = top_ids(ratings, "movieId", top_movies)
    kept = ratings.join(users, "userId", "left_semi").join(movies, "movieId", "left_semi")
    return kept.select(*ratings.columns)  # a join puts its key first


def _sorted_ids(frame: DataFrame, column: str) -> np.ndarray:
    """The distinct ids of `column`, ascending, int32: an id list, collected through Arrow."""
    ids = frame.select(column).distinct().toPandas()[column].to_numpy(np.int32)
    return np.sort(ids)


OUTPUT_COLUMNS = ("userId", "movieId", "rating", "timestamp", "user_index", "movie_index")


def _encode(frame: DataFrame, user_ids: np.ndarray, movie_ids: np.ndarray, cold: bool) -> DataFrame:
    """`frame` with user_index and movie_index in the id tables (-1 where absent) and, given
    `cold`, the flag cold (either is -1); columns in the pandas engine's order, then ROW_ID."""
    from pyspark.sql import functions as F

    spark = frame.sparkSession
    for column, index, ids in (
        ("userId", "user_index", user_ids),
        ("movieId", "movie_index", movie_ids),
    ):
        table = pd.DataFrame({column: ids, index: np.arange(len(ids), dtype=np.int32)})
        frame = frame.join(F.broadcast(spark.createDataFrame(table)), column, "left")
        frame = frame.withColumn(index, F.coalesce(F.col(index), F.lit(-1)))
    flags = [((F.col("user_index") < 0) | (F.col("movie_index") < 0)).alias("cold")] if cold else []
    return frame.select(*OUTPUT_COLUMNS, *flags, ROW_ID)


def load_ratings(spark: SparkSession, source: TableSource, rules: RatingRules):
    """Read, validate and deduplicate; the counts ratings_read and duplicates_dropped."""
    frame = read_table(spark, source)
    ratings, n_read = validate_ratings(frame, rules, source.name, source.columns)
    ratings = drop_duplicates(ratings).persist()
    n_duplicates = n_read - ratings.count()
    if n_duplicates:
        log.warning(
            "dropped %d duplicated (user, movie) ratings, keeping the latest of each", n_duplicates
        )
    return ratings, {"ratings_read": n_read, "duplicates_dropped": n_duplicates}


def preprocess_on_spark(
    spark: SparkSession, source: TableSource, rules: RatingRules, settings: SplitSettings
) -> SparkPreprocessed:
    """movielens.data.preprocess.load_release and preprocess on Spark: the same ratings kept, the
    same ids, the same ratings in test and history.

    Raises:
        PipelineError: on bad ratings (validate_ratings' rules), a filter keeping nothing, or a
            split leaving a part empty, before anything is written.
    """
    ratings, counts = load_ratings(spark, source, rules)
    rated_movie_ids = _sorted_ids(ratings, "movieId")
    kept = filter_top(ratings, settings.top_users, settings.top_movies).persist()
    n_kept = kept.count()
    if n_kept == 0:
        refuse_empty_filter(settings.top_users, settings.top_movies)
    split = settings.split
    tested = held_out(kept, n_kept, settings.test_size, settings.seed, split)
    train = tested.where(~tested[IS_TEST]).drop(IS_TEST)
    history, test = split_history(tested.where(IS_TEST).drop(IS_TEST), split, settings.history_size)
    user_ids, movie_ids = _sorted_ids(train, "userId"), _sorted_ids(train, "movieId")
    history = test.limit(0) if history is None else history
    return SparkPreprocessed(
        kept,
        _encode(train, user_ids, movie_ids, cold=False),
        _encode(test, user_ids, movie_ids, cold=True),
        _encode(history, user_ids, movie_ids, cold=True),
        user_ids,
        movie_ids,
        rated_movie_ids,
        counts,
    )


def split_counts(result: SparkPreprocessed) -> dict:
    """movielens.data.preprocess.split_counts of Spark's tables (one pass over each)."""
    from pyspark.sql import functions as F

    cold_users, cold_movies = F.col("user_index") < 0, F.col("movie_index") < 0
    test = result.test.agg(
        F.count(F.lit(1)),
        F.count_if(F.col("cold")),
        F.count_if(cold_users),
        F.count_if(cold_movies),
        F.count_distinct("userId"),
    ).first()
    history = result.history.agg(F.count(F.lit(1)), F.count_distinct("userId")).first()
    n_train = result.train.count()
    return {
        "ratings_kept": n_train + history[0] + test[0],
        "users": len(result.user_ids),
        "movies": len(result.movie_ids),
        "train_ratings": n_train,
        "test_ratings": test[0],
        "test_cold_pairs": test[1],
        "test_cold_users": test[2],
        "test_cold_movies": test[3],
        "heldout_users": history[1],
        "history_ratings": history[0],
        "test_users": test[4],
    }


def write_processed(result: SparkPreprocessed, attrs: dict) -> None:
    """Write the rating tables and the id tables at the pandas engine's paths, atomically each;
    `attrs` (a custom table's rating scale) in train's and ratings' metadata, as pandas does."""
    from movielens.plumbing.files import write_parquet

    tables = (
        (paths.TRAIN, result.train, attrs),
        (paths.TEST, result.test, {}),
        (paths.HISTORY, result.history, {}),
        (paths.RATINGS, result.kept, attrs),
    )
    for target, frame, table_attrs in tables:
        write_table(frame, target, ROW_ID, table_attrs)
    write_parquet(paths.USER_IDS, pd.DataFrame({"userId": result.user_ids}))
    write_parquet(paths.MOVIE_IDS, pd.DataFrame({"movieId": result.movie_ids}))
