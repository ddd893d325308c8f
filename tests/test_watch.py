"""The will-watch model and the served blend, on tiny data whose answer is known."""

from __future__ import annotations

import inspect
from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp

from movielens.model.watch import (
    check_ease_size,
    fit_ease,
    fit_watch,
    history_matrix,
    load_watch,
    save_watch,
)
from movielens.params import params_schema
from movielens.plumbing.errors import PipelineError
from movielens.ranking.lists import top_lists
from movielens.ranking.scorers import Factors
from movielens.ranking.served import Ranker, WatchScorer, blend

BLOCK_USERS, BLOCK_MOVIES = 12, 6
SETTINGS = {
    "min_ratings": 1,
    "ease_l2": 1.0,
    "ease_max_movies": 100,
    "als_factors": 2,  # the two blocks: rank 2 is the structure, more would fit each user's gap
    "als_regularization": 0.1,
    "als_alpha": 10.0,
    "als_iterations": 15,
    "seed": 0,
}


def two_blocks() -> tuple[sp.csr_matrix, np.ndarray]:
    """Users 0-11 watch movies 0-5 only, users 12-23 movies 6-11 only; each user leaves one out.

    Returns the history and, for each user, the movie of its own block it has not watched.
    """
    users, movies, left_out = [], [], []
    for block in range(2):
        for i in range(BLOCK_USERS):
            user = block * BLOCK_USERS + i
            own = range(block * BLOCK_MOVIES, (block + 1) * BLOCK_MOVIES)
            skip = own[i % BLOCK_MOVIES]
            left_out.append(skip)
            for movie in own:
                if movie != skip:
                    users.append(user)
                    movies.append(movie)
    history = history_matrix(np.array(users), np.array(movies), 2 * BLOCK_USERS, 2 * BLOCK_MOVIES)
    return history, np.array(left_out)


@pytest.mark.parametrize("model", ["ease", "als"])
def test_the_watch_model_ranks_the_unwatched_movie_of_the_users_block_first(model):
    history, left_out = two_blocks()
    watch = fit_watch(history, model, **SETTINGS)
    users = np.arange(history.shape[0])
    rated = history.nonzero()
    lists = top_lists(WatchScorer(watch, history), users, rated, k=1, block_size=5)
    np.testing.assert_array_equal(lists.movies[:, 0], left_out)


@pytest.mark.parametrize("model", ["ease", "als"])
def test_movies_of_the_same_block_are_the_most_similar(model):
    history, _ = two_blocks()
    watch = fit_watch(history, model, **SETTINGS)
    for movie in (0, 7):
        similarity = watch.similarity(movie)
        own = set(range(0, BLOCK_MOVIES) if movie < BLOCK_MOVIES else range(BLOCK_MOVIES, 12))
        others = np.argsort(-similarity, kind="stable")
        others = [m for m in others if m != movie]
        assert set(others[: BLOCK_MOVIES - 1]) == own - {movie}


def test_ease_is_the_closed_form_with_a_zero_diagonal():
    history = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1]], np.float32))
    weights = fit_ease(history, ease_l2=2.0)
    gram = history.T.toarray() @ history.toarray() + 2.0 * np.eye(3)
    # B minimises ||X - XB||^2 + 2 ||B||^2 subject to diag(B) = 0: column j is the ridge
    # regression of movie j on the other movies.
    for j in range(3):
        others = [i for i in range(3) if i != j]
        x = history.toarray()
        ridge = np.linalg.solve(gram[np.ix_(others, others)], x[:, others].T @ x[:, j])
        np.testing.assert_allclose(weights[others, j], ridge, rtol=1e-5)
    np.testing.assert_array_equal(np.diag(weights), 0.0)
    assert weights.dtype == np.float32


def test_movies_with_too_few_ratings_get_no_watch_score():
    history, _ = two_blocks()
    extra = history_matrix(np.array([0]), np.array([12]), 24, 13)  # movie 12: one rating
    history = sp.csr_matrix(sp.hstack([history, sp.csr_matrix((24, 1))])) + extra
    watch = fit_watch(history, "ease", **{**SETTINGS, "min_ratings": 2})
    assert 12 not in watch.catalogue and len(watch.catalogue) == 12
    assert not watch.scores(np.arange(24), history)[:, 12].any()
    assert watch.similarity(12) is None


def test_an_ease_catalogue_over_the_limit_is_refused_naming_the_fix():
    with pytest.raises(
        PipelineError, match=r"ease on 30000 movies needs about 21\.6 GB.*watch\.model=als"
    ):
        check_ease_size(30_000, ease_max_movies=20_000)
    check_ease_size(20_000, ease_max_movies=20_000)


@pytest.mark.parametrize("model", ["ease", "als"])
def test_fitting_twice_saves_the_same_bytes_and_loads_back(tmp_path, model):
    history, _ = two_blocks()
    paths = [tmp_path / f"{i}.npz" for i in range(2)]
    for path in paths:
        save_watch(fit_watch(history, model, **SETTINGS), path)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    loaded = load_watch(paths[0], 24, 12)
    assert loaded.kind == model
    with pytest.raises(PipelineError, match="has 24 users and 12 movies but data/processed has 25"):
        load_watch(paths[0], 25, 12)


