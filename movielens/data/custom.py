"""A ratings table of your own (data.dataset: custom): where it lives, its column names and rating
scale; reading it (a .csv or .parquet file, or a folder of them, hive partitions included) and
validating it as a release's ratings are (movielens.data.preprocess)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from movielens.data.preprocess import (
    ID_RANGE,
    drop_duplicates,
    validate_movies,
    validate_ratings,
)
from movielens.data.releases import MOVIE_COLUMNS, RATING_COLUMNS, Dataset, get_dataset, read_raw
from movielens.plumbing import paths
from movielens.plumbing.choices import CUSTOM
from movielens.plumbing.errors import PipelineError

log = logging.getLogger(__name__)

FORMATS = {".csv": "csv", ".parquet": "parquet"}
# Ids are the model's table rows through int32 id tables, as the releases': other ids are refused.
ID_NOTE = (
    f"; ids must be integers from {ID_RANGE[0]} to {ID_RANGE[1]}: map other ids to those first"
)
UNTITLED = "item {}"  # the title of an item the items file does not name (or without one)


@dataclass(frozen=True)
class CustomTable:
    """data.custom: a ratings table of your own.

    Attributes:
        ratings: a .csv/.parquet file or a folder of them, inside paths.CUSTOM_DIR.
        items: an optional .csv/.parquet file: the item column, and optionally title and genres.
        columns: the table's names of userId, movieId, rating and timestamp (None: no timestamp).
        rating_scale: (lo, hi), the lowest and highest rating; any value between is allowed.
    """

    ratings: Path
    items: Path | None
    columns: tuple[str, str, str, str | None]
    rating_scale: tuple[float, float]
    name: str = CUSTOM

    @classmethod
    def from_params(cls, custom: dict[str, Any]) -> CustomTable:
        """The table from an already validated data.custom mapping (movielens.params)."""
        names = custom["columns"]
        items = custom["items"]
        return cls(
            ratings=Path(custom["ratings"]),
            items=None if items is None else Path(items),
            columns=(names["user"], names["item"], names["rating"], names["timestamp"]),
            rating_scale=(float(custom["rating_scale"][0]), float(custom["rating_scale"][1])),
        )


def check_tracked(path: Path, key: str) -> None:
    """Refuse a custom file that is missing or outside paths.CUSTOM_DIR, the folder preprocess
    depends on in dvc.yaml: outside it, editing the file would rerun nothing.

    Raises:
        PipelineError: naming the params key and what to do.
    """
    home = paths.CUSTOM_DIR.resolve()
    if not path.resolve().is_relative_to(home):
        raise PipelineError(
            f"{key}={str(path)!r} is outside {paths.CUSTOM_DIR}, the folder dvc.yaml tracks: copy "
            f"it there or `dvc import-url {path} {paths.CUSTOM_DIR}/` (docs/custom-data.md)"
        )
    if not path.exists():
        raise PipelineError(f"{key}={str(path)!r} not found; put your table there or fix {key}")


def table_files(path: Path) -> tuple[list[Path], str]:
    """The data files of a table, sorted, and their format ("csv" or "parquet").

    A folder's files are found at any depth (hive partitions: user_bucket=3/part-0.parquet);
    names starting with "." or "_" (_SUCCESS, .gitignore) and other suffixes (.dvc) are skipped.

    Raises:
        PipelineError: when there is no such file, or the folder mixes the formats or has none.
    """
    if path.is_file():
        files = [path]
    else:
        files = sorted(
            file
            for file in path.rglob("*")
            if file.is_file()
            and not any(part.startswith((".", "_")) for part in file.relative_to(path).parts)
        )
        files = [file for file in files if file.suffix in FORMATS]
    kinds = {FORMATS.get(file.suffix) for file in files}
    if None in kinds or len(kinds) != 1:
        found = "no .csv or .parquet file" if not files else f"{', '.join(sorted(map(str, kinds)))}"
        raise PipelineError(f"{path} must be .csv or .parquet files of one format; found {found}")
    return files, kinds.pop()


def ratings_files(table: CustomTable) -> list[Path]:
    """The files of a custom table's ratings (table_files), once check_tracked has passed them.

    Raises:
        PipelineError: as check_tracked and table_files.
    """
    check_tracked(table.ratings, "data.custom.ratings")
    return table_files(table.ratings)[0]


@contextmanager
def _parse_errors(path: Path) -> Iterator[None]:
    """A file pandas or pyarrow cannot parse, as one line naming the table."""
    try:
        yield
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as err:  # ArrowInvalid too
        raise PipelineError(f"{path} cannot be parsed: {str(err).splitlines()[0]}") from None


def _parquet_dataset(path: Path, files: list[Path]):
    """The Parquet files as one pyarrow dataset, the keys of a hive folder's names as columns."""
    import pyarrow.dataset as ds

    base = {"partition_base_dir": str(path)} if path.is_dir() else {}
    return ds.dataset([str(f) for f in files], format="parquet", partitioning="hive", **base)


