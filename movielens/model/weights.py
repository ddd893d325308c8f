"""Read a saved .keras model's config and weight tables with json and h5py, without TensorFlow.

A .keras file is a zip of config.json (the architecture), metadata.json (the Keras version) and
model.weights.h5 (keras/src/saving/saving_lib.py:44-46 at v3.15.1). Since Keras 3.6 every
object's group of variables, `<path>/vars`, carries the object's own name as its HDF5 attribute
`name` (saving_lib.py:795-802 and H5IOStore._create_h5_group, :1433-1442), the label that the
public keras.saving.KerasFileEditor shows beside each path (file_editor.py:456-466, :620-625). A
layer's table is found by that name, not by re-deriving Keras' paths from class names, and an
Embedding's table is its variable "0" (layers/core/embedding.py:274-277, :393-396). Every table's
shape is checked against its layer's config, so a file laid out otherwise is refused in one line
that names the Keras release that wrote it, never misread.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import h5py
import numpy as np

from movielens.plumbing.errors import PipelineError

CONFIG = "config.json"
METADATA = "metadata.json"
WEIGHTS = "model.weights.h5"
VARS = "vars"  # the group of one object's variables, labelled with its name


def _cannot_load(path: Path, reason: str) -> PipelineError:
    return PipelineError(f"{path} cannot be loaded ({reason}); rebuild it (dvc repro)")


def read_config(path: Path) -> dict:
    """The functional model config (the `config` entry of config.json) of a .keras file.

    Raises:
        PipelineError: when the file is not a readable .keras archive.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            saved = json.loads(archive.read(CONFIG))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise _cannot_load(path, str(err).splitlines()[0] or type(err).__name__) from None
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        raise _cannot_load(path, f"{CONFIG} holds no model config")
    return saved["config"]


def keras_version(archive: zipfile.ZipFile) -> str:
    """The Keras release that wrote the archive, from metadata.json, or "unknown"."""
    try:
        version = json.loads(archive.read(METADATA)).get("keras_version")
    except (KeyError, ValueError, AttributeError):
        return "unknown"
    return str(version) if version else "unknown"


def named_groups(weights: h5py.File) -> dict[str, list[str]]:
    """object name -> the paths of the `vars` groups that carry it, in model.weights.h5."""
    found: dict[str, list[str]] = {}

    def visit(path: str, item: h5py.HLObject) -> None:
        name = item.attrs.get("name") if isinstance(item, h5py.Group) else None
        if path.rsplit("/", 1)[-1] == VARS and isinstance(name, str):
            found.setdefault(name, []).append(path)

    weights.visititems(visit)
    return found


def _table(weights: h5py.File, groups: dict, layer: dict) -> np.ndarray | str:
    """The Embedding `layer`'s table from the file, or why it cannot be read."""
    name, config = layer["name"], layer["config"]
    expected = (config["input_dim"], config["output_dim"])
    places = groups.get(name, [])
    if len(places) != 1:
        return f"{WEIGHTS} has {len(places) or 'no'} groups of weights named '{name}'"
    dataset = weights[places[0]].get("0")
    if not isinstance(dataset, h5py.Dataset) or dataset.shape != expected:
        found = "nothing" if dataset is None else getattr(dataset, "shape", "a group")
        return f"{WEIGHTS} has {found} at {places[0]}/0, not the {expected} table of layer '{name}'"
    return np.asarray(dataset, dtype=np.float32)


def weight_tables(path: Path, config: dict, names: list[str]) -> dict[str, np.ndarray]:
    """The table (variable "0") of each named Embedding layer, as float32 (input_dim, output_dim).

    Args:
        path: the .keras file.
        config: its read_config.
        names: Embedding layer names.

    Raises:
        PipelineError: when a table is missing, named twice, or its shape differs from the
            layer's config; the message names the Keras release that wrote the file.
    """
    by_name = {layer["name"]: layer for layer in config["layers"]}
    try:
        with zipfile.ZipFile(path) as archive:
            version, data = keras_version(archive), archive.read(WEIGHTS)
        with h5py.File(io.BytesIO(data), "r") as weights:
            groups = named_groups(weights)
            tables = {name: _table(weights, groups, by_name[name]) for name in names}
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise _cannot_load(path, str(err).splitlines()[0] or type(err).__name__) from None
    for problem in tables.values():
        if isinstance(problem, str):
            raise _cannot_load(
                path, f"{problem}; written by Keras {version}, read by the layer names that "
                "Keras 3.6 and later store with the weights"
            )  # fmt: skip
    return tables


def rescaling_of(config: dict, name: str) -> tuple[float, float]:
    """(lo, hi) of a Rescaling layer's config: rating = offset + scale * x, x in [0, 1]."""
    layer = next(layer for layer in config["layers"] if layer["name"] == name)["config"]
    lo = float(layer["offset"])
    return lo, lo + float(layer["scale"])
