"""One row of the training benchmark: a model's test scores and its training throughput."""

from __future__ import annotations

import numpy as np

from movielens.evaluation.accuracy import scores


def result_row(
    model: str,
    actual: np.ndarray,
    predicted: np.ndarray,
    fit_seconds: float,
    epochs: int,
    ratings: int,
    params: dict,
) -> dict:
    """One benchmark row; ratings_per_second = ratings * epochs / fit_seconds."""
    score = scores(np.asarray(actual, np.float64), {model: predicted})[model]
    return {
        "model": model,
        "rmse": score["rmse"],
        "mae": score["mae"],
        "fit_seconds": round(fit_seconds, 6),
        "epochs": int(epochs),
        "ratings": int(ratings),
        "ratings_per_second": round(ratings * epochs / fit_seconds, 1),
        "params": params,
    }
