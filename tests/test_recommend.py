"""Tests for stages.recommend on a tiny saved model and hand-made processed files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from stages import paths
from stages.common import PipelineError
from stages.datasets import get_dataset
from stages.model import build_model, model_inputs
from stages.ranking import factors_from_model
from stages.recommend import load_factors, main, recommend, top_n

ROOT = Path(__file__).resolve().parents[1]
DATASET = get_dataset("ml-latest-small")
USER_IDS = [10, 20, 30, 40]  # user index i has id USER_IDS[i]
MOVIE_IDS = [100, 200, 300, 400, 500, 600]
TRAIN = [(10, 100), (10, 300), (20, 200), *((30, m) for m in MOVIE_IDS[:5]), (40, 400)]
# User 50 has ratings only in the test split; movie 700 is unseen in training.
TEST = [(10, 200), (50, 100), (20, 700)]
FILTERED_OUT = 60  # in the raw ratings only, as if preprocess.top_users had dropped it


def build_tiny_model():
    model = build_model(len(USER_IDS), len(MOVIE_IDS), 3, 0.0, 0.0, (0.5, 5.0))
    rng = np.random.default_rng(3)
    for name in ("user_embedding", "movie_embedding", "user_bias", "movie_bias"):
        shape = model.get_layer(name).get_weights()[0].shape
        model.get_layer(name).set_weights([rng.normal(size=shape).astype(np.float32)])
    return model


def split_frame(pairs: list[tuple[int, int]]) -> pd.DataFrame:
    users, movies = np.array(pairs).T
    user_index = np.array([USER_IDS.index(u) if u in USER_IDS else -1 for u in users])
    movie_index = np.array([MOVIE_IDS.index(m) if m in MOVIE_IDS else -1 for m in movies])
    return pd.DataFrame(
        {
            "userId": users.astype(np.int32),
            "movieId": movies.astype(np.int32),
            "rating": np.float32(4.0),
            "timestamp": np.int64(0),
            "user_index": user_index.astype(np.int32),
            "movie_index": movie_index.astype(np.int32),
        }
    )


@pytest.fixture(scope="module")
def model():
    return build_tiny_model()


@pytest.fixture(scope="module")
def project(tmp_path_factory, model) -> Path:
    """A project root holding params.yaml, raw ratings, data/processed and models/model.keras."""
    root = tmp_path_factory.mktemp("project")
    params = yaml.safe_load((ROOT / paths.PARAMS).read_text(encoding="utf-8"))
    params["data"]["dataset"] = DATASET.name
    (root / paths.PARAMS).write_text(yaml.safe_dump(params), encoding="utf-8")
    raw = root / paths.raw_dir(DATASET.name)
    raw.mkdir(parents=True)
    rows = [*TRAIN, *TEST, (FILTERED_OUT, 100)]
    pd.DataFrame(
        {
            "userId": [u for u, _ in rows],
            "movieId": [m for _, m in rows],
            "rating": 4.0,
            "timestamp": 0,
        }
    ).to_csv(raw / DATASET.ratings, index=False)
    pd.DataFrame(
        {
            "movieId": [*MOVIE_IDS, 700],
            "title": ["A", "B", "C", "D", "E", "F", "G"],
            "genres": "Drama",
        }
    ).to_csv(raw / DATASET.movies, index=False)
    (root / paths.PROCESSED_DIR).mkdir(parents=True)
    split_frame(TRAIN).to_parquet(root / paths.TRAIN, index=False)
    test = split_frame(TEST)
    test.assign(cold=(test["user_index"] < 0) | (test["movie_index"] < 0)).to_parquet(
        root / paths.TEST, index=False
    )
    pd.DataFrame({"userId": np.int32(USER_IDS)}).to_parquet(root / paths.USER_IDS, index=False)
    pd.DataFrame({"movieId": np.int32(MOVIE_IDS)}).to_parquet(root / paths.MOVIE_IDS, index=False)
    titles = [f"Movie {m} ({1990 + i})" for i, m in enumerate([*MOVIE_IDS, 700])]
    genres = ["Drama", "Comedy|Romance", "Action", "Drama", "Sci-Fi", "Horror", "Drama"]
    pd.DataFrame(
        {"movieId": np.int32([*MOVIE_IDS, 700]), "title": titles, "genres": genres}
    ).to_parquet(root / paths.MOVIES, index=False)
    (root / paths.MODELS_DIR).mkdir()
    model.save(root / paths.MODEL)
    return root


@pytest.fixture
def workdir(project, tmp_path, monkeypatch) -> Path:
    """A private copy of the project as the current directory (tests may delete files)."""
    root = tmp_path / "project"
    shutil.copytree(project, root)
    monkeypatch.chdir(root)
    return root


def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LOGLEVEL": "ERROR"}
    return subprocess.run(
        [sys.executable, "-m", "stages.recommend", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_numpy_scores_equal_model_predict(model):
    factors = factors_from_model(model)
    users, movies = np.divmod(np.arange(len(USER_IDS) * len(MOVIE_IDS)), len(MOVIE_IDS))
    expected = model.predict(model_inputs(users, movies), verbose=0).reshape(len(USER_IDS), -1)
    got = factors.ratings(factors.logits(np.arange(len(USER_IDS))))
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_top_n_skips_seen_and_breaks_ties_by_lower_index():
    scores = np.array([1.0, 2.0, 2.0, 0.0, 2.0])
    np.testing.assert_array_equal(top_n(scores, np.array([1]), 2), [2, 4])
    np.testing.assert_array_equal(top_n(scores, np.array([0, 1, 2]), 5), [4, 3])


@pytest.mark.parametrize("user_index", range(len(USER_IDS)))
def test_recommendations_exclude_training_movies_and_are_sorted(model, user_index):
    factors = factors_from_model(model)
    seen = [MOVIE_IDS.index(m) for u, m in TRAIN if u == USER_IDS[user_index]]
    best, ratings = recommend(factors, user_index, np.array(seen), len(MOVIE_IDS))
    assert sorted([*best, *seen]) == list(range(len(MOVIE_IDS)))  # every unseen movie, once
    assert np.all(np.diff(ratings) <= 0)
    all_ratings = factors.ratings(factors.logits(np.array([user_index]))[0])
    np.testing.assert_allclose(ratings, all_ratings[best], rtol=1e-6)


def test_json_output_lists_unseen_movies_with_fields(workdir, capsys):
    main(["--user", "10", "-n", "3", "--json"])
    found = json.loads(capsys.readouterr().out)
    assert len(found) == 3
    assert all(set(r) == {"movieId", "title", "genres", "score"} for r in found)
    assert not {r["movieId"] for r in found} & {100, 300}  # user 10 rated these in training
    assert {r["movieId"] for r in found} <= set(MOVIE_IDS)
    assert [r["score"] for r in found] == sorted((r["score"] for r in found), reverse=True)
    assert all(0.5 <= r["score"] <= 5.0 for r in found)
    assert (
        found[0]["title"]
        == f"Movie {found[0]['movieId']} ({1990 + MOVIE_IDS.index(found[0]['movieId'])})"
    )


def test_table_output_is_aligned(workdir, capsys):
    main(["--user", "20", "-n", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Top 2 movies for user 20")
    header, *rows = lines[2:]
    assert header.split() == ["#", "movieId", "predicted", "title", "genres"]
    assert len(rows) == 2
    title_column = header.index("title")
    assert all(row[title_column:].startswith("Movie ") for row in rows)


def test_user_with_few_unseen_movies_gets_what_is_left(workdir, capsys):
    main(["--user", "30", "-n", "3", "--json"])  # user 30 rated all but movie 600
    assert [r["movieId"] for r in json.loads(capsys.readouterr().out)] == [600]


@pytest.mark.parametrize(
    ("user", "message"),
    [
        (
            50,
            "user 50 has no ratings in the training data (all its ratings fell in the test split)",
        ),
        (
            FILTERED_OUT,
            f"user {FILTERED_OUT} has no ratings in the training data (preprocess.top_users",
        ),
        (999, "unknown user 999: ml-latest-small has no ratings by that userId"),
    ],
)
def test_users_without_training_ratings_are_explained(workdir, user, message):
    with pytest.raises(PipelineError) as err:
        main(["--user", str(user)])
    assert str(err.value).startswith(message)


def test_without_raw_data_an_absent_user_is_reported_as_either(workdir):
    shutil.rmtree(workdir / paths.RAW_DIR)
    with pytest.raises(
        PipelineError, match=r"either no such userId exists or preprocess\.top_users"
    ):
        main(["--user", str(FILTERED_OUT)])


def test_unreadable_model_is_reported(workdir):
    (workdir / paths.MODEL).write_bytes(b"not a zip")
    with pytest.raises(PipelineError, match=r"cannot be loaded .*dvc repro"):
        load_factors(paths.MODEL, len(USER_IDS), len(MOVIE_IDS))


def test_model_and_data_of_different_runs_are_reported(workdir):
    with pytest.raises(PipelineError, match="has 4 users and 6 movies but data/processed has 5"):
        load_factors(paths.MODEL, 5, len(MOVIE_IDS))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-n", "3"], "the following arguments are required: --user (see --help)"),
        (["--user", "x"], "argument --user: invalid int value: 'x' (see --help)"),
        (["--user", "10", "-n", "x"], "argument -n: 'x' is not an integer (see --help)"),
        (
            ["--user", "10", "-n", "-2"],
            "argument -n: must be a positive integer, got -2 (see --help)",
        ),
        (["--user", "10", "--top"], "unrecognized arguments: --top (see --help)"),
    ],
)
def test_bad_arguments_raise_pipeline_errors(workdir, args, message):
    with pytest.raises(PipelineError) as err:
        main(args)
    assert str(err.value) == message


def test_missing_artifact_is_reported_before_loading_anything(workdir):
    (workdir / paths.TRAIN).unlink()
    with pytest.raises(
        PipelineError, match=r"data/processed/train\.parquet not found; run the pipeline"
    ):
        main(["--user", "10"])


# One subprocess per failure mode the brief names: the exit status and the stderr line are the API.
@pytest.mark.parametrize(
    ("args", "remove", "message"),
    [
        (["--user", "999"], None, "error: unknown user 999"),
        (
            ["--user", "10", "-n", "0"],
            None,
            "error: argument -n: must be a positive integer, got 0",
        ),
        (["--user", "10"], paths.MODEL, "error: models/model.keras not found; run the pipeline"),
    ],
)
def test_cli_errors_are_one_line_and_exit_1(workdir, args, remove, message):
    if remove is not None:
        (workdir / remove).unlink()
    result = run_cli(workdir, *args)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(message)
    assert result.stdout == ""
