"""Validate a release's ratings and movies, keep the top users and movies, split, encode the ids."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from movielens.data.ids import index_in, sorted_unique
from movielens.data.releases import (
    MOVIE_COLUMNS,
    RATING_COLUMNS,
    Dataset,
    read_raw,
)
from movielens.data.splits import held_out_mask, refuse_no_targets, split_history
from movielens.plumbing.errors import PipelineError

log = logging.getLogger(__name__)

UNKNOWN_GENRES = "(no genres listed)"
ID_RANGE = (0, int(np.iinfo(np.int32).max))
TIMESTAMP_RANGE = (int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max))


def _first_bad_row(mask: np.ndarray) -> int:
    """1-based number of the first data row where `mask` is True."""
    return int(np.flatnonzero(mask)[0]) + 1


def _show(value: object) -> str:
    """A value as it reads in the file: 'x' for text, 1.5 for a number (not np.float64(1.5))."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _numbers(
    raw: pd.DataFrame, name: str, source: str, integer_range: tuple[int, int] | None = None, note=""
) -> np.ndarray:
    """Column `name` as float64, refusing empty and non-numeric cells, and, given
    `integer_range`, non-integers and integers outside it; `note` ends the message.

    Raises:
        PipelineError: naming the first bad row and its value as read.
    """
    column = raw[name]
    if pd.api.types.is_bool_dtype(column):  # read_csv turns a column of only True/False into bools
        values = np.full(len(column), np.nan)
    else:
        numeric = pd.to_numeric(column, errors="coerce")
        values = numeric.to_numpy(dtype=np.float64, na_value=np.nan)
    problems = [(~np.isfinite(values), "is not a number")]
    if integer_range is not None:
        lo, hi = integer_range
        problems.append((values != np.round(values), "is not an integer"))
        # hi + 1 is a power of two, exact in float64 where hi itself (2**63 - 1) is not.
        outside = (values < float(lo)) | (values >= float(hi + 1))
        problems.append((outside, f"is out of range {lo} to {hi}"))
    for bad, problem in problems:
        if bad.any():
            row = _first_bad_row(bad)
            value = column.iloc[row - 1]
            if pd.isna(value):
                raise PipelineError(f"{source} row {row}: {name} is missing{note}")
            raise PipelineError(f"{source} row {row}: {name}={_show(value)} {problem}{note}")
    return values


def validate_ratings(
    raw: pd.DataFrame, rating_step: float | None, source: str = "ratings", **custom
) -> pd.DataFrame:
    """Check a freshly read ratings table and cast it to compact dtypes.

    Args:
        raw: columns userId, movieId, rating and optionally timestamp, as read.
        rating_step: the release's grid, 0.5 (ratings 0.5..5) or 1.0 (ratings 1..5).
        source: the file's name, for messages.
        custom: a table of your own (movielens.data.custom): `columns`, its names of RATING_COLUMNS
            (timestamp None: absent), `rating_scale` (lo, hi) without a grid, `id_note` for id errors.

    Returns:
        userId, movieId (int32), rating (float32), timestamp (int64; 0 where absent).

    Raises:
        PipelineError: on missing columns, empty data, non-numeric or missing values, non-integer
            ids, or ratings off the scale or its grid. The message names the first bad row.
    """
    user, movie, rating_name, time = custom.get("columns", RATING_COLUMNS)
    missing = [c for c in (user, movie, rating_name) if c not in raw.columns]
    if missing:
        raise PipelineError(
            f"{source} lacks column(s) {', '.join(missing)}; found {', '.join(map(str, raw.columns))}"
        )
    if len(raw) == 0:
        raise PipelineError(f"{source} has no ratings")
    user_ids = _numbers(raw, user, source, ID_RANGE, custom.get("id_note", ""))
    movie_ids = _numbers(raw, movie, source, ID_RANGE, custom.get("id_note", ""))
    rating = _numbers(raw, rating_name, source)
    timestamp = np.zeros(len(raw))
    if time in raw.columns:
        timestamp = _numbers(raw, time, source, TIMESTAMP_RANGE)
    lo, hi = custom.get("rating_scale", (rating_step, 5.0))
    off = (rating < lo) | (rating > hi)
    grid = "" if rating_step is None else f" in steps of {rating_step:g}"
    if rating_step is not None:
        off |= rating / rating_step != np.round(rating / rating_step)
    if off.any():
        row = _first_bad_row(off)
        raise PipelineError(
            f"{source} row {row}: {rating_name}={_show(raw[rating_name].iloc[row - 1])} is not on "
            f"the scale {lo:g} to {hi:g}{grid}"
        )
    return pd.DataFrame(
        {
            "userId": user_ids.astype(np.int32),
            "movieId": movie_ids.astype(np.int32),
            "rating": rating.astype(np.float32),
            "timestamp": timestamp.astype(np.int64),
        }
    )


