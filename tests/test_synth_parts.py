"""The generator's streaming writer (movielens.synth.parts): a folder of Parquet parts, block by block."""

import hashlib
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from movielens import synth
from movielens.data.custom import CustomTable, load_custom
from movielens.synth import parts
from movielens.synth.generate import RatingsOptions, draw_plan
from movielens.synth.shapes import DEFAULT_TIME_SHAPE, time_range

TINY = {"n_ratings": 3000, "n_users": 60, "n_movies": 200, "seed": 0}
BLOCK = 500  # six parts of TINY


def read_parts(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / parts.RATINGS_DIR)


def part_names(out: Path) -> list[str]:
    return sorted(path.name for path in (out / parts.RATINGS_DIR).iterdir())


def digests(out: Path) -> dict[str, str]:
    """md5 of every file the writer leaves, but the summary (it names the folder)."""
    files = [out / parts.ITEMS_FILE, *sorted((out / parts.RATINGS_DIR).iterdir())]
    return {path.name: hashlib.md5(path.read_bytes()).hexdigest() for path in files}


def expected_counts(taste: float = 0.0, **args) -> pd.Series:
    """user_counts' ratings per userId, from the Plan generate_ratings draws."""
    args = {**TINY, **args}
    plan = draw_plan(**args, options=RatingsOptions(taste=taste))
    ids = synth.user_ids(args["n_users"], args["seed"])
    return pd.Series(plan.per_user, index=pd.Index(ids, name="userId"))


@pytest.mark.parametrize("taste", [0.0, 1.5])
def test_parts_hold_each_users_count_once_and_in_order(taste, tmp_path):
    parts.write_parts(**TINY, out_dir=tmp_path, block_ratings=BLOCK, taste=taste)
    ratings = read_parts(tmp_path)
    assert part_names(tmp_path) == [f"part-0000{i}.parquet" for i in range(6)]
    assert len(ratings) == TINY["n_ratings"]
    assert not ratings.duplicated(["userId", "movieId"]).any()
    counts = ratings.groupby("userId").size()
    pd.testing.assert_series_equal(counts, expected_counts(taste), check_dtype=False)
    assert dict(ratings.dtypes.astype(str)) == {
        "userId": "int32", "movieId": "int32", "rating": "float32", "timestamp": "int64",
    }  # fmt: skip
    order = ratings.sort_values(["userId", "movieId"], kind="stable").index
    assert (order == ratings.index).all()  # parts in name order are sorted like generate_ratings
    assert ratings["movieId"].isin(synth.movie_ids(TINY["n_movies"], TINY["seed"])).all()
    assert set(ratings["rating"] * 2) <= set(range(1, 11))
    first, last = time_range(DEFAULT_TIME_SHAPE)
    assert ratings["timestamp"].between(first, last).all()


def test_same_arguments_same_bytes_other_seed_other_bytes(tmp_path):
    parts.write_parts(**TINY, out_dir=tmp_path / "a", block_ratings=BLOCK)
    parts.write_parts(**TINY, out_dir=tmp_path / "b", block_ratings=BLOCK)
    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    summary = json.loads((tmp_path / "a" / parts.SUMMARY_FILE).read_text())
    assert (summary["parts"], summary["block_ratings"]) == (6, BLOCK)
    assert 0.4 < summary["floor_rmse"] < summary["noiseless_rmse"]
    parts.write_parts(**{**TINY, "seed": 1}, out_dir=tmp_path / "c", block_ratings=BLOCK)
    other = digests(tmp_path / "c")
    assert not set(other.values()) & set(digests(tmp_path / "a").values())


def test_block_size_changes_the_parts_not_the_table_s_shape(tmp_path):
    parts.write_parts(**TINY, out_dir=tmp_path, block_ratings=BLOCK)
    small = read_parts(tmp_path)
    # Rewritten with one block into the same folder: the six old parts do not linger.
    (tmp_path / ".ratings.dead.tmp").mkdir()  # a killed run's staging folder
    parts.write_parts(**TINY, out_dir=tmp_path, block_ratings=10**6)
    assert part_names(tmp_path) == ["part-00000.parquet"]
    assert not list(tmp_path.glob(".*"))
    whole = read_parts(tmp_path)
    assert len(whole) == len(small) == TINY["n_ratings"]
    assert not whole.duplicated(["userId", "movieId"]).any()
    for table in (small, whole):
        sizes = table.groupby("userId").size()
        pd.testing.assert_series_equal(sizes, expected_counts(), check_dtype=False)


