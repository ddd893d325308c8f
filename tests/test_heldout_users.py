"""The held-out-users protocol (preprocess.split=heldout_users, "strong generalisation"): whole users
held out of training, each one's earliest ratings given as a history, the rest predicted; in the
test split (preprocess) and in the cross-validation folds (crossvalidate)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from movielens.data import preprocess
from movielens.data.splits import (
    assign_folds,
    fold_parts,
    held_out_mask,
    history_mask,
    split_hash,
)
from movielens.evaluation import crossvalidation
from movielens.evaluation.crossvalidation import fold_splits, predict_held_out_users
from movielens.model.baseline import BiasModel, BiasSettings
from movielens.model.foldin import fold_in_ratings
from movielens.model.layers import MOVIE_BIAS, MOVIE_EMBEDDING, USER_BIAS, USER_EMBEDDING
from movielens.params import validate_params
from movielens.plumbing.errors import PipelineError
from movielens.ranking.foldin import FoldInSettings
from movielens.training.settings import TrainSettings

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))


def ratings_table(n_users: int, n_movies: int, density: float, seed: int) -> pd.DataFrame:
    """Distinct (user, movie) pairs, every user with at least one rating and the last two with
    exactly one; few distinct timestamps, so many of a user's ratings tie in time."""
    rng = np.random.default_rng(seed)
    rated = rng.random((n_users, n_movies)) < density
    rated[-2:] = False
    rated[np.arange(n_users), rng.integers(0, n_movies, n_users)] = True
    users, movies = np.nonzero(rated)
    return pd.DataFrame(
        {
            "userId": (3 * users + 5).astype(np.int32),
            "movieId": (movies + 10).astype(np.int32),
            "rating": (rng.integers(1, 11, len(users)) / 2).astype(np.float32),
            "timestamp": rng.integers(0, 8, len(users)).astype(np.int64),
        }
    )


RATINGS = ratings_table(50, 40, 0.25, seed=0)


def pairs(frame: pd.DataFrame) -> set[tuple]:
    return set(zip(frame["userId"], frame["movieId"], strict=True))


def split(ratings=RATINGS, test_size=0.2, seed=42, history_size=0.8) -> preprocess.Preprocessed:
    return preprocess.preprocess(
        ratings, None, None, test_size, seed, "heldout_users", history_size=history_size
    )


def assert_history_comes_first(history: pd.DataFrame, test: pd.DataFrame, history_size: float):
    """Each user's history is their earliest max(1, round(history_size * n_u)) ratings in time
    order (ties by movieId), and every rating to predict comes after it."""
    both = pd.concat([history.assign(given=True), test.assign(given=False)])
    for _, mine in both.groupby("userId"):
        ordered = mine.sort_values(["timestamp", "movieId"])
        n_given = max(1, round(history_size * len(mine)))
        assert ordered["given"].tolist() == [True] * n_given + [False] * (len(mine) - n_given)


# ---------------------------------------------------------------------------- the test split


@pytest.mark.parametrize(("test_size", "history_size", "seed"), [(0.2, 0.8, 42), (0.3, 0.5, 7)])
def test_no_held_out_user_reaches_training(test_size, history_size, seed):
    result = split(test_size=test_size, seed=seed, history_size=history_size)
    held_out = set(result.history["userId"]) | set(result.test["userId"])
    users = np.unique(RATINGS["userId"])
    drawn = users[split_hash(seed, users) < test_size]  # a share of the users, not of the ratings
    assert held_out == set(drawn.tolist()) and 0 < len(drawn) < len(users)
    assert not held_out & set(result.train["userId"])
    assert set(result.test["userId"]) <= set(result.history["userId"])  # a history to fold in
    # every kept rating in exactly one file; a held-out user's every rating is held out
    parts = [pairs(result.train), pairs(result.history), pairs(result.test)]
    assert sum(map(len, parts)) == len(RATINGS) and set().union(*parts) == pairs(RATINGS)
    assert_history_comes_first(result.history, result.test, history_size)


def test_ids_are_encoded_on_the_training_users_and_movies_only():
    result = split()
    assert result.user_ids.tolist() == sorted(set(result.train["userId"]))
    assert result.movie_ids.tolist() == sorted(set(result.train["movieId"]))
    assert list(result.history.columns) == list(result.test.columns)
    assert result.history.dtypes.to_dict() == result.test.dtypes.to_dict()
    for frame in (result.history, result.test):
        assert (frame["user_index"] == -1).all() and frame["cold"].all()
        in_training = frame["movieId"].isin(result.movie_ids).to_numpy()
        movie_index = frame["movie_index"].to_numpy()
        assert (movie_index[~in_training] == -1).all()
        assert (result.movie_ids[movie_index[in_training]] == frame["movieId"][in_training]).all()


def test_a_held_out_user_with_one_rating_gives_only_a_history():
    single = RATINGS["userId"].value_counts().loc[lambda n: n == 1].index
    held = held_out_mask(RATINGS, 0.9, 3, "heldout_users")  # most users, the single ones too
    assert set(single) <= set(RATINGS["userId"][held])
    result = split(test_size=0.9, seed=3)
    assert set(single) <= set(result.history["userId"])
    assert not set(single) & set(result.test["userId"])


