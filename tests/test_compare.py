"""Comparisons and beyond-accuracy figures on tiny cases whose answers are worked out by hand."""

import numpy as np
import pytest

from movielens.evaluation.compare import (
    aligned_by_user,
    beyond_accuracy,
    bootstrap_means,
    genre_matrix,
    intra_list_diversity,
    long_tail,
    paired_bootstrap,
    per_list_mean,
)

# Three users; per-user differences a - b = 0.3, -0.1, 0.4 (mean 0.2).
A, B = np.array([0.5, 0.2, 0.6]), np.array([0.2, 0.3, 0.2])
# The users that np.random.default_rng(2).integers(0, 3, 3) draws for five resamples in turn,
# written out so that the test fails if the generator, the seed or the draw order changes.
RESAMPLES = [[2, 0, 0], [0, 1, 2], [1, 0, 1], [1, 2, 2], [2, 0, 2]]
# Their means by hand: (0.4+0.3+0.3)/3, (0.3-0.1+0.4)/3, (-0.1+0.3-0.1)/3, (-0.1+0.4+0.4)/3,
# (0.4+0.3+0.4)/3, i.e. 1.0/3, 0.6/3, 0.1/3, 0.7/3, 1.1/3.
MEANS = np.array([1.0, 0.6, 0.1, 0.7, 1.1]) / 3


def test_the_resamples_are_the_seeded_draws_written_out():
    rng = np.random.default_rng(2)
    assert [rng.integers(0, 3, 3).tolist() for _ in RESAMPLES] == RESAMPLES
    np.testing.assert_allclose(bootstrap_means(A - B, len(RESAMPLES), seed=2), MEANS)


@pytest.mark.parametrize(
    ("level", "low", "high"),
    [
        # sorted means 0.1/3, 0.6/3, 0.7/3, 1.0/3, 1.1/3; quantile q sits at position 4q
        (0.5, 0.6 / 3, 1.0 / 3),  # q = 0.25, 0.75: positions 1 and 3, order statistics
        # q = 0.05: 0.1/3 + 0.2 * (0.6/3 - 0.1/3); q = 0.95: 1.0/3 + 0.8 * (1.1/3 - 1.0/3)
        (0.9, 0.2 / 3, 1.08 / 3),
    ],
)
def test_paired_bootstrap_matches_the_hand_computation(level, low, high):
    result = paired_bootstrap(A, B, n_resamples=5, seed=2, level=level)
    assert result["mean_difference"] == pytest.approx(0.2)
    assert result["low"] == pytest.approx(low)
    assert result["high"] == pytest.approx(high)


def test_paired_bootstrap_is_seeded_and_pairs_users():
    rng = np.random.default_rng(0)
    a = rng.random(200)
    first = paired_bootstrap(a, a - 0.05, n_resamples=300, seed=7)
    assert first == paired_bootstrap(a, a - 0.05, n_resamples=300, seed=7)
    # every user 0.05 better: every resample's mean difference is 0.05, the interval a point
    assert first["low"] == pytest.approx(0.05) and first["high"] == pytest.approx(0.05)
    other = paired_bootstrap(a, rng.random(200), n_resamples=300, seed=8)
    assert other["low"] < other["mean_difference"] < other["high"]


def test_paired_bootstrap_without_users_is_nan_and_refuses_bad_input():
    empty = paired_bootstrap(np.zeros(0), np.zeros(0), n_resamples=10, seed=0)
    assert all(np.isnan(v) for v in empty.values())
    with pytest.raises(ValueError, match="aligned"):
        paired_bootstrap(np.zeros(2), np.zeros(3), n_resamples=10, seed=0)
    with pytest.raises(ValueError, match="n_resamples"):
        paired_bootstrap(np.zeros(2), np.zeros(2), n_resamples=0, seed=0)


def test_aligned_by_user_keeps_the_users_both_evaluated():
    users, a, b = aligned_by_user(
        np.array([3, 1, 5]), np.array([0.3, 0.1, 0.5]), np.array([5, 2, 3]), np.array([5.0, 2, 3])
    )
    assert users.tolist() == [3, 5]
    assert a.tolist() == [0.3, 0.5] and b.tolist() == [3.0, 5.0]


@pytest.mark.parametrize(
    ("counts", "tail"),
    [
        # total 10, head share 8: 5 (5 < 8), then 5 + 3 = 8 reaches it: head = movies 1, 3
        ([1, 5, 1, 3, 0], [True, False, True, False, True]),
        # 4 + 4 = 8: the head ends at the second of the tied movies (lower index first)
        ([4, 1, 4, 1], [False, True, False, True]),
        # one movie holds everything
        ([0, 9, 0], [True, False, True]),
        ([0, 0], [True, True]),  # no ratings: everything is tail
    ],
)
def test_long_tail_is_outside_the_head_holding_80_percent(counts, tail):
    assert long_tail(np.array(counts)).tolist() == tail


def test_per_list_mean_ignores_padding():
    values = np.array([10.0, 20.0, 30.0])
    out = per_list_mean(np.array([[0, 1, 2], [2, -1, -1], [-1, -1, -1]]), values)
    assert out[:2].tolist() == [20.0, 30.0] and np.isnan(out[2])


def test_genre_matrix_reads_movielens_genres():
    matrix = genre_matrix(["Comedy|Drama", "Drama", "(no genres listed)", None])
    # columns sorted by name: Comedy, Drama
    assert matrix.tolist() == [[True, True], [False, True], [False, False], [False, False]]


def test_intra_list_diversity_by_hand():
    # movies: 0 {A, B}, 1 {B}, 2 {C}, 3 no genres, 4 no genres
    genres = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0], [0, 0, 0]], dtype=bool)
    lists = np.array([[0, 1, 2], [0, 0, -1], [3, 4, -1], [2, -1, -1]])
    out = intra_list_diversity(lists, genres)
    # list 0: d(0,1) = 1 - 1/2, d(0,2) = 1, d(1,2) = 1 -> (0.5 + 1 + 1) / 3
    assert out[0] == pytest.approx(2.5 / 3)
    assert out[1] == 0.0  # the same movie twice: identical genre sets
    assert out[2] == 0.0  # two movies without genres
    assert np.isnan(out[3])  # one movie: no pair


def test_beyond_accuracy_by_hand():
    counts = np.array([6, 2, 1, 1, 0])  # head: movie 0 (6 < 8), then 6 + 2 = 8 -> movies 0, 1
    genres = np.array([[1, 0], [1, 0], [0, 1], [1, 1], [0, 1]], dtype=bool)
    lists = np.array([[0, 2], [1, 3], [4, -1]])
    figures = beyond_accuracy(lists, counts, genres, block_size=2)  # two blocks
    assert figures["average_popularity"] == pytest.approx(((6 + 1) / 2 + (2 + 1) / 2 + 0) / 3)
    assert figures["long_tail_share"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    # list 0: {0} vs {1}: 1; list 1: {0} vs {0, 1}: 1/2; list 2 has one movie
    assert figures["genre_diversity"] == pytest.approx(0.75)
