"""The preprocess stage: validate the raw ratings, keep the top users and movies, split them (under
heldout_users: training, the held-out users' history, their ratings to predict) and encode the ids,
on pandas or on Spark (compute.engine)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from movielens.data.custom import (
    CustomTable,
    complete_items,
    load_custom,
    ratings_files,
    source_of,
)
from movielens.data.footprint import estimated_ratings, refuse_over_memory
from movielens.data.preprocess import complete_movies, load_release, preprocess, split_counts
from movielens.data.releases import RATING_COLUMNS, Dataset, read_file, read_movies
from movielens.params import load_params
from movielens.plumbing import paths
from movielens.plumbing.errors import run_stage
from movielens.plumbing.files import write_json, write_parquet
from movielens.plumbing.memory import memory_limit

log = logging.getLogger(__name__)

HELDOUT_KEYS = ("heldout_users", "history_ratings", "test_users")  # in the summary of heldout_users


def scale_attrs(dataset: Dataset | CustomTable) -> dict:
    """train's and ratings' attrs: a custom table's scale, the model's range (a release's: none,
    its training ratings' range)."""
    if isinstance(dataset, CustomTable):
        return {paths.RATING_SCALE_ATTR: list(dataset.rating_scale)}
    return {}


def on_pandas(dataset: Dataset | CustomTable, prep: dict) -> tuple[dict, dict]:
    """Preprocess in this process; write every output but the summary. Its counts."""
    custom = isinstance(dataset, CustomTable)
    raw_dir = None if custom else paths.raw_dir(dataset.name)
    files = ratings_files(dataset) if custom else [raw_dir / dataset.ratings]
    # Refused before reading when over the memory this process may use.
    refuse_over_memory(estimated_ratings(files), memory_limit())
    if custom:
        ratings, movies, counts = load_custom(dataset)
    else:
        ratings, movies, counts = load_release(raw_dir, dataset)
    result = preprocess(
        ratings,
        prep["top_users"],
        prep["top_movies"],
        prep["test_size"],
        prep["seed"],
        prep["split"],
        history_size=prep["history_size"],
    )
    kept, train = result.kept[list(RATING_COLUMNS)], result.train
    for frame in (train, kept):
        frame.attrs.update(scale_attrs(dataset))
    write_parquet(paths.TRAIN, train)
    write_parquet(paths.TEST, result.test)
    write_parquet(paths.USER_IDS, pd.DataFrame({"userId": result.user_ids.astype(np.int32)}))
    write_parquet(paths.MOVIE_IDS, pd.DataFrame({"movieId": result.movie_ids.astype(np.int32)}))
    write_parquet(paths.MOVIES, movies)
    write_parquet(paths.RATINGS, kept)
    write_parquet(paths.HISTORY, result.history)
    return counts, split_counts(result)


def on_spark(dataset: Dataset | CustomTable, prep: dict, compute: dict) -> tuple[dict, dict]:
    """Preprocess on Spark (compute.spark_master); write every output but the summary. Its counts."""
    from movielens.spark.preprocess import (
        SplitSettings,
        preprocess_on_spark,
        write_processed,
    )
    from movielens.spark.preprocess import split_counts as spark_counts
    from movielens.spark.read import custom_source, release_source
    from movielens.spark.session import SparkSettings, spark_session
    from movielens.spark.validate import RatingRules

    custom = isinstance(dataset, CustomTable)
    if custom:  # checked as the pandas path checks it, before a session starts
        source, rules = custom_source(dataset), RatingRules.for_table(dataset)
    else:
        raw_dir = paths.raw_dir(dataset.name)
        source, rules = release_source(raw_dir, dataset), RatingRules(dataset.rating_step)
        raw_movies = read_file(raw_dir / dataset.movies, read_movies, dataset)
    settings = SplitSettings(**{key: prep[key] for key in SplitSettings.__dataclass_fields__})
    spark_settings = SparkSettings(compute["spark_master"], compute["spark_memory"])
    with spark_session(spark_settings, app_name="movielens-preprocess") as spark:
        result = preprocess_on_spark(spark, source, rules, settings)
        rated = result.rated_movie_ids
        if custom:
            movies, n_placeholders = complete_items(dataset, rated)
        else:
            movies, n_placeholders = complete_movies(raw_movies, rated, dataset)
        counts = {**result.counts, "movies_added_untitled": n_placeholders}
        split = spark_counts(result)
        write_processed(result, scale_attrs(dataset))
    write_parquet(paths.MOVIES, movies)
    return counts, split


def main() -> None:
    params = load_params()
    prep, compute = params["preprocess"], params["compute"]
    dataset = source_of(params["data"])
    if compute["engine"] == "spark":
        counts, split = on_spark(dataset, prep, compute)
    else:
        counts, split = on_pandas(dataset, prep)
    summary = {"dataset": dataset.name, "split": prep["split"], **counts}
    summary |= {key: value for key, value in split.items() if key not in HELDOUT_KEYS}
    if prep["split"] == "heldout_users":  # the other protocols' summary keeps its bytes
        summary |= {key: split[key] for key in HELDOUT_KEYS}
    log.info("%s", summary)
    write_json(paths.PREPROCESS_SUMMARY, summary)


if __name__ == "__main__":
    run_stage(main)
