"""The evaluate stage: score the test split (RMSE, MAE, ranking metrics) against the baselines; write the plots' data."""

from __future__ import annotations

import pandas as pd

from movielens.evaluation.evaluate import evaluate_split
from movielens.model.baseline import load_bias_model
from movielens.params import load_params
from movielens.plumbing import paths
from movielens.plumbing.errors import require, run_stage
from movielens.plumbing.files import write_csv, write_json


def main() -> None:
    from movielens.model.keras_model import load_model

    p = load_params()["evaluate"]
    require(paths.TRAIN, paths.TEST, paths.USER_IDS, paths.MOVIE_IDS, paths.MODEL, paths.BASELINE)
    train = pd.read_parquet(paths.TRAIN, columns=["user_index", "movie_index", "rating"])
    test = pd.read_parquet(paths.TEST, columns=["user_index", "movie_index", "rating"])
    n_users = len(pd.read_parquet(paths.USER_IDS))
    n_movies = len(pd.read_parquet(paths.MOVIE_IDS))
    model = load_model(paths.MODEL)
    biases = load_bias_model(paths.BASELINE, n_users, n_movies)

    evaluation = evaluate_split(model, biases, train, test, n_users, n_movies, p)
    write_json(paths.SCORES, evaluation.scores)
    write_csv(paths.PREDICTIONS, evaluation.predictions)
    write_csv(paths.RMSE_BY_ACTIVITY, evaluation.rmse_by_activity)


if __name__ == "__main__":
    run_stage(main)
