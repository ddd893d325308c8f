"""Which Keras backend runs (train.backend), and what differs between backends: seeding, devices.

`use_backend` must run before the first `import keras`: Keras reads KERAS_BACKEND once, when it is
imported. Everything TensorFlow-specific is in movielens.training.tf_backend, imported only when
TensorFlow is the backend; JAX's few calls are here, imported only when JAX is.
"""

from __future__ import annotations

import os
import sys

from movielens.plumbing.errors import PipelineError

BACKENDS = ("tensorflow", "jax")


def use_backend(name: str) -> None:
    """Make `name` Keras' backend for this process (train.backend), before Keras is imported.

    A KERAS_BACKEND already set to another backend is refused rather than overridden: the params
    are what DVC records, and an environment variable that silently disagreed with them would
    make a run that its params do not describe.

    Raises:
        PipelineError: for an unknown backend, a KERAS_BACKEND naming another one, or Keras
            already imported with another backend.
    """
    if name not in BACKENDS:
        raise PipelineError(f"train.backend={name!r}; choose one of {', '.join(BACKENDS)}")
    preset = os.environ.get("KERAS_BACKEND")
    if preset and preset != name:
        raise PipelineError(
            f"KERAS_BACKEND={preset} is set but train.backend={name}; unset KERAS_BACKEND "
            f"(params.yaml chooses the backend: dvc exp run -S train.backend={preset})"
        )
    if "keras" in sys.modules and active_backend() != name:
        raise PipelineError(
            f"Keras is already running on {active_backend()}; train.backend={name} needs a new process"
        )
    os.environ["KERAS_BACKEND"] = name
    if name != "tensorflow" and "tensorflow" not in sys.modules:
        hide_tensorflow()


class _NoTensorFlow:
    """An import hook (a meta path finder) under which `import tensorflow` fails."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ModuleNotFoundError(f"No module named {name!r} (train.backend is not tensorflow)")
        return None


def hide_tensorflow() -> None:
    """Make `import tensorflow` fail in this process, as on a machine without it.

    Keras imports TensorFlow on any backend whenever it is installed, to seed it
    (keras/src/utils/rng_utils.py:65) and for type checks when serialising a model
    (keras/src/saving/serialization_lib.py:217); each asks `tf.available`, a lazy import that
    reads an ImportError as "not installed" (keras/src/utils/module_utils.py:16-23), and
    keras/src/utils/backend_utils.py:17 asks TensorFlow anything only once it is in
    sys.modules. A finder first on sys.meta_path that refuses the name is Python's import hook
    for this (the import system's reference, "The meta path"). So the JAX path runs as it does
    where TensorFlow's wheels are missing (the GPU machine), without TensorFlow's start-up.
    """
    if not any(isinstance(finder, _NoTensorFlow) for finder in sys.meta_path):
        sys.meta_path.insert(0, _NoTensorFlow())


def active_backend() -> str:
    """The backend Keras runs on."""
    import keras

    return keras.backend.backend()


def accelerators() -> list[str]:
    """The GPUs and TPUs the active backend sees, as "platform:id" names (empty on a CPU)."""
    if active_backend() == "tensorflow":
        from movielens.training import tf_backend

        return tf_backend.visible_gpus()
    import jax

    return [f"{d.platform}:{d.id}" for d in jax.devices() if d.platform != "cpu"]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and the backend (keras.utils.set_random_seed); on TensorFlow also make
    its kernels deterministic.

    JAX needs no such switch: XLA's CPU programs compute the same bits run after run
    (tests/test_backends.py checks it).
    """
    import keras

    keras.utils.set_random_seed(seed)
    if active_backend() == "tensorflow":
        from movielens.training import tf_backend

        tf_backend.enable_determinism()


def default_distribution(shard_tables: bool):
    """Where the model is built and trained: None on one device, else the backend's way over all.

    TensorFlow: MirroredStrategy over its GPUs when there are several (its default strategy on
    one). JAX, on several devices of its default platform: keras.distribution.DataParallel
    (each device a copy of the variables and a slice of each batch), or with `shard_tables` a
    ModelParallel layout that cuts every embedding table by rows across the devices, for tables
    too large for one device (`row_sharded`).
    """
    if active_backend() == "tensorflow":
        from movielens.training import tf_backend

        return tf_backend.strategy(len(tf_backend.visible_gpus()))
    import jax

    devices = jax.devices()
    if len(devices) < 2:
        return None
    if shard_tables:
        return row_sharded(devices)
    import keras

    return keras.distribution.DataParallel(devices=devices)


def row_sharded(devices):
    """keras.distribution.ModelParallel: the tables' rows cut across `devices`, batches whole."""
    import keras

    mesh = keras.distribution.DeviceMesh((1, len(devices)), ["batch", "model"], devices)
    layouts = keras.distribution.LayoutMap(mesh)
    layouts[".*embeddings"] = ("model", None)  # every Embedding's table, by rows
    return keras.distribution.ModelParallel(layout_map=layouts, batch_dim_name="batch")
