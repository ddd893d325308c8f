"""The evaluate stage: score the test split (RMSE, MAE, the served lists' ranking metrics) against the
baselines; write the plots' data and the scored top-k lists."""

from __future__ import annotations

import pandas as pd

from movielens.evaluation.evaluate import evaluate_split
from movielens.model.baseline import load_bias_model
from movielens.model.watch import load_watch
from movielens.params import load_params
from movielens.plumbing import paths
from movielens.plumbing.errors import require, run_stage
from movielens.plumbing.files import write_csv, write_json, write_parquet
from movielens.ranking.served import lists_frame


def main() -> None:
    from movielens.model.keras_model import load_model

    params = load_params()
    require(paths.TRAIN, paths.TEST, paths.USER_IDS, paths.MOVIE_IDS, paths.MODEL, paths.BASELINE)
    require(paths.WATCH_MODEL)
    train = pd.read_parquet(paths.TRAIN, columns=["user_index", "movie_index", "rating"])
    test = pd.read_parquet(paths.TEST, columns=["user_index", "movie_index", "rating"])
    user_ids = pd.read_parquet(paths.USER_IDS)["userId"].to_numpy()
    movie_ids = pd.read_parquet(paths.MOVIE_IDS)["movieId"].to_numpy()
    model = load_model(paths.MODEL)
    biases = load_bias_model(paths.BASELINE, len(user_ids), len(movie_ids))
    watch = load_watch(paths.WATCH_MODEL, len(user_ids), len(movie_ids))

    evaluation = evaluate_split(
        model,
        biases,
        watch,
        train,
        test,
        like_weight=params["ranking"]["like_weight"],
        **params["evaluate"],
    )
    write_json(paths.SCORES, evaluation.scores)
    write_csv(paths.PREDICTIONS, evaluation.predictions)
    write_csv(paths.RMSE_BY_ACTIVITY, evaluation.rmse_by_activity)
    write_parquet(paths.TOPN, lists_frame(evaluation.top_lists, user_ids, movie_ids))


if __name__ == "__main__":
    run_stage(main)
