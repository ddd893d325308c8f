"""Preprocessing on Spark (compute.engine: spark) against the pandas engine: the same ratings kept,
the same ids, the same ratings in test and history, the same refusals; on a real local Spark."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from benchmarks.project_copy import make_project, project_env, set_params
from movielens.data import preprocess
from movielens.data.releases import get_dataset
from movielens.data.splits import split_hash
from movielens.plumbing import paths
from movielens.plumbing.choices import SPLITS
from movielens.plumbing.errors import PipelineError
from movielens.spark.preprocess import SplitSettings, preprocess_on_spark
from movielens.spark.read import ROW_ID, TableSource
from movielens.spark.session import SparkSettings, spark_session
from movielens.spark.split import DRAW, with_draw
from movielens.spark.validate import RatingRules
from stages import preprocess as preprocess_stage

# pytest resets the warning filters per test: pyspark's note on pandas 3 at every Arrow conversion
pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas")
ROOT = Path(__file__).resolve().parents[1]
HEADER = "userId,movieId,rating,timestamp\n"
OUTPUTS = ("train", "test", "history", "ratings", "user_ids", "movie_ids", "movies")
STEP = RatingRules(0.5)  # ml-latest-small's grid


def tricky_rows(seed: int = 0) -> list[str]:
    """About 400 ratings: repeated pairs (a later one, and equal timestamps where the file's last
    wins), ties in the users' and movies' counts, users and movies with one rating (cold in test),
    ids 0 and 2**31 - 1, timestamps that tie."""
    rng = np.random.default_rng(seed)
    users = np.array([0, 3, 5, 8, 13, 21, 34, 55, 89, 144, 2**31 - 1, *range(200, 230)])
    rows = []
    for user in users:
        for movie in rng.choice(60, rng.integers(1, 25), replace=False):
            rating = rng.integers(1, 11) / 2
            movie_id = 2**31 - 1 if movie == 59 else 7 * movie
            rows.append(f"{user},{movie_id},{rating},{rng.integers(0, 30)}")
    rows += ["3,0,1.0,99", "3,0,2.0,99", "3,0,2.5,98"]  # (3, 0) again: the 2.0 (latest, last) stays
    rows += [f"{2000 + k},{1000 + k},4.0,5" for k in range(12)]  # users and movies rated once
    return rows


@pytest.fixture(scope="module")
def spark():
    with spark_session(SparkSettings(master="local[2]", memory="1g")) as session:
        yield session


@pytest.fixture(scope="module")
def ratings_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tricky") / "ratings.csv"
    path.write_text(HEADER + "".join(row + "\n" for row in tricky_rows()), encoding="utf-8")
    return path


def on_pandas(path: Path, settings: SplitSettings) -> preprocess.Preprocessed:
    ratings = preprocess.validate_ratings(pd.read_csv(path), 0.5)
    ratings, _ = preprocess.drop_duplicates(ratings)
    return preprocess.preprocess(
        ratings,
        settings.top_users,
        settings.top_movies,
        settings.test_size,
        settings.seed,
        settings.split,
        history_size=settings.history_size,
    )


def in_file_order(frame) -> pd.DataFrame:
    """A Spark table's rows in file order (ROW_ID), as pandas, without ROW_ID."""
    return frame.toPandas().sort_values(ROW_ID).drop(columns=ROW_ID).reset_index(drop=True)


@pytest.mark.parametrize(
    ("split", "top_users", "top_movies"),
    [(split, 30, 45) for split in SPLITS],
)
def test_both_engines_keep_encode_and_hold_out_the_same_ratings(
    spark, ratings_csv, split, top_users, top_movies
):
    settings = SplitSettings(top_users, top_movies, 0.3, 7, split, history_size=0.5)
    expected = on_pandas(ratings_csv, settings)
    got = preprocess_on_spark(spark, TableSource(ratings_csv), STEP, settings)
    np.testing.assert_array_equal(got.user_ids, expected.user_ids)
    np.testing.assert_array_equal(got.movie_ids, expected.movie_ids)
    for name in ("kept", "train", "test", "history"):
        want = getattr(expected, name).reset_index(drop=True)
        pd.testing.assert_frame_equal(in_file_order(getattr(got, name)), want, obj=name)
    assert len(expected.test) and (split == "heldout_users") == bool(len(expected.history))
    if split == "heldout_users":  # every held-out user is cold
        assert expected.test["cold"].all()


MAPPING = {"userId": "user_id", "movieId": "item_id", "rating": "stars", "timestamp": "ts"}