def test_the_held_out_users_are_seeded_and_do_not_depend_on_the_files_order():
    first, again, other = (held_out_mask(RATINGS, 0.2, seed, "heldout_users") for seed in (1, 1, 2))
    np.testing.assert_array_equal(first, again)
    assert (first != other).any()
    shuffled = RATINGS.sample(frac=1.0, random_state=3).reset_index(drop=True)
    for seed in (1, 2):
        users = set(RATINGS["userId"][held_out_mask(RATINGS, 0.2, seed, "heldout_users")])
        again = set(shuffled["userId"][held_out_mask(shuffled, 0.2, seed, "heldout_users")])
        assert users == again
    a, b = split(seed=5), split(shuffled, seed=5)
    assert pairs(a.history) == pairs(b.history) and pairs(a.test) == pairs(b.test)


def test_history_ties_in_time_go_by_movie():
    ratings = pd.DataFrame(
        {
            "userId": np.int32([1] * 5),
            "movieId": np.int32([40, 30, 20, 10, 50]),
            "rating": np.float32([4.0] * 5),
            "timestamp": np.int64([9, 5, 5, 5, 1]),
        }
    )  # in time order: 50 (t=1), then 10, 20, 30 (t=5, by movie), then 40
    given = history_mask(ratings, 0.6)  # round(0.6 * 5) = 3
    assert sorted(ratings["movieId"][given]) == [10, 20, 50]
    assert history_mask(ratings, 0.01).sum() == 1  # at least one
    assert history_mask(ratings, 1.0).all()


@pytest.mark.parametrize(
    ("ratings", "test_size", "history_size", "words"),
    [
        (RATINGS, 0.005, 0.8, "test_size=0.005 of 50 users holds out no user with preprocess.split=heldout_users"),
        (RATINGS, 0.995, 0.8, "test_size=0.995 of 50 users holds out every user, leaving no training ratings"),
        (RATINGS, 0.2, 1.0, "history_size=1.0 leaves no rating to predict with preprocess.split=heldout_users"),
        (RATINGS[RATINGS["userId"].isin([149, 152])], 0.7, 0.5, "the 1 held-out users' 1 ratings all go to their histories"),  # one rating each; seed 0 hashes 149 to 0.645, 152 to 0.777
    ],
)  # fmt: skip
def test_bad_combinations_are_refused_in_one_line(ratings, test_size, history_size, words):
    with pytest.raises(PipelineError, match=re.escape(words)) as caught:
        split(ratings, test_size=test_size, seed=0, history_size=history_size)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("value", "accepted"), [(0.8, True), (1.0, True), (0.01, True), (0.0, False), (1.2, False), ("0.8", False)]
)  # fmt: skip
def test_history_size_is_a_share_in_0_to_1(value, accepted):
    params = copy.deepcopy(PARAMS)
    params["preprocess"]["history_size"] = value
    if accepted:
        validate_params(params)
    else:
        with pytest.raises(
            PipelineError, match=r"preprocess.history_size=.* must be a number > 0.0"
        ):
            validate_params(params)


def test_other_splits_write_a_history_with_no_rows_and_the_same_test_split():
    for rule in ("random", "user", "time"):
        result = preprocess.preprocess(RATINGS, None, None, 0.2, 1, rule, history_size=0.5)
        train, test = preprocess.split_ratings(RATINGS, 0.2, 1, rule)
        assert len(result.history) == 0
        assert list(result.history.columns) == list(result.test.columns)
        assert pairs(result.test) == pairs(test) and pairs(result.train) == pairs(train)


# ---------------------------------------------------------------------------- the folds


@pytest.mark.parametrize("folds", [2, 5, 7])
def test_folds_hold_out_disjoint_user_groups_that_cover_every_user(folds):
    fold = assign_folds(RATINGS, folds, seed=4, split="heldout_users")
    users = RATINGS["userId"].to_numpy()
    groups = [set(users[fold == k]) for k in range(folds)]
    assert set().union(*groups) == set(users) and sum(map(len, groups)) == len(set(users))
    sizes = [len(g) for g in groups]
    assert max(sizes) - min(sizes) <= 1
    for k in range(folds):
        fitted, held_out = fold_parts(fold, k, "heldout_users")
        assert (fitted ^ held_out).all()  # every other user's rating trains
        assert set(users[held_out]) == groups[k] and not groups[k] & set(users[fitted])


def test_user_groups_are_seeded():
    first, again, other = (assign_folds(RATINGS, 5, seed, "heldout_users") for seed in (1, 1, 2))
    np.testing.assert_array_equal(first, again)
    assert (first != other).any()


def test_each_fold_gives_its_users_earliest_ratings_and_predicts_the_rest():
    fold = assign_folds(RATINGS, 4, seed=0, split="heldout_users")
    users = RATINGS["userId"].to_numpy()
    for k, (train, test, n_users, n_movies, history) in enumerate(
        fold_splits(RATINGS, 4, 0, "heldout_users", history_size=0.7)
    ):
        group = set(users[fold == k])
        assert set(history["userId"]) == group and set(test["userId"]) <= group
        assert not group & set(train["userId"])
        assert n_users == train["userId"].nunique() and n_movies == train["movieId"].nunique()
        assert len(train) + len(history) + len(test) == len(RATINGS)
        assert (history["user_index"] == -1).all() and (test["user_index"] == -1).all()
        assert_history_comes_first(history, test, 0.7)


