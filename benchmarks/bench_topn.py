"""Top-N benchmark: the served ranking against the field's simple peers, on the pipeline's own split.

Run `make bench` (or `python -m benchmarks.bench_topn` after `dvc repro evaluate`). On the test
split of data/processed, with the evaluate stage's protocol (every movie rated in training left out,
relevant = a test rating >= evaluate.relevance_threshold, evaluate.ranking_users ranked), it scores:
popularity; EASE (Steck 2019) over a grid of its L2 weight on the whole catalogue; implicit's ALS
over a few settings; the pipeline's rating model alone (models/model.keras); the watch model alone
and the served combination, both with params.yaml's settings. It also measures which movie
representation gives better `similar` neighbours. Each row carries the served list's mean per-user
NDCG@k lead over it with its paired bootstrap interval (the evaluate stage's comparisons). Under
preprocess.split=heldout_users the ranked users are the held-out people, each ranker given their
history (data/processed/history.parquet) as a served request gives it (benchmarks.audience).
Results: stdout and benchmarks/topn.json.

`--search` instead chooses the watch model's settings and ranking.like_weight on the validation part
(a random part of the training split, never the test split): the rating model is trained on the rest
with params.yaml's train settings, every candidate is scored on the validation part, and the best
are printed and written to benchmarks/search_topn.json.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.audience import Audience, audience_of
from benchmarks.library import like_weight, train_ours, watch_params, watch_settings
from benchmarks.machine import machine_info
from movielens.data.splits import held_out_mask
from movielens.evaluation.compare import comparisons
from movielens.evaluation.topn import popularity_factors, ranking_summary, ranking_table
from movielens.model.watch import WatchModel, fit_watch, history_matrix
from movielens.params import load_params
from movielens.plumbing import paths
from movielens.plumbing.errors import run_stage
from movielens.plumbing.files import write_json
from movielens.ranking.foldin import saved_fold_in_settings
from movielens.ranking.lists import sample_users
from movielens.ranking.scorers import Scorer, scorer_of
from movielens.ranking.served import WatchScorer, served_ranker
from movielens.serve.load import load_movie_vectors, load_scorer

log = logging.getLogger(__name__)

RESULTS = Path("benchmarks/topn.json")  # preprocess.split random's; another split's: results_path
SEARCH_RESULTS = Path("benchmarks/search_topn.json")
EASE_L2 = (50.0, 100.0, 200.0, 500.0, 1000.0)
ALS_SETTINGS = (  # (factors, regularization, alpha): the untuned default, then tuned ones
    (64, 0.01, 1.0),
    (128, 5.0, 1.0),
    (256, 20.0, 4.0),
)
MIN_RATINGS = (1, 5, 10)
LIKE_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0)
NEIGHBOURS = 10
PROBE_MIN_RATINGS = 20  # `similar` is measured on movies with at least this many training ratings
SERVED = "served: watch x like"  # the ranker every other row is compared with


def timed_watch(history, settings: dict) -> tuple[WatchModel, float]:
    start = time.perf_counter()
    model = fit_watch(history, **settings)
    return model, time.perf_counter() - start


def score_rows(
    rankers: dict[str, Scorer], given, targets, evaluate: dict, seconds: dict, users=None
) -> list[dict]:
    """One row per ranker: its ranking metrics on `targets` (the users `given` gives leave
    those movies out), its fit seconds and, with a SERVED ranker, SERVED's NDCG lead over it.

    Args:
        users: the users ranked (sample_users), None: all.
    """
    table = ranking_table(
        rankers, given, targets, evaluate["k"], evaluate["relevance_threshold"],
        evaluate["block_size"], users,
    )  # fmt: skip
    versus = {}
    if SERVED in table:
        versus = comparisons(table, SERVED, evaluate["bootstrap_resamples"], evaluate["seed"])
    rows = []
    for name, metrics in table.items():
        summary = ranking_summary(metrics)
        row = {"model": name, **{k: v for k, v in summary.items() if "@" in k}}
        row["users_evaluated"] = summary["users_evaluated"]
        if f"{SERVED}_vs_{name}" in versus:
            row["served_minus"] = versus[f"{SERVED}_vs_{name}"]
        rows.append({**row, "fit_seconds": round(seconds.get(name, float("nan")), 2)})
    return rows


def peers(history, params: dict, audience: Audience, train) -> tuple[dict, dict]:
    """Popularity, EASE over EASE_L2 and implicit's ALS over ALS_SETTINGS, whole catalogue, each
    fitted on the training `history` and ranking the audience's users from what they give."""
    n_movies = history.shape[1]
    rankers = {
        "most popular": popularity_factors(
            train["movie_index"].to_numpy(), audience.n_users, n_movies
        )
    }
    seconds = {"most popular": 0.0}
    for l2 in EASE_L2:
        name = f"EASE (lambda {l2:g})"
        settings = watch_settings(params, model="ease", min_ratings=1, ease_l2=l2)
        model, seconds[name] = timed_watch(history, settings)
        rankers[name] = audience.watch(model)
    for factors, regularization, alpha in ALS_SETTINGS:
        name = f"implicit ALS ({factors} factors, reg {regularization:g}, alpha {alpha:g})"
        settings = watch_settings(
            params, model="als", min_ratings=1, als_factors=factors,
            als_regularization=regularization, als_alpha=alpha,
        )  # fmt: skip
        model, seconds[name] = timed_watch(history, settings)
        rankers[name] = audience.watch(model)
    return rankers, seconds