def test_a_parquet_folder_with_other_column_names_reads_as_the_csv(spark, ratings_csv, tmp_path):
    """The reader custom data will use: a folder of Parquet files, the columns mapped."""
    table = pd.read_csv(ratings_csv).rename(columns=MAPPING)
    table.assign(extra="x").to_parquet(tmp_path / "part-0.parquet", index=False)
    settings = SplitSettings(None, None, 0.3, 7, "random", history_size=0.5)
    expected = on_pandas(ratings_csv, settings)
    got = preprocess_on_spark(spark, TableSource(tmp_path, "parquet", MAPPING), STEP, settings)
    for name in ("kept", "train", "test"):
        want = getattr(expected, name).reset_index(drop=True)
        pd.testing.assert_frame_equal(in_file_order(getattr(got, name)), want, obj=name)
    assert expected.test["cold"].any()  # users and movies rated once are cold
    wrong = TableSource(tmp_path, "parquet", MAPPING | {"movieId": "movie"}, name="log")
    with pytest.raises(
        PipelineError, match=r"^log lacks column\(s\) movie; found user_id, item_id"
    ):
        preprocess_on_spark(spark, wrong, STEP, settings)


def test_the_spark_draw_is_split_hash_bit_for_bit(spark):
    rng = np.random.default_rng(1)
    ids = np.concatenate([[0, 1, 2**31 - 1, 2**31 - 2], rng.integers(0, 2**31, 20_000)])
    frame = pd.DataFrame({"userId": ids.astype(np.int32), "movieId": ids[::-1].astype(np.int32)})
    for keys in (("userId", "movieId"), ("userId",)):
        drawn = with_draw(spark.createDataFrame(frame), 2**32 - 1, *keys).toPandas()
        expected = split_hash(2**32 - 1, *(drawn[key].to_numpy() for key in keys))
        assert drawn[DRAW].to_numpy().tobytes() == expected.tobytes()


def write_project(
    root: Path, ratings: str, engine: str = "spark", dataset="ml-latest-small", **prep
):
    """params.yaml (the repository's, with `prep` and the engine) and the raw ratings in `root`."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["preprocess"].update(prep)
    params["compute"].update(engine=engine, spark_master="local[2]", spark_memory="1g")
    params["data"]["dataset"] = dataset
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    release = get_dataset(dataset)
    raw = root / paths.raw_dir(dataset)
    raw.mkdir(parents=True)
    (raw / release.ratings).write_text(ratings, encoding="utf-8")
    (raw / release.movies).write_text(
        "movieId,title,genres\n0,Zero (2000),Drama\n", encoding="utf-8"
    )


def run_stage(root: Path, monkeypatch) -> str | None:
    """Run the stage's main() in `root`; its error line, or None."""
    monkeypatch.chdir(root)
    try:
        preprocess_stage.main()
    except PipelineError as err:
        return str(err)
    return None


@pytest.mark.parametrize("split", ["heldout_users"])  # the split with every output non-empty
def test_the_stage_writes_the_pandas_engines_files(spark, tmp_path, monkeypatch, split):
    text = HEADER + "".join(row + "\n" for row in tricky_rows(seed=2))
    for engine in ("pandas", "spark"):
        write_project(tmp_path / engine, text, engine, split=split, top_users=35, test_size=0.3)
        assert run_stage(tmp_path / engine, monkeypatch) is None
    pandas_dir, spark_dir = (tmp_path / e / paths.PROCESSED_DIR for e in ("pandas", "spark"))
    for name in OUTPUTS:
        expected = pd.read_parquet(pandas_dir / f"{name}.parquet")
        pd.testing.assert_frame_equal(pd.read_parquet(spark_dir / f"{name}.parquet"), expected)
    summary = (spark_dir / "summary.json").read_text(encoding="utf-8")
    assert summary == (pandas_dir / "summary.json").read_text(encoding="utf-8")
    assert json.loads(summary)["duplicates_dropped"] == 2
    assert sorted(p.name for p in spark_dir.iterdir()) == sorted(
        [f"{name}.parquet" for name in OUTPUTS] + ["summary.json"]
    )  # no part-file folder left behind


