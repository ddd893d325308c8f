"""Tests for top-k lists with ties (movielens.ranking.lists) and the ranking metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from movielens.evaluation.ranking_metrics import ranking_metrics
from movielens.plumbing.errors import PipelineError
from movielens.ranking.lists import top_k
from movielens.ranking.scorers import Factors


def scored(scores: np.ndarray, user_bias=None, movie_bias=None) -> Factors:
    """Factors whose logits are exactly `scores` (+ biases): user vectors = scores, movies = I."""
    n_users, n_movies = scores.shape
    return Factors(
        np.asarray(scores, np.float32),
        np.eye(n_movies, dtype=np.float32),
        np.zeros(n_users, np.float32) if user_bias is None else np.asarray(user_bias, np.float32),
        np.zeros(n_movies, np.float32)
        if movie_bias is None
        else np.asarray(movie_bias, np.float32),
        (0.5, 5.0),
    )


# 3 users x 5 movies; all scores are exact in float32 comparisons that matter (distinct or equal).
SCORES = np.array(
    [
        [0.9, 0.8, 0.7, 0.6, 0.5],  # user 0
        [0.1, 0.2, 0.3, 0.4, 0.5],  # user 1
        [0.5, 0.9, 0.5, 0.1, 0.5],  # user 2: a three-way tie at 0.5 (movies 0, 2, 4)
    ]
)
TRAIN_USERS, TRAIN_MOVIES = np.array([0, 1, 2]), np.array([0, 4, 1])
# (user, movie, rating); -1 is a movie unseen in training.
TEST = np.array(
    [
        (0, 2, 5.0),  # user 0: relevant {2, 4}; movie 3 rated 2.0 is not relevant
        (0, 4, 4.0),
        (0, 3, 2.0),
        (0, -1, 5.0),  # relevant but cold: dropped and counted
        (1, 3, 4.5),  # user 1: relevant {0, 1, 3}, three > k = 2
        (1, 0, 4.0),
        (1, 1, 4.0),
        (2, 2, 3.0),  # user 2: nothing relevant, so not evaluated
    ]
)
TEST_USERS, TEST_MOVIES = TEST[:, 0].astype(int), TEST[:, 1].astype(int)
LOG2_3 = np.log2(3.0)


def metrics(k: int, block_size: int = 2, factors: Factors | None = None):
    return ranking_metrics(
        scored(SCORES) if factors is None else factors,
        TRAIN_USERS,
        TRAIN_MOVIES,
        TEST_USERS,
        TEST_MOVIES,
        TEST[:, 2],
        k=k,
        relevance_threshold=4.0,
        block_size=block_size,
    )


def test_top_k_sorts_and_breaks_ties_by_lower_index():
    scores = np.array([[1.0, 3.0, 2.0, 3.0, 0.0], [5.0, 5.0, 5.0, 5.0, 5.0]])
    np.testing.assert_array_equal(top_k(scores, 3), [[1, 3, 2], [0, 1, 2]])


def test_top_k_pads_rows_without_enough_candidates():
    scores = np.array([[-np.inf, 2.0, -np.inf, 1.0]])
    np.testing.assert_array_equal(top_k(scores, 3), [[1, 3, -1]])
    np.testing.assert_array_equal(top_k(scores, 9), [[1, 3, -1, -1]])  # k capped at n_items


def test_top_k_matches_a_full_sort_on_many_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(50, 30)).astype(np.float64)  # ties everywhere
    expected = np.stack([np.lexsort((np.arange(30), -row))[:7] for row in scores])
    np.testing.assert_array_equal(top_k(scores, 7), expected)


@pytest.mark.parametrize("seed", range(40))
def test_top_k_of_one_row_matches_a_full_sort(seed):
    """One row (a served list) takes the shortcut above its mean: runs of equal scores, -inf
    masks, all-equal and nearly all-masked rows must still give the full sort's answer."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    row = rng.integers(0, int(rng.integers(1, 5)), size=n).astype(np.float64)
    row[rng.random(n) < rng.random()] = -np.inf
    k = int(rng.integers(1, n + 1))
    expected = np.lexsort((np.arange(n), -row))[:k]
    expected = np.where(row[expected] == -np.inf, -1, expected)
    np.testing.assert_array_equal(top_k(row[None, :], k)[0], expected)


def test_top_k_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        top_k(np.array([[1.0, np.nan]]), 1)


def test_metrics_at_k2_match_hand_computed_values():
    # Training movies are excluded, so the top-2 lists are
    #   user 0: scores of 1..4 = .8 .7 .6 .5 -> [1, 2]; relevant {2, 4}: hit at rank 2 only.
    #     precision 1/2, recall 1/2, DCG = 1/log2(3), IDCG = 1 + 1/log2(3) (min(2, 2) = 2 relevant).
    #   user 1: scores of 0..3 = .1 .2 .3 .4 -> [3, 2]; relevant {0, 1, 3}: hit at rank 1 only.
    #     precision 1/2, recall 1/3, DCG = 1, IDCG = 1 + 1/log2(3) (min(2, 3) = 2).
    #   user 2: movie 1 excluded, tie .5 on 0, 2, 4 -> [0, 2]; no relevant movie, not evaluated.
    # Coverage: {1, 2} | {3, 2} | {0, 2} = 4 distinct of 5 movies.
    result = metrics(k=2)
    ideal = 1 + 1 / LOG2_3
    np.testing.assert_array_equal(result.user_index, [0, 1])
    np.testing.assert_allclose(result.precision, [1 / 2, 1 / 2])
    np.testing.assert_allclose(result.recall, [1 / 2, 1 / 3])
    np.testing.assert_allclose(result.ndcg, [(1 / LOG2_3) / ideal, 1 / ideal])
    assert result.coverage == pytest.approx(4 / 5)
    summary = result.summary()
    assert summary["precision"] == pytest.approx(0.5, abs=1e-6)
    assert summary["recall"] == pytest.approx((1 / 2 + 1 / 3) / 2, abs=1e-6)
    assert summary["ndcg"] == pytest.approx(((1 / LOG2_3) / ideal + 1 / ideal) / 2, abs=1e-6)
    assert summary["users_evaluated"] == 2
    assert summary["users_without_relevant"] == 1
    assert summary["relevant_cold_pairs"] == 1


