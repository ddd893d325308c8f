"""Tests for the preprocess stage on tiny tables whose answer is known, end to end, and on bad files."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from movielens.data import preprocess, splits
from movielens.data.releases import get_dataset
from movielens.plumbing import paths
from movielens.plumbing.errors import PipelineError
from stages import preprocess as preprocess_stage

ROOT = Path(__file__).resolve().parents[1]
DATASET = get_dataset("ml-latest-small")
HEADER = "userId,movieId,rating,timestamp\n"


def read(text: str) -> pd.DataFrame:
    """A ratings table as read_csv gives it, from CSV text."""
    return pd.read_csv(io.StringIO(text))


def ratings_frame(rows: list[tuple]) -> pd.DataFrame:
    """Validated-looking ratings from (userId, movieId, rating, timestamp) tuples."""
    frame = pd.DataFrame(rows, columns=["userId", "movieId", "rating", "timestamp"])
    return frame.astype({"userId": np.int32, "movieId": np.int32, "rating": np.float32})


# ---------------------------------------------------------------------------- validate_ratings

REFUSED = {
    "missing column": ("userId,movieId,timestamp\n1,1,5\n", 0.5, ["lacks column(s) rating", "found userId, movieId, timestamp"]),
    "renamed column": ("user,movieId,rating,timestamp\n1,1,4,5\n", 0.5, ["lacks column(s) userId", "found user, movieId"]),
    "text userId": (HEADER + "1,1,4.0,5\nabc,2,3.0,5\n", 0.5, ["row 2: userId='abc' is not a number"]),
    "text movieId": (HEADER + "1,x1,4.0,5\n", 0.5, ["row 1: movieId='x1' is not a number"]),
    "text rating": (HEADER + "1,1,4.0,5\n1,2,4.0,5\n1,3,good,5\n", 0.5, ["row 3: rating='good' is not a number"]),
    "boolean rating": (HEADER + "1,1,True,5\n", 0.5, ["row 1: rating=True is not a number"]),
    "rating NaN": (HEADER + "1,1,NaN,5\n", 0.5, ["row 1: rating is missing"]),
    "rating empty": (HEADER + "1,1,4.0,5\n2,2,,5\n", 0.5, ["row 2: rating is missing"]),
    "userId empty": (HEADER + "1,1,4.0,5\n,2,3.0,5\n", 0.5, ["row 2: userId is missing"]),
    "rating 0": (HEADER + "1,1,4.5,5\n1,2,0,5\n", 0.5, ["row 2: rating=0.0 is not on the scale 0.5 to 5 in steps of 0.5"]),
    "rating 5.5": (HEADER + "1,1,5.5,5\n", 0.5, ["row 1: rating=5.5 is not on the scale 0.5 to 5"]),
    "rating 3.3": (HEADER + "1,1,4.0,5\n1,2,3.3,5\n", 0.5, ["row 2: rating=3.3 is not on the scale", "in steps of 0.5"]),
    "rating inf": (HEADER + "1,1,inf,5\n", 0.5, ["row 1: rating=inf is not a number"]),
    "half star on whole-star release": (HEADER + "1,1,4,5\n1,2,4.5,5\n", 1.0, ["row 2: rating=4.5 is not on the scale 1 to 5 in steps of 1"]),
    "0.5 on whole-star release": (HEADER + "1,1,0.5,5\n", 1.0, ["row 1: rating=0.5 is not on the scale 1 to 5"]),
    "id 1.5": (HEADER + "1,1,4,5\n1.5,2,4,5\n", 0.5, ["row 2: userId=1.5 is not an integer"]),
    "negative id": (HEADER + "1,1,4,5\n2,-7,4,5\n", 0.5, ["row 2: movieId=-7 is out of range 0 to 2147483647"]),
    "id beyond int32": (HEADER + "2147483648,1,4,5\n", 0.5, ["row 1: userId=2147483648 is out of range 0 to 2147483647"]),
    "timestamp 1.5": (HEADER + "1,1,4,1.5\n", 0.5, ["row 1: timestamp=1.5 is not an integer"]),
    "timestamp beyond int64": (HEADER + "1,1,4,1e30\n", 0.5, ["row 1: timestamp=1e+30 is out of range"]),
    "empty table": (HEADER, 0.5, ["ratings.csv has no ratings"]),
}  # fmt: skip


@pytest.mark.parametrize(("text", "step", "words"), list(REFUSED.values()), ids=list(REFUSED))
def test_validate_ratings_refuses_with_row_and_value(text, step, words):
    with pytest.raises(PipelineError) as caught:
        preprocess.validate_ratings(read(text), step, source="ratings.csv")
    message = str(caught.value)
    assert message.startswith("ratings.csv ")
    assert "\n" not in message
    for word in words:
        assert word in message


def test_validate_ratings_casts_to_compact_dtypes():
    out = preprocess.validate_ratings(
        read(HEADER + "1,10,4.5,100\n2,20,0.5,200\n3,30,5,300\n"), 0.5
    )
    assert out.dtypes.astype(str).to_dict() == {
        "userId": "int32",
        "movieId": "int32",
        "rating": "float32",
        "timestamp": "int64",
    }
    assert out.to_numpy().tolist() == [[1, 10, 4.5, 100], [2, 20, 0.5, 200], [3, 30, 5.0, 300]]


def test_validate_ratings_without_timestamps_and_on_whole_stars():
    out = preprocess.validate_ratings(read("userId,movieId,rating\n1,1,1\n2,2,5\n"), 1.0)
    assert out["timestamp"].tolist() == [0, 0]
    assert out["rating"].tolist() == [1.0, 5.0]


# ---------------------------------------------------------------------------- drop_duplicates


def test_drop_duplicates_keeps_the_latest_then_the_last_in_the_file():
    ratings = ratings_frame(
        [
            (1, 10, 3.0, 300),  # the latest of (1, 10): kept though a later row repeats the pair
            (1, 10, 4.0, 100),
            (2, 10, 5.0, 50),
            (2, 20, 1.0, 70),  # (2, 20) twice at the same time: the last in the file wins
            (3, 30, 2.5, 10),
            (2, 20, 2.0, 70),
        ]
    )
    kept, dropped = preprocess.drop_duplicates(ratings)
    assert dropped == 2
    assert kept.to_numpy().tolist() == [
        [1, 10, 3.0, 300],
        [2, 10, 5.0, 50],
        [3, 30, 2.5, 10],
        [2, 20, 2.0, 70],
    ]
    assert kept.index.tolist() == [0, 1, 2, 3]


def test_drop_duplicates_counts_zero_when_all_pairs_differ():
    ratings = ratings_frame([(1, 1, 1.0, 1), (1, 2, 1.0, 1), (2, 1, 1.0, 1)])
    kept, dropped = preprocess.drop_duplicates(ratings)
    assert dropped == 0
    pd.testing.assert_frame_equal(kept, ratings)


# ---------------------------------------------------------------------------- validate_movies


def test_validate_movies_adds_counted_placeholders():
    raw = pd.DataFrame(
        {
            "movieId": [2, 1, 2],
            "title": ["Two", None, "Two again"],
            "genres": ["Drama", "Comedy", None],
        }
    )
    movies, added = preprocess.validate_movies(raw, np.array([1, 3, 5], dtype=np.int32))
    assert added == 2
    assert movies["movieId"].dtype == np.int32
    assert movies.to_numpy().tolist() == [
        [1, "", "Comedy"],
        [2, "Two", "Drama"],
        [3, "(unknown movie 3)", "(no genres listed)"],
        [5, "(unknown movie 5)", "(no genres listed)"],
    ]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("movieId,title\n1,A\n", ["lacks column(s) genres", "found movieId, title"]),
        ("movieId,title,genres\n1,A,B\nx,C,D\n", ["row 2: movieId='x' is not a number"]),
        ("movieId,title,genres\n1.5,A,B\n", ["row 1: movieId=1.5 is not an integer"]),
        ("movieId,title,genres\n1,A,B\n,C,D\n", ["row 2: movieId is missing"]),
        ("movieId,title,genres\n-1,A,B\n", ["row 1: movieId=-1 is out of range"]),
    ],
    ids=["missing column", "text id", "fraction id", "empty id", "negative id"],
)
def test_validate_movies_refuses(text, words):
    with pytest.raises(PipelineError) as caught:
        preprocess.validate_movies(read(text), np.array([1], dtype=np.int32), source="movies.csv")
    for word in words:
        assert word in str(caught.value)


# ---------------------------------------------------------------------------- top_ids, filter_top


@pytest.mark.parametrize(
    ("top", "expected"),
    [(None, [1, 3, 5, 9]), (1, [3]), (2, [3, 5]), (3, [1, 3, 5]), (4, [1, 3, 5, 9]), (10, [1, 3, 5, 9])],
)  # fmt: skip
def test_top_ids_breaks_ties_by_smaller_id(top, expected):
    ids = pd.Series([5, 9, 5, 3, 3, 1])  # 3 and 5 twice, 1 and 9 once
    assert preprocess.top_ids(ids, top).tolist() == expected


def test_filter_top_applies_both_rankings_to_the_full_table():
    ratings = ratings_frame(
        [
            (1, 10, 4.0, 0),
            (1, 20, 4.0, 0),
            (1, 30, 4.0, 0),
            (2, 10, 3.0, 0),
            (2, 20, 3.0, 0),
            (3, 10, 2.0, 0),
            (3, 40, 2.0, 0),
        ]
    )  # users 1: 3, 2: 2, 3: 2; movies 10: 3, 20: 2, 30: 1, 40: 1
    kept = preprocess.filter_top(ratings, top_users=2, top_movies=2)
    assert kept[["userId", "movieId"]].to_numpy().tolist() == [[1, 10], [1, 20], [2, 10], [2, 20]]
    assert len(preprocess.filter_top(ratings, None, None)) == len(ratings)
    assert preprocess.filter_top(ratings, 1, None)["userId"].tolist() == [1, 1, 1]


def test_preprocess_returns_the_kept_ratings_it_split():
    ratings = ratings_frame([(u, m, 4.0, 0) for u in (1, 2, 3) for m in (10, 20, 30)][:-1])
    kept, train, test, user_ids, movie_ids, history = preprocess.preprocess(
        ratings, 2, 2, 0.25, 0, history_size=0.8
    )
    assert len(history) == 0 and list(history.columns) == list(test.columns)  # not heldout_users
    assert kept[["userId", "movieId"]].to_numpy().tolist() == [[1, 10], [1, 20], [2, 10], [2, 20]]
    both = pd.concat([train, test])[["userId", "movieId"]].to_numpy().tolist()
    assert sorted(both) == kept[["userId", "movieId"]].to_numpy().tolist()
    assert user_ids.tolist() == sorted(set(train["userId"]))
    assert movie_ids.tolist() == sorted(set(train["movieId"]))


def test_preprocess_refuses_a_filter_that_keeps_nothing():
    ratings = ratings_frame([(1, 1, 4.0, 0), (1, 2, 4.0, 0), (2, 3, 4.0, 0), (3, 3, 4.0, 0)])
    with pytest.raises(PipelineError, match="top_users=1 and top_movies=1 leave no ratings"):
        preprocess.preprocess(ratings, 1, 1, 0.5, 0, history_size=0.8)


# ---------------------------------------------------------------------------- split_ratings


def numbered(n: int) -> pd.DataFrame:
    return ratings_frame([(u, 1, 1.0, u) for u in range(n)])


@pytest.mark.parametrize(("n", "test_size", "seed"), [(20, 0.1, 3), (10, 0.35, 0), (7, 0.5, 1)])
def test_the_random_split_holds_out_the_ratings_whose_hash_is_below_test_size(n, test_size, seed):
    ratings = numbered(n)
    train, test = preprocess.split_ratings(ratings, test_size, seed=seed)
    drawn = splits.split_hash(seed, ratings["userId"], ratings["movieId"]) < test_size
    assert test["userId"].tolist() == ratings["userId"][drawn].tolist()
    assert sorted(train["userId"].tolist() + test["userId"].tolist()) == list(range(n))


def test_the_random_split_holds_out_about_test_size():
    ratings = ratings_frame([(u, m, 1.0, 0) for u in range(200) for m in range(100)])
    _, test = preprocess.split_ratings(ratings, 0.1, seed=42)
    assert abs(len(test) / len(ratings) - 0.1) < 0.005  # 3 standard deviations of 20,000 draws


def test_split_is_deterministic_for_a_seed_and_differs_for_another():
    ratings = numbered(50)
    first = preprocess.split_ratings(ratings, 0.2, seed=1)
    again = preprocess.split_ratings(ratings, 0.2, seed=1)
    other = preprocess.split_ratings(ratings, 0.2, seed=2)
    pd.testing.assert_frame_equal(first[1], again[1])
    pd.testing.assert_frame_equal(first[0], again[0])
    assert set(first[1]["userId"]) != set(other[1]["userId"])


@pytest.mark.parametrize(
    ("n", "test_size", "words"),
    [(3, 0.1, "test_size=0.1 of 3 ratings leaves no test ratings"), (3, 0.9, "leaves no training ratings"), (1, 0.5, "of 1 ratings")],
)  # fmt: skip
def test_split_refuses_an_empty_part(n, test_size, words):
    with pytest.raises(PipelineError, match=words):
        preprocess.split_ratings(numbered(n), test_size, seed=0)


# Users 1..4 with 1, 2, 5 and 12 ratings; timestamps with ties across users.
BY_USER = ratings_frame(
    [(1, 1, 3.0, 50)]
    + [(2, m, 4.0, 10 * m) for m in (1, 2)]
    + [(3, m, 2.0, 7 * m) for m in range(1, 6)]
    + [(4, m, 5.0, 5 * m) for m in range(1, 13)]
)


def user_split(ratings, test_size, seed):
    return preprocess.split_ratings(ratings, test_size, seed, split="user")


@pytest.mark.parametrize(
    ("test_size", "per_user"),
    [(0.2, {2: 0, 3: 1, 4: 2}), (0.5, {2: 1, 3: 2, 4: 6}), (0.9, {2: 1, 3: 4, 4: 11})],
)
def test_user_split_takes_each_users_share_and_leaves_every_test_user_in_training(
    test_size, per_user
):
    # min(round(n_u * test_size), n_u - 1) per user: 0.2 -> 5 * 0.2 = 1, 12 * 0.2 = 2.4 -> 2;
    # 0.5 -> 2.5 rounds to 2 (half to even); user 1's only rating always stays in training.
    train, test = user_split(BY_USER, test_size, seed=3)
    counts = test["userId"].value_counts().to_dict()
    assert {u: counts.get(u, 0) for u in (2, 3, 4)} == per_user and 1 not in counts
    assert set(test["userId"]) <= set(train["userId"])
    assert pairs_of(train) | pairs_of(test) == pairs_of(BY_USER) and not pairs_of(train) & pairs_of(
        test
    )


def pairs_of(frame: pd.DataFrame) -> set[tuple]:
    return set(zip(frame["userId"], frame["movieId"], strict=True))


def test_user_split_is_seeded():
    first, again, other = (user_split(BY_USER, 0.5, seed) for seed in (1, 1, 2))
    pd.testing.assert_frame_equal(first[1], again[1])
    assert pairs_of(first[1]) != pairs_of(other[1])


def test_time_split_takes_the_latest_ratings_with_ties_by_user_then_movie():
    ratings = ratings_frame(
        [(3, 1, 4.0, 30), (1, 2, 4.0, 30), (2, 1, 4.0, 10), (1, 1, 4.0, 20), (1, 3, 4.0, 30)]
    )  # three ratings at t=30: ordered (1, 2), (1, 3), (3, 1)
    train, test = preprocess.split_ratings(ratings, 0.4, seed=0, split="time")
    assert pairs_of(test) == {(1, 3), (3, 1)}
    assert test["timestamp"].min() >= train["timestamp"].max()
    shuffled = ratings.sample(frac=1.0, random_state=5).reset_index(drop=True)
    for seed in (0, 9):  # neither the file's order nor the seed moves the cut
        assert pairs_of(preprocess.split_ratings(shuffled, 0.4, seed, split="time")[1]) == pairs_of(
            test
        )


def test_time_split_never_tests_a_rating_earlier_than_a_training_one():
    train, test = preprocess.split_ratings(BY_USER, 0.3, seed=0, split="time")
    assert len(test) == round(len(BY_USER) * 0.3)
    assert test["timestamp"].min() >= train["timestamp"].max()


@pytest.mark.parametrize(
    ("split", "ratings", "test_size", "words"),
    [
        ("user", BY_USER[:3], 0.2, "test_size=0.2 of 3 ratings leaves no test ratings with preprocess.split=user"),
        ("time", BY_USER[:3], 0.1, "leaves no test ratings with preprocess.split=time"),
        ("time", BY_USER[:3], 0.9, "leaves no training ratings with preprocess.split=time"),
    ],
)  # fmt: skip
def test_every_split_refuses_an_empty_part(split, ratings, test_size, words):
    with pytest.raises(PipelineError, match=words):
        preprocess.split_ratings(ratings, test_size, 0, split=split)


def splitmix64_reference(seed: int, *keys: int) -> float:
    """split_hash in Python integers, from splitmix64's published constants (Vigna's C)."""
    mask = 2**64 - 1

    def mix(z: int) -> int:
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    z = mix((seed + 0x9E3779B97F4A7C15) & mask)
    for key in keys:
        z = mix(((z ^ key) + 0x9E3779B97F4A7C15) & mask)
    return (z >> 11) / 2**53


def test_split_hash_is_splitmix64_of_the_seed_and_the_ids():
    users = np.array([0, 1, 7, 2**31 - 1, 123456, 0], dtype=np.int32)
    movies = np.array([0, 2**31 - 1, 1, 2**31 - 1, 5, 1], dtype=np.int32)
    for seed in (0, 42, 2**40 + 3):
        got = splits.split_hash(seed, users, movies)
        assert got.tolist() == [
            splitmix64_reference(seed, u, m)
            for u, m in zip(users.tolist(), movies.tolist(), strict=True)
        ]
        assert splits.split_hash(seed, users).tolist() == [
            splitmix64_reference(seed, u) for u in users.tolist()
        ]
    assert ((got >= 0) & (got < 1)).all()


# ---------------------------------------------------------------------------- encode_ids, encode_splits


def test_encode_ids_fits_on_train_only():
    vocabulary, train_index, other_index = preprocess.encode_ids(
        pd.Series([30, 10, 30, 20], dtype=np.int32), pd.Series([20, 40, 10, 5], dtype=np.int32)
    )
    assert vocabulary.tolist() == [10, 20, 30]
    assert train_index.tolist() == [2, 0, 2, 1]
    assert other_index.tolist() == [1, -1, 0, -1]  # 40 beyond every id, 5 before every id
    assert train_index.dtype == other_index.dtype == np.int32


def test_encode_splits_flags_cold_test_pairs():
    train = ratings_frame([(1, 10, 4.0, 0), (2, 20, 3.0, 0), (1, 20, 2.0, 0)])
    test = ratings_frame([(2, 10, 4.0, 0), (3, 10, 4.0, 0), (1, 30, 4.0, 0), (3, 30, 4.0, 0)])
    train, test, users, movies = preprocess.encode_splits(train, test)
    assert users.tolist() == [1, 2]
    assert movies.tolist() == [10, 20]
    assert train[["user_index", "movie_index"]].to_numpy().tolist() == [[0, 0], [1, 1], [0, 1]]
    assert test["user_index"].tolist() == [1, -1, 0, -1]
    assert test["movie_index"].tolist() == [0, 0, -1, -1]
    assert test["cold"].tolist() == [False, True, True, True]
    assert "cold" not in train.columns


# ---------------------------------------------------------------------------- main(), end to end

# Five users, seven movies, 20 distinct pairs; (2, 1) is rated twice and movie 7 has no row in
# movies.csv. By count: users 1 > 2 > 3 = 4 > 5; movies 1 > 2 > 3 = 4 > 5 = 6 > 7.
RATED = {
    1: {1: 4.0, 2: 3.5, 3: 5.0, 4: 2.0, 5: 4.5, 6: 1.0},
    2: {1: 3.0, 2: 4.0, 3: 2.5, 4: 5.0, 5: 0.5},
    3: {1: 5.0, 2: 3.0, 3: 4.0, 6: 3.5},
    4: {1: 2.0, 2: 1.5, 4: 4.0, 7: 3.0},
    5: {1: 4.0},
}
RATINGS_ROWS = [
    f"{user},{movie},{rating},{1000 + 10 * user + movie}"
    for user, movies in RATED.items()
    for movie, rating in movies.items()
] + ["2,1,1.0,9999"]  # a later rating of (2, 1): it replaces 3.0
MOVIES_ROWS = [f'{m},"Movie {m}, The (200{m})",Drama|Comedy' for m in range(1, 7)]
KEPT = {
    (user, movie, 1.0 if (user, movie) == (2, 1) else rating)
    for user, movies in RATED.items()
    for movie, rating in movies.items()
}
OUTPUTS = [
    paths.TRAIN, paths.TEST, paths.HISTORY, paths.USER_IDS, paths.MOVIE_IDS, paths.MOVIES, paths.RATINGS
]  # fmt: skip


def write_project(root: Path, ratings: bytes | None, movies: bytes | None, **prep) -> None:
    """params.yaml (the repository's, with `prep` overrides) and raw files in `root`."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    # seed 3 puts 2 of the 20 kept ratings in test at test_size 0.1 (split_hash < 0.1): the known split
    params["preprocess"].update({"seed": 3, **prep})
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    raw = root / paths.raw_dir(DATASET.name)
    raw.mkdir(parents=True)
    for name, data in ((DATASET.ratings, ratings), (DATASET.movies, movies)):
        if data is not None:
            (raw / name).write_bytes(data)


def csv_bytes(header: str, rows: list[str]) -> bytes:
    return (header + "".join(row + "\n" for row in rows)).encode()


GOOD_RATINGS = csv_bytes(HEADER, RATINGS_ROWS)
GOOD_MOVIES = csv_bytes("movieId,title,genres\n", MOVIES_ROWS)


def pairs(frame: pd.DataFrame) -> set[tuple]:
    return set(zip(frame["userId"], frame["movieId"], frame["rating"], strict=True))


def run_main(root: Path, monkeypatch, **prep) -> dict:
    write_project(root, GOOD_RATINGS, GOOD_MOVIES, **prep)
    monkeypatch.chdir(root)
    preprocess_stage.main()
    return json.loads(paths.PREPROCESS_SUMMARY.read_text(encoding="utf-8"))


def test_main_writes_the_known_split(tmp_path, monkeypatch):
    summary = run_main(tmp_path, monkeypatch)
    train, test = pd.read_parquet(paths.TRAIN), pd.read_parquet(paths.TEST)
    user_ids = pd.read_parquet(paths.USER_IDS)["userId"].to_numpy()
    movie_ids = pd.read_parquet(paths.MOVIE_IDS)["movieId"].to_numpy()
    movies = pd.read_parquet(paths.MOVIES)

    base = {"userId": "int32", "movieId": "int32", "rating": "float32", "timestamp": "int64"}
    index = {"user_index": "int32", "movie_index": "int32"}
    assert train.dtypes.astype(str).to_dict() == base | index
    assert test.dtypes.astype(str).to_dict() == base | index | {"cold": "bool"}
    assert (len(train), len(test)) == (18, 2)  # seed 3: 2 of the 20 hash below 0.1
    drawn = splits.split_hash(3, train["userId"], train["movieId"]) < 0.1
    assert not drawn.any() and (splits.split_hash(3, test["userId"], test["movieId"]) < 0.1).all()

    assert not pairs(train) & pairs(test)
    assert pairs(train) | pairs(test) == KEPT

    assert user_ids.tolist() == sorted(set(train["userId"]))
    assert movie_ids.tolist() == sorted(set(train["movieId"]))
    assert movie_ids.tolist() == sorted(set(train["movieId"]))
    assert (user_ids[train["user_index"]] == train["userId"]).all()
    assert (movie_ids[train["movie_index"]] == train["movieId"]).all()
    cold_users = ~test["userId"].isin(user_ids)
    cold_movies = ~test["movieId"].isin(movie_ids)
    assert (test["user_index"] < 0).tolist() == cold_users.tolist()
    assert (test["movie_index"] < 0).tolist() == cold_movies.tolist()
    assert test["cold"].tolist() == (cold_users | cold_movies).tolist()

    assert movies["movieId"].tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert movies["title"].iloc[0] == "Movie 1, The (2001)"
    assert movies["title"].iloc[6] == "(unknown movie 7)"
    assert summary == {
        "dataset": "ml-latest-small",
        "split": "random",
        "ratings_read": 21,
        "duplicates_dropped": 1,
        "movies_added_untitled": 1,
        "ratings_kept": 20,
        "users": len(user_ids),
        "movies": len(movie_ids),
        "train_ratings": 18,
        "test_ratings": 2,
        "test_cold_pairs": int((cold_users | cold_movies).sum()),
        "test_cold_users": int(cold_users.sum()),
        "test_cold_movies": int(cold_movies.sum()),
    }
    assert sorted(p.name for p in paths.PROCESSED_DIR.iterdir()) == sorted(
        p.name for p in [*OUTPUTS, paths.PREPROCESS_SUMMARY]
    )
    history = pd.read_parquet(paths.HISTORY)  # heldout_users' file, with no rows under `random`
    assert len(history) == 0 and history.dtypes.to_dict() == test.dtypes.to_dict()


# heldout_users: 0.4 of the 5 users holds out users 3 (4 ratings) and 5 (1, a history only).
@pytest.mark.parametrize(
    ("split", "test_size"),
    [("random", 0.25), ("user", 0.25), ("time", 0.25), ("heldout_users", 0.4)],
)
def test_main_writes_the_kept_ratings_whatever_the_split(tmp_path, monkeypatch, split, test_size):
    summary = run_main(tmp_path, monkeypatch, split=split, test_size=test_size)
    kept = pd.read_parquet(paths.RATINGS)
    assert kept.dtypes.astype(str).to_dict() == {
        "userId": "int32", "movieId": "int32", "rating": "float32", "timestamp": "int64"
    }  # fmt: skip
    parts = [pd.read_parquet(path) for path in (paths.TRAIN, paths.HISTORY, paths.TEST)]
    assert pairs(kept) == KEPT == set().union(*map(pairs, parts))
    assert summary["split"] == split
    history_ratings = summary.get("history_ratings", 0)
    assert history_ratings == len(parts[1]) and (history_ratings > 0) == (split == "heldout_users")
    assert summary["train_ratings"] + history_ratings + summary["test_ratings"] == 20
    assert summary["ratings_kept"] == 20


def test_the_kept_ratings_do_not_depend_on_the_test_split(tmp_path, monkeypatch):
    run_main(tmp_path / "a", monkeypatch, seed=1, test_size=0.1)
    first = (tmp_path / "a" / paths.RATINGS).read_bytes()
    run_main(tmp_path / "b", monkeypatch, seed=2, test_size=0.3, split="time")
    assert (tmp_path / "b" / paths.RATINGS).read_bytes() == first


def test_main_keeps_the_top_users_and_movies(tmp_path, monkeypatch):
    # users 1 and 2; movies 1, 2 and 3 (3 and 4 tie on three ratings: the smaller id wins)
    summary = run_main(tmp_path, monkeypatch, top_users=2, top_movies=3, test_size=0.2)
    train, test = pd.read_parquet(paths.TRAIN), pd.read_parquet(paths.TEST)
    kept = pd.concat([train, test])
    assert sorted(zip(kept["userId"], kept["movieId"], strict=True)) == [
        (u, m) for u in (1, 2) for m in (1, 2, 3)
    ]
    assert summary["ratings_kept"] == 6
    assert (summary["train_ratings"], summary["test_ratings"]) == (
        5,
        1,
    )  # seed 3: 1 of 6 hashes below 0.2
    assert summary["duplicates_dropped"] == 1


def test_main_is_deterministic(tmp_path, monkeypatch):
    run_main(tmp_path / "a", monkeypatch)
    first = pd.read_parquet(paths.TEST)
    run_main(tmp_path / "b", monkeypatch)
    pd.testing.assert_frame_equal(first, pd.read_parquet(paths.TEST))


# ---------------------------------------------------------------------------- bad files, in process and by CLI

MOVIES_LATIN1 = csv_bytes("movieId,title,genres\n", MOVIES_ROWS[:2]) + b"3,Caf\xe9 (1999),Drama\n"
RATINGS_LATIN1 = csv_bytes(HEADER, RATINGS_ROWS[:2]) + b"3,1,4.0,\xff\n"
EMPTY_FILTER = [  # users 1: 3 ratings, 2-4: 1; movies 4: 3 ratings, 1-3: 1; user 1 never rated 4
    "1,1,4.0,1", "1,2,4.0,1", "1,3,4.0,1", "2,4,4.0,1", "3,4,4.0,1", "4,4,4.0,1",
]  # fmt: skip
FOUR_MOVIES = csv_bytes("movieId,title,genres\n", [f"{m},M{m},Drama" for m in range(1, 5)])

# case: (ratings.csv, movies.csv, preprocess params, words of the message, also through the CLI)
BAD_FILES = {
    "empty ratings": (b"", GOOD_MOVIES, {}, "ratings.csv is empty; restore it with dvc repro --force download", True),
    "header only": (HEADER.encode(), GOOD_MOVIES, {}, "ratings.csv has no ratings", True),
    "non-UTF-8 movies": (GOOD_RATINGS, MOVIES_LATIN1, {}, f"movies.csv is not valid utf-8 text (byte {MOVIES_LATIN1.index(0xE9)}, line 4)", True),
    "missing movies": (GOOD_RATINGS, None, {}, "movies.csv not found; run the download stage first", True),
    "bad rating": (csv_bytes(HEADER, ["1,1,4.0,5", "1,2,abc,6"]), GOOD_MOVIES, {}, "ratings.csv row 2: rating='abc' is not a number", True),
    "filter keeps nothing": (csv_bytes(HEADER, EMPTY_FILTER), FOUR_MOVIES, {"top_users": 1, "top_movies": 1}, "top_users=1 and top_movies=1 leave no ratings", True),
    "no test ratings": (csv_bytes(HEADER, EMPTY_FILTER[:3]), FOUR_MOVIES, {}, "test_size=0.1 of 3 ratings leaves no test ratings", True),
    "missing ratings": (None, GOOD_MOVIES, {}, "ratings.csv not found; run the download stage first", False),
    "off-grid rating": (csv_bytes(HEADER, ["1,1,4.0,5", "1,2,4.2,6"]), GOOD_MOVIES, {}, "ratings.csv row 2: rating=4.2 is not on the scale 0.5 to 5", False),
    "ragged row": (csv_bytes(HEADER, ["1,1,4.0,5", "1,2,4.0,6,7,8"]), GOOD_MOVIES, {}, "ratings.csv cannot be parsed: Error tokenizing data", False),
    "movies without genres": (GOOD_RATINGS, b"movieId,title\n1,A\n", {}, "movies.csv lacks column(s) genres", False),
    "text movie id": (GOOD_RATINGS, b"movieId,title,genres\n1,A,B\nseven,C,D\n", {}, "movies.csv row 2: movieId='seven' is not a number", False),
    "empty movies": (GOOD_RATINGS, b"", {}, "movies.csv is empty; restore it with dvc repro --force download", False),
    "non-UTF-8 ratings": (RATINGS_LATIN1, GOOD_MOVIES, {}, f"ratings.csv is not valid utf-8 text (byte {RATINGS_LATIN1.index(0xFF)}, line 4)", True),
    "no training ratings": (csv_bytes(HEADER, EMPTY_FILTER[:3]), FOUR_MOVIES, {"test_size": 0.9}, "test_size=0.9 of 3 ratings leaves no training ratings", True),
    "renamed column": (csv_bytes("userId,item,rating,timestamp\n", ["1,1,4.0,5"]), GOOD_MOVIES, {}, "ratings.csv lacks column(s) movieId; found userId, item, rating, timestamp", True),
    "rating NaN": (csv_bytes(HEADER, ["1,1,4.0,5", "1,2,NaN,6"]), GOOD_MOVIES, {}, "ratings.csv row 2: rating is missing", False),
    "rating above the scale": (csv_bytes(HEADER, ["1,1,4.0,5", "1,2,6,6"]), GOOD_MOVIES, {}, "ratings.csv row 2: rating=6.0 is not on the scale 0.5 to 5 in steps of 0.5", False),
}  # fmt: skip
CLI_CASES = [case for case, (*_, cli) in BAD_FILES.items() if cli]


def assert_raw_untouched_and_nothing_written(root: Path, case: str) -> None:
    ratings, movies = BAD_FILES[case][:2]
    raw = root / paths.raw_dir(DATASET.name)
    for name, data in ((DATASET.ratings, ratings), (DATASET.movies, movies)):
        if data is None:
            assert not (raw / name).exists()
        else:
            assert (raw / name).read_bytes() == data
    processed = root / paths.PROCESSED_DIR
    assert not processed.exists() or sorted(processed.iterdir()) == [processed / "old.json"]


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_raise_and_keep_earlier_outputs(tmp_path, monkeypatch, case):
    ratings, movies, prep, words, _ = BAD_FILES[case]
    write_project(tmp_path, ratings, movies, **prep)
    old = tmp_path / paths.PROCESSED_DIR / "old.json"
    old.parent.mkdir(parents=True)
    old.write_text("{}")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PipelineError) as caught:
        preprocess_stage.main()
    assert words in str(caught.value)
    assert "\n" not in str(caught.value)
    assert old.read_text() == "{}"
    assert_raw_untouched_and_nothing_written(tmp_path, case)


