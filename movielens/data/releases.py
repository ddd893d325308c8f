"""The MovieLens releases the pipeline knows: where each lives, how its files are laid out, how to read them."""

from __future__ import annotations

import codecs
import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from movielens.plumbing.errors import PipelineError

OFFICIAL_BASE_URL = "https://files.grouplens.org/datasets/movielens"

RATING_COLUMNS = ("userId", "movieId", "rating", "timestamp")
MOVIE_COLUMNS = ("movieId", "title", "genres")
UNIT_SEPARATOR = "\x1f"
STREAM_CHUNK_BYTES = 1 << 22  # what a "::" file is read and rewritten by

# ml-100k's u.item ends with 19 genre flags in this order (its README).
ML100K_GENRES = (
    "(no genres listed)", "Action", "Adventure", "Animation", "Children", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip


@dataclass(frozen=True)
class Dataset:
    """One MovieLens release.

    Attributes:
        name: the release's name, also its zip's stem and the params value `data.dataset`.
        folder: the top folder inside the zip.
        ratings: the ratings file's name inside `folder`.
        movies: the movies file's name inside `folder`.
        layout: "csv" (header, comma), "dat" ("::"-separated) or "100k" (u.data / u.item).
        encoding: text encoding of both files.
        md5: the published checksum where the release is frozen; None means the `.md5`
            file published beside the zip is fetched and trusted instead.
        extracted_bytes: an upper bound on the size of the members extracted, against zip bombs.
        rating_step: the rating grid: 0.5 for half stars (0.5 to 5), 1.0 for whole stars (1 to 5).
    """

    name: str
    folder: str
    ratings: str
    movies: str
    layout: str
    encoding: str = "utf-8"
    md5: str | None = None
    extracted_bytes: int = 2 * 1024**3
    rating_step: float = 0.5

    @property
    def rating_scale(self) -> tuple[float, float]:
        """The lowest and highest rating the release allows."""
        return self.rating_step, 5.0

    @property
    def zip_name(self) -> str:
        return f"{self.name}.zip"

    @property
    def members(self) -> tuple[str, str]:
        """The two zip members the pipeline needs, as paths inside the archive."""
        return f"{self.folder}/{self.ratings}", f"{self.folder}/{self.movies}"


def _csv(name: str, size: int) -> Dataset:
    return Dataset(name, name, "ratings.csv", "movies.csv", "csv", extracted_bytes=size)


MB = 1024**2
DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        _csv("ml-latest-small", 16 * MB),
        _csv("ml-latest", 4096 * MB),
        Dataset("ml-100k", "ml-100k", "u.data", "u.item", "100k", "latin-1",
                "0e33842e24a9c977be4e0107933c0723", 16 * MB, rating_step=1.0),
        Dataset("ml-1m", "ml-1m", "ratings.dat", "movies.dat", "dat", "latin-1",
                "c4d9eecfca2ab87c1945afe126590906", 64 * MB, rating_step=1.0),
        Dataset("ml-10m", "ml-10M100K", "ratings.dat", "movies.dat", "dat", "utf-8",
                "ce571fd55effeba0271552578f2648bd", 512 * MB),
        Dataset("ml-20m", "ml-20m", "ratings.csv", "movies.csv", "csv", "utf-8",
                "cd245b17a1ae2cc31bb14903e1204af3", 1024 * MB),
        Dataset("ml-25m", "ml-25m", "ratings.csv", "movies.csv", "csv", "utf-8",
                "6b51fb2759a8657d3bfcbfc42b592ada", 1024 * MB),
        _csv("ml-32m", 2048 * MB),
    )
}  # fmt: skip


def get_dataset(name: str) -> Dataset:
    """Look a release up by name.

    Raises:
        KeyError: for an unknown name (params validation reports it to the user first).
    """
    return DATASETS[name]


def read_ratings(path: Path, dataset: Dataset) -> pd.DataFrame:
    """Read a release's ratings file into the columns RATING_COLUMNS.

    Values are not validated here: preprocess checks types, ranges and duplicates.

    Raises:
        ValueError, UnicodeDecodeError: when the file cannot be parsed at all.
    """
    if dataset.layout == "csv":
        return pd.read_csv(path, encoding=dataset.encoding)
    sep = "::" if dataset.layout == "dat" else "\t"
    return _read_separated(path, sep, RATING_COLUMNS, dataset.encoding)


