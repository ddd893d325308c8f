"""The preprocess stage: validate the raw ratings, keep the top users and movies, split them (under
heldout_users: training, the held-out users' history, their ratings to predict) and encode the ids."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from movielens.data.custom import CustomTable, load_custom, source_of
from movielens.data.footprint import estimated_ratings, refuse_over_memory, table_files
from movielens.data.preprocess import load_release, preprocess
from movielens.data.releases import RATING_COLUMNS
from movielens.params import load_params
from movielens.plumbing import paths
from movielens.plumbing.errors import run_stage
from movielens.plumbing.files import write_json, write_parquet
from movielens.plumbing.memory import memory_limit

log = logging.getLogger(__name__)


def main() -> None:
    params = load_params()
    prep = params["preprocess"]
    dataset = source_of(params["data"])
    custom = isinstance(dataset, CustomTable)
    files = (
        table_files(dataset.ratings) if custom else [paths.raw_dir(dataset.name) / dataset.ratings]
    )
    # Refused before reading when over the memory this process may use (the pandas engine).
    refuse_over_memory(estimated_ratings(files), memory_limit())
    if custom:
        ratings, movies, counts = load_custom(dataset)
    else:
        ratings, movies, counts = load_release(paths.raw_dir(dataset.name), dataset)
    kept, train, test, user_ids, movie_ids, history = preprocess(
        ratings,
        prep["top_users"],
        prep["top_movies"],
        prep["test_size"],
        prep["seed"],
        prep["split"],
        history_size=prep["history_size"],
    )
    summary = {
        "dataset": dataset.name,
        "split": prep["split"],
        **counts,
        "ratings_kept": len(train) + len(history) + len(test),
        "users": len(user_ids),
        "movies": len(movie_ids),
        "train_ratings": len(train),
        "test_ratings": len(test),
        "test_cold_pairs": int(test["cold"].sum()),
        "test_cold_users": int((test["user_index"] < 0).sum()),
        "test_cold_movies": int((test["movie_index"] < 0).sum()),
    }
    if prep["split"] == "heldout_users":  # the other protocols' summary keeps its bytes
        summary["heldout_users"] = int(history["userId"].nunique())  # each gives a history
        summary["history_ratings"] = len(history)
        summary["test_users"] = int(test["userId"].nunique())
    log.info("%s", summary)
    kept = kept[list(RATING_COLUMNS)]
    if isinstance(dataset, CustomTable):  # the model's range (a release's: its training ratings')
        for frame in (train, kept):
            frame.attrs[paths.RATING_SCALE_ATTR] = list(dataset.rating_scale)
    write_parquet(paths.TRAIN, train)
    write_parquet(paths.TEST, test)
    write_parquet(paths.USER_IDS, pd.DataFrame({"userId": user_ids.astype(np.int32)}))
    write_parquet(paths.MOVIE_IDS, pd.DataFrame({"movieId": movie_ids.astype(np.int32)}))
    write_parquet(paths.MOVIES, movies)
    write_parquet(paths.RATINGS, kept)
    write_parquet(paths.HISTORY, history)
    write_json(paths.PREPROCESS_SUMMARY, summary)


if __name__ == "__main__":
    run_stage(main)
