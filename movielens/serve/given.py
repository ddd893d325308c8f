"""The ratings a person gives at request time (`movielens recommend --ratings FILE`): read and checked.

A file (or `-`, standard input) holds `movieId,rating` rows under a header line, or JSON: a list of
{"movieId": .., "rating": ..} objects, or {"ratings": [that list]}. What it holds is told by its
first character (`[` or `{`: JSON), not by its name. Other CSV columns are ignored, so a MovieLens
ratings.csv cut to one person's rows (userId,movieId,rating,timestamp) reads as it is; a userId
column with several users is refused. Every row is checked before anything is used: an integer
movieId, a finite rating on the model's scale (any number from its lowest to its highest rating,
not only half stars: the model predicts a continuous rating). A movie given twice keeps its last
rating, as MovieLens keeps one rating per person and movie, the latest; the answer names those
movies. Anything else wrong is one PipelineError naming the row.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd

from movielens.plumbing.errors import PipelineError

MAX_BYTES = 16 << 20  # ~a million rows: far more than one person's ratings; bounds the work
COLUMNS = ("movieId", "rating")
STDIN = "-"
SHAPE = 'a list of {"movieId": .., "rating": ..} objects, or {"ratings": [...]}'


@dataclass(frozen=True)
class GivenRatings:
    """One person's ratings as given, checked, one per movie.

    Attributes:
        movie_ids: int64 (n,), distinct, in the order first given.
        ratings: float32 (n,), each movie's last rating given.
        rows: how many ratings the file held (repeats included).
        repeated: int64 (r,), ascending, the movieIds given more than once (their last rating kept).
    """

    movie_ids: np.ndarray
    ratings: np.ndarray
    rows: int
    repeated: np.ndarray


def source_name(source: str) -> str:
    """How messages name the input."""
    return "--ratings - (standard input)" if source == STDIN else f"--ratings {source}"


def read_bytes(source: str) -> bytes:
    """The raw input, at most MAX_BYTES + 1 bytes of it (one more tells that it is too large).

    Raises:
        PipelineError: for a file that cannot be opened or read, or "-" with nothing piped in.
    """
    if source == STDIN:
        if sys.stdin is None or sys.stdin.isatty():  # nothing piped in: reading would only wait
            raise PipelineError(
                f"{source_name(source)}: nothing is piped in; run e.g. "
                "`cat my_ratings.csv | movielens recommend --ratings -`"
            )
        stream = getattr(sys.stdin, "buffer", None)
        if stream is not None:
            return stream.read(MAX_BYTES + 1)
        return sys.stdin.read(MAX_BYTES + 1).encode("utf-8")
    try:
        with open(source, "rb") as handle:
            return handle.read(MAX_BYTES + 1)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise PipelineError(f"{source_name(source)}: cannot read it ({reason})") from None


def read_text(source: str) -> str:
    """The input as text: UTF-8 (a byte-order mark allowed), not empty, at most MAX_BYTES.

    Raises:
        PipelineError: for unreadable, non-UTF-8, empty or too large input.
    """
    name = source_name(source)
    data = read_bytes(source)
    if len(data) > MAX_BYTES:
        raise PipelineError(
            f"{name} is larger than {MAX_BYTES >> 20} MiB; one person's ratings fit in far less"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise PipelineError(f"{name} is not UTF-8 text (byte {err.start})") from None
    if not text.strip():
        raise PipelineError(
            f"{name} is empty; give a header line movieId,rating and one row per movie, or JSON"
        )
    return text


def csv_rows(text: str, name: str) -> tuple[pd.DataFrame, list[str]]:
    """The CSV's movieId and rating cells as text, and each row's label ("line 2", ...).

    Raises:
        PipelineError: for unparsable CSV, missing columns, a row of another width than the
            header, or several users' ratings.
    """
    try:
        numbered = [(n, row) for n, row in enumerate(csv.reader(io.StringIO(text)), 1) if row]
    except csv.Error as err:
        raise PipelineError(f"{name} cannot be read as CSV ({err})") from None
    header = [cell.strip() for cell in numbered[0][1]]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise PipelineError(
            f"{name} has the header {','.join(header)!r}, without {' and '.join(missing)}; the "
            "first line must name the columns: movieId,rating"
        )
    for line, row in numbered[1:]:
        if len(row) != len(header):
            raise PipelineError(
                f"{name} line {line} has {len(row)} fields, the header {len(header)}"
            )
    rows = [[cell.strip() for cell in row] for _, row in numbered[1:]]
    frame = pd.DataFrame(rows, columns=header, dtype=str)
    if "userId" in header and frame["userId"].nunique() > 1:
        raise PipelineError(
            f"{name} holds the ratings of {frame['userId'].nunique()} users (its userId column); "
            "give one person's ratings"
        )
    return frame[list(COLUMNS)], [f"line {n}" for n, _ in numbered[1:]]


def json_rows(text: str, name: str) -> tuple[pd.DataFrame, list[str]]:
    """The JSON's movieId and rating values as text, and each item's label ("item 1", ...).

    Raises:
        PipelineError: for invalid JSON, another shape than SHAPE, or an item without both keys.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise PipelineError(
            f"{name} is not valid JSON ({err.msg}, line {err.lineno} column {err.colno})"
        ) from None
    if isinstance(data, dict) and "ratings" in data:  # other keys (a name, a date) are ignored
        data = data["ratings"]
    if not isinstance(data, list):
        raise PipelineError(f"{name}: the JSON must be {SHAPE}")
    cells = {column: [] for column in COLUMNS}
    for number, item in enumerate(data, 1):
        if not isinstance(item, dict) or not set(COLUMNS) <= set(item):
            raise PipelineError(
                f"{name} item {number} is {json.dumps(item)[:60]}, not an object with "
                "movieId and rating"
            )
        for column in COLUMNS:
            value = item[column]
            # bool is an int to Python; a nested list or object is no number either.
            bad = isinstance(value, bool | list | dict) or value is None
            cells[column].append(json.dumps(value) if bad else str(value))
    return pd.DataFrame(cells), [f"item {i}" for i in range(1, len(data) + 1)]