def bench(params: dict) -> dict:
    """Every ranker on the test split; the `similar` representations on held-out co-ratings."""
    train = pd.read_parquet(paths.TRAIN)
    test = pd.read_parquet(paths.TEST)
    n_users = len(pd.read_parquet(paths.USER_IDS))
    n_movies = len(pd.read_parquet(paths.MOVIE_IDS))
    history = history_matrix(train["user_index"], train["movie_index"], n_users, n_movies)
    audience = audience_of(train, test, pd.read_parquet(paths.HISTORY), n_users, n_movies)
    rankers, seconds = peers(history, params, audience, train)
    rating = load_scorer(paths.MODEL, n_users, n_movies, params["evaluate"]["batch_size"])
    watch, seconds["watch model"] = timed_watch(history, watch_settings(params))
    fold_in = saved_fold_in_settings(paths.MODEL, paths.TRAIN_METRICS) if audience.folded else None
    ours = audience.served(rating, watch, like_weight(params), fold_in)
    seconds[SERVED] = seconds["watch model"]
    rankers |= {"rating model": ours.rating, "watch model": ours.watch, SERVED: ours}
    evaluate = params["evaluate"]
    users = sample_users(audience.n_users, evaluate["ranking_users"], evaluate["seed"])
    rows = score_rows(rankers, audience.given, audience.targets, evaluate, seconds, users)
    vectors = load_movie_vectors(paths.MODEL, n_movies)
    similar = similar_quality(watch, vectors, history, audience)
    return {
        "split": params["preprocess"]["split"],
        "users_ranked": audience.n_users if users is None else len(users),
        "folded_in": audience.folded,
        "rows": rows,
        "similar": similar,
        "watch": watch_params(params),
        "ranking": params["ranking"],
    }


def similar_quality(watch: WatchModel, vectors, history, audience: Audience) -> dict:
    """How good each representation's `similar` neighbours are, on movies with enough ratings.

    genre_jaccard: the mean Jaccard overlap of a movie's genres with its neighbours';
    held_out_corating: of the neighbours, the share that the audience's users who gave the movie
    (in training, or in a held-out person's history) rated in the test split (what people who
    watched it went on to watch), over the movies some of them gave.
    """
    movies = pd.read_parquet(paths.MOVIES).set_index("movieId")
    movie_ids = pd.read_parquet(paths.MOVIE_IDS)["movieId"].to_numpy()
    genres = [set(str(g).split("|")) for g in movies.reindex(movie_ids)["genres"].fillna("")]
    test = audience.targets
    warm = test[(test["user_index"] >= 0) & (test["movie_index"] >= 0)]
    later = history_matrix(warm["user_index"], warm["movie_index"], *audience.rows.shape)
    counts = np.asarray(history.sum(axis=0)).ravel()
    probe = np.flatnonzero(counts >= PROBE_MIN_RATINGS)
    probe = probe[np.isin(probe, watch.catalogue)]
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    ways = {
        "rating model embeddings (cosine)": lambda i: unit @ unit[i],
        "watch model": watch.similarity,
    }
    result = {}
    for name, similarity in ways.items():
        jaccard, corating = [], []
        for movie in probe:
            scores = np.asarray(similarity(movie), np.float64)
            scores[movie] = -np.inf
            near = np.argsort(-scores, kind="stable")[:NEIGHBOURS]
            jaccard.append(
                np.mean(
                    [len(genres[movie] & genres[j]) / len(genres[movie] | genres[j]) for j in near]
                )
            )
            raters = audience.rows[:, movie].nonzero()[0]
            if len(raters):
                corating.append(later[raters][:, near].sum() / (len(raters) * NEIGHBOURS))
        result[name] = {
            "genre_jaccard": round(float(np.mean(jaccard)), 4),
            "held_out_corating": round(float(np.mean(corating)), 5),
        }
    return {"movies": len(probe), "neighbours": NEIGHBOURS, **result}


