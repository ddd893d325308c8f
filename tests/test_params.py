"""Tests for params.yaml validation: every bad value is refused with a message that says how to fix it."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from movielens.params import load_params, params_schema, validate_params
from movielens.plumbing.errors import PipelineError

ROOT = Path(__file__).resolve().parents[1]
GOOD = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))


def with_value(section: str, key: str, value: object) -> dict:
    params = copy.deepcopy(GOOD)
    params[section][key] = value
    return params


def without(section: str, key: str) -> dict:
    params = copy.deepcopy(GOOD)
    del params[section][key]
    return params


def with_section(section: str, values: object) -> dict:
    params = copy.deepcopy(GOOD)
    params[section] = values
    return params


# (params, words the message must contain: the key, the bad value as written, what is allowed)
BAD = {
    "test_size 0": (with_value("preprocess", "test_size", 0), ["preprocess.test_size", "=0 ", "> 0.0 and < 1.0"]),
    "test_size 1": (with_value("preprocess", "test_size", 1), ["preprocess.test_size", "=1 ", "> 0.0 and < 1.0"]),
    "test_size -0.1": (with_value("preprocess", "test_size", -0.1), ["preprocess.test_size", "=-0.1 ", "> 0.0"]),
    "test_size 1.5": (with_value("preprocess", "test_size", 1.5), ["preprocess.test_size", "=1.5 ", "< 1.0"]),
    "test_size string": (with_value("preprocess", "test_size", "0.2"), ["preprocess.test_size", "='0.2' ", "a number"]),
    "test_size nan": (with_value("preprocess", "test_size", float("nan")), ["preprocess.test_size", "=.nan ", "a number"]),
    "l2 inf": (with_value("train", "embeddings_l2", float("inf")), ["train.embeddings_l2", "=.inf ", "a number >= 0.0"]),
    "embedding_dim 0": (with_value("train", "embedding_dim", 0), ["train.embedding_dim", "=0 ", "an integer >= 1"]),
    "embedding_dim -1": (with_value("train", "embedding_dim", -1), ["train.embedding_dim", "=-1 ", "an integer >= 1"]),
    "embedding_dim 1.5": (with_value("train", "embedding_dim", 1.5), ["train.embedding_dim", "=1.5 ", "an integer"]),
    "embedding_dim true": (with_value("train", "embedding_dim", True), ["train.embedding_dim", "=true ", "an integer"]),
    "top_users 0": (with_value("preprocess", "top_users", 0), ["preprocess.top_users", "=0 ", "an integer >= 1 or null"]),
    "top_users -3": (with_value("preprocess", "top_users", -3), ["preprocess.top_users", "=-3 ", ">= 1 or null"]),
    "top_users all": (with_value("preprocess", "top_users", "all"), ["preprocess.top_users", "='all' ", "an integer >= 1 or null"]),
    "seed too big": (with_value("train", "seed", 2**32), ["train.seed", f"={2**32} ", "<= 4294967295"]),
    "buckets decreasing": (with_value("evaluate", "activity_buckets", [50, 20]), ["evaluate.activity_buckets", "=[50, 20] ", "increasing positive integers"]),
    "unknown optimizer": (with_value("train", "optimizer", "sgd"), ["train.optimizer", "='sgd' ", "one of adam, lazy_adam"]),
    "unknown dataset": (with_value("data", "dataset", "ml-99z"), ["data.dataset", "='ml-99z' ", "one of ml-latest-small, ml-latest, ml-100k"]),
    "engine unknown": (with_value("train", "engine", "tpu"), ["train.engine='tpu' is invalid", "one of auto, keras, compiled, xla"]),
    "refit not a bool": (with_value("train", "refit", "yes"), ["train.refit='yes' is invalid", "true or false"]),
    "unknown split": (with_value("preprocess", "split", "leave-one-out"), ["preprocess.split", "='leave-one-out' ", "one of random, user, time"]),
    "one fold": (with_value("crossvalidate", "folds", 1), ["crossvalidate.folds", "=1 ", "an integer >= 2"]),
    "unknown key": (with_value("train", "foo", 1), ["unknown key 'train.foo'", "allowed: backend, engine, shard_tables, refit, embedding_dim, epochs"]),
    "unknown watch model": (with_value("watch", "model", "svd"), ["watch.model", "='svd' ", "one of ease, als"]),
    "negative like weight": (with_value("ranking", "like_weight", -1.0), ["ranking.like_weight", "a number >= 0.0"]),
    "like weight in the watch fit's section": (with_value("watch", "like_weight", 3.0), ["unknown key 'watch.like_weight'", "allowed: model, min_ratings"]),
    "unknown section": (with_section("tuning", {"a": 1}), ["unknown section 'tuning'", "allowed: data, compute, preprocess, train, watch, ranking, evaluate, serve, crossvalidate"]),
    "missing key": (without("preprocess", "seed"), ["missing key 'preprocess.seed'", "an integer >= 0"]),
    "section not a mapping": (with_section("train", 5), ["section 'train'", "it is 5", "embedding_dim, epochs"]),
    "section empty": (with_section("evaluate", None), ["section 'evaluate'", "it is null", "batch_size"]),
    "a list": ([1, 2], ["must be a mapping of sections (data, compute, preprocess, train, watch, ranking, evaluate, serve, crossvalidate)", "a list: [1, 2]"]),
    "a string": ("hello", ["must be a mapping of sections", "a str: 'hello'"]),
    "empty file": (None, ["must be a mapping of sections", "it is empty"]),
}  # fmt: skip

GOOD_VALUES = [
    ("preprocess", "top_users", None),
    ("preprocess", "top_movies", None),
    ("preprocess", "top_users", 1),
    ("preprocess", "top_movies", 10_000_000),
    ("preprocess", "test_size", 0.5),
    ("preprocess", "test_size", 1e-9),
    ("preprocess", "seed", 0),
    ("preprocess", "seed", 2**32 - 1),
    ("data", "dataset", "ml-100k"),
    ("data", "dataset", "ml-32m"),
    ("train", "learning_rate", 1),
    ("train", "optimizer", "lazy_adam"),
    ("train", "embeddings_l2", 0),
    ("train", "activity_l2", 0.5),
    ("train", "validation_size", 0),
    ("train", "patience", 0),
    ("evaluate", "activity_buckets", [1]),
    ("train", "baseline_reg_users", 0),
]


def test_the_repository_params_are_valid():
    assert load_params(ROOT / "params.yaml") == GOOD


@pytest.mark.parametrize(("section", "key", "value"), GOOD_VALUES)
def test_good_values_pass(section, key, value):
    params = with_value(section, key, value)
    assert validate_params(params) == params


@pytest.mark.parametrize(("params", "words"), list(BAD.values()), ids=list(BAD))
def test_bad_values_are_refused_with_key_value_and_what_is_allowed(params, words):
    with pytest.raises(PipelineError) as caught:
        validate_params(params)
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("data:\n  dataset: ml-latest-small\n bad: 1\n", ["not valid YAML", "line 3, column 2"]),
        ("data: [1,\n", ["not valid YAML", "line 2"]),
        ("data: {dataset: 'x}\n", ["not valid YAML", "line 2"]),
        ("data:\n\tdataset: x\n", ["not valid YAML", "line 2, column 1"]),
        (
            "data:\n  dataset: ml-100k\n  dataset: ml-1m\n",
            ["duplicate key 'dataset'", "line 3, column 3"],
        ),
        ("- data\n- train\n", ["must be a mapping of sections", "a list: [data, train]"]),
        ("", ["must be a mapping of sections", "it is empty"]),
    ],
    ids=["bad indent", "unclosed list", "unclosed quote", "tab", "duplicate key", "list", "empty"],
)
def test_bad_yaml_is_refused_with_where(tmp_path, text, words):
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PipelineError) as caught:
        load_params(path)
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    "tag",
    [
        "!!python/object/apply:os.system ['touch {marker}']",
        "!!python/object/new:subprocess.Popen [['touch', '{marker}']]",
        "!!python/name:os.system",
    ],
    ids=["apply", "new", "name"],
)
def test_yaml_python_tags_are_refused_without_running_anything(tmp_path, tag):
    """The safe loader builds plain data only: a tag that would call Python is a syntax error."""
    marker = tmp_path / "pwned"
    path = tmp_path / "params.yaml"
    path.write_text(f"data:\n  dataset: {tag.format(marker=marker)}\n", encoding="utf-8")
    with pytest.raises(PipelineError) as caught:
        load_params(path)
    message = str(caught.value)
    assert "not valid YAML" in message
    assert "could not determine a constructor for the tag" in message
    assert "line 2, column 12" in message
    assert "\n" not in message
    assert not marker.exists()


def test_unreadable_params_files_are_refused(tmp_path):
    with pytest.raises(PipelineError, match="not found; run from the project root"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "latin1.yaml").write_bytes(b"data:\n  dataset: caf\xe9\n")
    with pytest.raises(PipelineError, match=r"not UTF-8 text \(byte 20\)"):
        load_params(tmp_path / "latin1.yaml")
    (tmp_path / "folder.yaml").mkdir()
    with pytest.raises(PipelineError, match="cannot be read"):
        load_params(tmp_path / "folder.yaml")


def test_a_bad_params_file_stops_the_stage_with_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump(with_value("preprocess", "test_size", 1.5)), encoding="utf-8"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "stages.preprocess"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert "preprocess.test_size=1.5" in lines[0]
    assert not (tmp_path / "data").exists()


def test_the_choice_names_are_the_ones_the_library_implements():
    """params.yaml's choices (movielens.plumbing.choices) name exactly what the modules act on."""
    from movielens.data.releases import DATASETS as RELEASES
    from movielens.plumbing import choices

    assert tuple(RELEASES) == choices.RELEASES
    assert (*choices.RELEASES, choices.CUSTOM) == choices.DATASETS
    schema = params_schema()
    assert schema["data"]["dataset"].choices == choices.DATASETS
    assert schema["preprocess"]["split"].choices == choices.SPLITS
    assert schema["watch"]["model"].choices == choices.WATCH_MODELS


def test_the_serve_section_is_exactly_the_service_settings():
    """Every limit the service has is a params key, and every serve key is a limit."""
    from dataclasses import fields

    from movielens.serve.http.state import ServiceSettings

    assert list(params_schema()["serve"]) == [f.name for f in fields(ServiceSettings)]