def refuse_first(bad: np.ndarray, cells: pd.Series, labels: list[str], name: str, what: str):
    """Raise the PipelineError for the first row marked `bad`, if any."""
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        value = cells.iloc[row]
        said = f"{cells.name} is missing" if value == "" else f"{cells.name} {value!r} {what}"
        raise PipelineError(f"{name} {labels[row]}: {said}")


def check_values(
    cells: pd.DataFrame, labels: list[str], name: str, rating_scale: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Every row's movieId (int64) and rating (float32), each checked.

    Raises:
        PipelineError: naming the first row whose movieId is not an integer, or whose rating is
            not a finite number on rating_scale.
    """
    if cells.empty:
        raise PipelineError(f"{name} holds no ratings; give one row per movie: movieId,rating")
    ids = pd.to_numeric(cells["movieId"], errors="coerce").to_numpy(np.float64)
    integral = np.isfinite(ids) & (ids == np.round(ids)) & (np.abs(ids) < 2.0**53)
    refuse_first(~integral, cells["movieId"], labels, name, "is not an integer")
    ratings = pd.to_numeric(cells["rating"], errors="coerce").to_numpy(np.float64)
    refuse_first(~np.isfinite(ratings), cells["rating"], labels, name, "is not a number")
    lo, hi = rating_scale
    off = (ratings < lo) | (ratings > hi)
    refuse_first(off, cells["rating"], labels, name, f"is off the model's scale, {lo:g} to {hi:g}")
    return ids.astype(np.int64), ratings.astype(np.float32)


def last_per_movie(movie_ids: np.ndarray, ratings: np.ndarray) -> GivenRatings:
    """One rating per movie, the last given; movies in the order first given."""
    movie_ids = np.asarray(movie_ids, dtype=np.int64)
    unique, first, counts = np.unique(movie_ids, return_index=True, return_counts=True)
    # The last occurrence of each (ascending) movie: the first one in the reversed array.
    last = len(movie_ids) - 1 - np.unique(movie_ids[::-1], return_index=True)[1]
    order = np.argsort(first, kind="stable")
    return GivenRatings(
        unique[order],
        np.asarray(ratings, dtype=np.float32)[last[order]],
        len(movie_ids),
        unique[counts > 1],
    )


def read_given(source: str, rating_scale: tuple[float, float]) -> GivenRatings:
    """Read and check the ratings a person gives: a path, or "-" for standard input.

    Args:
        source: the --ratings argument.
        rating_scale: (lo, hi), the rating model's lowest and highest rating.

    Raises:
        PipelineError: one line naming the first problem (the module docstring lists the rules).
    """
    name = source_name(source)
    text = read_text(source)
    is_json = text.lstrip()[:1] in ("[", "{")
    cells, labels = json_rows(text, name) if is_json else csv_rows(text, name)
    return last_per_movie(*check_values(cells, labels, name, rating_scale))
