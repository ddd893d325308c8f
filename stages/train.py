"""The train stage: build the Keras model, train it with the engine train.engine picks, save it and its metrics."""

from __future__ import annotations

import logging
import time

import pandas as pd

from movielens.model.baseline import BiasSettings, fit_bias_model, save_bias_model
from movielens.params import load_params
from movielens.plumbing import paths
from movielens.plumbing.errors import require, run_stage
from movielens.plumbing.files import write_json
from movielens.training.backend import use_backend
from movielens.training.live import open_live
from movielens.training.settings import TrainSettings

log = logging.getLogger(__name__)


def main() -> None:
    section = load_params()["train"]
    settings = TrainSettings.from_params(section)
    use_backend(settings.backend)  # before Keras is imported: the modules below import it
    from movielens.model.saving import plot_model, save_model
    from movielens.training.fit import prepare, ratings_processed, summarize_fit, train_model
    from movielens.training.optimizers import lazy_adam_guard

    lazy_adam_guard(settings.optimizer, settings.embeddings_l2)

    require(paths.TRAIN, paths.USER_IDS, paths.MOVIE_IDS)
    train = pd.read_parquet(paths.TRAIN, columns=["user_index", "movie_index", "rating"])
    scale = train.attrs.get(paths.RATING_SCALE_ATTR)  # a custom table's (paths.RATING_SCALE_ATTR)
    n_users = len(pd.read_parquet(paths.USER_IDS))
    n_movies = len(pd.read_parquet(paths.MOVIE_IDS))
    log.info("training on %d ratings of %d users and %d movies", len(train), n_users, n_movies)
    prepare(settings.engine)
    start = time.perf_counter()
    with open_live(paths.LIVE_TRAIN) as live:
        fit = train_model(train, n_users, n_movies, settings, live=live, rating_scale=scale)
    seconds = time.perf_counter() - start
    processed = ratings_processed(fit, len(train), settings.validation_size)
    log.info(
        "fit took %.1f s (%.0f ratings/s) with the %s engine on %s, %d epochs in all",
        seconds, processed / seconds, fit.engine, fit.backend, fit.epochs_in_all,
    )  # fmt: skip
    save_model(fit.model, paths.MODEL)
    biases = fit_bias_model(train, n_users, n_movies, BiasSettings.from_params(section))
    save_bias_model(biases, paths.BASELINE)
    plot_model(fit.model, paths.MODEL_PLOT, paths.MODEL_DOT)
    write_json(paths.TRAIN_METRICS, summarize_fit(fit))


if __name__ == "__main__":
    run_stage(main)
