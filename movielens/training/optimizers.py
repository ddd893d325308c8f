"""The project's Adam, the one home of its Keras optimizers: dense Adam and LazyAdam, on any backend.

Both update on each variable's true gradient: on TensorFlow an embedding lookup's sparse gradient
is densified first (movielens.training.tf_backend.dense_gradients); on JAX it is dense already.
The Numba kernels (movielens.training.compiled.kernels) implement the same two updates for the
compiled engine, and tests compare them step by step.
"""

from __future__ import annotations

import keras
from keras import ops

from movielens.plumbing.errors import PipelineError


def true_gradients(grads: list) -> list:
    """The gradients as dense tensors: on TensorFlow, each sparse lookup gradient summed by row."""
    if keras.backend.backend() != "tensorflow":
        return grads
    from movielens.training import tf_backend

    return tf_backend.dense_gradients(grads)


class Restartable:
    """An optimizer that can go back to the state it was built with (the refit's start)."""

    def build(self, variables):
        super().build(variables)
        self.initial_state = [ops.convert_to_numpy(v) for v in self.variables]

    def restart(self) -> None:
        """Step 0 and every moment back to zero, as just built."""
        for variable, value in zip(self.variables, self.initial_state, strict=True):
            variable.assign(value)


class Adam(Restartable, keras.optimizers.Adam):
    """Keras' Adam, on each variable's true gradient (`true_gradients`)."""

    def apply(self, grads, trainable_variables=None):
        return super().apply(true_gradients(grads), trainable_variables)


@keras.saving.register_keras_serializable(package="movielens")
class LazyAdam(Restartable, keras.optimizers.Optimizer):
    """TensorFlow Addons' LazyAdam: only the rows a batch looked up get Adam's update.

    A row of a 2-D variable (an embedding table) counts as looked up when its gradient row is
    not all zero: the loss reaches only the rows a batch looked up, so their summed gradient is
    what the batch gives them. Those rows' m, v and weights get Keras' Adam update; every other
    row and its moments stay as they are. The step count behind the bias correction is the
    global one (`iterations`), as in Adam. Variables of other ranks get Adam's update.

    The update is written in keras.ops over whole tables, so one implementation runs on every
    backend and inside Keras' stateless_apply (the xla engine); the compiled engine's kernel
    (kernels.lazy_adam_epoch) touches only the looked-up rows.

    Regularisation under it should be per lookup (an activity regulariser): a whole-table penalty
    has a gradient on every row, so every row would count as looked up.

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
        if kwargs.pop("amsgrad", False) or kwargs.get("weight_decay"):
            raise ValueError("LazyAdam: amsgrad and weight_decay act on every row; not supported")
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

    def build(self, variables):
        if self.built:
            return
        keras.optimizers.Optimizer.build(self, variables)
        self.momentums = [self.add_variable_from_reference(v, "momentum") for v in variables]
        self.velocities = [self.add_variable_from_reference(v, "velocity") for v in variables]
        self.initial_state = [ops.convert_to_numpy(v) for v in self.variables]

    def apply(self, grads, trainable_variables=None):
        return super().apply(true_gradients(grads), trainable_variables)

    def update_step(self, gradient, variable, learning_rate):
        """Keras' Adam formula on the looked-up rows only."""
        # The base class's way to a variable's slots, as its subclassing example shows
        # (keras/src/optimizers/base_optimizer.py:46) and Adam uses (adam.py:114): it resolves
        # whatever each backend passes (a Keras variable, TensorFlow's own, a mirrored one).
        k = self._get_variable_index(variable)
        m, v = self.momentums[k], self.velocities[k]
        m_now, v_now, w_now = (ops.convert_to_tensor(x) for x in (m, v, variable))
        g = ops.cast(gradient, variable.dtype)
        step = ops.cast(self.iterations + 1, variable.dtype)
        alpha = (
            ops.cast(learning_rate, variable.dtype)
            * ops.sqrt(1 - ops.power(ops.cast(self.beta_2, variable.dtype), step))
            / (1 - ops.power(ops.cast(self.beta_1, variable.dtype), step))
        )
        new_m = m_now + (g - m_now) * (1 - self.beta_1)
        new_v = v_now + (ops.square(g) - v_now) * (1 - self.beta_2)
        new_w = w_now - new_m * alpha / (ops.sqrt(new_v) + self.epsilon)
        if len(variable.shape) == 2:
            looked_up = ops.any(ops.not_equal(g, 0), axis=1, keepdims=True)
            new_m = ops.where(looked_up, new_m, m_now)
            new_v = ops.where(looked_up, new_v, v_now)
            new_w = ops.where(looked_up, new_w, w_now)
        self.assign(m, new_m)
        self.assign(v, new_v)
        self.assign(variable, new_w)

    def get_config(self):
        return {
            **super().get_config(),
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "epsilon": self.epsilon,
        }


OPTIMIZERS = {"adam": Adam, "lazy_adam": LazyAdam}


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """train.optimizer as a Keras optimizer: `adam` or `lazy_adam`."""
    return OPTIMIZERS[name](learning_rate=learning_rate)


def lazy_adam_guard(optimizer: str, embeddings_l2: float) -> None:
    """Refuse a whole-table L2 weight with the lazy optimizer, which cannot apply it lazily.

    The one home of that rule: the train stage checks params with it before loading data, and
    every engine's optimizer is made through make_optimizer or the compiled trainer, which
    refuse the same.

    Raises:
        PipelineError: for optimizer=lazy_adam with embeddings_l2 > 0.
    """
    if optimizer == "lazy_adam" and embeddings_l2 > 0:
        raise PipelineError(
            f"train.optimizer=lazy_adam cannot apply train.embeddings_l2={embeddings_l2:g}: "
            "that L2 term on the whole tables has a gradient on every row, and a lazy update "
            "touches only the rows a batch looks up; set train.embeddings_l2 to 0 "
            "(train.activity_l2 regularises per rating) or use train.optimizer=adam"
        )
