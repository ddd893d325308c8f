"""The benchmarks' calls into the library that hand it a section of params.yaml, one function each.

The benchmarks read params.yaml, as the stages do; these functions are the only places where they
pass a params section (or a key the library defines) to the library, so that a change of those
signatures is made here alone.

movielens.training.fit is imported in the functions that call it: it imports Keras, and a script
that runs on JAX chooses that backend before Keras is imported (benchmarks.gpu, bench_jax), while
bench_topn ranks without loading TensorFlow unless it trains.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pandas as pd

from movielens.model.baseline import BiasModel, BiasSettings, fit_bias_model
from movielens.training.settings import TrainSettings

if TYPE_CHECKING:
    from movielens.training.fit import Fit

# The loggers of the model and of its fit: each epoch is a line there, and a benchmark fits many
# times, so that its scripts keep their own line per fit.
FIT_LOGGERS = ("movielens.model", "movielens.training")


def quiet_fits() -> None:
    """Log only the warnings of the model and its fit (not a line per epoch)."""
    for name in FIT_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def train_ours(
    train: pd.DataFrame, n_users: int, n_movies: int, train_params: dict, live=None
) -> Fit:
    """Our model fitted by movielens.training.fit.train_model with the `train` section given.

    live: receives every epoch (a dvclive Live, or what has its log_metric and next_step).
    """
    from movielens.training.fit import train_model

    settings = TrainSettings.from_params(train_params)
    return train_model(train, n_users, n_movies, settings, live=live)


def ratings_through(fit: Fit, n_train: int, train_params: dict) -> int:
    """The ratings the engines went through in `fit` (training.fit.ratings_processed)."""
    from movielens.training.fit import ratings_processed

    return ratings_processed(fit, n_train, train_params["validation_size"])


def fit_biases(train: pd.DataFrame, n_users: int, n_movies: int, train_params: dict) -> BiasModel:
    """The bias baseline the evaluate stage predicts cold pairs with (model.baseline)."""
    return fit_bias_model(train, n_users, n_movies, BiasSettings.from_params(train_params))


def watch_settings(params: dict, **changes) -> dict:
    """fit_watch's keyword arguments: params.yaml's watch section (key for key) with `changes`."""
    return {**params["watch"], **changes}


def watch_params(params: dict) -> dict:
    """The watch model's section of params.yaml, as the results record it."""
    return params["watch"]


def like_weight(params: dict) -> float:
    """The served formula's weight of the predicted rating (ranking.served.served_ranker)."""
    return params["ranking"]["like_weight"]
