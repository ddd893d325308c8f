"""One process of a fit across processes (train.processes > 1): join the others, fit on the shard.

Every process builds the same model from the same seed under one keras.distribution.DataParallel
over every process's devices, and takes an equal part of each batch from its own shard: Keras'
JAX trainer makes each step's global batch from the processes' local ones
(jax.make_array_from_process_local_data), so the gradients, the losses and the validation RMSE
are the whole batch's, the same in every process (docs/distributed.md).
"""

from __future__ import annotations

import dataclasses

import jax
import keras
import numpy as np
import pandas as pd
from jax.experimental import multihost_utils

from movielens.plumbing.errors import PipelineError
from movielens.training.fit import Fit, rating_scale_of, train_model
from movielens.training.settings import TrainSettings

# The CPU collectives between processes: gloo over TCP, jax 0.10.2's default
# (jax/_src/config.py:2215), named so that another default cannot leave the processes without.
CPU_COLLECTIVES = "gloo"


def join(coordinator: str, processes: int, process_id: int) -> None:
    """Join the fit's processes (before JAX runs anything): `coordinator` is process 0's
    host:port."""
    jax.config.update("jax_cpu_collectives_implementation", CPU_COLLECTIVES)
    keras.distribution.initialize(coordinator, processes, process_id)


def global_rating_scale(ratings: np.ndarray) -> tuple[float, float]:
    """rating_scale_of over every process's fitting ratings: each gives its lowest and highest."""
    local = np.array([np.min(ratings), np.max(ratings)], dtype=np.float32)
    every = np.asarray(multihost_utils.process_allgather(local))  # (processes, 2)
    return rating_scale_of(np.array([every[:, 0].min(), every[:, 1].max()]))


def check_equal_shards(n_ratings: int) -> None:
    """Refuse shards of different sizes in every process alike: their epochs would take
    different step counts, and a process left waiting in a collective never returns.

    Raises:
        PipelineError: with every shard's size.
    """
    sizes = np.asarray(multihost_utils.process_allgather(np.array([n_ratings]))).reshape(-1)
    if len(set(sizes.tolist())) > 1:
        raise PipelineError(
            f"the processes' shards differ in size ({', '.join(map(str, sizes))} ratings); "
            "each must hold as many (movielens.training.processes.split_shards)"
        )


def fit_shard(
    shard: pd.DataFrame,
    n_users: int,
    n_movies: int,
    settings: TrainSettings,
    live=None,
    rating_scale: tuple[float, float] | None = None,
) -> Fit:
    """train_model across the processes: this process's `shard`, its part of each batch.

    settings.batch_size is the global batch: each of the processes takes batch_size / processes
    of its own ratings a step. The validation part is carved from each shard with the same
    validation_size; early stopping reads the RMSE over every shard's part, the same number in
    every process, so all stop at the same epoch and refit as long. The output spans
    `rating_scale` when declared (a custom table's), else every process's lowest to highest rating.

    Returns:
        The fit; fitted_ratings counts every process's.
    """
    processes = jax.process_count()
    check_equal_shards(len(shard))
    local = dataclasses.replace(settings, batch_size=settings.batch_size // processes)
    across = keras.distribution.DataParallel(devices=jax.devices(), auto_shard_dataset=False)
    fit = train_model(
        shard, n_users, n_movies, local, distribution=across, live=live,
        rating_scale=rating_scale or global_rating_scale,
    )  # fmt: skip
    # No process leaves before all have fitted: process 0 writes only then.
    multihost_utils.sync_global_devices("fit done")
    return dataclasses.replace(
        fit, fitted_ratings=fit.fitted_ratings * processes, processes=processes
    )