def test_ideal_dcg_uses_min_of_k_and_relevant_count():
    # k = 3. User 0: [1, 2, 3], hit at rank 2; 2 relevant < k so IDCG = 1 + 1/log2(3).
    # User 1: [3, 2, 1], hits at ranks 1 and 3; IDCG over min(3, 3) = 3: 1 + 1/log2(3) + 1/2.
    # User 2: [0, 2, 4]. Coverage {0, 1, 2, 3, 4} = 5/5.
    result = metrics(k=3)
    np.testing.assert_allclose(result.precision, [1 / 3, 2 / 3])
    np.testing.assert_allclose(result.recall, [1 / 2, 2 / 3])
    np.testing.assert_allclose(
        result.ndcg,
        [(1 / LOG2_3) / (1 + 1 / LOG2_3), (1 + 1 / 2) / (1 + 1 / LOG2_3 + 1 / 2)],
    )
    assert result.coverage == 1.0


def test_biases_enter_the_ranking():
    # A large bias on movie 3 puts it first for every user who has not rated it.
    factors = scored(SCORES, movie_bias=[0, 0, 0, 10, 0])
    result = metrics(k=1, factors=factors)
    # user 0: [3], not relevant; user 1: [3], relevant (1 of 3).
    np.testing.assert_allclose(result.precision, [0, 1])
    np.testing.assert_allclose(result.recall, [0, 1 / 3])
    assert result.coverage == pytest.approx(1 / 5)


def reference_metrics(scores, train, relevant, k):
    """Loop-per-user reference: full sort by (-score, index) after dropping training movies."""
    out = {}
    for user, row in enumerate(scores):
        rel = {m for u, m in relevant if u == user}
        if not rel:
            continue
        seen = {m for u, m in train if u == user}
        ranked = [m for m in np.lexsort((np.arange(len(row)), -row)) if m not in seen][:k]
        gains = [1.0 if m in rel else 0.0 for m in ranked]
        dcg = sum(g / np.log2(r + 2) for r, g in enumerate(gains))
        idcg = sum(1 / np.log2(r + 2) for r in range(min(k, len(rel))))
        out[user] = (sum(gains) / k, sum(gains) / len(rel), dcg / idcg)
    return out


@pytest.fixture(scope="module")
def random_case():
    rng = np.random.default_rng(7)
    n_users, n_movies, dim = 23, 40, 4
    factors = Factors(
        rng.normal(size=(n_users, dim)).astype(np.float32),
        rng.normal(size=(n_movies, dim)).astype(np.float32),
        rng.normal(size=n_users).astype(np.float32),
        rng.normal(size=n_movies).astype(np.float32),
        (0.5, 5.0),
    )
    pairs = rng.permutation(n_users * n_movies)[:400]
    users, movies = pairs // n_movies, pairs % n_movies
    ratings = rng.choice([1.0, 2.5, 4.0, 5.0], size=len(pairs))
    test_users, test_movies = users[300:].copy(), movies[300:].copy()
    test_movies[:5] = -1  # cold pairs
    return factors, (users[:300], movies[:300]), (test_users, test_movies, ratings[300:])


@pytest.mark.parametrize("block_size", [1, 4, 23, 1000])
def test_blocks_of_any_size_give_identical_results(random_case, block_size):
    factors, train, test = random_case
    base = ranking_metrics(factors, *train, *test, k=5, relevance_threshold=4.0, block_size=7)
    other = ranking_metrics(
        factors, *train, *test, k=5, relevance_threshold=4.0, block_size=block_size
    )
    for name in ("user_index", "precision", "recall", "ndcg"):
        np.testing.assert_array_equal(getattr(other, name), getattr(base, name))
    assert other.summary() == base.summary()


def test_vectorised_metrics_match_a_per_user_loop(random_case):
    factors, train, (test_users, test_movies, ratings) = random_case
    result = ranking_metrics(factors, *train, test_users, test_movies, ratings, 5, 4.0, 6)
    keep = (ratings >= 4.0) & (test_movies >= 0)
    expected = reference_metrics(
        factors.logits(np.arange(factors.n_users)),
        list(zip(*train, strict=True)),
        list(zip(test_users[keep], test_movies[keep], strict=True)),
        k=5,
    )
    assert result.user_index.tolist() == sorted(expected)
    got = np.column_stack([result.precision, result.recall, result.ndcg])
    np.testing.assert_allclose(got, [expected[u] for u in sorted(expected)], rtol=1e-12)


@pytest.mark.parametrize(
    ("train_movies", "match"),
    [(np.array([0, 4, 5]), "training movie index 5"), (np.array([0, -1, 1]), "index -1")],
)
def test_indices_outside_the_model_are_rejected(train_movies, match):
    with pytest.raises(PipelineError, match=match):
        ranking_metrics(
            scored(SCORES),
            TRAIN_USERS,
            train_movies,
            TEST_USERS,
            TEST_MOVIES,
            TEST[:, 2],
            2,
            4.0,
            2,
        )


@pytest.mark.parametrize(("k", "block_size"), [(0, 2), (2, 0)])
def test_non_positive_k_or_block_size_is_rejected(k, block_size):
    with pytest.raises(ValueError, match="must be positive"):
        metrics(k=k, block_size=block_size)
