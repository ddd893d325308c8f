"""The evaluate stage: score the test split (RMSE, MAE, the served lists' ranking metrics) against the
baselines, with paired bootstrap intervals and beyond-accuracy figures; write the plots' data, the
scored top-k lists and the per-user metrics. Under preprocess.split=heldout_users the held-out
people are folded in from data/processed/history.parquet (empty under the other splits)."""

from __future__ import annotations

import pandas as pd

from movielens.evaluation.evaluate import (
    EvaluateSettings,
    evaluate_people,
    evaluate_split,
    per_user_frame,
)
from movielens.model.baseline import load_bias_model
from movielens.model.watch import load_watch
from movielens.params import load_params
from movielens.plumbing import paths
from movielens.plumbing.errors import require, run_stage
from movielens.plumbing.files import write_csv, write_json, write_parquet
from movielens.ranking.foldin import saved_fold_in_settings
from movielens.ranking.scorers import scorer_of
from movielens.ranking.served import lists_frame
from movielens.spark.evaluate import check_factors, evaluate_on_spark
from movielens.spark.lists import ServedModels
from movielens.spark.session import SparkSettings, spark_session

COLUMNS = ["userId", "user_index", "movie_index", "rating"]


def served_on_spark(compute: dict, model, watch, user_ids, movie_ids, s: EvaluateSettings) -> dict:
    """Every user's served list, ranked on Spark and written to topn.parquet, and their metrics
    and the test RMSE computed there: scores.json's `spark` section. evaluate.ranking_users
    samples only the driver's comparisons: the executors list everyone."""
    rating = check_factors(scorer_of(model, len(user_ids), len(movie_ids), s.batch_size))
    models = ServedModels(rating, watch, s.like_weight, user_ids, movie_ids)
    settings = SparkSettings(master=compute["spark_master"], memory=compute["spark_memory"])
    with spark_session(settings, app_name="evaluate") as spark:
        train = spark.read.parquet(str(paths.TRAIN)).select("user_index", "movie_index")
        test = spark.read.parquet(str(paths.TEST)).select("user_index", "movie_index", "rating")
        return evaluate_on_spark(
            spark, models, train, test,
            users=None,
            k=s.k, relevance_threshold=s.relevance_threshold, block_size=s.block_size,
            topn_path=paths.TOPN,
        )  # fmt: skip


def main() -> None:
    from movielens.model.keras_model import load_model

    params = load_params()
    require(paths.TRAIN, paths.TEST, paths.HISTORY, paths.USER_IDS, paths.MOVIE_IDS, paths.MOVIES)
    require(paths.MODEL, paths.BASELINE, paths.WATCH_MODEL, paths.TRAIN_METRICS)
    train = pd.read_parquet(paths.TRAIN, columns=["user_index", "movie_index", "rating"])
    test = pd.read_parquet(paths.TEST, columns=COLUMNS)
    history = pd.read_parquet(paths.HISTORY, columns=COLUMNS)
    user_ids = pd.read_parquet(paths.USER_IDS)["userId"].to_numpy()
    movie_ids = pd.read_parquet(paths.MOVIE_IDS)["movieId"].to_numpy()
    movies = pd.read_parquet(paths.MOVIES, columns=["movieId", "genres"]).set_index("movieId")
    model = load_model(paths.MODEL)
    biases = load_bias_model(paths.BASELINE, len(user_ids), len(movie_ids))
    watch = load_watch(paths.WATCH_MODEL, len(user_ids), len(movie_ids))
    genres = movies["genres"].reindex(movie_ids).to_numpy()
    settings = EvaluateSettings(like_weight=params["ranking"]["like_weight"], **params["evaluate"])
    if len(history):  # heldout_users: the people held out give these ratings at request time
        evaluation = evaluate_people(
            model, biases, watch, train, history, test,
            fold_in=saved_fold_in_settings(paths.MODEL, paths.TRAIN_METRICS),
            reg_users=params["train"]["baseline_reg_users"],
            movie_genres=genres,
            settings=settings,
        )  # fmt: skip
    else:
        evaluation = evaluate_split(
            model, biases, watch, train, test, movie_genres=genres, settings=settings
        )
    ids = user_ids if evaluation.people is None else evaluation.people
    scores = evaluation.scores
    # Held-out people are ranked from their histories, folded in on the driver: pandas lists them.
    if params["compute"]["engine"] == "spark" and evaluation.people is None:
        scores = {
            **scores,
            "spark": served_on_spark(
                params["compute"], model, watch, user_ids, movie_ids, settings
            ),
        }
    else:
        write_parquet(paths.TOPN, lists_frame(evaluation.top_lists, ids, movie_ids))
    write_json(paths.SCORES, scores)
    write_csv(paths.PREDICTIONS, evaluation.predictions)
    write_csv(paths.RMSE_BY_ACTIVITY, evaluation.rmse_by_activity)
    write_parquet(paths.PER_USER, per_user_frame(evaluation.rankings, ids))


if __name__ == "__main__":
    run_stage(main)
