"""Tests for movielens.model.weights: a .keras file's tables read with h5py, or refused, never misread."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from movielens.model.keras_model import build_model
from movielens.model.layers import MOVIE_EMBEDDING, USER_BIAS, USER_EMBEDDING
from movielens.model.weights import (
    read_config,
    rescaling_of,
    snake_case,
    weight_paths,
    weight_tables,
)
from movielens.plumbing.errors import PipelineError


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = build_model(3, 5, 2, 0.0, 0.0, (1.0, 5.0))
    path = tmp_path_factory.mktemp("model") / "model.keras"
    model.save(path)
    return model, path


def test_tables_and_scale_are_the_models(saved):
    model, path = saved
    config = read_config(path)
    tables = weight_tables(path, config, [USER_EMBEDDING, MOVIE_EMBEDDING, USER_BIAS])
    for name, table in tables.items():
        np.testing.assert_array_equal(table, model.get_layer(name).get_weights()[0])
    assert rescaling_of(config, "rating") == (1.0, 5.0)


@pytest.mark.parametrize(
    ("class_name", "expected"),
    [("Embedding", "embedding"), ("InputLayer", "input_layer"), ("Rescaling", "rescaling")],
)
def test_snake_case_is_keras_naming(class_name, expected):
    assert snake_case(class_name) == expected


def test_layers_of_a_class_are_numbered_in_config_order():
    config = {"layers": [{"name": n, "class_name": c} for n, c in
                         [("a", "InputLayer"), ("u", "Embedding"), ("m", "Embedding"), ("d", "Dot")]]}  # fmt: skip
    assert weight_paths(config) == {
        "a": "layers/input_layer", "u": "layers/embedding", "m": "layers/embedding_1", "d": "layers/dot"
    }  # fmt: skip


def test_a_file_laid_out_otherwise_is_refused(saved, tmp_path):
    _, path = saved
    config = read_config(path)
    layers = config["layers"]
    user, movie = (
        next(i for i, x in enumerate(layers) if x["name"] == n)
        for n in (USER_EMBEDDING, MOVIE_EMBEDDING)
    )
    layers[user], layers[movie] = layers[movie], layers[user]  # the weights file keeps its order
    with pytest.raises(
        PipelineError, match=r"has \(5, 2\) at layers/embedding_1/vars/0, not the \(3, 2\)"
    ):
        weight_tables(path, config, [USER_EMBEDDING])


def test_a_file_without_config_is_refused(tmp_path):
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps([1, 2]))
    with pytest.raises(
        PipelineError, match=r"cannot be loaded \(config.json holds no model config\)"
    ):
        read_config(path)