def read_movies(path: Path, dataset: Dataset) -> pd.DataFrame:
    """Read a release's movies file into the columns MOVIE_COLUMNS (genres '|'-separated)."""
    if dataset.layout == "csv":
        return pd.read_csv(path, encoding=dataset.encoding, dtype={"title": str, "genres": str})
    if dataset.layout == "dat":
        return _read_separated(path, "::", MOVIE_COLUMNS, dataset.encoding)
    names = ("movieId", "title", "released", "video_released", "url", *ML100K_GENRES)
    raw = _read_separated(path, "|", names, dataset.encoding)
    flags = raw[list(ML100K_GENRES)].to_numpy(dtype=str) == "1"
    genre_names = np.array(ML100K_GENRES, dtype=object)
    genres = ["|".join(genre_names[row]) or ML100K_GENRES[0] for row in flags]
    return pd.DataFrame({"movieId": raw["movieId"], "title": raw["title"], "genres": genres})


def _read_separated(path: Path, sep: str, names: tuple[str, ...], encoding: str) -> pd.DataFrame:
    """Read a header-less file whose fields are split by the literal `sep`.

    A multi-character separator ("::") is swapped for the unit separator while the file streams
    through, so pandas' C parser reads it without the whole text in memory.
    """
    options = {"sep": sep, "names": list(names), "header": None, "quoting": csv.QUOTE_NONE}
    options |= {"dtype": {"title": str}, "encoding": encoding}
    if len(sep) == 1:
        return pd.read_csv(path, **options)
    with Path(path).open("rb") as raw:
        stream = io.BufferedReader(_Resplit(raw, sep.encode("ascii")), STREAM_CHUNK_BYTES)
        return pd.read_csv(stream, **(options | {"sep": UNIT_SEPARATOR}))


class _Resplit(io.RawIOBase):
    """A binary file read through, with every `sep` (one ASCII character repeated) replaced by
    UNIT_SEPARATOR.

    A run of separator characters is replaced left to right, a pair at a time, exactly as
    bytes.replace does on the whole text: each chunk holds back its trailing run for the next.
    ASCII bytes never occur inside a UTF-8 or Latin-1 multi-byte character, so bytes are safe.
    """

    def __init__(self, raw: io.BufferedIOBase, sep: bytes):
        if len(set(sep)) != 1:
            raise ValueError(f"separator {sep!r} must be one character repeated")
        self._raw, self._sep, self._unit = raw, sep, UNIT_SEPARATOR.encode("ascii")
        self._pending, self._ready = b"", memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._ready:
            chunk = self._raw.read(STREAM_CHUNK_BYTES)
            text = self._pending + chunk
            if not text:
                return 0
            held = len(text) - len(text.rstrip(self._sep[:1])) if chunk else 0
            self._pending = text[len(text) - held :]
            self._ready = memoryview(text[: len(text) - held].replace(self._sep, self._unit))
        n = min(len(buffer), len(self._ready))
        buffer[:n] = self._ready[:n]
        self._ready = self._ready[n:]
        return n


def undecodable(path: Path, encoding: str) -> tuple[int, int]:
    """Byte offset (0-based) and line (1-based) of the first bytes `encoding` cannot decode.

    The parser's own UnicodeDecodeError counts from the start of the block it was decoding.
    """
    decoder = codecs.getincrementaldecoder(encoding)()
    offset, line = 0, 1
    with open(path, "rb") as file:
        while True:
            chunk = file.read(1 << 20)
            pending = len(decoder.getstate()[0])  # an unfinished character from the last chunk
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as err:
                before = chunk[: max(err.start - pending, 0)]
                return offset - pending + err.start, line + before.count(b"\n")
            if not chunk:
                return offset, line
            offset += len(chunk)
            line += chunk.count(b"\n")


def read_raw(raw_dir: Path, dataset: Dataset) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read the release's ratings and movies files, turning parse failures into PipelineError."""
    return (
        read_file(raw_dir / dataset.ratings, read_ratings, dataset),
        read_file(raw_dir / dataset.movies, read_movies, dataset),
    )


def read_file(path: Path, reader, dataset: Dataset) -> pd.DataFrame:
    """reader(path, dataset) (read_ratings or read_movies), its failures one PipelineError line."""
    if not path.is_file():
        raise PipelineError(f"{path} not found; run the download stage first (dvc repro download)")
    try:
        return reader(path, dataset)
    except UnicodeDecodeError:
        offset, line = undecodable(path, dataset.encoding)
        raise PipelineError(
            f"{path} is not valid {dataset.encoding} text (byte {offset}, line {line}); "
            "restore the original file (dvc repro --force download)"
        ) from None
    except pd.errors.EmptyDataError:
        raise PipelineError(
            f"{path} is empty; restore it with dvc repro --force download"
        ) from None
    except (ValueError, pd.errors.ParserError) as err:
        raise PipelineError(f"{path} cannot be parsed: {str(err).splitlines()[0]}") from None
    except OSError as err:
        raise PipelineError(f"{path} cannot be read ({err.strerror})") from None