@pytest.fixture(scope="module")
def cli_runs():
    """Run `python -m stages.preprocess` on the CLI_CASES projects at once (each start is slow)."""
    base = Path(tempfile.mkdtemp(prefix="preprocess-cli-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    running = {}
    for case in CLI_CASES:
        ratings, movies, prep, *_ = BAD_FILES[case]
        root = base / case.replace(" ", "_")
        write_project(root, ratings, movies, **prep)
        running[case] = (root, subprocess.Popen(
            [sys.executable, "-m", "stages.preprocess"], cwd=root, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))  # fmt: skip
    results = {}
    for case, (root, process) in running.items():
        _, stderr = process.communicate(timeout=120)
        results[case] = (root, process.returncode, stderr)
    yield results
    shutil.rmtree(base)


@pytest.mark.parametrize("case", CLI_CASES)
def test_bad_files_stop_the_cli_with_one_line_and_write_nothing(cli_runs, case):
    root, returncode, stderr = cli_runs[case]
    assert "Traceback" not in stderr
    assert returncode == 1
    lines = stderr.splitlines()
    assert [line for line in lines if line.startswith("error: ")] == lines[-1:]  # logs may precede
    assert BAD_FILES[case][3] in lines[-1]
    assert_raw_untouched_and_nothing_written(root, case)


# ---------------------------------------------------------------------------- other layouts

U_ITEM = b"1|Toy Story (1995)|01-Jan-1995||http://x|" + b"|".join([b"0"] * 18 + [b"1"]) + b"\n"
MOVIES_DAT = b"1::Toy Story (1995)::Animation|Comedy\n"
# case: (release, its ratings file, words of the message)
OTHER_LAYOUTS = {
    "dat text rating": ("ml-1m", b"1::1::4::5\n1::2::x::6\n", "ratings.dat row 2: rating='x' is not a number"),
    "dat missing field": ("ml-1m", b"1::1::4::5\n1::1::4\n", "ratings.dat row 2: timestamp is missing"),
    "dat extra field": ("ml-1m", b"1::1::4::5\n1::2::4::6::7\n", "ratings.dat cannot be parsed"),
    "dat half star on a whole-star release": ("ml-1m", b"1::1::4.5::5\n", "ratings.dat row 1: rating=4.5 is not on the scale 1 to 5 in steps of 1"),
    "dat not UTF-8": ("ml-10m", b"1::1::4.5::5\n2::\xff::4::6\n", "ratings.dat is not valid utf-8 text (byte 16, line 2)"),
    "u.data negative id": ("ml-100k", b"1\t1\t4\t5\n-2\t1\t4\t5\n", "u.data row 2: userId=-2 is out of range"),
    "u.data comma-separated": ("ml-100k", b"1,1,4,5\n", "u.data row 1: userId='1,1,4,5' is not a number"),
    "u.data empty": ("ml-100k", b"", "u.data has no ratings"),
}  # fmt: skip


@pytest.mark.parametrize(
    ("name", "ratings", "words"), OTHER_LAYOUTS.values(), ids=list(OTHER_LAYOUTS)
)
def test_other_layouts_refuse_bad_ratings(tmp_path, name, ratings, words):
    dataset = get_dataset(name)
    (tmp_path / dataset.ratings).write_bytes(ratings)
    (tmp_path / dataset.movies).write_bytes(U_ITEM if dataset.layout == "100k" else MOVIES_DAT)
    with pytest.raises(PipelineError) as caught:
        raw_ratings, _ = preprocess.read_raw(tmp_path, dataset)
        preprocess.validate_ratings(raw_ratings, dataset.rating_step, source=dataset.ratings)
    assert words in str(caught.value)
    assert "\n" not in str(caught.value)


# ---------------------------------------------------------------------------- property: no crash


WRONG_CELLS = [
    "", "nan", "NaN", "NA", "inf", "-inf", "-1", "-0", "0", "1e10", "1e400", "True", "false",
    "0x10", "5.5", "3.3", "1.5", '"4"', '"', " 4", "2147483648", "9" * 25, "\x00", "1e19",
    "9223372036854775808", "-9223372036854775809",
]  # fmt: skip
HEADERS = [
    HEADER, HEADER, HEADER, HEADER, "userId,movieId,rating\n", "movieId,userId,rating,timestamp\n",
    "userId,movieID,rating,timestamp\n", "userId;movieId;rating;timestamp\n", "", "\n",
    "userId,userId,rating,timestamp\n",
]  # fmt: skip
VALID_FIELDS = (
    st.integers(0, 700).map(str),
    st.integers(0, 200_000).map(str),
    st.sampled_from(["0.5", "1", "1.0", "2.5", "3", "3.5", "4.0", "4.5", "5", "5.0"]),
    st.integers(0, 2**31).map(str),
)
WRONG_FIELD = st.one_of(
    st.sampled_from(WRONG_CELLS),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(2**70), 2**70).map(str),
    st.text(st.characters(codec="utf-8"), max_size=6),
)


@st.composite
def ratings_text(draw) -> bytes:
    """A ratings.csv: valid rows with a few wrong fields, a row short or long by one field, then
    maybe a cut, a changed or an inserted byte."""
    rows = [[draw(field) for field in VALID_FIELDS] for _ in range(draw(st.integers(0, 8)))]
    for _ in range(draw(st.integers(0, 2)) if rows else 0):
        row = draw(st.sampled_from(rows))
        row[draw(st.integers(0, 3))] = draw(WRONG_FIELD)
    if rows and draw(st.integers(0, 4)) == 0:
        row = draw(st.sampled_from(rows))
        row[:] = row[:-1] if draw(st.booleans()) else [*row, draw(WRONG_FIELD)]
    end = draw(st.sampled_from(["\n", "\n", "\r\n", "\n\n"]))
    text = draw(st.sampled_from(HEADERS)) + "".join(",".join(row) + end for row in rows)
    data = text.encode("utf-8")
    mutation = draw(st.sampled_from(["none", "none", "none", "truncate", "byte", "insert"]))
    if mutation != "none" and data:
        at = draw(st.integers(0, len(data) - 1))
        if mutation == "truncate":
            data = data[:at]
        elif mutation == "byte":
            data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
        else:
            data = data[:at] + draw(st.binary(max_size=4)) + data[at:]
    return data


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=ratings_text())
def test_any_ratings_file_gives_a_valid_frame_or_a_pipeline_error(tmp_path, data):
    raw = tmp_path / "raw"
    raw.mkdir(exist_ok=True)
    (raw / DATASET.ratings).write_bytes(data)
    (raw / DATASET.movies).write_bytes(GOOD_MOVIES)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # e.g. a cast that overflows silently
        try:
            raw_ratings, _ = preprocess.read_raw(raw, DATASET)
            ratings = preprocess.validate_ratings(raw_ratings, DATASET.rating_step)
        except PipelineError as err:
            assert "\n" not in str(err)
            return
    assert ratings.dtypes.astype(str).tolist() == ["int32", "int32", "float32", "int64"]
    assert len(ratings) == len(raw_ratings) > 0
    assert (ratings[["userId", "movieId"]] >= 0).all().all()
    rating = ratings["rating"].to_numpy()
    assert ((rating >= 0.5) & (rating <= 5) & (rating * 2 == np.round(rating * 2))).all()