def table_columns(path: Path, columns: list[str]) -> tuple[list[Path], str]:
    """table_files, once every CSV file's header (a Parquet table's schema, hive keys included)
    has `columns`: the check both engines make before reading a custom table.

    Raises:
        PipelineError: as table_files; for a missing column, named as the table spells it; for a
            file that cannot be parsed.
    """
    files, kind = table_files(path)
    with _parse_errors(path):
        if kind == "csv":
            for file in files:
                _require_columns(file, pd.read_csv(file, nrows=0).columns, columns)
        else:
            _require_columns(path, _parquet_dataset(path, files).schema.names, columns)
    return files, kind


def read_table(path: Path, columns: list[str]) -> pd.DataFrame:
    """Read `columns` of a table (table_files), in file order, values as stored: CSV through pandas
    (types inferred over the whole file, so validation names the row of a bad cell), Parquet
    through pyarrow.dataset (partition keys of a hive folder are columns too).

    Raises:
        PipelineError: when a column is missing or a file cannot be parsed.
    """
    files, kind = table_columns(path, columns)
    with _parse_errors(path):
        if kind == "csv":
            parts = [pd.read_csv(file, usecols=columns)[columns] for file in files]
            return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        return _parquet_dataset(path, files).to_table(columns=columns).to_pandas()


def _require_columns(source: Path, found, wanted: list[str]) -> None:
    missing = [name for name in wanted if name not in set(found)]
    if missing:
        raise PipelineError(
            f"{source} lacks column(s) {', '.join(missing)}; found {', '.join(map(str, found))} "
            "(set data.custom.columns to its names)"
        )


def read_custom_ratings(table: CustomTable) -> pd.DataFrame:
    """The mapped columns of the ratings table, under the table's own names, as stored (not
    validated): the one reader of a custom table's ratings."""
    return read_table(table.ratings, [name for name in table.columns if name is not None])


def validate_custom_ratings(raw: pd.DataFrame, table: CustomTable) -> pd.DataFrame:
    """validate_ratings on the table's column names and its rating scale (no half-star grid).

    Returns:
        userId, movieId (int32), rating (float32), timestamp (int64; 0 without a timestamp column).
    """
    return validate_ratings(
        raw,
        None,
        source=str(table.ratings),
        columns=table.columns,
        rating_scale=table.rating_scale,
        id_note=ID_NOTE,
    )


