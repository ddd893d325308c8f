"""The rows `movielens recommend` and `similar` print: titles and genres joined in, aligned tables."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from movielens.plumbing import paths
from movielens.plumbing.errors import PipelineError


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """One recommended movie: its served score and the rating model's predicted rating."""

    movieId: int  # camelCase: the column and JSON field name
    title: str
    genres: str
    score: float
    predicted: float


@dataclasses.dataclass(frozen=True)
class Neighbour:
    """One similar movie and how similar it is (the measure is named in the header)."""

    movieId: int
    title: str
    genres: str
    similarity: float


def movie_info(movie_ids: np.ndarray, movies: pd.DataFrame) -> pd.DataFrame:
    """title and genres of each movieId, in order, from `movies` (movieId, title, genres)."""
    info = movies.drop_duplicates("movieId").set_index("movieId").reindex(movie_ids)
    if info["title"].isna().any():
        raise PipelineError(f"{paths.MOVIES} lacks some movies; rerun the pipeline (dvc repro)")
    return info


def recommendations(
    movie_ids: np.ndarray, scores: np.ndarray, predicted: np.ndarray, movies: pd.DataFrame
) -> list[Recommendation]:
    info = movie_info(movie_ids, movies)
    return [
        Recommendation(int(m), str(t), str(g), round(float(s), 6), round(float(r), 4))
        for m, t, g, s, r in zip(
            movie_ids, info["title"], info["genres"], scores, predicted, strict=True
        )
    ]


def neighbours(
    movie_ids: np.ndarray, similarity: np.ndarray, movies: pd.DataFrame
) -> list[Neighbour]:
    info = movie_info(movie_ids, movies)
    return [
        Neighbour(int(m), str(t), str(g), round(float(v), 4))
        for m, t, g, v in zip(movie_ids, info["title"], info["genres"], similarity, strict=True)
    ]


def format_table(rows: list, values: dict[str, int]) -> str:
    """An aligned text table: rank, movieId and the `values` columns right-aligned, then title, genres.

    Args:
        rows: Recommendation or Neighbour rows.
        values: field name -> digits, the numeric columns in order.
    """
    header = ("#", "movieId", *values, "title", "genres")
    cells = [
        (
            str(i),
            str(row.movieId),
            *(f"{getattr(row, name):.{digits}f}" for name, digits in values.items()),
            row.title,
            row.genres,
        )
        for i, row in enumerate(rows, 1)
    ]
    widths = [max(len(row[c]) for row in [header, *cells]) for c in range(len(header))]
    right = len(header) - 2
    lines = []
    for row in [header, *cells]:
        line = [row[c].rjust(widths[c]) for c in range(right)] + [
            row[right].ljust(widths[right]),
            row[-1],
        ]
        lines.append("  ".join(line).rstrip())
    return "\n".join(lines)
