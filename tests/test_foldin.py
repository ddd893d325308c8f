"""Fold-in: the rating model's user row fitted to a history, the bias baseline's user step, and the
served ranking of people the models never saw, on tiny data whose answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.optimize import minimize
from scipy.special import expit

import movielens.model.foldin as foldin
from movielens.model.baseline import BiasModel, fit_biases
from movielens.model.foldin import (
    BIAS_LIMIT,
    fold_in_biases,
    fold_in_ratings,
    regularisation_of,
    user_l2,
)
from movielens.model.watch import fit_watch, history_matrix
from movielens.plumbing.errors import PipelineError
from movielens.ranking.foldin import (
    FoldInSettings,
    Histories,
    folded_bias_ratings,
    folded_lists,
    folded_ranker,
    folded_ratings,
)
from movielens.ranking.scorers import Factors
from movielens.ranking.served import Ranker, blend, like_fraction, served_ranker

SCALE = (0.5, 5.0)
STARS = np.arange(0.5, 5.01, 0.5)


def loss(theta, vectors, bias, ratings, l2):
    """The fold-in objective, written apart from the module: squared errors + l2 * ||u||^2."""
    lo, hi = SCALE
    predicted = lo + (hi - lo) * expit(vectors @ theta[:-1] + theta[-1] + bias)
    return np.sum((predicted - ratings) ** 2) + l2 * np.sum(theta[:-1] ** 2)


def brute_force(vectors, bias, ratings, l2, bounds=None):
    """scipy's L-BFGS-B on `loss` from several starts, tolerances at float64's limit: the minimum."""
    dim = vectors.shape[1]
    best = None
    for start in (np.zeros(dim + 1), np.full(dim + 1, 0.3), np.r_[np.full(dim, -0.3), 1.0]):
        found = minimize(
            loss, start, args=(vectors, bias, ratings, l2), method="L-BFGS-B", bounds=bounds,
            options={"ftol": 1e-15, "gtol": 1e-11, "maxiter": 20_000, "maxcor": 30},
        )  # fmt: skip
        best = found if best is None or found.fun < best.fun else best
    return best


def random_problem(seed: int):
    rng = np.random.default_rng(seed)
    n_movies, dim = 40, int(rng.integers(2, 9))
    vectors = rng.normal(0, 0.5, (n_movies, dim)).astype(np.float32)
    bias = rng.normal(0, 0.4, n_movies).astype(np.float32)
    n = int(rng.integers(1, 30))
    movies = rng.choice(n_movies, n, replace=False)
    return vectors, bias, movies, rng.choice(STARS, n)


def test_user_l2_is_the_training_loss_summed_over_an_epoch():
    # activity: 0.03 per look-up, 10 look-ups; whole table: 1e-4 per step, B * S = 5000 ratings
    assert user_l2(1e-4, 0.03, 10, 5000) == pytest.approx(0.03 * 10 + 1e-4 * 5000)
    np.testing.assert_allclose(user_l2(0.0, 0.5, np.array([0, 2]), 99), [0.0, 1.0])


@pytest.mark.parametrize("seed", range(8))
def test_fold_in_finds_the_brute_force_optimum_of_the_same_loss(seed):
    vectors, bias, movies, ratings = random_problem(seed)
    l2s = (1e-3, 0.05, 1000)
    u, b = fold_in_ratings(vectors, bias, SCALE, np.zeros(len(movies)), movies, ratings, *l2s)
    args = (vectors[movies].astype(np.float64), bias[movies].astype(np.float64), ratings)
    l2 = float(user_l2(l2s[0], l2s[1], len(movies), l2s[2]))
    best = brute_force(*args, l2)
    ours = loss(np.r_[u[0], b[0]].astype(np.float64), *args, l2)
    # The returned row is float32: its rounding (~1e-7 relative) is all that may separate them.
    assert ours <= best.fun + 1e-9 * (1 + best.fun)
    np.testing.assert_allclose(np.r_[u[0], b[0]], best.x, atol=2e-5)


def test_several_people_are_each_fitted_as_alone_and_one_without_ratings_gets_zeros():
    vectors, bias, movies, ratings = random_problem(0)
    half = len(movies) // 2
    users = np.r_[np.full(half, 2), np.zeros(len(movies) - half, int)]  # person 1 has none
    together = fold_in_ratings(vectors, bias, SCALE, users, movies, ratings, 1e-3, 0.05, 1000)
    for person in (0, 2):
        mine = users == person
        alone = fold_in_ratings(
            vectors,
            bias,
            SCALE,
            np.zeros(mine.sum()),
            movies[mine],
            ratings[mine],
            1e-3,
            0.05,
            1000,
        )
        np.testing.assert_array_equal(together[0][person], alone[0][0])
        assert together[1][person] == alone[1][0]
    assert not together[0][1].any() and together[1][1] == 0.0


def test_every_kept_step_lowers_the_objective(monkeypatch):
    kept = []
    original = foldin._objective

    def recording(theta, *args):
        value = original(theta, *args)
        if args[-1] == 2:  # the solver evaluates the derivatives at each point it keeps
            kept.append(value[0])
        return value

    monkeypatch.setattr(foldin, "_objective", recording)
    vectors, bias, movies, ratings = random_problem(3)
    fold_in_ratings(vectors, bias, SCALE, np.zeros(len(movies)), movies, ratings, 1e-3, 0.05, 1000)
    assert len(kept) > 2 and np.all(np.diff(kept) < 0)


@pytest.mark.parametrize("rating", [5.0, 0.5])
def test_a_history_all_at_one_end_of_the_scale_pins_the_bias_at_its_limit(rating):
    """Unregularised, such a bias has no finite optimum; the fold-in bounds it by BIAS_LIMIT."""
    vectors, bias, movies, _ = random_problem(1)
    ratings = np.full(len(movies), rating)
    u, b = fold_in_ratings(vectors, bias, SCALE, np.zeros(len(movies)), movies, ratings, 0, 0.1, 1)
    assert b[0] == pytest.approx(np.sign(rating - 2.75) * BIAS_LIMIT)
    args = (vectors[movies].astype(np.float64), bias[movies].astype(np.float64), ratings)
    l2 = float(user_l2(0, 0.1, len(movies), 1))
    bounds = [(None, None)] * vectors.shape[1] + [(-BIAS_LIMIT, BIAS_LIMIT)]
    best = brute_force(*args, l2, bounds)
    assert loss(np.r_[u[0], b[0]].astype(np.float64), *args, l2) <= best.fun + 1e-9
    predicted = Factors(u, vectors, b, bias, SCALE).ratings(u[0] @ vectors[movies].T + b[0])
    assert np.abs(predicted - rating).max() < 0.15


def test_movies_or_people_outside_the_tables_and_nan_ratings_are_refused():
    vectors, bias, _, _ = random_problem(0)
    with pytest.raises(ValueError, match="movie indices"):
        fold_in_ratings(vectors, bias, SCALE, [0], [len(vectors)], [3.0], 0, 0.1, 1)
    with pytest.raises(ValueError, match=r"numbered 0\.\.0"):
        fold_in_ratings(vectors, bias, SCALE, [1], [0], [3.0], 0, 0.1, 1, n_people=1)
    with pytest.raises(ValueError, match="finite"):
        fold_in_ratings(vectors, bias, SCALE, [0], [0], [np.nan], 0, 0.1, 1)
    with pytest.raises(ValueError, match="finite"):
        fold_in_biases(BiasModel(3.0, np.zeros(1), bias), 1.0, [0], [0], [np.inf])


def test_fold_in_biases_is_the_user_step_of_the_baselines_als():
    model = BiasModel(3.0, np.zeros(5), np.array([0.5, -0.5, 0.0]))
    got = fold_in_biases(model, 2.0, [0, 0, 1], [0, 1, 0], [4.0, 3.0, 2.0], n_people=3)
    # person 0: ((4 - 3 - 0.5) + (3 - 3 + 0.5)) / (2 + 2); person 1: (2 - 3 - 0.5) / (2 + 1)
    np.testing.assert_allclose(got, [0.25, -0.5, 0.0])


def test_fold_in_biases_gives_back_the_trained_users_biases_at_the_fixed_point():
    rng = np.random.default_rng(0)
    users, movies = rng.integers(0, 15, 300), rng.integers(0, 20, 300)
    ratings = rng.choice(STARS, 300)
    mu, b_u, b_m = fit_biases(users, movies, ratings, 15, 20, 5.0, 3.0, iterations=300)
    got = fold_in_biases(BiasModel(mu, b_u, b_m), 5.0, users, movies, ratings, n_people=15)
    np.testing.assert_allclose(got, b_u, atol=1e-10)
    history = Histories.of(users, movies, ratings, 15)
    predicted = folded_bias_ratings(BiasModel(mu, b_u, b_m), 5.0, history, [3, 3], [7, -1])
    np.testing.assert_allclose(predicted, [mu + b_u[3] + b_m[7], mu + b_u[3]], atol=1e-10)


def test_regularisation_of_reads_the_l2s_from_the_saved_models_config(tmp_path):
    from movielens.model.keras_model import build_model
    from movielens.model.saving import save_model

    for l2s in [(5e-5, 0.03), (0.0, 0.0)]:
        path = tmp_path / f"{l2s[0]}.keras"
        save_model(build_model(4, 5, 3, *l2s, SCALE), path)
        assert regularisation_of(path) == pytest.approx(l2s)
    (tmp_path / "bad.keras").write_text("not a zip")
    with pytest.raises(PipelineError, match=r"bad\.keras cannot be loaded"):
        regularisation_of(tmp_path / "bad.keras")


def training_ratings(n_users=20, n_movies=30, n=600, seed=3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    pairs = pd.DataFrame({"u": rng.integers(0, n_users, n), "m": rng.integers(0, n_movies, n)})
    users, movies = pairs.drop_duplicates().to_numpy().T  # one rating per pair, as MovieLens
    taste = rng.normal(size=(n_users, 2))[users] * rng.normal(size=(n_movies, 2))[movies]
    ratings = np.clip(np.round((3 + taste.sum(axis=1)) * 2) / 2, 0.5, 5.0)
    return pd.DataFrame(
        {
            "user_index": users.astype(np.int32),
            "movie_index": movies.astype(np.int32),
            "rating": ratings.astype(np.float32),
        }
    )


def test_a_trained_user_folded_in_from_its_own_ratings_predicts_as_the_trained_user():
    """The tables trained to near convergence are a stationary point of the training loss, so each
    trained user's row is the fold-in optimum of its own ratings with the movie tables fixed.

    Two steps an epoch (batch 195 of 389 ratings), so the whole-table L2 is counted per step, and a
    small learning rate for 1500 epochs: Adam then sits within ~0.003 rating of the stationary
    point (measured: 0.0023 at most over every user x movie). The tolerance, 0.01, is far below
    what a wrong L2 weight gives (0.19 with the whole-table term left out)."""
    from movielens.ranking.scorers import factors_from_model
    from movielens.training.fit import train_model
    from movielens.training.settings import TrainSettings

    train = training_ratings()
    settings = TrainSettings(
        backend="tensorflow", engine="compiled", shard_tables=False, refit=False,
        embedding_dim=4, epochs=1500, batch_size=195, learning_rate=0.002, optimizer="adam",
        embeddings_l2=2e-3, activity_l2=0.05, validation_size=0.0, patience=2, seed=7,
    )  # fmt: skip
    fit = train_model(train, 20, 30, settings)
    assert fit.fitted_ratings == len(train) == 389
    trained = factors_from_model(fit.model)
    history = Histories.of(train["user_index"], train["movie_index"], train["rating"], 20)
    rules = FoldInSettings(settings.embeddings_l2, settings.activity_l2, fit.fitted_ratings)
    watch = fit_watch(history.rows(30), "ease", 1, 1.0, 100, 2, 0.1, 1.0, 1, 0)
    folded = folded_ranker(history, trained, watch, 1.0, rules).rating
    people = np.arange(20)
    gap = np.abs(trained.ratings(trained.logits(people)) - folded.ratings(folded.logits(people)))
    assert gap.max() < 0.01
    wrong = folded_ranker(history, trained, watch, 1.0, FoldInSettings(0.0, 0.05, 389)).rating
    assert (
        np.abs(trained.ratings(trained.logits(people)) - wrong.ratings(wrong.logits(people))).max()
        > 0.1
    )


def served_problem(seed=0):
    """A watch model fitted on 30 users' histories and a rating model's tables (random)."""
    rng = np.random.default_rng(seed)
    n_users, n_movies, dim = 30, 25, 3
    mask = rng.random((n_users, n_movies)) < 0.3
    users, movies = np.nonzero(mask)
    ratings = rng.choice(STARS, len(users)).astype(np.float32)
    history = history_matrix(users, movies, n_users, n_movies)
    watch = fit_watch(history, "ease", 1, 5.0, 100, 2, 0.1, 1.0, 1, 0)
    factors = Factors(
        rng.normal(0, 0.5, (n_users, dim)).astype(np.float32),
        rng.normal(0, 0.5, (n_movies, dim)).astype(np.float32),
        rng.normal(0, 0.3, n_users).astype(np.float32),
        rng.normal(0, 0.3, n_movies).astype(np.float32),
        SCALE,
    )
    return users, movies, ratings, history, watch, factors


def test_a_person_with_a_trained_users_history_gets_its_watch_scores_and_no_history_movie():
    users, movies, ratings, history, watch, factors = served_problem()
    chosen = np.array([4, 17, 9])  # people 0, 1, 2 are these users, in this order
    keep = np.isin(users, chosen)
    people = np.searchsorted(np.sort(chosen), users[keep])
    people = np.argsort(chosen)[people]
    histories = Histories.of(people, movies[keep], ratings[keep], 3)
    rules = FoldInSettings(1e-3, 0.05, len(users))
    ranker = folded_ranker(histories, factors, watch, 2.0, rules)
    assert isinstance(ranker, Ranker)
    trained = served_ranker(factors, watch, users, movies, 2.0)
    np.testing.assert_array_equal(ranker.watch.scores(np.arange(3)), trained.watch.scores(chosen))
    lists = folded_lists(ranker, histories, k=10, block_size=2)
    for person, user in enumerate(chosen):
        listed = lists.movies[person][lists.movies[person] >= 0]
        assert len(listed) and not set(listed) & set(history[user].indices)


def test_the_folded_ranker_scores_with_the_served_formula():
    users, movies, ratings, _, watch, factors = served_problem(1)
    histories = Histories.of(users, movies, ratings, 30)
    ranker = folded_ranker(histories, factors, watch, 3.0, FoldInSettings(1e-3, 0.05, len(users)))
    rating = ranker.rating
    people = np.arange(30)
    like = like_fraction(rating.ratings(rating.logits(people)), SCALE)
    np.testing.assert_array_equal(
        ranker.scores(people), blend(ranker.watch.scores(people), like, 3.0)
    )
    # The same Ranker as the served one over trained users whose rows are the folded rows.
    served = served_ranker(rating, watch, users, movies, 3.0)
    np.testing.assert_array_equal(ranker.scores(people), served.scores(people))
    predicted = folded_ratings(ranker, users[:5], movies[:5])
    np.testing.assert_allclose(
        predicted,
        served.rating.ratings(served.rating.logits(people))[users[:5], movies[:5]],
        rtol=1e-6,
    )


def test_histories_give_the_binary_rows_the_watch_model_scores():
    histories = Histories.of([0, 0, 2, 2], [1, 3, 0, 0], [4.0, 2.5, 3.0, 3.0], 4)
    assert histories.users.dtype == np.int64 and histories.ratings.dtype == np.float32
    rows = histories.rows(5)
    assert isinstance(rows, sp.csr_matrix) and rows.shape == (4, 5)
    np.testing.assert_array_equal(
        rows.toarray(), [[0, 1, 0, 1, 0], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]]
    )