# case: (ratings.csv's text, preprocess params); both engines refuse it with the same line
BAD_INPUTS = {
    "renamed column": ("userId,item,rating,timestamp\n1,1,4.0,5\n", {}),
    "header only": (HEADER, {}),
    "text id": (HEADER + "1,1,4.0,5\nx,2,4.0,6\n", {}),
    "missing rating": (HEADER + "1,1,4.0,5\n1,2,,6\n1,3,,7\n", {}),
    "NaN rating": (HEADER + "1,1,4.0,5\n1,2,NaN,6\n", {}),
    "infinite rating": (HEADER + "1,1,4.0,5\n1,2,inf,6\n", {}),
    "fractional id": (HEADER + "1,1,4.0,5\n1,2,4.0,6\n2,1.5,4.0,7\n", {}),
    "negative id": (HEADER + "1,1,4.0,5\n-3,2,4.0,6\n", {}),
    "id past int32": (HEADER + "1,1,4.0,5\n1,2147483648,4.0,6\n", {}),
    "rating off the grid": (HEADER + "1,1,4.0,5\n1,2,4.3,6\n", {}),
    "rating above the scale": (HEADER + "1,1,4.0,5\n1,2,5.5,6\n", {}),
    "text timestamp": (HEADER + "1,1,4.0,5\n1,2,4.0,soon\n", {}),
    "nothing kept": (HEADER + "1,1,4,1\n1,2,4,1\n2,3,4,1\n3,3,4,1\n", {"top_users": 1, "top_movies": 1}),
    "no training ratings": (HEADER + "1,1,4,1\n1,2,4,2\n", {"split": "time", "test_size": 0.9}),
    "no held-out user": (HEADER + "1,1,4,1\n2,2,4,2\n", {"split": "heldout_users", "test_size": 0.01}),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_refused_in_one_line_as_on_pandas_and_nothing_is_written(
    spark, tmp_path, monkeypatch, case
):
    text, prep = BAD_INPUTS[case]
    errors = {}
    for engine in ("pandas", "spark"):
        write_project(tmp_path / engine, text, engine, **prep)
        errors[engine] = run_stage(tmp_path / engine, monkeypatch)
        assert not (tmp_path / engine / paths.PROCESSED_DIR).exists()
    assert errors["spark"] is not None and "\n" not in errors["spark"]
    assert errors["spark"] == errors["pandas"]


def test_a_release_spark_does_not_read_is_refused_in_one_line(spark, tmp_path, monkeypatch):
    write_project(tmp_path, "1::1::4::5\n", dataset="ml-1m")
    error = run_stage(tmp_path, monkeypatch)
    assert "data.dataset=ml-1m ('dat' layout) is not read on Spark" in error
    assert "compute.engine: pandas" in error and "ml-latest-small" in error
    assert not (tmp_path / paths.PROCESSED_DIR).exists()


@pytest.mark.slow
def test_a_local_cluster_of_two_executor_jvms_writes_the_same_files(tmp_path):
    """The stage in its own process on local-cluster[2,1,1024]: executors in separate JVMs, their
    Python workers importing movielens there."""
    text = HEADER + "".join(row + "\n" for row in tricky_rows(seed=3))
    roots = {engine: tmp_path / engine for engine in ("pandas", "spark")}
    for engine, root in roots.items():
        write_project(root, text, engine, split="user", top_movies=40)
        if engine == "spark":
            params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
            params["compute"]["spark_master"] = "local-cluster[2,1,1024]"
            (root / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [sys.executable, "-m", "stages.preprocess"], cwd=root, env=env,
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
    for name in OUTPUTS:
        expected = pd.read_parquet(roots["pandas"] / paths.PROCESSED_DIR / f"{name}.parquet")
        got = pd.read_parquet(roots["spark"] / paths.PROCESSED_DIR / f"{name}.parquet")
        pd.testing.assert_frame_equal(got, expected)


@pytest.mark.slow
def test_dvc_repro_preprocess_on_spark_writes_what_pandas_writes(small_mirror, tmp_path):
    """`dvc repro preprocess` with compute.engine: spark in a git + DVC copy of the project, then
    with pandas: DVC reruns the stage for the engine's key, and the files read the same."""
    env = {**project_env(small_mirror), "PYTHONPATH": str(ROOT)}
    repo = make_project(tmp_path / "project", {"compute.engine": "spark"}, env)
    outputs = {}
    for engine in ("spark", "pandas"):
        set_params(repo / "params.yaml", {"compute.engine": engine})
        done = subprocess.run(
            ["dvc", "repro", "preprocess"], cwd=repo, env=env, capture_output=True, text=True,
            timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
        assert "Running stage 'preprocess'" in done.stdout
        processed = repo / paths.PROCESSED_DIR
        outputs[engine] = {name: pd.read_parquet(processed / f"{name}.parquet") for name in OUTPUTS}
        outputs[engine]["summary"] = (processed / "summary.json").read_text(encoding="utf-8")
    assert outputs["spark"].pop("summary") == outputs["pandas"].pop("summary")
    for name, frame in outputs["pandas"].items():
        pd.testing.assert_frame_equal(outputs["spark"][name], frame, obj=name)
