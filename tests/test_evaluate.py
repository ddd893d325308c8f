"""Evaluation arithmetic on tiny inputs whose answers are worked out by hand."""

import numpy as np
import pandas as pd
import pytest

from movielens.evaluation.accuracy import mae, predict_folded, predict_with_fallback, rmse, scores
from movielens.evaluation.compare import Comparing
from movielens.evaluation.evaluate import (
    activity_buckets,
    folded_people,
    per_user_frame,
    rmse_by_activity,
    sample_rows,
)
from movielens.evaluation.topn import (
    popularity_factors,
    rank_folded_people,
    ranking_summary,
    ranking_table,
)
from movielens.model.baseline import BiasModel, fit_biases, predict_biases
from movielens.model.watch import fit_watch, history_matrix
from movielens.plumbing.errors import PipelineError
from movielens.ranking.foldin import FoldInSettings, folded_ranker, folded_ratings
from movielens.ranking.scorers import Factors


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


def tiny_folded_case():
    """Three trained users over five movies, two people folded in: person 0 (userId 7) gave
    movies 0 and 1 (and movie -1, which no model knows), person 1 (userId 9) gave movie 2."""
    train = pd.DataFrame(
        {"user_index": [0, 0, 0, 1, 1, 2, 2, 2], "movie_index": [0, 1, 2, 0, 3, 1, 2, 3]}
    )
    watch = fit_watch(
        history_matrix(train["user_index"], train["movie_index"], 3, 5),
        model="ease", min_ratings=1, ease_l2=1.0, ease_max_movies=100, als_factors=2,
        als_regularization=1.0, als_alpha=1.0, als_iterations=1, seed=0,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    factors = Factors(
        rng.normal(size=(3, 2)).astype(np.float32),
        rng.normal(size=(5, 2)).astype(np.float32),
        np.zeros(3, np.float32),
        np.array([0.5, 0.0, -0.5, 0.2, 0.1], np.float32),
        (0.5, 5.0),
    )
    history = pd.DataFrame(
        {"userId": [9, 7, 7, 7], "movie_index": [2, 0, 1, -1], "rating": [4.0, 5.0, 3.0, 4.0]}
    )
    test = pd.DataFrame(
        {"userId": [7, 7, 9, 9], "movie_index": [3, -1, 0, 4], "rating": [5.0, 2.0, 4.5, 1.0]}
    )
    return train, watch, factors, history, test


def test_folded_people_numbers_people_by_user_id_and_leaves_unknown_movies_out():
    _, _, _, history, test = tiny_folded_case()
    people, histories, targets, skipped = folded_people(history, test)
    assert people.tolist() == [7, 9] and histories.n_people == 2 and skipped == 1
    assert sorted(zip(histories.users.tolist(), histories.movies.tolist(), strict=True)) == [
        (0, 0),
        (0, 1),
        (1, 2),
    ]
    assert targets["user_index"].tolist() == [0, 0, 1, 1]
    with pytest.raises(PipelineError, match="without a history"):
        folded_people(history, pd.concat([test, test.assign(userId=8)]))


def test_folded_people_are_ranked_and_predicted_through_the_fold_in_path():
    train, watch, factors, history, test = tiny_folded_case()
    _, histories, targets, _ = folded_people(history, test)
    settings = FoldInSettings(embeddings_l2=0.0, activity_l2=0.1, n_fitted=len(train))
    served = folded_ranker(histories, factors, watch, 2.0, settings)
    ranking = rank_folded_people(
        served, histories, train["movie_index"].to_numpy(), targets, 3, 4.0, 1, None
    )
    assert list(ranking) == ["served", "model", "watch", "most_popular"]
    given = set(zip(histories.users.tolist(), histories.movies.tolist(), strict=True))
    for metrics in ranking.values():
        lists = metrics.lists
        assert lists.users.tolist() == [0, 1]
        listed = {
            (int(u), int(m))
            for u, row in zip(lists.users, lists.movies, strict=True)
            for m in row
            if m >= 0
        }
        assert not listed & given  # never a movie of the history
        # relevant (>= 4): person 0's movie 3, person 1's movie 0: both evaluated
        assert metrics.user_index.tolist() == [0, 1]
    # popularity: training counts 2, 2, 2, 2, 0 -> the lowest indices not given
    assert ranking["most_popular"].lists.movies.tolist() == [[2, 3, 4], [0, 1, 3]]
    biases = BiasModel(3.0, np.zeros(3), np.array([0.5, 0.0, -0.5, 0.2, 0.0]))
    predicted, baseline = predict_folded(served, biases, 1.0, histories, targets)
    # the cold movie (-1) gets the folded bias baseline, the others the folded rating model
    assert predicted[1] == baseline[1]
    np.testing.assert_allclose(
        predicted[[0, 2, 3]], folded_ratings(served, np.array([0, 1, 1]), np.array([3, 0, 4]))
    )
    # person 0's bias from known-movie residuals 5 - 3.5 and 3 - 3.0: 1.5 / (1 + 2)
    assert baseline[1] == pytest.approx(3.0 + 1.5 / 3)


def test_comparing_figures_compare_served_with_each_other_ranker():
    train, watch, factors, history, test = tiny_folded_case()
    _, histories, targets, _ = folded_people(history, test)
    settings = FoldInSettings(embeddings_l2=0.0, activity_l2=0.1, n_fitted=len(train))
    served = folded_ranker(histories, factors, watch, 2.0, settings)
    ranking = rank_folded_people(
        served, histories, train["movie_index"].to_numpy(), targets, 3, 4.0, 2, None
    )
    genres = np.array(["A|B", "A", "B", "(no genres listed)", "C"], dtype=object)
    comparing = Comparing.of(train["movie_index"], genres, 5, bootstrap_resamples=50, seed=1)
    figures = comparing.figures(ranking)
    block = figures["comparisons"]
    assert [key for key in block if "_vs_" in key] == [
        "served_vs_model", "served_vs_watch", "served_vs_most_popular",
    ]  # fmt: skip
    for name in ("model", "watch", "most_popular"):
        entry = block[f"served_vs_{name}"]
        expected = ranking["served"].ndcg.mean() - ranking[name].ndcg.mean()
        assert entry["mean_difference"] == pytest.approx(expected, abs=1e-6)
        assert entry["low"] <= entry["high"] and entry["users"] == 2
    assert block["metric"] == "ndcg@3" and block["level"] == 0.95
    assert set(figures["beyond_accuracy"]) == {"long_tail_movies", *ranking}
    popular = figures["beyond_accuracy"]["most_popular"]
    assert popular["average_popularity"] == pytest.approx(((2 + 2 + 0) / 3 + (2 + 2 + 2) / 3) / 2)


def test_per_user_frame_names_users_by_id_ranker_by_ranker():
    train, watch, factors, history, test = tiny_folded_case()
    people, histories, targets, _ = folded_people(history, test)
    settings = FoldInSettings(embeddings_l2=0.0, activity_l2=0.1, n_fitted=len(train))
    served = folded_ranker(histories, factors, watch, 2.0, settings)
    ranking = rank_folded_people(
        served, histories, train["movie_index"].to_numpy(), targets, 3, 4.0, 2, None
    )
    frame = per_user_frame(ranking, people)
    assert list(frame.columns) == ["userId", "ranker", "precision", "recall", "ndcg"]
    assert frame["userId"].tolist() == [7, 9] * 4
    assert frame["ranker"].tolist() == [n for n in ranking for _ in range(2)]
    served_rows = frame[frame["ranker"] == "served"]
    np.testing.assert_array_equal(served_rows["ndcg"], ranking["served"].ndcg)
