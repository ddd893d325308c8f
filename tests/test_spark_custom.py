"""A custom table (data.dataset: custom) on Spark against the pandas engine: a 1-10 table under
other column names, as a hive-partitioned Parquet folder and as one CSV, gives the same files,
summary and Parquet metadata (the rating scale included); bad tables are refused in the same line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from test_spark_preprocess import run_stage

from movielens.plumbing import paths
from movielens.plumbing.errors import PipelineError
from movielens.spark.session import SparkSettings, spark_session

pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas")
ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ("train", "test", "history", "ratings", "user_ids", "movie_ids", "movies")
COLUMNS = {"user": "member", "item": "sku", "rating": "stars", "timestamp": "ts"}
HEADER = "member,sku,stars,ts\n"


@pytest.fixture(scope="module")
def spark():
    with spark_session(SparkSettings(master="local[2]", memory="1g")) as session:
        yield session


def generated() -> pd.DataFrame:
    """About 250 ratings of 15 members on 25 skus, 1-10 with halves and a 7.25 (no grid), ties in
    ts, and the pair (3, 1000) rated twice at the same ts: the pandas reader's last row wins."""
    rng = np.random.default_rng(5)
    rows = [
        (member, 1000 + sku, rng.integers(2, 20) / 2, rng.integers(0, 40))
        for member in range(3, 18)
        for sku in rng.choice(25, rng.integers(8, 25), replace=False)
    ]
    frame = pd.DataFrame(rows, columns=list(COLUMNS.values()))
    frame.loc[5, "stars"] = 7.25
    repeated = pd.DataFrame([(3, 1000, 1.0, 50), (3, 1000, 10.0, 50)], columns=frame.columns)
    return pd.concat([repeated[:1], frame, repeated[1:]], ignore_index=True)


def write_hive(frame: pd.DataFrame, folder: Path) -> None:
    """member=M/part-0.parquet (the first row of each member's) and part-1.parquet (the rest, the
    larger file, which Spark's own order would read first): the member column in folder names."""
    for member, rows in frame.groupby("member", sort=False):
        part = folder / f"member={member}"
        part.mkdir(parents=True)
        rows = rows.drop(columns="member")
        rows[:1].to_parquet(part / "part-0.parquet", index=False)
        rows[1:].to_parquet(part / "part-1.parquet", index=False)


