"""The cross-validation stage: folds under each split rule, the scores, and agreement with evaluate."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from movielens.data.splits import NEVER_HELD_OUT, assign_folds, fold_parts
from movielens.evaluation import crossvalidation as crossvalidate
from movielens.evaluation.crossvalidation import fold_splits
from movielens.model.baseline import BiasSettings
from movielens.plumbing import paths
from movielens.plumbing.errors import PipelineError
from movielens.training.settings import TrainSettings
from stages import evaluate as evaluate_stage
from stages import train as train_stage
from stages import train_watch as train_watch_stage

ROOT = Path(__file__).resolve().parents[1]
TINY_TRAIN = {"embedding_dim": 4, "epochs": 3, "patience": 2, "batch_size": 256}


def ratings_table(n_users: int, n_movies: int, density: float, seed: int) -> pd.DataFrame:
    """Distinct (user, movie) pairs; user u rates about density * n_movies movies, at least one,
    and the last three users exactly one; few distinct timestamps, so many ratings tie in time."""
    rng = np.random.default_rng(seed)
    rated = rng.random((n_users, n_movies)) < density
    rated[-3:] = False
    rated[np.arange(n_users), rng.integers(0, n_movies, n_users)] = True
    users, movies = np.nonzero(rated)
    return pd.DataFrame(
        {
            "userId": (users + 1).astype(np.int32),
            "movieId": (movies + 10).astype(np.int32),
            "rating": (rng.integers(1, 11, len(users)) / 2).astype(np.float32),
            "timestamp": rng.integers(0, 30, len(users)).astype(np.int64),
        }
    )


RATINGS = ratings_table(40, 30, 0.3, seed=0)


def held_out_counts(fold: np.ndarray, folds: int) -> np.ndarray:
    """How many folds hold each rating out."""
    return sum((fold == k).astype(int) for k in range(folds))


@pytest.mark.parametrize("folds", [2, 5, 7])
def test_random_folds_partition_the_ratings(folds):
    fold = assign_folds(RATINGS, folds, seed=1, split="random")
    assert (held_out_counts(fold, folds) == 1).all()  # every rating in exactly one held-out fold
    sizes = np.bincount(fold, minlength=folds)
    assert sizes.max() - sizes.min() <= 1
    for k in range(folds):
        fitted, held_out = fold_parts(fold, k, "random")
        assert (fitted ^ held_out).all()  # the rest trains


def test_folds_are_seeded():
    for split in ("random", "user"):
        first, again, other = (assign_folds(RATINGS, 5, seed, split) for seed in (1, 1, 2))
        np.testing.assert_array_equal(first, again)
        assert (first != other).any()


def test_user_folds_keep_every_held_out_user_in_training():
    folds = 4
    fold = assign_folds(RATINGS, folds, seed=3, split="user")
    per_user = RATINGS.groupby("userId").size()
    single = RATINGS["userId"].map(per_user).to_numpy() == 1
    assert single.any() and (fold[single] == NEVER_HELD_OUT).all()
    assert (held_out_counts(fold, folds)[~single] == 1).all()
    users = RATINGS["userId"].to_numpy()
    for k in range(folds):
        fitted, held_out = fold_parts(fold, k, "user")
        assert (fitted ^ held_out).all()
        assert set(users[held_out]) <= set(users[fitted])
        # dealt round-robin: each user has floor(n_u / K) or ceil(n_u / K) ratings in each fold
        n_u = per_user.loc[users[held_out]].to_numpy()
        in_fold = pd.Series(users[held_out]).value_counts().loc[users[held_out]].to_numpy()
        assert ((in_fold == n_u // folds) | (in_fold == -(-n_u // folds))).all()


def test_time_folds_are_expanding_windows_that_never_test_the_past():
    folds = 5
    fold = assign_folds(RATINGS, folds, seed=0, split="time")
    t = RATINGS["timestamp"].to_numpy()
    first_block = fold == NEVER_HELD_OUT
    assert abs(first_block.sum() - len(RATINGS) / (folds + 1)) < 1
    assert (held_out_counts(fold, folds)[~first_block] == 1).all()
    fitted_sizes = []
    for k in range(folds):
        fitted, held_out = fold_parts(fold, k, "time")
        assert not (fitted & held_out).any()
        assert t[held_out].min() >= t[fitted].max()
        fitted_sizes.append(fitted.sum())
    assert fitted_sizes == sorted(fitted_sizes) and len(set(fitted_sizes)) == folds


def test_time_folds_break_ties_by_user_then_movie_not_by_seed_or_file_order():
    shuffled = RATINGS.sample(frac=1.0, random_state=4).reset_index(drop=True)

    def held_out_pairs(ratings, seed):
        fold = assign_folds(ratings, 3, seed, "time")
        return [
            set(zip(ratings["userId"][fold == k], ratings["movieId"][fold == k], strict=True))
            for k in range(3)
        ]

    assert held_out_pairs(shuffled, 0) == held_out_pairs(RATINGS, 0) == held_out_pairs(RATINGS, 7)


def test_fold_ids_are_encoded_on_the_training_part_only():
    for fitted, held_out, n_users, n_movies, history in fold_splits(
        RATINGS, 5, 0, "time", history_size=0.8
    ):
        assert len(history) == 0  # a history is heldout_users' only
        assert n_users == fitted["userId"].nunique() and n_movies == fitted["movieId"].nunique()
        cold_user = ~held_out["userId"].isin(fitted["userId"])
        assert ((held_out["user_index"] < 0) == cold_user).all()
        assert (held_out["cold"] == cold_user | ~held_out["movieId"].isin(fitted["movieId"])).all()
        assert fitted["user_index"].max() == n_users - 1


@pytest.mark.parametrize(
    ("split", "ratings", "folds", "words"),
    [
        ("random", RATINGS[:4], 5, "crossvalidate.folds=5 with preprocess.split=random leaves fold 5 with no held-out ratings (4 ratings kept)"),
        ("time", RATINGS[:5], 5, "preprocess.split=time leaves fold 5 with no held-out ratings (5 ratings kept)"),  # 6 blocks of 5
        ("user", RATINGS.drop_duplicates("userId"), 2, "preprocess.split=user leaves fold 1 with no held-out ratings"),
    ],
)  # fmt: skip
def test_a_fold_that_would_be_empty_is_refused(split, ratings, folds, words):
    with pytest.raises(PipelineError, match=re.escape(words)):
        next(fold_splits(ratings, folds, 0, split, history_size=0.8))


def test_scores_and_their_mean_and_std_are_the_hand_computed_ones():
    rows = [
        {"fold": 1, **crossvalidate.fold_scores(np.array([1.0, 2.0]), np.array([1.0, 4.0]), np.array([2.0, 2.0]))},
        {"fold": 2, **crossvalidate.fold_scores(np.array([3.0]), np.array([3.5]), np.array([4.0]))},
    ]  # fmt: skip
    # fold 1: errors 0, 2 -> RMSE sqrt(2), MAE 1; baseline errors 1, 0 -> sqrt(1/2), 0.5
    # fold 2: error 0.5 -> RMSE 0.5, MAE 0.5; baseline 1, 1
    assert rows[0]["rmse"] == round(math.sqrt(2), 6) and rows[0]["mae"] == 1.0
    assert rows[0]["baseline_rmse"] == round(math.sqrt(0.5), 6)
    assert rows[0]["rmse_difference"] == round(math.sqrt(2) - math.sqrt(0.5), 6)
    summary = crossvalidate.summarize(rows, "random")
    rmse_1, rmse_2 = round(math.sqrt(2), 6), 0.5
    assert summary["rmse_mean"] == round((rmse_1 + rmse_2) / 2, 6)
    assert summary["rmse_std"] == round(abs(rmse_1 - rmse_2) / math.sqrt(2), 6)  # ddof=1
    assert summary["mae_mean"] == 0.75 and summary["mae_std"] == round(0.25 * math.sqrt(2), 6)
    baseline = summary["user_movie_biases"]
    assert baseline["rmse_mean"] == round((round(math.sqrt(0.5), 6) + 1.0) / 2, 6)
    difference = summary["model_minus_user_movie_biases"]
    d_1, d_2 = round(math.sqrt(2) - math.sqrt(0.5), 6), -0.5
    assert difference["rmse_mean"] == round((d_1 + d_2) / 2, 6)
    assert difference["rmse_std"] == round(abs(d_1 - d_2) / math.sqrt(2), 6)
    assert difference["rmse_folds_lower"] == 1
    assert list(summary)[:2] == ["rmse_mean", "rmse_std"]
    assert summary["folds"] == 2 and summary["per_fold"] == rows


def tiny_params() -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["train"].update(TINY_TRAIN)
    return params


def write_fold(fold: crossvalidate.Fold, params: dict, root: Path) -> None:
    """A fold as the preprocess stage writes data/processed, and params.yaml, in `root`."""
    (root / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    (root / paths.PROCESSED_DIR).mkdir(parents=True)
    fold.train.to_parquet(root / paths.TRAIN)
    fold.test.to_parquet(root / paths.TEST)
    fold.history.to_parquet(root / paths.HISTORY)  # no rows but under heldout_users
    pd.DataFrame({"userId": np.sort(fold.train["userId"].unique())}).to_parquet(
        root / paths.USER_IDS
    )
    movie_ids = np.sort(fold.train["movieId"].unique())
    pd.DataFrame({"movieId": movie_ids}).to_parquet(root / paths.MOVIE_IDS)
    movies = np.sort(RATINGS["movieId"].unique())
    titles = [f"Movie {m}" for m in movies]
    genres = ["Drama" if m % 2 else "Comedy|Drama" for m in movies]
    pd.DataFrame({"movieId": movies, "title": titles, "genres": genres}).to_parquet(
        root / paths.MOVIES
    )


@pytest.mark.slow
@pytest.mark.parametrize("split", ["user", "heldout_users"])
def test_each_fold_scores_what_the_train_and_evaluate_stages_give(tmp_path, monkeypatch, split):
    """Fold 2 of a 3-fold run, written as data/processed and run through train_stage.main and
    evaluate_stage.main, gets the same model and baseline scores as cross_validate gave it; under
    heldout_users evaluate folds the fold's held-out users in from their histories as the fold did."""
    params = tiny_params()
    result = crossvalidate.cross_validate(
        RATINGS,
        split,
        folds=3,
        seed=5,
        batch_size=512,
        model_settings=TrainSettings.from_params(params["train"]),
        bias_settings=BiasSettings.from_params(params["train"]),
        history_size=0.8,
    )
    assert [row["fold"] for row in result["per_fold"]] == [1, 2, 3]
    assert result["folds"] == 3 and result["split"] == split

    fold = list(fold_splits(RATINGS, 3, 5, split, history_size=0.8))[1]
    assert (len(fold.history) > 0) == (split == "heldout_users")
    write_fold(fold, params, tmp_path)
    monkeypatch.chdir(tmp_path)
    train_stage.main()
    train_watch_stage.main()
    evaluate_stage.main()
    scores = json.loads(paths.SCORES.read_text(encoding="utf-8"))
    row = result["per_fold"][1]
    assert (row["rmse"], row["mae"]) == (scores["rmse"], scores["mae"])
    baseline = scores["baselines"]["user_movie_biases"]
    assert (row["baseline_rmse"], row["baseline_mae"]) == (baseline["rmse"], baseline["mae"])
    assert row["test_ratings"] == scores["test_pairs"] and row["cold_pairs"] == scores["cold_pairs"]
