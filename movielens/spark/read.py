"""Read a ratings table into Spark: a CSV or Parquet file or folder, its columns renamed to the
pipeline's, each row numbered in file order (for the duplicate rule and the error messages)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from movielens.data.releases import DATASETS, RATING_COLUMNS, Dataset
from movielens.plumbing.errors import PipelineError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

FORMATS = ("csv", "parquet")
SPARK_LAYOUTS = ("csv",)  # the releases' layouts Spark reads; "dat" and "100k" are pandas-only
ROW_ID = "row_id"  # monotonically_increasing_id at the read: grows with the file order


@dataclass(frozen=True)
class TableSource:
    """Where a ratings table is and how to read it.

    Attributes:
        path: a file, or a folder of files of one format (Spark reads every file in it).
        format: "csv" (a header line, comma-separated) or "parquet".
        columns: the pipeline's column name (userId, movieId, rating, timestamp) -> the source's;
            a name not given is read as itself.
        encoding: a CSV file's text encoding.
        name: the table's name in messages (a release's file name).
    """

    path: Path
    format: str = "csv"
    columns: Mapping[str, str] = field(default_factory=dict)
    encoding: str = "utf-8"
    name: str = "ratings"

    def source_column(self, ours: str) -> str:
        return self.columns.get(ours, ours)


def release_source(raw_dir: Path, dataset: Dataset) -> TableSource:
    """A MovieLens release's ratings file as a TableSource.

    Raises:
        PipelineError: for a layout Spark does not read, or a missing file.
    """
    if dataset.layout not in SPARK_LAYOUTS:
        readable = ", ".join(d.name for d in DATASETS.values() if d.layout in SPARK_LAYOUTS)
        raise PipelineError(
            f"data.dataset={dataset.name} ({dataset.layout!r} layout) is not read on Spark; "
            f"use a csv release ({readable}) or compute.engine: pandas"
        )
    path = raw_dir / dataset.ratings
    if not path.is_file():
        raise PipelineError(f"{path} not found; run the download stage first (dvc repro download)")
    return TableSource(path, "csv", encoding=dataset.encoding, name=dataset.ratings)


def read_table(spark: SparkSession, source: TableSource) -> DataFrame:
    """The ratings as read, columns renamed to RATING_COLUMNS (timestamp only where present), plus
    ROW_ID. A CSV's values stay text: validate_ratings checks and casts them.

    Raises:
        PipelineError: for a missing path, an unknown format, an empty table's lack of a header, or
            missing columns (named as the source spells them).
    """
    from pyspark.sql import functions as F

    if source.format not in FORMATS:
        raise PipelineError(f"format {source.format!r} is unknown; use one of {', '.join(FORMATS)}")
    if not Path(source.path).exists():
        raise PipelineError(f"{source.path} not found")
    path = str(Path(source.path).resolve())  # the JVM resolves a relative path from its own cwd
    if source.format == "csv":
        options = {"header": True, "inferSchema": False, "encoding": source.encoding}
        frame = spark.read.options(**options).csv(path)
    else:
        frame = spark.read.parquet(path)
    if not frame.columns:
        raise PipelineError(f"{source.name} is empty; restore it (dvc repro --force download)")
    # timestamp is optional (0 where absent) unless the mapping names a column for it
    timed = "timestamp" in source.columns or "timestamp" in frame.columns
    wanted = [c for c in RATING_COLUMNS if c != "timestamp" or timed]
    missing = [
        source.source_column(c) for c in wanted if source.source_column(c) not in frame.columns
    ]
    if missing:
        raise PipelineError(
            f"{source.name} lacks column(s) {', '.join(missing)}; found {', '.join(frame.columns)}"
        )
    renamed = [F.col(f"`{source.source_column(c)}`").alias(c) for c in wanted]
    return frame.select(*renamed, F.monotonically_increasing_id().alias(ROW_ID))