def validation_split(params: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training split cut as the test split was (preprocess.split, test_size, seed): fit, validation."""
    train = pd.read_parquet(paths.TRAIN)
    prep = params["preprocess"]
    held = held_out_mask(train, prep["test_size"], prep["seed"], prep["split"])
    return train[~held].reset_index(drop=True), train[held].reset_index(drop=True)


def watch_candidates() -> list[dict]:
    """The watch settings the search tries: EASE and implicit's ALS over a small grid each."""
    ease = [
        {"model": "ease", "min_ratings": m, "ease_l2": l2}
        for m, l2 in itertools.product(MIN_RATINGS, EASE_L2[1:4])
    ]
    als = [
        {
            "model": "als",
            "min_ratings": m,
            "als_factors": f,
            "als_regularization": r,
            "als_alpha": a,
        }
        for m, (f, r, a) in itertools.product(MIN_RATINGS, ALS_SETTINGS)
    ]
    return ease + als


def search_watch(params: dict, history, fit_part, validation) -> tuple[list[dict], int]:
    """Every watch candidate's NDCG@k on the validation part; the rows and the best one's index."""
    evaluate = params["evaluate"]
    key = f"ndcg@{evaluate['k']}"
    rows = []
    for changes in watch_candidates():
        model, seconds = timed_watch(history, watch_settings(params, **changes))
        row = score_rows(
            {"watch": WatchScorer(model, history)}, fit_part, validation, evaluate, {}
        )[0]
        rows.append({**changes, key: row[key], "fit_seconds": round(seconds, 2)})
        log.info("%s: %s=%.4f", changes, key, row[key])
    return rows, max(range(len(rows)), key=lambda i: rows[i][key])


def search(params: dict) -> dict:
    """Choose the watch settings, then ranking.like_weight, by NDCG@k on the validation part."""
    fit_part, validation = validation_split(params)
    n_users = len(pd.read_parquet(paths.USER_IDS))
    n_movies = len(pd.read_parquet(paths.MOVIE_IDS))
    history = history_matrix(fit_part["user_index"], fit_part["movie_index"], n_users, n_movies)
    evaluate = params["evaluate"]
    key = f"ndcg@{evaluate['k']}"
    watch_rows, best = search_watch(params, history, fit_part, validation)
    fit = train_ours(fit_part, n_users, n_movies, params["train"])
    rating = scorer_of(fit.model, n_users, n_movies, evaluate["batch_size"])
    watch, _ = timed_watch(history, watch_settings(params, **watch_candidates()[best]))
    blend_rows = []
    for weight in LIKE_WEIGHTS:
        ranker = served_ranker(
            rating, watch, fit_part["user_index"], fit_part["movie_index"], weight
        )
        row = score_rows({"served": ranker}, fit_part, validation, evaluate, {})[0]
        blend_rows.append({"like_weight": weight, key: row[key]})
        log.info("like_weight %g: %s=%.4f", weight, key, row[key])
    return {
        "validation_pairs": len(validation),
        "watch": watch_rows,
        "best_watch": watch_rows[best],
        "like_weight": blend_rows,
        "best_like_weight": max(blend_rows, key=lambda row: row[key])["like_weight"],
    }


def served_lead(row: dict) -> str:
    """'+0.023 [+0.009, +0.038]': the served list's NDCG lead over a row, with its interval."""
    lead = row.get("served_minus")
    if lead is None:
        return ""
    return f"{lead['mean_difference']:+.3f} [{lead['low']:+.3f}, {lead['high']:+.3f}]"


def format_rows(rows: list[dict], k: int) -> str:
    lines = [
        f"{'ranker':<58} {'NDCG':>7} {'prec':>7} {'recall':>7} {'cover':>7} {'fit s':>7}"
        f"  served minus it [95 %]"
    ]
    for row in rows:
        lines.append(
            f"{row['model']:<58} {row[f'ndcg@{k}']:>7.4f} {row[f'precision@{k}']:>7.4f} "
            f"{row[f'recall@{k}']:>7.4f} {row[f'coverage@{k}']:>7.4f} {row['fit_seconds']:>7.2f}"
            f"  {served_lead(row)}"
        )
    return "\n".join(lines)


def results_path(split: str) -> Path:
    """Where a run on `split` writes: RESULTS for the default random split, so that a run under
    another protocol (topn-heldout_users.json, ...) sits beside it instead of replacing it."""
    return RESULTS if split == "random" else RESULTS.with_name(f"topn-{split}.json")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_topn", description=__doc__)
    parser.add_argument(
        "--search", action="store_true", help="choose settings on the validation part"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    params = load_params()
    k = params["evaluate"]["k"]
    if args.search:
        result = search(params)
        print(f"best watch model on the validation part: {result['best_watch']}")
        print(f"best ranking.like_weight: {result['best_like_weight']:g}")
        write_json(SEARCH_RESULTS, {"machine": machine_info(), **result})
        return
    result = bench(params)
    who = "held-out people folded in" if result["folded_in"] else "trained users"
    print(f"split {result['split']}: {result['users_ranked']} {who} ranked")
    print(format_rows(result["rows"], k))
    for name, row in result["similar"].items():
        print(f"similar by {name}: {row}")
    write_json(
        results_path(result["split"]),
        {"machine": machine_info(), "dataset": params["data"]["dataset"], **result},
    )


if __name__ == "__main__":
    run_stage(main)
