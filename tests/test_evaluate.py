"""Evaluation arithmetic on tiny inputs whose answers are worked out by hand."""

import numpy as np
import pandas as pd
import pytest

from movielens.evaluation.accuracy import mae, predict_with_fallback, rmse, scores
from movielens.evaluation.evaluate import activity_buckets, rmse_by_activity, sample_rows
from movielens.evaluation.topn import popularity_factors, ranking_summary, ranking_table
from movielens.model.baseline import fit_biases, predict_biases


def test_rmse_and_mae_by_hand():
    actual, predicted = np.array([1.0, 2.0, 3.0]), np.array([1.0, 3.0, 5.0])
    assert rmse(actual, predicted) == pytest.approx(np.sqrt(5 / 3))  # errors 0, 1, 2
    assert mae(actual, predicted) == pytest.approx(1.0)
    assert np.isnan(rmse(np.array([]), np.array([])))


def test_fit_biases_reaches_the_ridge_solution():
    users = np.array([0, 0, 1, 1, 2, 2, 2])
    movies = np.array([0, 1, 0, 2, 1, 2, 0])
    ratings = np.array([4.0, 3.0, 5.0, 2.0, 1.0, 3.5, 4.5])
    reg_u, reg_m = 2.0, 3.0
    mu, b_u, b_m = fit_biases(users, movies, ratings, 3, 3, reg_u, reg_m, iterations=500)
    # Closed form: minimise |r - mu - X b|^2 + reg_u |b_u|^2 + reg_m |b_m|^2.
    x = np.zeros((len(ratings), 6))
    x[np.arange(len(ratings)), users] = 1
    x[np.arange(len(ratings)), 3 + movies] = 1
    penalty = np.diag([reg_u] * 3 + [reg_m] * 3)
    b = np.linalg.solve(x.T @ x + penalty, x.T @ (ratings - ratings.mean()))
    assert mu == pytest.approx(ratings.mean())
    np.testing.assert_allclose(np.concatenate([b_u, b_m]), b, atol=1e-8)


def test_predict_biases_ignores_the_unknown_side_of_cold_pairs():
    b_u, b_m = np.array([0.5, -0.5]), np.array([1.0, -1.0])
    out = predict_biases(3.0, b_u, b_m, np.array([0, -1, 1, -1]), np.array([1, 0, -1, -1]))
    np.testing.assert_allclose(out, [2.5, 4.0, 2.5, 3.0])


def test_cold_pairs_get_the_fallback_and_the_model_sees_warm_pairs_only():
    seen = []

    def model_predict(u, m):
        seen.append((u.copy(), m.copy()))
        return np.full(len(u), 9.0)

    out = predict_with_fallback(
        model_predict, np.array([1.0, 2.0, 3.0]), np.array([0, -1, 2]), np.array([1, 1, -1])
    )
    np.testing.assert_array_equal(out, [9.0, 2.0, 3.0])
    np.testing.assert_array_equal(seen[0][0], [0])


def test_activity_buckets_are_labelled_by_lower_bound():
    labels = activity_buckets(np.array([0, 19, 20, 49, 50, 1000]), [20, 50])
    assert labels.tolist() == ["<20", "<20", "20-49", "20-49", ">=50", ">=50"]


def test_rmse_by_activity_groups_in_bucket_order():
    actual = np.array([3.0, 3.0, 4.0, 4.0])
    predicted = np.array([4.0, 3.0, 4.0, 2.0])
    table = rmse_by_activity(actual, predicted, np.array([5, 5, 100, 100]), [20, 50])
    assert table["user_activity"].tolist() == ["<20", ">=50"]
    np.testing.assert_allclose(table["rmse"], [np.sqrt(0.5), np.sqrt(2.0)], rtol=1e-5)
    assert table["test_pairs"].tolist() == [2, 2]


@pytest.mark.parametrize(
    ("n", "limit", "expected"), [(3, 5, [0, 1, 2]), (5, 3, [0, 2, 4]), (0, 3, [])]
)
def test_sample_rows_is_even_and_deterministic(n, limit, expected):
    assert sample_rows(n, limit).tolist() == expected


def test_scores_table():
    table = scores(np.array([1.0, 3.0]), {"a": np.array([2.0, 3.0])})
    assert table == {"a": {"rmse": round(np.sqrt(0.5), 6), "mae": 0.5}}


def test_most_popular_ranks_by_training_count_and_names_metrics_by_k():
    train = pd.DataFrame({"user_index": [0, 0, 1, 1, 2], "movie_index": [0, 1, 0, 2, 0]})
    factors = popularity_factors(train["movie_index"].to_numpy(), n_users=3, n_movies=4)
    np.testing.assert_array_equal(factors.logits(np.array([0]))[0], [3, 1, 1, 0])
    # User 2 has not rated movies 1-3; its top-1 by count is movie 1 (tie with 2: lower index).
    test = pd.DataFrame({"user_index": [2], "movie_index": [1], "rating": [5.0]})
    params = {"k": 1, "relevance_threshold": 4.0, "block_size": 2}
    metrics = ranking_table({"most_popular": factors}, train, test, **params)["most_popular"]
    table = ranking_summary(metrics)
    assert table["precision@1"] == 1.0 and table["recall@1"] == 1.0 and table["ndcg@1"] == 1.0
    assert "relevance_threshold" not in table