def test_blend_is_monotone_in_each_input():
    values = np.array([-1.0, 0.0, 0.1, 0.5, 1.0, 3.0], np.float32)
    likes = np.array([0.0, 0.1, 0.5, 0.9, 1.0], np.float32)
    for weight in (0.0, 1.0, 2.5):
        grid = blend(values[:, None], likes[None, :], weight)  # rows: watch, columns: like
        assert (np.diff(grid, axis=0) >= 0).all() and (np.diff(grid, axis=1) >= 0).all()
        positive = grid[values > 0][:, likes > 0]
        assert (np.diff(positive, axis=0) > 0).all()  # strictly, where the other input is positive
        if weight > 0:
            assert (np.diff(positive, axis=1) > 0).all()
    np.testing.assert_allclose(blend(np.float32(2.0), np.float32(0.5), 2.0), 0.5)
    assert blend(np.float32(-3.0), np.float32(0.9), 1.0) == 0.0


def test_the_served_ranking_lets_the_predicted_rating_reorder_likely_movies():
    history, _ = two_blocks()
    user = 0  # left out movie 0; forget its movie 1 too, so two of its block's movies are unwatched
    history = history.tolil()
    history[user, 1] = 0
    history = history.tocsr()
    history.eliminate_zeros()
    watch = fit_watch(history, "ease", **SETTINGS)
    scores = watch.scores([user], history)[0]
    likely, other = (0, 1) if scores[0] > scores[1] else (1, 0)
    assert scores[other] > 0 and scores[likely] > scores[other]
    # A rating model that predicts a low rating for the likelier movie and a high one for the other.
    logits = np.zeros((12, 24), np.float32)
    logits[likely, user], logits[other, user] = -3.0, 3.0
    rating = Factors(
        np.eye(24, dtype=np.float32),
        logits,
        np.zeros(24, np.float32),
        np.zeros(12, np.float32),
        (0.5, 5.0),
    )
    rated = history.nonzero()
    first = {
        weight: top_lists(Ranker(WatchScorer(watch, history), rating, weight), [user], rated, 1, 1)
        for weight in (0.0, 3.0)
    }
    assert first[0.0].movies[0, 0] == likely  # watch alone
    assert first[3.0].movies[0, 0] == other  # the predicted rating reorders the likely movies


def test_the_watch_section_of_params_is_fit_watchs_arguments_key_for_key():
    """train_watch passes the section whole (fit_watch(history, **section)): a key the fit does not
    take (as like_weight once was) belongs to another section."""
    fit_arguments = set(inspect.signature(fit_watch).parameters) - {"history"}
    assert set(params_schema()["watch"]) == fit_arguments
    assert "like_weight" in params_schema()["ranking"]


def test_ease_folded_in_scores_a_history_row_exactly_as_the_trained_user():
    history, _ = two_blocks()
    watch = fit_watch(history, "ease", **SETTINGS)
    users = np.array([5, 20, 0])
    rows = sp.csr_matrix(history[users])
    folded = watch.fold_in(rows)
    assert folded.n_users == 3 and folded.n_movies == watch.n_movies
    np.testing.assert_array_equal(folded.scores(np.arange(3), rows), watch.scores(users, history))


def als_user_step(item_factors, row, regularization, alpha):
    """The exact ALS user step for a binary row, written out: implicit 0.7.3 scales the matrix by
    alpha, so a rated item has confidence alpha (preference 1), an unrated one confidence 1
    (preference 0): (Y^T C Y + reg I) x = Y^T C p."""
    y = item_factors.astype(np.float64)
    confidence = np.where(row > 0, alpha, 1.0)
    system = (y.T * confidence) @ y + regularization * np.eye(y.shape[1])
    return np.linalg.solve(system, y.T @ (confidence * (row > 0)))


def test_als_folded_in_solves_each_persons_factors_against_the_fixed_item_factors():
    history, _ = two_blocks()
    watch = fit_watch(history, "als", **SETTINGS)
    users = np.array([3, 14])
    rows = sp.csr_matrix(history[users])
    folded = watch.fold_in(rows)
    assert folded.user_factors.shape == (2, SETTINGS["als_factors"])
    for person, user in enumerate(users):
        exact = als_user_step(
            watch.item_weights, rows[person].toarray()[0], SETTINGS["als_regularization"],
            SETTINGS["als_alpha"],
        )  # fmt: skip
        np.testing.assert_allclose(folded.user_factors[person], exact, rtol=1e-4, atol=1e-5)
        # The trained factors came from a few conjugate-gradient steps before the last item
        # step moved the item factors a little: within 3 % of the exact step (measured: 1.3 %).
        assert np.linalg.norm(watch.user_factors[user] - exact) < 0.03 * np.linalg.norm(exact)
    np.testing.assert_allclose(
        folded.scores(np.arange(2), rows), watch.scores(users, history), rtol=0.05, atol=0.02
    )


def test_the_als_settings_fold_in_needs_are_saved_and_ease_files_hold_what_they_did(tmp_path):
    history, _ = two_blocks()
    for model in ("ease", "als"):
        path = tmp_path / f"{model}.npz"
        save_watch(fit_watch(history, model, **SETTINGS), path)
        with np.load(path) as saved:
            members = set(saved.files)
        loaded = load_watch(path, 24, 12)
        rows = sp.csr_matrix(history[[1, 2]])
        if model == "ease":
            assert members == {"kind", "catalogue", "shape", "item_weights", "user_factors"}
        else:
            assert (loaded.als_regularization, loaded.als_alpha) == (0.1, 10.0)
            np.testing.assert_array_equal(
                loaded.fold_in(rows).user_factors,
                fit_watch(history, model, **SETTINGS).fold_in(rows).user_factors,
            )
    older = replace(load_watch(tmp_path / "als.npz", 24, 12), als_regularization=None)
    with pytest.raises(PipelineError, match=r"without its settings.*dvc repro train_watch"):
        older.fold_in(rows)
