"""LazyAdam for Keras (TensorFlow backend): Adam that updates only the embedding rows a batch looked up.

The same update as movielens.model.kernels.lazy_adam_epoch, for a model trained through Keras itself.
"""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="movielens")
class LazyAdam(keras.optimizers.Adam):
    """TensorFlow Addons' LazyAdam: a sparse gradient updates only its rows' moments and weights.

    For a tf.IndexedSlices gradient (what an Embedding's lookup gives), the occurrences of each
    row are summed first, then that row's m, v and weight get Adam's update; every other row and
    its moments are left as they are. The step count behind the bias correction is the
    optimizer's global one (`iterations`), as in Adam. A dense gradient gets Adam's update.

    Regularisation under it should be per lookup (an activity regulariser): a whole-table penalty
    has a gradient on every row, which reaches the optimizer as a dense gradient and so is
    applied densely, no longer lazily.

    Args:
        learning_rate, beta_1, beta_2, epsilon: as keras.optimizers.Adam.
        name: the optimizer's name.
        **kwargs: other keras.optimizers.Optimizer arguments (clipping, EMA, ...); amsgrad and
            weight_decay are refused (both act on every row).

    Raises:
        ValueError: for amsgrad=True or a weight_decay.
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        name="lazy_adam",
        **kwargs,
    ):
        if kwargs.get("amsgrad") or kwargs.get("weight_decay"):
            raise ValueError("LazyAdam: amsgrad and weight_decay act on every row; not supported")
        kwargs.pop("amsgrad", None)
        super().__init__(
            learning_rate=learning_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            amsgrad=False,
            name=name,
            **kwargs,
        )

    def update_step(self, gradient, variable, learning_rate):
        """Adam's update on the rows of a sparse gradient only; on a dense one, Adam's own."""
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        rows, position = tf.unique(gradient.indices)
        g = tf.math.unsorted_segment_sum(
            tf.cast(gradient.values, dtype), position, tf.shape(rows)[0]
        )  # one gradient per row: the sum over its occurrences in the batch
        lr = tf.cast(learning_rate, dtype)
        step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        alpha = lr * tf.sqrt(1 - tf.pow(beta_2, step)) / (1 - tf.pow(beta_1, step))
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        m_rows = tf.gather(m, rows)
        v_rows = tf.gather(v, rows)
        m_rows = m_rows + (g - m_rows) * (1 - beta_1)
        v_rows = v_rows + (tf.square(g) - v_rows) * (1 - beta_2)
        w_rows = tf.gather(variable, rows) - m_rows * alpha / (tf.sqrt(v_rows) + self.epsilon)
        self.assign(m, tf.IndexedSlices(m_rows, rows))
        self.assign(v, tf.IndexedSlices(v_rows, rows))
        self.assign(variable, tf.IndexedSlices(w_rows, rows))
