"""Cross-validation against the peers: every model on the crossvalidate stage's folds.

The folds are movielens.evaluation.crossvalidation.fold_splits with the crossvalidate params, so
our model's figures are the stage's; the peers fit the same folds, and the paired differences say
on how many folds ours is lower.
"""

from __future__ import annotations

import logging

import numpy as np

from benchmarks.engines import bench_ours
from benchmarks.names import OURS
from benchmarks.peers import bench_peer
from benchmarks.splits import Split, kept_ratings
from movielens.evaluation.crossvalidation import fold_means, fold_splits, mean_and_std

log = logging.getLogger(__name__)

FOLD_KEYS = ("rmse", "mae", "fit_seconds", "epochs")  # what each fold's row keeps


def cross_validation(params: dict, models: list[str]) -> dict:
    """Every model on the crossvalidate stage's folds: fitted on each fold's training part, scored
    on its held-out part (ours as the stage scores it, the peers with their own fallback)."""
    cv, split = params["crossvalidate"], params["preprocess"]["split"]
    ratings = kept_ratings()
    runs: dict[str, list[dict]] = {name: [] for name in models}
    history_size = params["preprocess"]["history_size"]
    folds = fold_splits(ratings, cv["folds"], cv["seed"], split, history_size=history_size)
    for k, parts in enumerate(folds, start=1):
        log.info("cross-validation: fold %d of %d", k, cv["folds"])
        fold = Split(parts.train, parts.test, parts.n_users, parts.n_movies)
        for name in models:
            if name == OURS:
                row = bench_ours(fold, params, batch_size=cv["batch_size"])
            else:
                row = bench_peer(name, fold, params["train"]["seed"])
            runs[name].append({"fold": k, **{key: row[key] for key in FOLD_KEYS}})
    return {
        "protocol": {
            "dataset": params["data"]["dataset"],
            "split": split,
            "folds": cv["folds"],
            "seed": cv["seed"],
            "ratings": len(ratings),
        },
        "models": {name: fold_summary(rows) for name, rows in runs.items()},
        **({"ours_minus_peer": paired_differences(runs)} if OURS in runs else {}),
    }


def fold_summary(rows: list[dict]) -> dict:
    """A model's folds with the mean and standard deviation of its RMSE and MAE over them."""
    return {
        **fold_means(rows, ("rmse", "mae")),
        "fit_seconds_mean": mean_and_std([row["fit_seconds"] for row in rows])["mean"],
        "per_fold": rows,
    }


def paired_differences(runs: dict[str, list[dict]]) -> dict:
    """Our RMSE minus each peer's, fold by fold: mean, std and on how many folds ours is lower."""
    ours = np.array([r["rmse"] for r in runs[OURS]])
    out = {}
    for name, rows in runs.items():
        if name == OURS:
            continue
        differences = ours - np.array([r["rmse"] for r in rows])
        stats = mean_and_std(differences.tolist())
        out[name] = {
            "rmse_differences": [round(float(d), 6) for d in differences],
            "rmse_mean": stats["mean"],
            "rmse_std": stats["std"],
            "folds_lower": int(np.sum(differences < 0)),
        }
    return out


def spread_beside_folds(result: dict, spread: dict) -> dict:
    """Our RMSE's std over the folds beside its std over the seed study's random splits."""
    return {
        "over_folds": result["models"][OURS]["rmse_std"],
        "over_random_splits": spread["rmse_std"],
        "random_splits": len(spread["seeds"]),
    }
