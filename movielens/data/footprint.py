"""Whether a ratings table fits the pandas engine's memory, told before it is read: past the
limit, one clear error that names the Spark engine, not a swap storm or a silent OOM kill."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from movielens.plumbing.errors import PipelineError

# The pandas preprocess stage's peak resident memory per rating, the larger of make bench-scale's
# two runs (validation and split copies included): 11,324 MiB for 100 M generated ratings, 119
# bytes a rating (benchmarks/scale-100m-pandas.json; 2,664 MiB for 25 M, 112).
PANDAS_BYTES_PER_RATING = 119
# A text rating row is at least this long on average in every MovieLens layout (ml-100k's
# u.data 20, ml-latest-small 24.6, ml-25m 27 bytes): dividing by more under-counts the ratings,
# so a refusal is never a false alarm.
TEXT_BYTES_PER_ROW = 32


def estimated_ratings(files: list[Path]) -> int:
    """How many ratings `files` hold: Parquet's own row counts, a text file's size / 32; a missing
    file counts none (its reader then says it is missing)."""
    total = 0
    for path in files:
        if not path.is_file():
            continue
        if path.suffix == ".parquet":
            total += pq.ParquetFile(path).metadata.num_rows
        else:
            total += path.stat().st_size // TEXT_BYTES_PER_ROW
    return total


def refuse_over_memory(n_ratings: int, limit: tuple[int, str]) -> None:
    """Raise PipelineError when preprocessing n_ratings on pandas needs more than `limit`.

    Args:
        n_ratings: the estimated ratings (estimated_ratings).
        limit: (bytes, what sets them), from movielens.plumbing.memory.memory_limit.
    """
    need, (allowed, source) = n_ratings * PANDAS_BYTES_PER_RATING, limit
    if need > allowed:
        raise PipelineError(
            f"about {n_ratings / 1e6:.0f} M ratings need about {need / 1e9:.1f} GB on the pandas "
            f"engine ({PANDAS_BYTES_PER_RATING} bytes a rating), over this process's "
            f"{allowed / 1e9:.1f} GB ({source}); set compute.engine: spark (make spark), or "
            "give the stage more memory"
        )
