"""The crossvalidate stage: fit and score the model on K folds of the kept ratings, beside the bias baseline."""

from __future__ import annotations

import logging
from functools import partial

import pandas as pd

from movielens.model.baseline import BiasSettings
from movielens.params import load_params
from movielens.plumbing import paths
from movielens.plumbing.errors import require, run_stage
from movielens.plumbing.files import write_json
from movielens.training.backend import use_backend
from movielens.training.live import log_fold, open_live
from movielens.training.settings import TrainSettings

log = logging.getLogger(__name__)


def main() -> None:
    params = load_params()
    cv = params["crossvalidate"]
    model_settings = TrainSettings.from_params(params["train"])
    use_backend(model_settings.backend)  # before Keras is imported: the modules below import it
    from movielens.evaluation.crossvalidation import cross_validate
    from movielens.training.fit import prepare

    split, history_size = params["preprocess"]["split"], params["preprocess"]["history_size"]
    require(paths.RATINGS)
    ratings = pd.read_parquet(paths.RATINGS)
    log.info("%d-fold cross-validation (split=%s) of %d ratings", cv["folds"], split, len(ratings))
    prepare(model_settings.engine)
    with open_live(paths.LIVE_CV) as live:
        result = cross_validate(
            ratings,
            split,
            folds=cv["folds"],
            seed=cv["seed"],
            batch_size=cv["batch_size"],
            model_settings=model_settings,
            bias_settings=BiasSettings.from_params(params["train"]),
            on_fold=partial(log_fold, live),
            history_size=history_size,
            rating_scale=ratings.attrs.get(paths.RATING_SCALE_ATTR),  # a custom table's
        )
    write_json(paths.CV_METRICS, result)
    log.info(
        "model RMSE %.4f +- %.4f over %d folds; bias baseline %.4f; model - baseline %.4f +- %.4f",
        result["rmse_mean"],
        result["rmse_std"],
        result["folds"],
        result["user_movie_biases"]["rmse_mean"],
        result["model_minus_user_movie_biases"]["rmse_mean"],
        result["model_minus_user_movie_biases"]["rmse_std"],
    )


if __name__ == "__main__":
    logging.getLogger("movielens.training").setLevel(logging.WARNING)  # a line a fold, not an epoch
    run_stage(main)
