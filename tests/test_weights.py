"""Tests for movielens.model.weights: a .keras file's tables read with h5py by their layers' names,
or refused in one line, never misread."""

from __future__ import annotations

import io
import json
import zipfile

import h5py
import keras
import numpy as np
import pytest

from movielens.model.keras_model import build_model
from movielens.model.layers import MOVIE_EMBEDDING, USER_BIAS, USER_EMBEDDING
from movielens.model.weights import (
    METADATA,
    WEIGHTS,
    named_groups,
    read_config,
    rescaling_of,
    weight_tables,
)
from movielens.plumbing.errors import PipelineError


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = build_model(3, 5, 2, 0.0, 0.0, (1.0, 5.0))
    path = tmp_path_factory.mktemp("model") / "model.keras"
    model.save(path)
    return model, path


def edited(source, target, edit_weights, keras_version=None):
    """A copy of the .keras file `source` at `target`, its model.weights.h5 changed by
    `edit_weights(h5py.File)` and, given `keras_version`, its metadata.json saying that release."""
    with zipfile.ZipFile(source) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    buffer = io.BytesIO(members[WEIGHTS])
    with h5py.File(buffer, "r+") as weights:
        edit_weights(weights)
    members[WEIGHTS] = buffer.getvalue()
    if keras_version is not None:
        members[METADATA] = json.dumps({"keras_version": keras_version}).encode()
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return target


def test_tables_and_scale_are_the_models(saved):
    model, path = saved
    config = read_config(path)
    tables = weight_tables(path, config, [USER_EMBEDDING, MOVIE_EMBEDDING, USER_BIAS])
    for name, table in tables.items():
        np.testing.assert_array_equal(table, model.get_layer(name).get_weights()[0])
    assert rescaling_of(config, "rating") == (1.0, 5.0)


def test_the_installed_keras_labels_each_layers_weights_with_its_name(saved):
    """The layout weight_tables relies on, checked on whatever Keras release is installed."""
    model, path = saved
    with zipfile.ZipFile(path) as archive, h5py.File(io.BytesIO(archive.read(WEIGHTS))) as h5:
        groups = named_groups(h5)
        for layer in model.layers:
            places = groups.get(layer.name, [])
            assert len(places) == 1, (
                f"Keras {keras.__version__} stores {len(places)} groups labelled '{layer.name}' "
                f"in {WEIGHTS} (found labels: {sorted(groups)}); movielens/model/weights.py reads "
                "the tables by these labels and needs updating for this release"
            )
            for i, expected in enumerate(layer.get_weights()):
                np.testing.assert_array_equal(h5[places[0]][str(i)], expected)


def test_tables_are_found_by_name_wherever_keras_put_them(saved, tmp_path):
    model, path = saved

    def move_every_layer(weights):
        for group in list(weights["layers"]):
            weights.move(f"layers/{group}", f"layers/renamed_{group}")

    moved = edited(path, tmp_path / "moved.keras", move_every_layer)
    tables = weight_tables(moved, read_config(moved), [USER_EMBEDDING, MOVIE_EMBEDDING])
    for name, table in tables.items():
        np.testing.assert_array_equal(table, model.get_layer(name).get_weights()[0])


def test_a_file_without_names_is_refused_naming_the_keras_that_wrote_it(saved, tmp_path):
    _, path = saved

    def unlabel(weights):
        labelled = []
        weights.visititems(lambda _, item: labelled.append(item) if "name" in item.attrs else None)
        for item in labelled:
            del item.attrs["name"]

    old = edited(path, tmp_path / "old.keras", unlabel, keras_version="3.5.0")
    with pytest.raises(
        PipelineError,
        match=r"has no groups of weights named 'user_embedding'; written by Keras 3\.5\.0",
    ):
        weight_tables(old, read_config(old), [USER_EMBEDDING])


def test_a_table_of_another_shape_is_refused(saved, tmp_path):
    _, path = saved
    groups = named_groups(h5py.File(io.BytesIO(zipfile.ZipFile(path).read(WEIGHTS))))
    user, movie = groups[USER_EMBEDDING][0], groups[MOVIE_EMBEDDING][0]

    def swap_labels(weights):
        weights[user].attrs["name"], weights[movie].attrs["name"] = MOVIE_EMBEDDING, USER_EMBEDDING

    swapped = edited(path, tmp_path / "swapped.keras", swap_labels)
    with pytest.raises(
        PipelineError, match=rf"has \(5, 2\) at {movie}/0, not the \(3, 2\) table of layer"
    ):
        weight_tables(swapped, read_config(swapped), [USER_EMBEDDING])


def test_a_file_without_config_is_refused(tmp_path):
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps([1, 2]))
    with pytest.raises(
        PipelineError, match=r"cannot be loaded \(config.json holds no model config\)"
    ):
        read_config(path)
