"""data.dataset: custom: reading a table of your own (a file, a folder of parts, hive partitions),
its column mapping and rating scale, its validation (one line, nothing written) and its items."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from movielens.data import custom
from movielens.data.custom import CustomTable, load_custom, read_custom_ratings, source_of
from movielens.data.releases import DATASETS
from movielens.data.splits import split_hash
from movielens.params import validate_params
from movielens.plumbing import paths
from movielens.plumbing.errors import PipelineError

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
COLUMNS = ("user_id", "item_id", "stars", "ts")
# Three users' ratings on a 1-10 scale under other names than MovieLens'.
RATINGS = pd.DataFrame(
    {
        "user_id": [7, 7, 8, 8, 9, 9],
        "item_id": [100, 200, 100, 300, 200, 300],
        "stars": [10.0, 3.0, 1.0, 7.5, 6.0, 9.0],
        "ts": [5, 6, 7, 8, 9, 10],
        "extra": ["a", "b", "c", "d", "e", "f"],  # a column the mapping leaves out
    }
)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A project folder with data/custom, the working directory of the test."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / paths.CUSTOM_DIR).mkdir(parents=True)
    return tmp_path / paths.CUSTOM_DIR


def table(ratings: str, items: str | None = None, **changes) -> CustomTable:
    settings = {"columns": COLUMNS, "rating_scale": (1.0, 10.0)} | changes
    return CustomTable(
        Path(ratings), None if items is None else Path(items), **settings
    )  # fmt: skip


def expected() -> pd.DataFrame:
    return RATINGS[list(COLUMNS)]


# ---------------------------------------------------------------------------- reading


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, index=False)


def test_reads_a_csv_file_with_only_the_mapped_columns(home):
    write_csv(RATINGS, home / "ratings.csv")
    pd.testing.assert_frame_equal(read_custom_ratings(table("data/custom/ratings.csv")), expected())


def test_reads_a_parquet_file(home):
    RATINGS.to_parquet(home / "ratings.parquet", index=False)
    got = read_custom_ratings(table("data/custom/ratings.parquet"))
    pd.testing.assert_frame_equal(got, expected())


def test_reads_a_folder_of_parquet_parts_in_name_order_skipping_other_files(home):
    parts = home / "ratings"
    parts.mkdir()
    for k, rows in enumerate((slice(0, 2), slice(2, 5), slice(5, 6))):
        RATINGS[rows].to_parquet(parts / f"part-{k}.parquet", index=False)
    for name in ("_SUCCESS", ".gitignore", "part-0.parquet.dvc", "README.md"):
        (parts / name).write_text("not a table\n")
    got = read_custom_ratings(table("data/custom/ratings"))
    pd.testing.assert_frame_equal(got, expected())


def test_reads_a_hive_partitioned_folder_its_keys_as_columns(home):
    """user_id=7/part.parquet: the user column lives in the folder names, as Spark writes it."""
    for user, rows in RATINGS.groupby("user_id"):
        folder = home / "ratings" / f"user_id={user}"
        folder.mkdir(parents=True)
        rows.drop(columns="user_id").to_parquet(folder / "part-0.parquet", index=False)
    got = read_custom_ratings(table("data/custom/ratings"))
    assert got.columns.tolist() == list(COLUMNS)
    assert got["user_id"].tolist() == RATINGS["user_id"].tolist()
    assert got["stars"].tolist() == RATINGS["stars"].tolist()


def test_reads_a_folder_of_csv_parts(home):
    parts = home / "ratings"
    parts.mkdir()
    write_csv(RATINGS[:3], parts / "a.csv")
    write_csv(RATINGS[3:], parts / "b.csv")
    pd.testing.assert_frame_equal(read_custom_ratings(table("data/custom/ratings")), expected())


@pytest.mark.parametrize(
    ("files", "words"),
    [
        (
            ("a.csv", "b.parquet"),
            "must be .csv or .parquet files of one format; found csv, parquet",
        ),
        (("notes.txt",), "found no .csv or .parquet file"),
    ],
)
def test_a_folder_of_mixed_or_no_tables_is_refused(home, files, words):
    (home / "ratings").mkdir()
    for name in files:
        (home / "ratings" / name).write_text("x\n")
    with pytest.raises(PipelineError, match=words):
        read_custom_ratings(table("data/custom/ratings"))


# ---------------------------------------------------------------------------- mapping, validation


def test_load_maps_the_columns_and_keeps_any_rating_within_the_scale(home):
    write_csv(RATINGS, home / "ratings.csv")
    ratings, _, counts = load_custom(table("data/custom/ratings.csv"))
    assert ratings.columns.tolist() == ["userId", "movieId", "rating", "timestamp"]
    assert ratings["rating"].tolist() == [10.0, 3.0, 1.0, 7.5, 6.0, 9.0]  # 7.5: no grid
    assert ratings["timestamp"].tolist() == [5, 6, 7, 8, 9, 10]
    assert counts == {"ratings_read": 6, "duplicates_dropped": 0, "movies_added_untitled": 3}


def test_without_a_timestamp_column_every_timestamp_is_0(home):
    write_csv(RATINGS.drop(columns="ts"), home / "ratings.csv")
    mapping = ("user_id", "item_id", "stars", None)
    ratings, _, _ = load_custom(table("data/custom/ratings.csv", columns=mapping))
    assert ratings["timestamp"].tolist() == [0] * 6


def test_the_raw_file_is_never_changed(home):
    path = home / "ratings.csv"
    write_csv(RATINGS, path)
    before = path.read_bytes()
    load_custom(table("data/custom/ratings.csv"))
    assert path.read_bytes() == before


HEADER = "user_id,item_id,stars,ts\n"
REFUSED = {
    "unmapped column": ("user,item_id,stars,ts\n1,1,4,5\n", "lacks column(s) user_id; found user, item_id, stars, ts (set data.custom.columns"),
    "empty": (HEADER, "data/custom/ratings.csv has no ratings"),
    "text rating": (HEADER + "1,1,4,5\n1,2,good,5\n", "row 2: stars='good' is not a number"),
    "missing rating": (HEADER + "1,1,4,5\n1,2,,5\n", "row 2: stars is missing"),
    "text user id": (HEADER + "u1,1,4,5\n", "row 1: user_id='u1' is not a number; ids must be integers from 0 to 2147483647"),
    "missing item id": (HEADER + "1,,4,5\n", "row 1: item_id is missing; ids must be integers"),
    "id 1.5": (HEADER + "1,1,4,5\n1.5,2,4,5\n", "row 2: user_id=1.5 is not an integer; ids must be integers"),
    "id beyond int32": (HEADER + "1,2147483648,4,5\n", "row 1: item_id=2147483648 is out of range 0 to 2147483647"),
    "rating above the scale": (HEADER + "1,1,10,5\n1,2,10.5,5\n", "row 2: stars=10.5 is not on the scale 1 to 10"),
    "rating below the scale": (HEADER + "1,1,0,5\n", "row 1: stars=0 is not on the scale 1 to 10"),
    "text timestamp": (HEADER + "1,1,4,noon\n", "row 1: ts='noon' is not a number"),
}  # fmt: skip


@pytest.mark.parametrize(("text", "words"), list(REFUSED.values()), ids=list(REFUSED))
def test_bad_tables_are_refused_in_one_line_naming_file_row_and_column(home, text, words):
    (home / "ratings.csv").write_text(text)
    with pytest.raises(PipelineError) as caught:
        load_custom(table("data/custom/ratings.csv"))
    message = str(caught.value)
    assert "\n" not in message
    assert words in message
    assert message.startswith("data/custom/ratings.csv")


def test_a_scale_message_has_no_half_star_grid(home):
    (home / "ratings.csv").write_text(HEADER + "1,1,11,5\n")
    with pytest.raises(PipelineError) as caught:
        load_custom(table("data/custom/ratings.csv"))
    assert str(caught.value).endswith("is not on the scale 1 to 10")


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("elsewhere/ratings.csv", "is outside data/custom, the folder dvc.yaml tracks"),
        ("data/custom/absent.csv", "data.custom.ratings='data/custom/absent.csv' not found"),
    ],
)
def test_a_table_outside_data_custom_or_missing_is_refused(home, path, words):
    (home.parent.parent / "elsewhere").mkdir()
    write_csv(RATINGS, home.parent.parent / "elsewhere" / "ratings.csv")
    with pytest.raises(PipelineError, match=words):
        load_custom(table(path))


# ---------------------------------------------------------------------------- items


def test_without_an_items_file_every_item_is_named_by_its_id(home):
    write_csv(RATINGS, home / "ratings.csv")
    _, movies, _ = load_custom(table("data/custom/ratings.csv"))
    assert movies.to_dict("list") == {
        "movieId": [100, 200, 300],
        "title": ["item 100", "item 200", "item 300"],
        "genres": ["(no genres listed)"] * 3,
    }


def test_an_items_file_names_what_it_has_and_the_rest_by_id(home):
    write_csv(RATINGS, home / "ratings.csv")
    items = pd.DataFrame({"item_id": [100, 200, 999], "title": ["Tea", None, "Unrated"]})
    items.to_parquet(home / "items.parquet", index=False)
    _, movies, counts = load_custom(table("data/custom/ratings.csv", "data/custom/items.parquet"))
    by_id = movies.set_index("movieId")
    assert by_id.loc[100, "title"] == "Tea"
    assert by_id.loc[200, "title"] == "item 200"  # no title in the items file
    assert by_id.loc[300, "title"] == "item 300"  # not in the items file
    assert set(by_id["genres"]) == {"(no genres listed)"}
    assert counts["movies_added_untitled"] == 1


def test_an_items_file_without_the_item_column_is_refused(home):
    write_csv(RATINGS, home / "ratings.csv")
    pd.DataFrame({"id": [100], "title": ["Tea"]}).to_csv(home / "items.csv", index=False)
    with pytest.raises(
        PipelineError, match=r"items.csv lacks column\(s\) item_id; found id, title"
    ):
        load_custom(table("data/custom/ratings.csv", "data/custom/items.csv"))


# ---------------------------------------------------------------------------- params


def custom_params(**changes) -> dict:
    data = {**PARAMS["data"], "dataset": "custom"}
    data["custom"] = {**data["custom"], **changes}
    return {**PARAMS, "data": data}


def test_source_of_picks_the_release_or_the_custom_table():
    assert source_of(PARAMS["data"]) == DATASETS["ml-latest-small"]
    columns = {"user": "u", "item": "i", "rating": "r", "timestamp": None}
    got = source_of(custom_params(columns=columns, rating_scale=[1, 10])["data"])
    assert got == CustomTable(Path("data/custom/ratings.csv"), None, ("u", "i", "r", None), (1, 10))


BAD_PARAMS = {
    "reversed scale": ({"rating_scale": [5, 1]}, "data.custom.rating_scale=[5, 1] is invalid; it must be a list of two numbers [low, high] with low < high"),
    "one number": ({"rating_scale": [5]}, "data.custom.rating_scale=[5] is invalid"),
    "text scale": ({"rating_scale": ["1", "5"]}, "data.custom.rating_scale="),
    "null user column": ({"columns": {"user": None, "item": "i", "rating": "r", "timestamp": None}}, "data.custom.columns.user=null is invalid; it must be a string"),
    "missing rating column": ({"columns": {"user": "u", "item": "i", "timestamp": None}}, "missing key 'data.custom.columns.rating'"),
    "unknown key": ({"weights": 1}, "unknown key 'data.custom.weights'; allowed: ratings, items, columns, rating_scale"),
    "columns a list": ({"columns": ["u", "i"]}, "data.custom.columns=[u, i] is invalid; it must be a mapping of user, item, rating, timestamp"),
    "null ratings": ({"ratings": None}, "data.custom.ratings=null is invalid; it must be a string"),
}  # fmt: skip


@pytest.mark.parametrize(("changes", "words"), list(BAD_PARAMS.values()), ids=list(BAD_PARAMS))
def test_bad_custom_params_are_refused_naming_the_dotted_key(changes, words):
    with pytest.raises(PipelineError) as caught:
        validate_params(custom_params(**changes))
    assert words in str(caught.value)


# ---------------------------------------------------------------------------- the preprocess stage


def run_preprocess(project: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "stages.preprocess"], cwd=project, env=env,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def custom_project(home: Path, **changes) -> Path:
    project = home.parent.parent
    params = custom_params(
        ratings="data/custom/ratings.csv",
        columns={"user": "user_id", "item": "item_id", "rating": "stars", "timestamp": "ts"},
        rating_scale=[1, 10],
        **changes,
    )
    params["preprocess"] = {**params["preprocess"], "test_size": 0.2}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return project


def test_preprocess_writes_the_scale_where_train_and_crossvalidate_read_it(home):
    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame(
        {
            "user_id": rng.integers(0, 20, n),
            "item_id": rng.integers(0, 30, n),
            "stars": rng.integers(2, 10, n),  # 1 and 10 never rated: the scale still spans them
            "ts": np.arange(n),
        }
    )
    write_csv(frame, home / "ratings.csv")
    done = run_preprocess(custom_project(home))
    assert done.returncode == 0, done.stderr
    processed = home.parent.parent / paths.PROCESSED_DIR
    for name in (paths.TRAIN, paths.RATINGS):
        assert pd.read_parquet(processed / name.name).attrs == {"rating_scale": [1.0, 10.0]}
    movies = pd.read_parquet(processed / paths.MOVIES.name)
    assert movies["title"].str.fullmatch(r"item \d+").all()


def test_a_bad_table_stops_preprocess_with_one_line_and_writes_nothing(home):
    (home / "ratings.csv").write_text(HEADER + "1,1,4,5\n1,2,12,5\n")
    done = run_preprocess(custom_project(home))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines == ["error: data/custom/ratings.csv row 2: stars=12 is not on the scale 1 to 10"]
    assert not (home.parent.parent / paths.PROCESSED_DIR).exists()


def test_custom_reading_stays_in_one_module():
    """The Spark side mirrors read_custom_ratings: no other module reads data.custom's files."""
    readers = [
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "movielens").rglob("*.py")
        if "read_custom_ratings(" in path.read_text() and path.name != "custom.py"
    ]
    assert readers == []
    assert custom.read_custom_ratings.__module__ == "movielens.data.custom"


