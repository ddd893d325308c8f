"""Read a ratings table into Spark: a CSV or Parquet file or folder, its columns renamed to the
pipeline's, each row numbered in file order (for the duplicate rule and the error messages)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from movielens.data.custom import CustomTable, check_custom, table_columns
from movielens.data.releases import DATASETS, RATING_COLUMNS, Dataset
from movielens.plumbing.errors import PipelineError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

FORMATS = ("csv", "parquet")
SPARK_LAYOUTS = ("csv",)  # the releases' layouts Spark reads; "dat" and "100k" are pandas-only
ROW_ID = "row_id"  # grows with the file order (the pandas reader's row order)


@dataclass(frozen=True)
class TableSource:
    """Where a ratings table is and how to read it.

    Attributes:
        path: a file, or a folder of files of one format (Spark reads every file in it).
        format: "csv" (a header line, comma-separated) or "parquet".
        columns: the pipeline's column name (userId, movieId, rating, timestamp) -> the source's;
            a name not given is read as itself; timestamp None: the table has none (0).
        encoding: a CSV file's text encoding.
        name: the table's name in messages (a release's file name).
        files: the files to read, in the order that numbers the rows (a custom folder's, sorted
            by path); empty: Spark reads `path`. Parquet files take a hive folder's keys under
            `path` as columns.
    """

    path: Path
    format: str = "csv"
    columns: Mapping[str, str | None] = field(default_factory=dict)
    encoding: str = "utf-8"
    name: str = "ratings"
    files: tuple[Path, ...] = ()

    def source_column(self, ours: str) -> str | None:
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


def custom_source(table: CustomTable) -> TableSource:
    """A custom table's ratings (movielens.data.custom) as a TableSource: its files as the pandas
    reader lists them, its column names, checked as that reader checks them (the same messages).

    Raises:
        PipelineError: as check_custom and table_columns; for CSV parts whose headers differ
            (Spark takes the first file's header for every file).
    """
    check_custom(table)
    names = [name for name in table.columns if name is not None]
    files, kind = table_columns(table.ratings, names)
    if kind == "csv":
        import pandas as pd

        headers = {tuple(pd.read_csv(file, nrows=0).columns) for file in files}
        if len(headers) > 1:
            raise PipelineError(
                f"{table.ratings}'s CSV files have different headers; compute.engine: spark needs "
                "one header (columns in one order) in every file"
            )
    columns = dict(zip(RATING_COLUMNS, table.columns, strict=True))
    name = str(table.ratings)
    return TableSource(table.ratings, kind, columns, name=name, files=tuple(files))


def _numbered(frame: DataFrame, files: tuple[Path, ...]) -> DataFrame:
    """`frame` (a scan of `files`) with ROW_ID numbering its rows as the pandas reader reads them:
    file by file in `files`' order, each from the top.

    Spark packs the files' splits into partitions largest first, but a file's splits keep their
    order (docs/spark.md, "File order"), so within one (file, partition) chunk
    monotonically_increasing_id counts the file's rows in order. One pass counts each chunk's rows
    (only those counts reach the driver); each chunk is then shifted to start where the chunks
    before it, in (file, partition) order, end.
    """
    from urllib.parse import unquote, urlparse

    import pandas as pd
    from pyspark.sql import functions as F

    keys = ["_file", "_part"]
    tagged = frame.select(
        "*",
        F.col("_metadata.file_path").alias("_file"),
        F.spark_partition_id().alias("_part"),
        F.monotonically_increasing_id().alias("_mono"),
    )
    count = [F.count(F.lit(1)).alias("n"), F.min("_mono").alias("first")]
    chunks = tagged.groupBy(*keys).agg(*count).toPandas()
    rank = {str(file): k for k, file in enumerate(files)}
    chunks["rank"] = [rank[unquote(urlparse(uri).path)] for uri in chunks["_file"]]
    chunks = chunks.sort_values(["rank", "_part"], ignore_index=True)
    starts = chunks["n"].cumsum() - chunks["n"]
    offsets = pd.DataFrame({**chunks[keys], "offset": starts - chunks["first"]})
    offsets = frame.sparkSession.createDataFrame(offsets)
    numbered = tagged.join(F.broadcast(offsets), keys).withColumn(
        ROW_ID, F.col("_mono") + F.col("offset")
    )
    return numbered.drop(*keys, "_mono", "offset")


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
    # the JVM resolves a relative path from its own cwd
    paths = [str(Path(p).resolve()) for p in source.files or (source.path,)]
    if source.format == "csv":
        options = {"header": True, "inferSchema": False, "encoding": source.encoding}
        frame = spark.read.options(**options).csv(paths)
    else:  # basePath: the hive keys of the folders between it and each file are columns
        base = {"basePath": str(Path(source.path).resolve())} if source.files else {}
        frame = spark.read.options(**base).parquet(*paths)
    if not frame.columns:
        raise PipelineError(f"{source.name} is empty; restore it (dvc repro --force download)")
    # timestamp is optional (0 where absent) unless the mapping names a column for it
    time = source.source_column("timestamp")
    timed = time is not None and ("timestamp" in source.columns or time in frame.columns)
    wanted = [c for c in RATING_COLUMNS if c != "timestamp" or timed]
    missing = [
        source.source_column(c) for c in wanted if source.source_column(c) not in frame.columns
    ]
    if missing:
        raise PipelineError(
            f"{source.name} lacks column(s) {', '.join(missing)}; found {', '.join(frame.columns)}"
        )
    if len(source.files) > 1:
        frame = _numbered(frame, tuple(Path(p) for p in paths))
    else:  # one file: its splits keep their order (docs/spark.md, "File order")
        frame = frame.withColumn(ROW_ID, F.monotonically_increasing_id())
    renamed = [F.col(f"`{source.source_column(c)}`").alias(c) for c in wanted]
    return frame.select(*renamed, ROW_ID)
