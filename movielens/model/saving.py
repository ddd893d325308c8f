"""Writing a trained model: the .keras file byte for byte the same for the same weights, and its plot."""

from __future__ import annotations

import json
import logging
import re
import shutil
import zipfile
import zlib
from pathlib import Path

import keras

from movielens.plumbing.files import atomic_path

log = logging.getLogger(__name__)


def blank_png() -> bytes:
    """A valid 1x1 white PNG, written in place of the model plot when graphviz is missing."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = (1).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff"))
        + chunk(b"IEND", b"")
    )


def plot_model(model: keras.Model, png: Path, dot: Path) -> None:
    """Draw the model with Keras' plot_model into `png` and keep its DOT source in `dot`.

    Without graphviz's `dot` program the PNG is a blank placeholder and a warning says so.
    """
    dot_source = keras.utils.model_to_dot(model, show_shapes=True, show_layer_names=True)
    with atomic_path(dot) as tmp:
        tmp.write_text(stable_node_names(dot_source.to_string(), model), encoding="utf-8")
    with atomic_path(png) as tmp:
        if shutil.which("dot"):
            keras.utils.plot_model(model, to_file=str(tmp), show_shapes=True, show_layer_names=True)
        else:
            tmp.write_bytes(blank_png())
            log.warning(
                "graphviz's 'dot' program is missing: %s is blank, %s holds the graph; "
                "install graphviz (make deps does) and rerun",
                png,
                dot,
            )


def stable_node_names(dot_source: str, model: keras.Model) -> str:
    """Replace the Python object ids Keras uses as DOT node names by the layer names."""
    names = {str(id(layer)): f'"{layer.name}"' for layer in model.layers}
    return re.sub(r"\b\d{6,}\b", lambda m: names.get(m.group(0), m.group(0)), dot_source)


def save_model(model: keras.Model, target: Path) -> None:
    """`model.save`, atomically and byte-reproducibly: the same weights give the same file.

    Keras stamps the save time into metadata.json and the zip entries, and numbers shared objects in
    config.json by their Python id(); those are replaced by fixed values (ids renumbered in order of
    appearance, which keeps the references between them).
    """
    with atomic_path(target) as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp) as archive:
            entries = [(info, archive.read(info)) for info in archive.infolist()]
        with zipfile.ZipFile(tmp, "w") as archive:
            for info, data in entries:
                fixed = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
                fixed.compress_type = info.compress_type
                archive.writestr(fixed, normalise_entry(info.filename, data))


def normalise_entry(name: str, data: bytes) -> bytes:
    """An entry of a .keras archive without the save date and with stable shared-object ids."""
    if name == "metadata.json":
        metadata = json.loads(data)
        metadata.pop("date_saved", None)
        return json.dumps(metadata).encode()
    if name == "config.json":
        numbers: dict[bytes, bytes] = {}

        def renumber(match: re.Match) -> bytes:
            number = numbers.setdefault(match.group(1), str(len(numbers) + 1).encode())
            return b'"shared_object_id": ' + number

        return re.sub(rb'"shared_object_id": (\d+)', renumber, data)
    return data