# ---------------------------------------------------------------------------- the real pipeline


def one_to_ten(mirror: Path) -> pd.DataFrame:
    """A generated release's ratings as another service's log: 1-10 stars, other column names."""
    import zipfile

    with zipfile.ZipFile(mirror / "ml-latest-small.zip") as archive:
        ratings = pd.read_csv(archive.open("ml-latest-small/ratings.csv"))
    return pd.DataFrame(
        {
            "user_id": ratings["userId"],
            "item_id": ratings["movieId"] + 1000,  # ids of its own
            "stars": (ratings["rating"] * 2).astype(int),  # 0.5-5 in halves: 1-10 in ones
            "ts": ratings["timestamp"],
            "region": ratings["userId"] % 3,  # the hive partition key
        }
    )


def write_hive(frame: pd.DataFrame, folder: Path) -> None:
    """frame as folder/region=R/part-0.parquet, the layout Spark's partitionBy writes."""
    for region, rows in frame.groupby("region"):
        part = folder / f"region={region}"
        part.mkdir(parents=True, exist_ok=True)
        rows.drop(columns="region").to_parquet(part / "part-0.parquet", index=False)


def cli(repo: Path, env: dict, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "movielens.cli", *args], cwd=repo,
        env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


BUCKET = "custom-data-bucket"  # conftest's s3_endpoint creates it on moto's S3 server


