"""The user+movie bias model: rating ~ mu + b_u + b_m, fitted by regularised ALS (Surprise's baseline).

The train stage fits it on the training split and saves it beside the Keras model; evaluate and
recommend read it to predict cold pairs and users the embedding model does not know.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from movielens.plumbing.errors import PipelineError
from movielens.plumbing.files import atomic_path

ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member times: the same arrays give the same bytes


@dataclass(frozen=True)
class BiasSettings:
    """The bias model's fit: the `train` params it reads, one field per key, of the same name.

    Attributes:
        baseline_reg_users, baseline_reg_movies: the L2 weights of b_u and b_m.
        baseline_iterations: alternating least-squares passes.
    """

    baseline_reg_users: float
    baseline_reg_movies: float
    baseline_iterations: int

    @classmethod
    def from_params(cls, section: Mapping[str, Any]) -> BiasSettings:
        """The settings from an already loaded `train` params section (its other keys left out)."""
        return cls(**{f.name: section[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class BiasModel:
    """mu + b_u + b_m; an index of -1 (unseen in training) contributes no bias.

    Attributes:
        mu: the global mean of the training ratings.
        user_bias: float64 (n_users,).
        movie_bias: float64 (n_movies,).
    """

    mu: float
    user_bias: np.ndarray
    movie_bias: np.ndarray

    def predict(self, user_index: np.ndarray, movie_index: np.ndarray) -> np.ndarray:
        """float64 (n,) predictions for index pairs; -1 on either side drops that side's bias."""
        return predict_biases(self.mu, self.user_bias, self.movie_bias, user_index, movie_index)


def fit_biases(
    user_index: np.ndarray,
    movie_index: np.ndarray,
    ratings: np.ndarray,
    n_users: int,
    n_movies: int,
    reg_users: float,
    reg_movies: float,
    iterations: int,
) -> tuple[float, np.ndarray, np.ndarray]:
    """Fit rating ~ mu + b_u + b_m by regularised alternating least squares (as Surprise's baseline).

    Returns:
        mu (the global mean), b_u float64 (n_users,), b_m float64 (n_movies,).
    """
    mu = float(np.mean(ratings))
    residual = ratings.astype(np.float64) - mu
    # bincount and take want intp indices: convert once, not twice per iteration.
    user_index, movie_index = np.asarray(user_index, np.intp), np.asarray(movie_index, np.intp)
    b_u, b_m = np.zeros(n_users), np.zeros(n_movies)
    n_u = np.bincount(user_index, minlength=n_users)
    n_m = np.bincount(movie_index, minlength=n_movies)
    work = np.empty_like(residual)  # one buffer for every pass, not two new arrays per iteration
    for _ in range(iterations):
        np.subtract(residual, b_m.take(movie_index, out=work), out=work)
        b_u = np.bincount(user_index, work, n_users) / (reg_users + n_u)
        np.subtract(residual, b_u.take(user_index, out=work), out=work)
        b_m = np.bincount(movie_index, work, n_movies) / (reg_movies + n_m)
    return mu, b_u, b_m


def predict_biases(
    mu: float, b_u: np.ndarray, b_m: np.ndarray, user_index: np.ndarray, movie_index: np.ndarray
) -> np.ndarray:
    """mu + b_u + b_m per pair; an index of -1 (unseen in training) contributes no bias."""
    user_part = np.where(user_index >= 0, b_u[np.maximum(user_index, 0)], 0.0)
    movie_part = np.where(movie_index >= 0, b_m[np.maximum(movie_index, 0)], 0.0)
    return mu + user_part + movie_part


def fit_bias_model(
    train: pd.DataFrame, n_users: int, n_movies: int, settings: BiasSettings
) -> BiasModel:
    """The bias model of a training split.

    Args:
        train: user_index, movie_index (int) and rating of the training split.
        n_users, n_movies: sizes of the encoded id spaces.
        settings: the L2 weights and the number of passes.
    """
    mu, b_u, b_m = fit_biases(
        train["user_index"].to_numpy(),
        train["movie_index"].to_numpy(),
        train["rating"].to_numpy(),
        n_users,
        n_movies,
        settings.baseline_reg_users,
        settings.baseline_reg_movies,
        settings.baseline_iterations,
    )
    return BiasModel(mu, b_u, b_m)


def write_npz(target: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez, atomically and byte-reproducibly (np.savez stamps the current time on each member)."""
    with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_DATE), buffer.getvalue())


def save_bias_model(model: BiasModel, target: Path) -> None:
    """Write the bias model as an .npz of mu, user_bias and movie_bias."""
    write_npz(
        target,
        {"mu": np.float64(model.mu), "user_bias": model.user_bias, "movie_bias": model.movie_bias},
    )


def load_bias_model(path: Path, n_users: int, n_movies: int) -> BiasModel:
    """Read a saved bias model and check it against the processed data's id tables.

    Raises:
        PipelineError: when the file cannot be read or was made for other data.
    """
    try:
        with np.load(path, allow_pickle=False) as saved:
            model = BiasModel(float(saved["mu"]), saved["user_bias"], saved["movie_bias"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise PipelineError(
            f"{path} cannot be read ({err}); rebuild it (dvc repro train)"
        ) from None
    if (len(model.user_bias), len(model.movie_bias)) != (n_users, n_movies):
        raise PipelineError(
            f"{path} has {len(model.user_bias)} users and {len(model.movie_bias)} movies but "
            f"data/processed has {n_users} and {n_movies}; rerun the pipeline (dvc repro)"
        )
    return model
