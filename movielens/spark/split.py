"""The split rules of movielens/data/splits.py on Spark: the same test ratings, the same histories.

The seeded draws are split_hash itself, applied to each Arrow batch (mapInArrow), so both engines
draw bit-identical numbers; the ranks and counts are window functions; the `time` cut is found
from the sizes of the sorted partitions, without moving the table through one task.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from movielens.data.splits import (
    refuse_empty,
    refuse_no_targets,
    refuse_no_users,
    split_hash,
    unknown_split,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    import pyarrow as pa
    from pyspark.sql import Column, DataFrame

DRAW = "draw"
IS_TEST = "is_test"
_PART, _POSITION = "_part", "_position"


def _draw_batches(
    batches: Iterator[pa.RecordBatch], seed: int, keys: tuple[str, ...]
) -> Iterator[pa.RecordBatch]:
    """Each Arrow batch with DRAW = split_hash(seed, *keys) appended (runs in Spark's workers)."""
    import pyarrow as pa

    for batch in batches:
        ids = [batch.column(key).to_numpy(zero_copy_only=False) for key in keys]
        draw = split_hash(seed, *ids) if batch.num_rows else []
        yield pa.RecordBatch.from_arrays(
            [*batch.columns, pa.array(draw, pa.float64())], names=[*batch.schema.names, DRAW]
        )


def with_draw(frame: DataFrame, seed: int, *keys: str) -> DataFrame:
    """`frame` with DRAW: split_hash(seed, *keys) of each row, float64 in [0, 1)."""
    from pyspark.sql.types import DoubleType, StructField, StructType

    schema = StructType([*frame.schema.fields, StructField(DRAW, DoubleType(), False)])
    return frame.mapInArrow(partial(_draw_batches, seed=seed, keys=keys), schema)


def _rank_and_count(frame: DataFrame, order: list[str]) -> tuple[Column, Column]:
    """Each row's 0-based rank among its user's rows in `order`, and its user's number of rows."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    by_user = Window.partitionBy("userId")
    return F.row_number().over(by_user.orderBy(*order)) - 1, F.count(F.lit(1)).over(by_user)


def _first_of_cut(sizes: dict[int, int], cut: int) -> int:
    """The monotonically_increasing_id of row `cut` (0-based) of partitions of these sizes, in
    partition order: Spark numbers row i of partition p as p * 2**33 + i."""
    before = 0
    for part in sorted(sizes):
        if before + sizes[part] > cut:
            return (part << 33) + cut - before
        before += sizes[part]
    raise ValueError(f"row {cut} is past the {before} rows")


def _latest(frame: DataFrame, n_test: int, n: int) -> DataFrame:
    """`frame` with IS_TEST on its latest n_test rows in time_order (timestamp, userId, movieId).

    A global sort range-partitions the rows in order; the sorted table is persisted so that its
    partition ids and row numbers are the ones counted.
    """
    from pyspark.sql import functions as F

    ordered = (
        frame.orderBy("timestamp", "userId", "movieId")
        .select("*", F.spark_partition_id().alias(_PART))
        .select("*", F.monotonically_increasing_id().alias(_POSITION))
        .persist()
    )
    sizes = {row[0]: row[1] for row in ordered.groupBy(_PART).count().collect()}
    first = _first_of_cut(sizes, n - n_test)
    return ordered.select(*frame.columns, (F.col(_POSITION) >= first).alias(IS_TEST))


def held_out(frame: DataFrame, n: int, test_size: float, seed: int, split: str) -> DataFrame:
    """`frame` (n rows) with IS_TEST: held_out_mask's rule, the same ratings in test.

    Raises:
        PipelineError: as held_out_mask, when either part would be empty or `split` is unknown.
    """
    from pyspark.sql import functions as F

    if split == "random":
        tested = with_draw(frame, seed, "userId", "movieId")
        tested = tested.select(*frame.columns, (F.col(DRAW) < test_size).alias(IS_TEST))
    elif split == "user":
        drawn = with_draw(frame, seed, "userId", "movieId")
        rank, count = _rank_and_count(drawn, [DRAW, "movieId"])
        # bround rounds half to even, as np.rint does on the pandas path.
        share = F.least(F.bround(count * test_size, 0), count - 1)
        tested = drawn.select(*frame.columns, (rank < share).alias(IS_TEST))
    elif split == "time":
        n_test = round(n * test_size)
        refuse_empty(test_size, n, n_test, split)
        return _latest(frame, n_test, n)
    elif split == "heldout_users":
        tested = with_draw(frame, seed, "userId")
        tested = tested.select(*frame.columns, (F.col(DRAW) < test_size).alias(IS_TEST)).persist()
        users = tested.agg(
            F.count_distinct("userId"), F.count_distinct(F.when(F.col(IS_TEST), F.col("userId")))
        ).first()
        refuse_no_users(test_size, users[0], users[1])
        return tested
    else:
        raise unknown_split(split)
    tested = tested.persist()
    refuse_empty(test_size, n, tested.where(IS_TEST).count(), split)
    return tested


def split_history(
    held: DataFrame, split: str, history_size: float
) -> tuple[DataFrame | None, DataFrame]:
    """The held-out rows' history (None but under heldout_users) and the rows to predict, as
    movielens.data.splits.split_history: each user's earliest max(1, round(history_size * n_u))
    rows by (timestamp, movieId) are given.

    Raises:
        PipelineError: when no row is left to predict.
    """
    from pyspark.sql import functions as F

    if split != "heldout_users":
        return None, held
    rank, count = _rank_and_count(held, ["timestamp", "movieId"])
    given = rank < F.greatest(F.lit(1.0), F.bround(count * history_size, 0))
    marked = held.select("*", given.alias("_given")).persist()
    history, test = (marked.where(c).drop("_given") for c in (F.col("_given"), ~F.col("_given")))
    n_history = history.agg(F.count(F.lit(1)), F.count_distinct("userId")).first()
    refuse_no_targets(test.count(), n_history[0], n_history[1], history_size)
    return history, test
