"""Numba kernels of the compiled engine: a batch's row gradients and Keras' Adam, on NumPy arrays.

Each side of the model (users, movies) is one float32 table of shape (rows, dim + 1): the
embedding in columns 0..dim-1 and the bias in the last column, so that a rating reads one row per
side. For a batch of `count` ratings with rows u, m and rating r:

    logit = sum(u[:dim] * m[:dim]) + u[dim] + m[dim]
    pred  = lo + span * sigmoid(logit)
    loss  = sum((pred - r)^2) / count                     # Keras' MSE over the batch
          + sum(act_u * u^2 + act_m * m^2) / count        # activity_regularizer, per column
          + sum(l2_u * U^2) + sum(l2_m * M^2)             # embeddings_regularizer, whole tables

By job: `gradients` sums the first two terms' gradient row by row into gradient buffers; `adam`
updates every row of both tables (the whole-table term reaches every row), exactly as Keras'
`Adam` does with dense gradients, or, lazily (TensorFlow Addons' LazyAdam), only the rows the
batch looked up, with no whole-table term; `minibatch` runs an epoch of steps (adam_epoch,
lazy_adam_epoch: what the engine calls); `layout` fixes how the work is cut.

Results depend neither on the number of threads (layout) nor on whether Numba compiled the code or
loaded it from its cache, which fast-math does not promise: tests/test_fit.py checks it
(docs/pipeline.md). The cache is one folder named by the content of every module of this package,
outside the checkout (movielens.training.compiled.cache): a kernel's cached machine code holds
the kernels it calls from the other modules, so a change to any of them must miss.
"""

from movielens.training.compiled.cache import use_content_keyed_cache

# Numba picks a function's cache folder when @njit(cache=True) decorates it: register first.
use_content_keyed_cache()

# Their OpenMP threads wait passively between loops: movielens.plumbing.runtime.set_up sets that.

from movielens.training.compiled.kernels.gradients import squared_error  # noqa: E402
from movielens.training.compiled.kernels.minibatch import (  # noqa: E402
    Hyperparameters,
    adam_epoch,
    adam_state,
    gather,
    hyperparameters,
    lazy_adam_epoch,
)

__all__ = [
    "Hyperparameters",
    "adam_epoch",
    "adam_state",
    "gather",
    "hyperparameters",
    "lazy_adam_epoch",
    "squared_error",
]
