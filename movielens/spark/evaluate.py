"""The evaluate stage's Spark part (`compute.engine: spark`): every user's served list, written as
topn.parquet, and the test metrics of those lists and of the rating model, computed on Spark."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from movielens.evaluation.topn import summary_row
from movielens.plumbing.errors import PipelineError
from movielens.plumbing.files import atomic_path
from movielens.ranking.scorers import Factors
from movielens.spark.lists import LIST_COLUMNS, ServedModels, served_lists
from movielens.spark.metrics import evaluator_ndcg, per_user_metrics, ranking_summary, warm_rmse

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

ROWS_PER_CHUNK = 100_000  # rows of the lists held on the driver at once while writing


def check_factors(rating) -> Factors:
    """The rating model's NumPy tables, which the executors rank with.

    Raises:
        PipelineError: for a model of another architecture (scored by its own predict only).
    """
    if not isinstance(rating, Factors):
        raise PipelineError(
            "compute.engine=spark ranks with the rating model's NumPy tables, which a model of "
            "another architecture does not have; train the standard model or set compute.engine: pandas"
        )
    return rating


def write_lists(lists: DataFrame, target: Path, id_types: tuple[np.dtype, np.dtype]) -> int:
    """Write the lists as one Parquet file with topn.parquet's columns, ordered by user and rank,
    streamed from the executors a partition at a time (never the whole table on the driver).

    Args:
        id_types: the dtypes of the user and movie id tables, which the pandas path's file keeps.

    Returns:
        The rows written.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    user_type, movie_type = (pa.from_numpy_dtype(dtype) for dtype in id_types)
    columns = [("userId", user_type), ("movieId", movie_type)]
    schema = pa.schema([*columns, ("rank", pa.int32()), ("score", pa.float32())])
    rows, chunk = 0, []
    with atomic_path(target) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        ordered = lists.select(*LIST_COLUMNS).orderBy("userId", "rank")
        for row in ordered.toLocalIterator(prefetchPartitions=True):
            chunk.append(dict(zip(LIST_COLUMNS, row, strict=True)))
            if len(chunk) == ROWS_PER_CHUNK:
                writer.write_table(pa.Table.from_pylist(chunk, schema))
                rows, chunk = rows + len(chunk), []
        writer.write_table(pa.Table.from_pylist(chunk, schema))  # the rest; an empty file's schema
    return rows + len(chunk)


def evaluate_on_spark(
    spark: SparkSession,
    models: ServedModels,
    train: DataFrame,
    test: DataFrame,
    *,
    users: np.ndarray | None,
    k: int,
    relevance_threshold: float,
    block_size: int,
    topn_path: Path,
) -> dict:
    """Rank `users` (None: all) on Spark, write their lists to `topn_path`, and score them.

    Args:
        train: user_index, movie_index of the training pairs; test: user_index, movie_index (-1:
            unseen in training) and rating of the test pairs.

    Returns:
        scores.json's `spark` section: the served lists' ranking figures (a row as scores.json's
        `ranking` has), RankingEvaluator's NDCG@k of the same lists, and the rating model's RMSE on the
        warm test pairs.
    """
    lists = served_lists(spark, models, train, users, k, block_size).cache()
    write_lists(lists, topn_path, (models.user_ids.dtype, models.movie_ids.dtype))
    per_user = per_user_metrics(
        lists, test, models.watch.n_movies, k, relevance_threshold, block_size
    )
    summary = ranking_summary(lists, per_user, test, models.watch.n_movies, k, relevance_threshold)
    return {
        "served": summary_row(summary),
        f"ndcg@{k}_ranking_evaluator": round(
            evaluator_ndcg(lists, test, k, relevance_threshold), 6
        ),
        "rmse_warm": round(warm_rmse(test, models.rating, block_size), 6),
    }