def pair_keys(ratings: pd.DataFrame) -> np.ndarray:
    """One int64 per row that is equal exactly when (userId, movieId) is: userId * 2**31 + movieId.

    Validated ids are in 0..2**31 - 1, so the key is exact and orders rows by user, then movie.
    """
    return (ratings["userId"].to_numpy(np.int64) << 31) | ratings["movieId"].to_numpy(np.int64)


def drop_duplicates(ratings: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Keep one rating per (userId, movieId): the latest by timestamp, then the last in the file.

    The releases are sorted by user and movie, which one pass over the keys confirms; only
    otherwise are the keys sorted, and only the rows of repeated pairs are ordered by time.

    Returns:
        The deduplicated ratings, in their original order (the same frame when nothing is
        repeated), and the number of rows removed.
    """
    keys = pair_keys(ratings)
    if len(keys) < 2 or bool(np.all(keys[1:] > keys[:-1])):
        return ratings, 0
    order = np.argsort(keys, kind="stable")
    repeated = keys[order[1:]] == keys[order[:-1]]
    if not repeated.any():
        return ratings, 0
    in_group = np.zeros(len(keys), dtype=bool)
    in_group[1:] |= repeated
    in_group[:-1] |= repeated
    rows = order[in_group]  # every row of a repeated pair, grouped by pair, in file order
    by_time = rows[np.lexsort((rows, ratings["timestamp"].to_numpy()[rows], keys[rows]))]
    group_keys = keys[by_time]
    last_of_group = np.append(group_keys[1:] != group_keys[:-1], True)
    dropped = np.zeros(len(keys), dtype=bool)
    dropped[by_time[~last_of_group]] = True
    return ratings[~dropped].reset_index(drop=True), int(dropped.sum())


def validate_movies(
    raw: pd.DataFrame, movie_ids: np.ndarray, source: str = "movies", untitled="(unknown movie {})"
) -> tuple[pd.DataFrame, int]:
    """Check the movies table and add a placeholder row (titled `untitled` with the id) for each
    rated movie it lacks.

    Returns:
        movieId (int32), title, genres; and the number of placeholder rows added.

    Raises:
        PipelineError: on missing columns or missing, non-integer or out-of-range movie ids.
    """
    missing = [c for c in MOVIE_COLUMNS if c not in raw.columns]
    if missing:
        raise PipelineError(
            f"{source} lacks column(s) {', '.join(missing)}; found {', '.join(map(str, raw.columns))}"
        )
    ids = _numbers(raw, "movieId", source, ID_RANGE)
    movies = pd.DataFrame(
        {
            "movieId": ids.astype(np.int32),
            "title": raw["title"].fillna("").astype(str),
            "genres": raw["genres"].fillna(UNKNOWN_GENRES).astype(str),
        }
    ).drop_duplicates("movieId", keep="first")
    absent = np.setdiff1d(movie_ids, movies["movieId"].to_numpy())
    if len(absent):
        placeholders = pd.DataFrame(
            {
                "movieId": absent.astype(np.int32),
                "title": [untitled.format(m) for m in absent],
                "genres": UNKNOWN_GENRES,
            }
        )
        movies = pd.concat([movies, placeholders], ignore_index=True)
    return movies.sort_values("movieId", ignore_index=True), len(absent)


def top_ids(ids: pd.Series, top: int | None) -> np.ndarray:
    """The `top` ids with the most rows (ties: smaller id first), or every id when `top` is None."""
    counts = ids.value_counts()
    if top is None:
        return np.sort(counts.index.to_numpy())
    ranked = (
        counts.rename_axis("id")
        .reset_index(name="n")
        .sort_values(["n", "id"], ascending=[False, True])
    )
    return np.sort(ranked["id"].to_numpy()[:top])


def filter_top(
    ratings: pd.DataFrame, top_users: int | None, top_movies: int | None
) -> pd.DataFrame:
    """Keep ratings of the `top_users` most active users on the `top_movies` most rated movies.

    Both rankings are computed on the full table, then applied together. With both None every
    rating is kept and the same frame is returned, without a copy.
    """
    if top_users is None and top_movies is None:
        return ratings
    users = top_ids(ratings["userId"], top_users)
    movies = top_ids(ratings["movieId"], top_movies)
    keep = ratings["userId"].isin(users) & ratings["movieId"].isin(movies)
    return ratings[keep.to_numpy()].reset_index(drop=True)


def split_ratings(
    ratings: pd.DataFrame, test_size: float, seed: int, split: str = "random"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ratings into train and test under one rule (movielens.data.splits.held_out_mask);
    both keep the rows' order.

    Raises:
        PipelineError: when either part would be empty, or `split` is unknown.
    """
    is_test = held_out_mask(ratings, test_size, seed, split)
    return ratings[~is_test].reset_index(drop=True), ratings[is_test].reset_index(drop=True)


def encode_ids(
    train_ids: pd.Series, other_ids: pd.Series
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map ids to contiguous indices fitted on the training ids only.

    Returns:
        The sorted unique training ids (index i holds the id of index i), the training indices,
        and the other split's indices, -1 where the id never appears in training (cold); the
        indices are int32.
    """
    vocabulary = sorted_unique(train_ids.to_numpy())
    return (
        vocabulary,
        index_in(vocabulary, train_ids.to_numpy()),
        index_in(vocabulary, other_ids.to_numpy()),
    )


def encode_splits(
    train: pd.DataFrame, test: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray]:
    """Add user_index and movie_index to both splits and a `cold` flag to the test split."""
    users, train_users, _ = encode_ids(train["userId"], test["userId"])
    movies, train_movies, _ = encode_ids(train["movieId"], test["movieId"])
    train = train.assign(user_index=train_users, movie_index=train_movies)
    return train, encode_held_out(test, users, movies), users, movies


def encode_held_out(frame: pd.DataFrame, users: np.ndarray, movies: np.ndarray) -> pd.DataFrame:
    """Add user_index and movie_index (in the training id tables `users` and `movies`; -1 where
    absent) and `cold` (either is -1) to held-out ratings: a test split or a history."""
    user_index = index_in(users, frame["userId"].to_numpy())
    movie_index = index_in(movies, frame["movieId"].to_numpy())
    return frame.assign(
        user_index=user_index, movie_index=movie_index, cold=(user_index < 0) | (movie_index < 0)
    )


class Preprocessed(NamedTuple):
    """What preprocess gives: the kept ratings, the splits encoded, and the id tables."""

    kept: pd.DataFrame  # the ratings filter_top kept, in their original order
    train: pd.DataFrame  # encode_splits' training split
    test: pd.DataFrame  # encode_splits' test split, with `cold`
    user_ids: np.ndarray  # the sorted training userIds: index i holds the id of user index i
    movie_ids: np.ndarray  # the same for movieIds
    history: pd.DataFrame  # held-out users' given ratings, as `test`; empty but for heldout_users


def preprocess(
    ratings: pd.DataFrame,
    top_users: int | None,
    top_movies: int | None,
    test_size: float,
    seed: int,
    split: str = "random",
    *,
    history_size: float,
) -> Preprocessed:
    """Keep the top users and movies of validated ratings, split them and encode the ids.

    See keep_top, split_ratings, split_history and encode_splits (the history, as the test split).
    """
    kept = keep_top(ratings, top_users, top_movies)
    train, held_out = split_ratings(kept, test_size, seed, split)
    history, test = split_history(held_out, split, history_size)
    refuse_no_targets(len(test), len(history), history["userId"].nunique(), history_size)
    train, test, users, movies = encode_splits(train, test)
    return Preprocessed(kept, train, test, users, movies, encode_held_out(history, users, movies))


def split_counts(result: Preprocessed) -> dict:
    """The split's counts for summary.json; movielens.spark.preprocess.split_counts gives the same
    keys for Spark's tables."""
    test, history = result.test, result.history
    return {
        "ratings_kept": len(result.train) + len(history) + len(test),
        "users": len(result.user_ids),
        "movies": len(result.movie_ids),
        "train_ratings": len(result.train),
        "test_ratings": len(test),
        "test_cold_pairs": int(test["cold"].sum()),
        "test_cold_users": int((test["user_index"] < 0).sum()),
        "test_cold_movies": int((test["movie_index"] < 0).sum()),
        "heldout_users": int(history["userId"].nunique()),  # each gives a history
        "history_ratings": len(history),
        "test_users": int(test["userId"].nunique()),
    }


def keep_top(ratings: pd.DataFrame, top_users: int | None, top_movies: int | None) -> pd.DataFrame:
    """filter_top, refusing a filter that keeps no rating."""
    kept = filter_top(ratings, top_users, top_movies)
    if len(kept) == 0:
        refuse_empty_filter(top_users, top_movies)
    return kept


def refuse_empty_filter(top_users: int | None, top_movies: int | None) -> None:
    """Refuse top_users and top_movies that keep no rating (either engine).

    Raises:
        PipelineError: always.
    """
    users, movies = ("null" if top is None else top for top in (top_users, top_movies))
    raise PipelineError(
        f"top_users={users} and top_movies={movies} leave no ratings: the most active users "
        "rated none of the most rated movies; raise them or set them to null"
    )


def load_release(raw_dir: Path, dataset: Dataset) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Read, validate and deduplicate a release's ratings and movies.

    Returns:
        The validated ratings and movies (see validate_ratings, validate_movies) and the counts
        ratings_read, duplicates_dropped and movies_added_untitled.
    """
    raw_ratings, raw_movies = read_raw(raw_dir, dataset)
    n_read = len(raw_ratings)
    ratings = validate_ratings(raw_ratings, dataset.rating_step, source=dataset.ratings)
    del raw_ratings  # as large as the validated table: freed before the split copies it
    ratings, n_duplicates = drop_duplicates(ratings)
    if n_duplicates:
        log.warning(
            "dropped %d duplicated (user, movie) ratings, keeping the latest of each", n_duplicates
        )
    movies, n_placeholders = complete_movies(raw_movies, ratings["movieId"].unique(), dataset)
    counts = {
        "ratings_read": n_read,
        "duplicates_dropped": n_duplicates,
        "movies_added_untitled": n_placeholders,
    }
    return ratings, movies, counts


def complete_movies(
    raw_movies: pd.DataFrame, rated_ids: np.ndarray, dataset: Dataset
) -> tuple[pd.DataFrame, int]:
    """validate_movies, warning about the rated movies the movies file lacks (either engine)."""
    movies, n_placeholders = validate_movies(raw_movies, rated_ids, source=dataset.movies)
    if n_placeholders:
        log.warning(
            "%d rated movies are missing from %s; added them untitled",
            n_placeholders,
            dataset.movies,
        )
    return movies, n_placeholders
