"""Top-N benchmark: the served ranking against the field's simple peers, on the pipeline's own split.

Run `make bench` (or `python -m benchmarks.bench_topn` after `dvc repro evaluate`). On the test
split of data/processed, with the evaluate stage's protocol (every movie rated in training left out,
relevant = a test rating >= evaluate.relevance_threshold, every user ranked), it scores:
popularity; EASE (Steck 2019) over a grid of its L2 weight on the whole catalogue; implicit's ALS
over a few settings; the pipeline's rating model alone (models/model.keras); the watch model alone
and the served combination, both with params.yaml's settings. It also measures which movie
representation gives better `similar` neighbours. Results: stdout and benchmarks/topn.json.

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

from benchmarks.library import like_weight, train_ours, watch_params, watch_settings
from benchmarks.machine import machine_info
from movielens.data.splits import held_out_mask
from movielens.evaluation.topn import popularity_factors, ranking_summary, ranking_table
from movielens.model.watch import WatchModel, fit_watch, history_matrix
from movielens.params import load_params
from movielens.plumbing import paths
from movielens.plumbing.errors import run_stage
from movielens.plumbing.files import write_json
from movielens.ranking.scorers import Scorer, scorer_of
from movielens.ranking.served import WatchScorer, served_ranker
from movielens.serve.load import load_movie_vectors, load_scorer

log = logging.getLogger(__name__)

RESULTS = Path("benchmarks/topn.json")
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


def timed_watch(history, settings: dict) -> tuple[WatchModel, float]:
    start = time.perf_counter()
    model = fit_watch(history, **settings)
    return model, time.perf_counter() - start


def score_rows(
    rankers: dict[str, Scorer], train, test, evaluate: dict, seconds: dict
) -> list[dict]:
    """One row per ranker: its ranking metrics on `test` and its fit seconds."""
    table = ranking_table(
        rankers, train, test, evaluate["k"], evaluate["relevance_threshold"], evaluate["block_size"]
    )
    rows = []
    for name, metrics in table.items():
        summary = ranking_summary(metrics)
        row = {"model": name, **{k: v for k, v in summary.items() if "@" in k}}
        rows.append({**row, "fit_seconds": round(seconds.get(name, float("nan")), 2)})
    return rows


def peers(history, params: dict, n_users: int, n_movies: int, train) -> tuple[dict, dict]:
    """Popularity, EASE over EASE_L2 and implicit's ALS over ALS_SETTINGS, whole catalogue."""
    rankers = {
        "most popular": popularity_factors(train["movie_index"].to_numpy(), n_users, n_movies)
    }
    seconds = {"most popular": 0.0}
    for l2 in EASE_L2:
        name = f"EASE (lambda {l2:g})"
        settings = watch_settings(params, model="ease", min_ratings=1, ease_l2=l2)
        model, seconds[name] = timed_watch(history, settings)
        rankers[name] = WatchScorer(model, history)
    for factors, regularization, alpha in ALS_SETTINGS:
        name = f"implicit ALS ({factors} factors, reg {regularization:g}, alpha {alpha:g})"
        settings = watch_settings(
            params, model="als", min_ratings=1, als_factors=factors,
            als_regularization=regularization, als_alpha=alpha,
        )  # fmt: skip
        model, seconds[name] = timed_watch(history, settings)
        rankers[name] = WatchScorer(model, history)
    return rankers, seconds


def bench(params: dict) -> dict:
    """Every ranker on the test split; the `similar` representations on held-out co-ratings."""
    train = pd.read_parquet(paths.TRAIN)
    test = pd.read_parquet(paths.TEST)
    n_users = len(pd.read_parquet(paths.USER_IDS))
    n_movies = len(pd.read_parquet(paths.MOVIE_IDS))
    history = history_matrix(train["user_index"], train["movie_index"], n_users, n_movies)
    rankers, seconds = peers(history, params, n_users, n_movies, train)
    rating = load_scorer(paths.MODEL, n_users, n_movies, params["evaluate"]["batch_size"])
    watch, seconds["watch model"] = timed_watch(history, watch_settings(params))
    ours = served_ranker(
        rating, watch, train["user_index"], train["movie_index"], like_weight(params)
    )
    seconds["served: watch x like"] = seconds["watch model"]
    rankers |= {"rating model": rating, "watch model": ours.watch, "served: watch x like": ours}
    rows = score_rows(rankers, train, test, params["evaluate"], seconds)
    vectors = load_movie_vectors(paths.MODEL, n_movies)
    similar = similar_quality(watch, vectors, history, train, test)
    return {
        "rows": rows,
        "similar": similar,
        "watch": watch_params(params),
        "ranking": params["ranking"],
    }


def similar_quality(watch: WatchModel, vectors, history, train, test) -> dict:
    """How good each representation's `similar` neighbours are, on movies with enough ratings.

    genre_jaccard: the mean Jaccard overlap of a movie's genres with its neighbours';
    held_out_corating: of the neighbours, the share that the movie's training raters rated in
    the test split (what people who watched it went on to watch).
    """
    movies = pd.read_parquet(paths.MOVIES).set_index("movieId")
    movie_ids = pd.read_parquet(paths.MOVIE_IDS)["movieId"].to_numpy()
    genres = [set(str(g).split("|")) for g in movies.reindex(movie_ids)["genres"].fillna("")]
    warm = test[(test["user_index"] >= 0) & (test["movie_index"] >= 0)]
    later = history_matrix(warm["user_index"], warm["movie_index"], *history.shape)
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
            raters = history[:, movie].nonzero()[0]
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


def format_rows(rows: list[dict], k: int) -> str:
    lines = [f"{'ranker':<58} {'NDCG':>7} {'prec':>7} {'recall':>7} {'cover':>7} {'fit s':>7}"]
    for row in rows:
        lines.append(
            f"{row['model']:<58} {row[f'ndcg@{k}']:>7.4f} {row[f'precision@{k}']:>7.4f} "
            f"{row[f'recall@{k}']:>7.4f} {row[f'coverage@{k}']:>7.4f} {row['fit_seconds']:>7.2f}"
        )
    return "\n".join(lines)


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
    print(format_rows(result["rows"], k))
    for name, row in result["similar"].items():
        print(f"similar by {name}: {row}")
    write_json(RESULTS, {"machine": machine_info(), "dataset": params["data"]["dataset"], **result})


if __name__ == "__main__":
    run_stage(main)