def write_project(root: Path, engine: str, ratings: str, **custom) -> Path:
    """params.yaml (the repository's: data.dataset custom, the engine) and data/custom in `root`."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["data"]["dataset"] = "custom"
    params["data"]["custom"] |= {"ratings": ratings, "columns": COLUMNS, "rating_scale": [1, 10]}
    params["data"]["custom"] |= custom
    params["preprocess"] |= {"split": "user", "test_size": 0.3}
    params["compute"] |= {"engine": engine, "spark_master": "local[2]", "spark_memory": "1g"}
    (root / paths.CUSTOM_DIR).mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    return root / paths.CUSTOM_DIR


def write_layout(layout: str, frame: pd.DataFrame, home: Path) -> dict:
    """The table in `layout` under `home`; its data.custom keys."""
    if layout == "hive parquet folder":
        write_hive(frame, home / "log")
        return {"ratings": "data/custom/log"}
    if layout == "one csv":
        frame.to_csv(home / "log.csv", index=False)
        return {"ratings": "data/custom/log.csv"}
    # timestamp: null, and a column that happens to be called timestamp: neither engine reads it
    frame.drop(columns="ts").assign(timestamp="noon").to_csv(home / "log.csv", index=False)
    return {"ratings": "data/custom/log.csv", "columns": COLUMNS | {"timestamp": None}}


@pytest.mark.parametrize("layout", ["hive parquet folder", "one csv", "csv without a timestamp"])
def test_both_engines_write_the_same_files_summary_and_metadata(
    spark, tmp_path, monkeypatch, layout
):
    frame = generated()
    items = pd.DataFrame({"sku": [1000, 1003, 1005], "title": ["Tea", None, "Cups"]})
    folders = {}
    for engine in ("pandas", "spark"):
        home = tmp_path / engine / paths.CUSTOM_DIR
        home.mkdir(parents=True)
        custom = write_layout(layout, frame, home) | {"items": "data/custom/items.csv"}
        write_project(tmp_path / engine, engine, **custom)
        items.to_csv(home / "items.csv", index=False)
        assert run_stage(tmp_path / engine, monkeypatch) is None
        folders[engine] = tmp_path / engine / paths.PROCESSED_DIR
    for name in OUTPUTS:
        want, got = (folders[e] / f"{name}.parquet" for e in ("pandas", "spark"))
        pd.testing.assert_frame_equal(pd.read_parquet(got), pd.read_parquet(want), obj=name)
        assert pq.read_metadata(got).metadata == pq.read_metadata(want).metadata, name
    summary = (folders["spark"] / "summary.json").read_text(encoding="utf-8")
    assert summary == (folders["pandas"] / "summary.json").read_text(encoding="utf-8")
    for name in ("train", "ratings"):
        frame_read = pd.read_parquet(folders["spark"] / f"{name}.parquet")
        assert frame_read.attrs == {paths.RATING_SCALE_ATTR: [1.0, 10.0]}
    kept = pd.read_parquet(folders["spark"] / "ratings.parquet")
    assert kept.query("userId == 3 and movieId == 1000")["rating"].tolist() == [10.0]
    assert 7.25 in kept["rating"].tolist()
    titles = pd.read_parquet(folders["spark"] / "movies.parquet").set_index("movieId")["title"]
    assert titles[1000] == "Tea" and titles[1003] == "item 1003" and titles[1001] == "item 1001"


# case: (the table's text, or a folder of CSV parts, and the one line both engines refuse it with)
BAD_TABLES = {
    "rating above the scale": (
        {"log.csv": HEADER + "1,1,10,5\n1,2,10.5,5\n"},
        "data/custom/log.csv row 2: stars=10.5 is not on the scale 1 to 10",
    ),
    "text member id": (
        {"log.csv": HEADER + "1,1,4,5\nu2,1,4,5\n"},
        "data/custom/log.csv row 2: member='u2' is not a number; ids must be integers from 0 to "
        "2147483647: map other ids to those first",
    ),
    "missing rating in the second part": (
        # b.csv, the larger, is the one Spark's own order reads first
        {"log/a.csv": HEADER + "1,1,4,5\n" * 2, "log/b.csv": HEADER + "1,2,4,5\n1,3,4,5\n1,4,,5\n"},
        "data/custom/log row 5: stars is missing",
    ),
    "unmapped column": (
        {"log.csv": "member,item,stars,ts\n1,1,4,5\n"},
        "data/custom/log.csv lacks column(s) sku; found member, item, stars, ts (set "
        "data.custom.columns to its names)",
    ),
}


@pytest.mark.parametrize("case", BAD_TABLES)
def test_a_bad_table_is_refused_in_the_same_line_and_nothing_is_written(
    spark, tmp_path, monkeypatch, case
):
    files, line = BAD_TABLES[case]
    for engine in ("pandas", "spark"):
        ratings = "data/custom/" + next(iter(files)).split("/")[0]
        home = write_project(tmp_path / engine, engine, ratings)
        for name, text in files.items():
            (home / name).parent.mkdir(parents=True, exist_ok=True)
            (home / name).write_text(text, encoding="utf-8")
        assert run_stage(tmp_path / engine, monkeypatch) == line, engine
        assert not (tmp_path / engine / paths.PROCESSED_DIR).exists()


def test_csv_parts_with_different_headers_are_refused_on_spark_before_a_session(
    tmp_path, monkeypatch
):
    """Spark takes the first CSV file's header for every file: parts in another column order would
    be read misaligned, so they are refused (the pandas reader reads each by name)."""
    from movielens.data.custom import CustomTable
    from movielens.spark.read import custom_source

    monkeypatch.chdir(tmp_path)
    parts = tmp_path / paths.CUSTOM_DIR / "log"
    parts.mkdir(parents=True)
    (parts / "a.csv").write_text(HEADER + "1,1,4,5\n")
    (parts / "b.csv").write_text("sku,member,stars,ts\n1,2,4,5\n")
    table = CustomTable(Path("data/custom/log"), None, tuple(COLUMNS.values()), (1.0, 10.0))
    with pytest.raises(PipelineError, match=r"^data/custom/log's CSV files have different headers"):
        custom_source(table)
