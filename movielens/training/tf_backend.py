"""Everything the project does through TensorFlow itself; imported only when it is Keras' backend.

Op determinism, the GPUs it sees, MirroredStrategy, the densified embedding gradients, and the
Keras engine's tf.data input pipeline. The rest of movielens.model uses keras.ops and public Keras
APIs, and runs on any backend.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from movielens.model.layers import MOVIE_INPUT, USER_INPUT


def enable_determinism() -> None:
    """TensorFlow's kernels give the same bits run after run (and Keras then turns XLA off)."""
    tf.config.experimental.enable_op_determinism()


def visible_gpus() -> list[str]:
    """The GPUs TensorFlow sees, by name."""
    return [device.name for device in tf.config.list_physical_devices("GPU")]


def strategy(n_gpus: int) -> tf.distribute.Strategy:
    """MirroredStrategy over the GPUs when there are several, else TensorFlow's default strategy."""
    return tf.distribute.MirroredStrategy() if n_gpus > 1 else tf.distribute.get_strategy()


def dense_gradients(grads: list) -> list:
    """Each tf.IndexedSlices gradient as the dense tensor it stands for (a row's slices summed).

    An embedding lookup's gradient is a tf.IndexedSlices with one slice per occurrence, and Keras'
    Adam squares the slices one by one (keras/src/backend/tensorflow/sparse.py applies unary ops
    to the values), so a row looked up k times would get the sum of k squares as its second
    moment instead of the square of its gradient. Densified first, it is Adam on the true
    gradient, as on JAX, whose lookup gradient is dense. Done before a MirroredStrategy's
    all-reduce, which then reduces dense gradients too.
    """
    return [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]


def epoch_dataset(epoch: Callable[[], tuple], steps: int, rest: int) -> tf.data.Dataset:
    """One epoch of batches from `epoch`, which returns it in one call, prefetched.

    `epoch()` gives users, movies, ratings as (batches, batch_size) arrays of whole batches, then
    the short last batch's three columns (empty when `rest` is 0). Python hands over an epoch at
    once and tf.data cuts the rows one per batch: neither element by element nor one Python call
    per batch (docs/benchmarks.md). Batch shapes stay unknown, so that the refit's epochs (another
    length) reuse the trace.
    """
    signature = tuple(
        tf.TensorSpec(shape, dtype)
        for shape in ((None, None), (None,))
        for dtype in (tf.int32, tf.int32, tf.float32)
    )

    def generate():
        yield epoch()

    def labelled(users, movies, ratings):
        return {USER_INPUT: users, MOVIE_INPUT: movies}, ratings

    def batches(users, movies, ratings, users_rest, movies_rest, ratings_rest):
        whole = tf.data.Dataset.from_tensor_slices(labelled(users, movies, ratings))
        if not rest:
            return whole
        last = labelled(users_rest, movies_rest, ratings_rest)
        return whole.concatenate(tf.data.Dataset.from_tensors(last))

    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    dataset = dataset.flat_map(batches).apply(tf.data.experimental.assert_cardinality(steps))
    return dataset.prefetch(tf.data.AUTOTUNE)


def validation_dataset(inputs: dict, ratings: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """The validation pairs in batches, cut once for every epoch.

    Given NumPy arrays, Keras would build a slicing pipeline over them anew at every epoch; on
    ml-latest-small that was an eighth of the whole fit.
    """
    parts = [
        tf.data.Dataset.from_tensors(
            ({k: v[i : i + batch_size] for k, v in inputs.items()}, ratings[i : i + batch_size])
        )
        for i in range(0, len(ratings), batch_size)
    ]
    dataset = parts[0]
    for part in parts[1:]:
        dataset = dataset.concatenate(part)
    return dataset
