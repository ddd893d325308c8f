"""Rating accuracy: RMSE and MAE of predicted ratings, the model's test predictions with their fallback
(trained users, or people folded in from a history)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from movielens.model.baseline import BiasModel
from movielens.ranking.foldin import Histories, folded_bias_ratings, folded_ratings
from movielens.ranking.served import Ranker


def rmse(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Root mean squared error; NaN for no pairs."""
    if len(actual) == 0:
        return float("nan")
    diff = np.asarray(predicted, np.float64) - np.asarray(actual, np.float64)
    return float(np.sqrt(np.mean(diff**2)))


def mae(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Mean absolute error; NaN for no pairs."""
    if len(actual) == 0:
        return float("nan")
    return float(
        np.mean(np.abs(np.asarray(predicted, np.float64) - np.asarray(actual, np.float64)))
    )


def predict_with_fallback(
    model_predict, fallback: np.ndarray, user_index: np.ndarray, movie_index: np.ndarray
) -> np.ndarray:
    """The model's rating for warm pairs; `fallback` where the user or the movie is cold (index -1).

    Args:
        model_predict: callable(user_index, movie_index) -> float array, called on warm pairs only.
        fallback: float (n,), the prediction to use for cold pairs.
    """
    warm = (user_index >= 0) & (movie_index >= 0)
    predicted = np.asarray(fallback, np.float64).copy()
    predicted[warm] = model_predict(user_index[warm], movie_index[warm])
    return predicted


def scores(actual: np.ndarray, predictions: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """RMSE and MAE of each named prediction, rounded for stable diffs."""
    return {
        name: {"rmse": round(rmse(actual, p), 6), "mae": round(mae(actual, p), 6)}
        for name, p in predictions.items()
    }


def predict_test(
    model, biases: BiasModel, test: pd.DataFrame, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The test predictions: the model for warm pairs, the saved bias model for cold ones.

    Args:
        model: the trained Keras model.
        biases: the bias model the train stage fitted on the same training split.
        test: user_index and movie_index (-1: unseen in training) of the test split.
        batch_size: pairs per model.predict call.

    Returns:
        float64 (n_test,) predictions of the model with the fallback, and the same of the bias
        model alone.
    """
    from movielens.model.keras_model import predict_ratings

    users, movies = test["user_index"].to_numpy(), test["movie_index"].to_numpy()
    fallback = biases.predict(users, movies)
    predicted = predict_with_fallback(
        lambda u, m: predict_ratings(model, u, m, batch_size), fallback, users, movies
    )
    return predicted, fallback


def predict_folded(
    served: Ranker,
    biases: BiasModel,
    reg_users: float,
    histories: Histories,
    targets: pd.DataFrame,
) -> tuple[np.ndarray, np.ndarray]:
    """The held-out targets' predictions: the rating model folded in, the bias baseline folded in.

    Args:
        served: movielens.ranking.foldin.folded_ranker over the people; its rating model predicts.
        biases: the saved bias model; each person's bias is folded in from their history with
            reg_users (train.baseline_reg_users), as the train stage fitted the trained users'.
        histories: the people's ratings the two models were folded in from.
        targets: user_index (the person) and movie_index (-1: unseen in training) to predict.

    Returns:
        float64 (n_targets,) predictions of the folded model, the bias baseline where the movie is
        cold, and float64 (n_targets,) of the folded bias baseline alone.
    """
    users, movies = targets["user_index"].to_numpy(), targets["movie_index"].to_numpy()
    fallback = folded_bias_ratings(biases, reg_users, histories, users, movies)
    predicted = predict_with_fallback(
        lambda u, m: folded_ratings(served, u, m), fallback, users, movies
    )
    return predicted, fallback
