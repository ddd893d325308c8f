"""The project's metrics against scikit-learn's, the field's reference implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error, mean_squared_error, ndcg_score

from movielens.evaluation.accuracy import mae, rmse
from movielens.evaluation.ranking_metrics import ranking_metrics
from movielens.ranking.scorers import Factors


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rmse_and_mae_are_scikit_learns(seed):
    rng = np.random.default_rng(seed)
    actual = rng.choice(np.arange(0.5, 5.01, 0.5), size=1000)
    predicted = rng.uniform(0.5, 5.0, size=1000)
    assert rmse(actual, predicted) == pytest.approx(
        math.sqrt(mean_squared_error(actual, predicted)), abs=1e-6
    )
    assert mae(actual, predicted) == pytest.approx(mean_absolute_error(actual, predicted), abs=1e-6)


def random_factors(rng, n_users: int, n_movies: int, dim: int = 4) -> Factors:
    return Factors(
        rng.normal(size=(n_users, dim)).astype(np.float32),
        rng.normal(size=(n_movies, dim)).astype(np.float32),
        rng.normal(size=n_users).astype(np.float32),
        rng.normal(size=n_movies).astype(np.float32),
        (0.5, 5.0),
    )


@pytest.mark.parametrize(("seed", "k"), [(0, 5), (1, 10), (2, 3)])
def test_ndcg_at_k_is_scikit_learns_over_the_movies_not_rated_in_training(seed, k):
    """Per user: the candidates are the movies the user did not rate in training, the scores the
    model's, the gains 1 for a relevant test movie (rating >= 4) and 0 otherwise."""
    rng = np.random.default_rng(seed)
    n_users, n_movies = 17, 30
    factors = random_factors(rng, n_users, n_movies)
    pairs = rng.permutation(n_users * n_movies)[:300]
    users, movies = pairs // n_movies, pairs % n_movies
    ratings = rng.choice([1.0, 2.5, 4.0, 5.0], size=len(pairs))
    train, test = slice(0, 200), slice(200, None)
    result = ranking_metrics(
        factors, users[train], movies[train], users[test], movies[test], ratings[test], k, 4.0, 5
    )
    logits = factors.logits(np.arange(n_users))
    expected = {}
    for user in range(n_users):
        candidates = np.setdiff1d(np.arange(n_movies), movies[train][users[train] == user])
        liked = movies[test][(users[test] == user) & (ratings[test] >= 4.0)]
        if len(liked) == 0:
            continue
        gains = np.isin(candidates, liked).astype(float)
        expected[user] = ndcg_score([gains], [logits[user, candidates]], k=k)
    assert result.user_index.tolist() == sorted(expected)
    np.testing.assert_allclose(result.ndcg, [expected[u] for u in sorted(expected)], rtol=1e-9)
