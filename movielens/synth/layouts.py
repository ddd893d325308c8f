"""The text of a release's movies and ratings files, in the release's own layout (csv, dat, 100k)."""

from __future__ import annotations

import csv
import io
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from movielens.data.releases import ML100K_GENRES, Dataset

ROWS_PER_CHUNK = 1 << 20  # ratings formatted at once, while the chunk before is compressed
# "0000".."9999" as 4-byte cells, for _int_chars.
_FOUR_DIGITS = np.frombuffer(b"".join(b"%04d" % i for i in range(10_000)), np.uint32)


def rating_codes(rating: np.ndarray, dataset: Dataset) -> np.ndarray:
    """Half-star index 2 * rating (1..10), (n,) int8, after checking the release's grid."""
    (low, high), step = dataset.rating_scale, dataset.rating_step
    doubled = np.asarray(rating, dtype=np.float64) * 2
    codes = np.rint(doubled)
    off = (codes != doubled) | (codes < 2 * low) | (codes > 2 * high) | (codes % (2 * step) != 0)
    if off.any():
        bad = rating[np.flatnonzero(off)[0]]
        raise ValueError(
            f"rating {bad!r} is off the {dataset.name} grid {low:g}..{high:g} in steps of {step:g}"
        )
    return codes.astype(np.int8)


def movies_text(movies: pd.DataFrame, dataset: Dataset) -> str:
    """The movies file: csv with a header, "::"-separated lines, or ml-100k's u.item lines."""
    rows = zip(movies["movieId"], movies["title"], movies["genres"], strict=True)
    if dataset.layout == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["movieId", "title", "genres"])
        writer.writerows((int(i), t, g) for i, t, g in rows)
        return buffer.getvalue()
    lines = []
    for movie_id, title, genres in rows:
        _check_title(title, dataset)
        if dataset.layout == "dat":
            lines.append(f"{int(movie_id)}::{title}::{genres}\n")
        else:
            lines.append(_u_item_line(int(movie_id), title, genres))
    return "".join(lines)


def _check_title(title: str, dataset: Dataset) -> None:
    separator = "::" if dataset.layout == "dat" else "|"
    if separator in title or "\n" in title or title.endswith(":"):
        raise ValueError(
            f"title {title!r} cannot be written to {dataset.name}'s {dataset.movies}: it holds "
            f"{separator!r}, a newline or a trailing ':'"
        )


def _u_item_line(movie_id: int, title: str, genres: str) -> str:
    """One line of ml-100k's u.item: id|title|release date|video release date|URL|19 flags."""
    flags = ["0"] * len(ML100K_GENRES)
    for genre in genres.split("|"):
        if genre not in ML100K_GENRES:
            raise ValueError(f"genre {genre!r} of movie {movie_id} is not one of ML100K_GENRES")
        flags[ML100K_GENRES.index(genre)] = "1"
    year = title[-5:-1] if title.endswith(")") and title[-5:-1].isdigit() else ""
    released = f"01-Jan-{year}" if year else ""
    url = "http://us.imdb.com/M/title-exact?" + urllib.parse.quote(title, encoding="latin-1")
    return f"{movie_id}|{title}|{released}||{url}|{'|'.join(flags)}\n"


def ratings_chunks(ratings: pd.DataFrame, codes: np.ndarray, dataset: Dataset) -> Iterator[bytes]:
    """The ratings file's bytes in chunks; the next chunk is formatted while one is compressed."""
    if dataset.layout == "csv":
        separator, tokens = b",", [f"{c / 2:.1f}".encode() for c in range(11)]
        yield b"userId,movieId,rating,timestamp\n"
    else:
        separator = b"::" if dataset.layout == "dat" else b"\t"
        tokens = [f"{c / 2:g}".encode() for c in range(11)]
    columns = [ratings[name].to_numpy() for name in ("userId", "movieId", "timestamp")]

    def encode(start: int) -> bytes:
        stop = start + ROWS_PER_CHUNK
        user, movie, stamp = (c[start:stop] for c in columns)
        fields = [_int_chars(user), _int_chars(movie), _token_chars(codes[start:stop], tokens)]
        return _join_rows([*fields, _int_chars(stamp)], separator)

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(encode, 0)
        for start in range(ROWS_PER_CHUNK, len(ratings) + ROWS_PER_CHUNK, ROWS_PER_CHUNK):
            chunk = pending.result()
            if start < len(ratings):
                pending = pool.submit(encode, start)
            yield chunk


def _int_chars(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decimal digits right-aligned in a (n, width) uint8 block, and the (n, width) mask of digits.

    Four digits at a time come from a table of "0000".."9999", which is ~5x faster than one
    division per digit.

    Raises:
        ValueError: for negative or non-integer values.
    """
    if len(values) == 0:
        return np.zeros((0, 1), np.uint8), np.zeros((0, 1), bool)
    as_int = values.astype(np.int64)
    if (as_int != values).any() or as_int.min() < 0:
        raise ValueError("ids and timestamps must be non-negative integers")
    width = len(str(int(as_int.max())))
    groups = -(-width // 4)
    packed = np.empty((len(as_int), groups), np.uint32)
    rest = as_int
    for group in range(groups - 1, -1, -1):
        rest, low = np.divmod(rest, 10_000)
        packed[:, group] = _FOUR_DIGITS[low]
    chars = packed.view(np.uint8)[:, groups * 4 - width :]
    n_digits = 1 + np.searchsorted(10 ** np.arange(1, width, dtype=np.int64), as_int, "right")
    return chars, np.arange(width) >= (width - n_digits)[:, None]


def _token_chars(codes: np.ndarray, tokens: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """The tokens of `codes`, right-aligned like _int_chars."""
    width = max(len(t) for t in tokens)
    table = np.frombuffer(b"".join(t.rjust(width) for t in tokens), np.uint8).reshape(-1, width)
    lengths = np.array([len(t) for t in tokens])
    return table[codes], np.arange(width) >= (width - lengths[codes])[:, None]


def _join_rows(fields: list[tuple[np.ndarray, np.ndarray]], separator: bytes) -> bytes:
    """Rows of the fields joined by `separator`, each ending in a newline."""
    n = len(fields[0][0])
    sep = np.broadcast_to(np.frombuffer(separator, np.uint8), (n, len(separator)))
    newline = np.full((n, 1), ord("\n"), np.uint8)
    blocks, masks = [], []
    for chars, used in fields:
        blocks += [chars, sep]
        masks += [used, np.ones(sep.shape, bool)]
    blocks[-1], masks[-1] = newline, np.ones((n, 1), bool)
    return np.concatenate(blocks, axis=1)[np.concatenate(masks, axis=1)].tobytes()