def peak_bytes(out: Path, block_ratings: int) -> int:
    """The peak of Python and NumPy allocations (tracemalloc traces NumPy's) while writing."""
    tracemalloc.start()
    try:
        args = {"n_ratings": 500_000, "n_users": 1_500, "n_movies": 3_000, "seed": 0}
        parts.write_parts(**args, out_dir=out, block_ratings=block_ratings)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_peak_memory_follows_the_block_not_the_table(tmp_path):
    one_block = peak_bytes(tmp_path / "one", 500_000)
    many_blocks = peak_bytes(tmp_path / "many", 25_000)
    assert len(part_names(tmp_path / "many")) >= 20
    assert many_blocks < one_block / 4, (many_blocks, one_block)


def test_the_whole_table_generator_is_unchanged_by_the_blocks():
    """generate_ratings' tables of commit a33aed4, before draw_pairs, timestamps and the Plan
    were split for the block writer (taste 0 is pinned in test_synth)."""
    cases = [
        ({"n_ratings": 20_000, "n_users": 120, "n_movies": 400, "seed": 2, "taste": 1.5},
         "709334b76bfc8e848fcbbcb298752abb"),
        ({"n_ratings": 20_000, "n_users": 120, "n_movies": 400, "seed": 3, "taste": 0.7,
          "half_stars": False}, "bdb954eeadfb22bc56df4206911711e3"),
    ]  # fmt: skip
    for args, digest in cases:
        table = synth.generate_ratings(**args)
        columns = (np.ascontiguousarray(table[c].to_numpy()).tobytes() for c in table.columns)
        assert hashlib.md5(b"".join(columns)).hexdigest() == digest


def test_the_printed_block_reads_the_folder_as_a_custom_table(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = Path("data/custom/generated")
    argv = ["--dataset", "ml-1m", "--ratings", "3000", "--users", "60", "--movies", "200"]
    assert synth.main([*argv, "--parts", "--block-ratings", "1000", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    block = yaml.safe_load(captured.out)
    assert "WARNING" not in captured.err  # inside data/custom: no advice to move it
    custom = block["data"]["custom"]
    assert block["data"]["dataset"] == "custom"
    assert custom == json.loads((out / parts.SUMMARY_FILE).read_text())["custom"]
    assert custom["rating_scale"] == [1.0, 5.0]  # ml-1m gives whole stars
    ratings, movies, counts = load_custom(CustomTable.from_params(custom))
    pd.testing.assert_frame_equal(ratings.reset_index(drop=True), read_parts(out))
    assert counts == {"ratings_read": 3000, "duplicates_dropped": 0, "movies_added_untitled": 0}
    titles = synth.generate_movies(200, 0).set_index("movieId")["title"]
    assert (movies["title"].to_numpy() == titles[movies["movieId"]].to_numpy()).all()
    assert pq.read_schema(out / "ratings" / "part-00000.parquet").names == list(
        custom["columns"].values()
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--block-ratings", "0"], "error: block_ratings=0 must be at least 1"),
        (["--ratings", "0"], "error: n_ratings=0 must be at least 1"),
        (["--users", "1000"], "error: n_ratings=3000 is too few for n_users=1000"),
        (["--taste", "-1"], "error: taste=-1.0 must be a finite number >= 0"),
    ],
)
def test_bad_arguments_are_refused_in_one_line_and_nothing_written(args, message, tmp_path, capsys):
    base = ["--dataset", "ml-25m", "--ratings", "3000", "--parts", "--out", str(tmp_path / "o")]
    assert synth.main([*base, *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_a_backward_time_range_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match=r"time_range=\(10, 5\) must not end before it starts"):
        parts.write_parts(**TINY, out_dir=tmp_path / "o", time_range=(10, 5))
    assert not (tmp_path / "o").exists()
