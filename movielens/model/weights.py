"""Read a saved .keras model's config and weight tables with json and h5py, without TensorFlow.

A .keras file is a zip of config.json (the architecture) and model.weights.h5. Keras stores each
layer's weights under `layers/<snake_case class name>[_<n>]/vars/<i>`, numbering the layers of a
class in the order of the config's layer list, not by the layers' own names; `weight_tables`
follows that rule and checks every table's shape against the layer's config, so a file laid out
otherwise is refused rather than misread.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import h5py
import numpy as np

from movielens.plumbing.errors import PipelineError

CONFIG = "config.json"
WEIGHTS = "model.weights.h5"


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


def snake_case(class_name: str) -> str:
    """Keras' name for a layer class in the weights file (keras.src.utils.naming.to_snake_case)."""
    name = re.sub(r"\W+", "", class_name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def weight_paths(config: dict) -> dict[str, str]:
    """layer name -> its group in model.weights.h5, for every layer of a functional config."""
    used: dict[str, int] = {}
    groups = {}
    for layer in config["layers"]:
        base = snake_case(layer["class_name"])
        used[base] = used.get(base, -1) + 1
        groups[layer["name"]] = f"layers/{base}" + (f"_{used[base]}" if used[base] else "")
    return groups


def weight_tables(path: Path, config: dict, names: list[str]) -> dict[str, np.ndarray]:
    """The first weight (`vars/0`) of each named Embedding layer, as float32 (input_dim, output_dim).

    Args:
        path: the .keras file.
        config: its read_config.
        names: Embedding layer names.

    Raises:
        PipelineError: when a table is missing or its shape differs from the layer's config.
    """
    by_name = {layer["name"]: layer for layer in config["layers"]}
    groups = weight_paths(config)
    try:
        with zipfile.ZipFile(path) as archive:
            data = archive.read(WEIGHTS)
        with h5py.File(io.BytesIO(data), "r") as weights:
            tables = {}
            for name in names:
                layer = by_name[name]["config"]
                expected = (layer["input_dim"], layer["output_dim"])
                dataset = weights.get(f"{groups[name]}/vars/0")
                if not isinstance(dataset, h5py.Dataset) or dataset.shape != expected:
                    found = "nothing" if dataset is None else getattr(dataset, "shape", "a group")
                    raise _cannot_load(
                        path, f"{WEIGHTS} has {found} at {groups[name]}/vars/0, not the {expected} "
                        f"table of layer '{name}'"
                    )  # fmt: skip
                tables[name] = np.asarray(dataset, dtype=np.float32)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise _cannot_load(path, str(err).splitlines()[0] or type(err).__name__) from None
    return tables


def rescaling_of(config: dict, name: str) -> tuple[float, float]:
    """(lo, hi) of a Rescaling layer's config: rating = offset + scale * x, x in [0, 1]."""
    layer = next(layer for layer in config["layers"] if layer["name"] == name)["config"]
    lo = float(layer["offset"])
    return lo, lo + float(layer["scale"])