@pytest.mark.slow
def test_a_generated_non_movielens_table_runs_through_dvc_repro_and_recommend(
    small_mirror, tmp_path, aws_env, s3_endpoint
):
    import json

    from benchmarks.project_copy import make_project, project_env, set_params
    from movielens.model.weights import read_config, rescaling_of
    from tests.test_pipeline import ran, run

    env = project_env(small_mirror)
    mapping = {"user": "user_id", "item": "item_id", "rating": "stars", "timestamp": "ts"}
    custom_keys = {
        "ratings": "data/custom/ratings", "items": "data/custom/items.csv",
        "columns": mapping, "rating_scale": [1, 10],
    }  # fmt: skip
    overrides = {"data.dataset": "custom", "data.custom": custom_keys, "train.epochs": 30}
    repo = make_project(
        tmp_path / "project",
        overrides | {"train.batch_size": 256, "evaluate.relevance_threshold": 8.0},
        env,
    )
    frame = one_to_ten(small_mirror)
    write_hive(frame, repo / "data/custom/ratings")
    named = int(frame["item_id"].value_counts().index[0])  # the most rated item: in training
    pd.DataFrame({"item_id": [named], "title": ["The named item"]}).to_csv(
        repo / "data/custom/items.csv", index=False
    )
    output = run(repo, "dvc", "repro", env=env)
    assert {"download", "preprocess", "train", "evaluate", "crossvalidate"} <= ran(output), output
    assert rescaling_of(read_config(repo / "models/model.keras"), "rating") == (1.0, 10.0)
    scores = json.loads((repo / "metrics/scores.json").read_text())
    prep = yaml.safe_load((repo / "params.yaml").read_text())["preprocess"]
    draws = split_hash(prep["seed"], frame["user_id"].to_numpy(), frame["item_id"].to_numpy())
    assert scores["test_pairs"] == int((draws < prep["test_size"]).sum())  # the random split's rule
    assert scores["rmse"] < scores["baselines"]["user_movie_biases"]["rmse"] * 1.05

    user = int(frame["user_id"].iloc[0])
    answer = json.loads(cli(repo, env, "recommend", "--user", str(user), "-n", "5", "--json"))
    listed = answer["recommendations"]
    assert len(listed) == 5
    assert all(1.0 <= row["predicted"] <= 10.0 for row in listed)
    assert all(row["title"] in (f"item {row['movieId']}", "The named item") for row in listed)
    similar = cli(repo, env, "similar", str(named), "-n", "3")
    assert f"most similar to {named} The named item" in similar
    assert len(re.findall(r"item \d+", similar)) == 3, similar  # neighbours named by their ids

    # Editing the table reruns from preprocess; the release's download is not redone.
    write_hive(frame[frame["region"] == 0].assign(stars=1), repo / "data/custom/more")
    (repo / "data/custom/ratings/region=0/part-1.parquet").write_bytes(
        (repo / "data/custom/more/region=0/part-0.parquet").read_bytes()
    )
    again = run(repo, "dvc", "repro", "preprocess", env=env)
    assert ran(again) == {"preprocess"}, again
    assert "up to date" not in run(repo, "dvc", "status", env=env)

    # A remote file: `dvc import-url` (S3 through dvc-s3, on 127.0.0.1) into data/custom, then
    # data.custom.ratings points at it; the import's own .dvc file records where it came from.
    import boto3

    keys = {name: aws_env[name.upper()] for name in ("aws_access_key_id", "aws_secret_access_key")}
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", **keys)
    s3.put_object(
        Bucket=BUCKET, Key="log.csv", Body=frame.drop(columns="region").to_csv(index=False)
    )
    url, target = f"s3://{BUCKET}/log.csv", "data/custom/log.csv"
    run(
        repo,
        "dvc",
        "import-url",
        url,
        target,
        "--fs-config",
        f"endpointurl={s3_endpoint}",
        env=aws_env,
    )
    set_params(repo / "params.yaml", {"data.custom": custom_keys | {"ratings": target}})
    imported = run(repo, "dvc", "repro", "preprocess", env=aws_env)
    assert ran(imported) == {"preprocess"}, imported
    assert (repo / target).read_bytes() == s3.get_object(Bucket=BUCKET, Key="log.csv")[
        "Body"
    ].read()