# 3 users in 4 groups: group 4 is empty; 5 users: group 2 is user 152, who gives one rating.
@pytest.mark.parametrize(("users", "fold"), [([5, 8, 11], 4), ([5, 8, 11, 149, 152], 2)])
def test_a_fold_with_nothing_to_predict_is_refused(users, fold):
    words = f"preprocess.split=heldout_users leaves fold {fold} with no held-out ratings to predict"
    with pytest.raises(PipelineError, match=re.escape(words)):
        next(
            fold_splits(
                RATINGS[RATINGS["userId"].isin(users)], 4, 0, "heldout_users", history_size=0.8
            )
        )


def test_held_out_users_are_folded_in_from_their_own_known_history():
    """Each person's rating-model row is fold_in_ratings on their own ratings of known movies
    alone (a movie the model does not know is left out), predicted through Keras; the bias
    baseline's b_u is the ALS user step by hand; an unknown test movie gets the folded baseline."""
    from movielens.model.keras_model import build_model, predict_ratings

    scale, l2s, n_fitted, reg_users = (0.5, 5.0), (1e-4, 0.03), 200, 15.0
    model = build_model(3, 4, 2, *l2s, scale)
    rng = np.random.default_rng(0)
    tables = {name: rng.normal(0, 0.5, model.get_layer(name).get_weights()[0].shape)
              for name in (USER_EMBEDDING, USER_BIAS, MOVIE_EMBEDDING, MOVIE_BIAS)}  # fmt: skip
    for name, table in tables.items():
        model.get_layer(name).set_weights([table.astype(np.float32)])
    biases = BiasModel(3.5, np.zeros(3), np.array([0.2, -0.1, 0.3, 0.0]))
    history = pd.DataFrame(
        {"userId": [70, 9, 70, 70, 9], "movie_index": [0, 1, 2, -1, 3], "rating": [4.0, 2.0, 5.0, 1.0, 3.0]}
    )  # fmt: skip
    test = pd.DataFrame({"userId": [9, 70, 70], "movie_index": [0, 1, -1], "rating": [3.0] * 3})
    predicted, baseline = predict_held_out_users(
        model, biases, reg_users, FoldInSettings(*l2s, n_fitted), history, test
    )
    b_9 = ((2.0 - 3.5 + 0.1) + (3.0 - 3.5 - 0.0)) / (reg_users + 2)
    b_70 = ((4.0 - 3.5 - 0.2) + (5.0 - 3.5 - 0.3)) / (reg_users + 2)  # movie -1 left out
    np.testing.assert_allclose(baseline, [3.5 + b_9 + 0.2, 3.5 + b_70 - 0.1, 3.5 + b_70])
    assert predicted[2] == baseline[2]
    movie_vectors = tables[MOVIE_EMBEDDING].astype(np.float32)
    movie_bias = tables[MOVIE_BIAS][:, 0].astype(np.float32)
    for position, movies, ratings in ((0, [1, 3], [2.0, 3.0]), (1, [0, 2], [4.0, 5.0])):
        vector, bias = fold_in_ratings(
            movie_vectors, movie_bias, scale, np.zeros(2, int), np.array(movies), np.array(ratings), *l2s, n_fitted
        )  # fmt: skip
        model.get_layer(USER_EMBEDDING).set_weights([np.repeat(vector, 3, axis=0)])
        model.get_layer(USER_BIAS).set_weights([np.repeat(bias[:, None], 3, axis=0)])
        expected = predict_ratings(
            model, np.array([0]), test["movie_index"][position : position + 1].to_numpy(), 8
        )
        np.testing.assert_allclose(predicted[position], expected, rtol=1e-5)


def test_crossvalidate_scores_held_out_users_on_tiny_data():
    train_params = {
        **PARAMS["train"],
        "embedding_dim": 4,
        "epochs": 3,
        "patience": 2,
        "batch_size": 128,
    }
    result = crossvalidation.cross_validate(
        RATINGS, "heldout_users", folds=3, seed=5, batch_size=512,
        model_settings=TrainSettings.from_params(train_params),
        bias_settings=BiasSettings.from_params(train_params), history_size=0.8,
    )  # fmt: skip
    assert result["split"] == "heldout_users" and result["folds"] == 3
    rows = result["per_fold"]
    assert sum(row["train_ratings"] for row in rows) == 2 * len(RATINGS)  # each user trains twice
    given_and_predicted = sum(row["history_ratings"] + row["test_ratings"] for row in rows)
    assert given_and_predicted == len(RATINGS)  # each user held out once
    for row in rows:
        assert np.isfinite([row["rmse"], row["baseline_rmse"], row["mae"]]).all()
    assert list(result)[:2] == ["rmse_mean", "rmse_std"]