def custom_items(table: CustomTable, movie_ids: np.ndarray) -> tuple[pd.DataFrame, int]:
    """The items table as the releases' movies (movieId, title, genres), one row per rated item.

    An item the items file lacks, or all of them without one, is titled "item <id>"; an item
    without a title or genres there gets "item <id>" and "(no genres listed)".

    Returns:
        The table sorted by movieId, and how many rated items the items file did not name.
    """
    item = table.columns[1]
    if table.items is None:
        raw = pd.DataFrame({item: pd.Series([], dtype=np.int64)})
    else:
        raw = read_table(table.items, [item, *_present_columns(table.items, item)])
    raw = raw.rename(columns={item: MOVIE_COLUMNS[0]})
    for name in MOVIE_COLUMNS[1:]:
        if name not in raw.columns:
            raw[name] = None
    source = str(table.items or "items")
    movies, added = validate_movies(raw, movie_ids, source=source, untitled=UNTITLED)
    untitled = (movies["title"] == "").to_numpy()
    names = [UNTITLED.format(m) for m in movies["movieId"].to_numpy()[untitled]]
    movies.loc[untitled, "title"] = names
    return movies, added


def _present_columns(path: Path, item: str) -> list[str]:
    """Which of title and genres the items table has (both optional)."""
    files, kind = table_files(path)
    if kind == "csv":
        names = pd.read_csv(files[0], nrows=0).columns
    else:
        import pyarrow.parquet as pq

        names = pq.read_schema(files[0]).names
    _require_columns(path, names, [item])
    return [name for name in MOVIE_COLUMNS[1:] if name in names]


def check_custom(table: CustomTable) -> None:
    """check_tracked of the ratings and, when given, the items (either engine, before reading).

    Raises:
        PipelineError: as check_tracked.
    """
    check_tracked(table.ratings, "data.custom.ratings")
    if table.items is not None:
        check_tracked(table.items, "data.custom.items")


def complete_items(table: CustomTable, movie_ids: np.ndarray) -> tuple[pd.DataFrame, int]:
    """custom_items, warning about the rated items the items file lacks (either engine)."""
    movies, n_absent = custom_items(table, movie_ids)
    if n_absent and table.items is not None:
        log.warning("%d rated items are missing from %s; named them by id", n_absent, table.items)
    return movies, n_absent


def load_custom(table: CustomTable) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Read, validate and deduplicate a custom table's ratings and items, as load_release does a
    release's; nothing is written and the files are never changed.

    Raises:
        PipelineError: for a file outside paths.CUSTOM_DIR or missing, and every problem
            validate_ratings and validate_movies name.
    """
    check_custom(table)
    raw = read_custom_ratings(table)
    n_read = len(raw)
    ratings, n_duplicates = drop_duplicates(validate_custom_ratings(raw, table))
    del raw
    movies, n_absent = complete_items(table, ratings["movieId"].unique())
    if n_duplicates:
        log.warning("dropped %d duplicated (user, item) ratings, keeping the latest", n_duplicates)
    counts = {
        "ratings_read": n_read,
        "duplicates_dropped": n_duplicates,
        "movies_added_untitled": n_absent,
    }
    return ratings, movies, counts


def renamed(raw: pd.DataFrame, table: CustomTable) -> pd.DataFrame:
    """Raw ratings under the releases' names (RATING_COLUMNS), for serve's look-ups of raw ids."""
    return raw.rename(columns=dict(zip(table.columns, RATING_COLUMNS, strict=True)))


def source_of(data: dict[str, Any]) -> Dataset | CustomTable:
    """The release data.dataset names, or data.custom's table (an already validated data section)."""
    if data["dataset"] == CUSTOM:
        return CustomTable.from_params(data["custom"])
    return get_dataset(data["dataset"])


def raw_ratings_path(source: Dataset | CustomTable) -> Path:
    """Where a source's raw ratings are: the release's extracted file, or the table."""
    if isinstance(source, CustomTable):
        return source.ratings
    return paths.raw_dir(source.name) / source.ratings


def read_raw_ratings(source: Dataset | CustomTable) -> pd.DataFrame:
    """A source's raw ratings, not validated, under RATING_COLUMNS' names (userId, movieId, ...)."""
    if isinstance(source, CustomTable):
        return renamed(read_custom_ratings(source), source)
    return read_raw(paths.raw_dir(source.name), source)[0]
