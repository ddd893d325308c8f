"""Write a Spark table as one Parquet file at the pandas path's name, atomically, rows in order.

Spark writes part files into a hidden folder beside the target; their row groups are then copied,
batch by batch (one batch in memory), into one file under a temporary name, renamed onto the
target. Every reader of data/processed (pandas, `require`'s is_file check, the service's MD5s)
sees a file like the pandas engine's, with the same columns, dtypes and row order.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from movielens.plumbing.files import atomic_path

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

BATCH_ROWS = 1 << 20  # rows per batch copied, and per row group of the file written

# The pandas engine's dtypes of every column of data/processed's rating tables.
ARROW_TYPES = {
    "userId": pa.int32(),
    "movieId": pa.int32(),
    "rating": pa.float32(),
    "timestamp": pa.int64(),
    "user_index": pa.int32(),
    "movie_index": pa.int32(),
    "cold": pa.bool_(),
}


def _parts_folder(target: Path) -> Path:
    """The hidden folder Spark writes `target`'s part files into; a killed run's is removed."""
    folder = target.with_name(f".{target.stem}.spark.tmp")
    shutil.rmtree(folder, ignore_errors=True)
    return folder


def pandas_schema(columns: list[str], attrs: Mapping) -> pa.Schema:
    """The schema pandas' to_parquet writes for a frame of `columns` (ARROW_TYPES) with `attrs`,
    metadata included: pandas' own (b"pandas"), and `attrs` under its key where not empty
    (pandas/io/parquet.py, PyArrowImpl.write), which pd.read_parquet restores as the frame's attrs.
    Taken from pandas itself, on an empty frame, so the two engines' files carry the same."""
    empty = pa.schema([(c, ARROW_TYPES[c]) for c in columns]).empty_table().to_pandas()
    empty.attrs = dict(attrs)
    buffer = io.BytesIO()
    empty.to_parquet(buffer, index=False)
    return pq.read_schema(pa.BufferReader(buffer.getvalue()))


def write_table(frame: DataFrame, target: Path, order: str, attrs: Mapping | None = None) -> None:
    """Write `frame`'s columns but `order`, rows sorted by `order`, to the Parquet file `target`,
    with the metadata pandas writes for a frame with `attrs` (pandas_schema).

    A global sort range-partitions the rows, so part files in name order hold them in order.
    """
    target = Path(target).resolve()  # the JVM resolves a relative path from its own cwd
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = _parts_folder(target)
    columns = [c for c in frame.columns if c != order]
    schema = pandas_schema(columns, attrs or {})
    try:
        frame.orderBy(order).select(*columns).write.parquet(str(folder))
        with atomic_path(target) as tmp, pq.ParquetWriter(tmp, schema) as writer:
            for part in sorted(folder.glob("part-*.parquet")):
                for batch in pq.ParquetFile(part).iter_batches(BATCH_ROWS, columns=columns):
                    arrays = [batch.column(c).cast(schema.field(c).type) for c in columns]
                    writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
