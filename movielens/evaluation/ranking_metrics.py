"""The ranking metrics of top-k lists: precision@k, recall@k, NDCG@k and coverage."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from movielens.ranking.lists import TopLists, by_user, check_range, only_users, top_lists
from movielens.ranking.scorers import Scorer


@dataclass(frozen=True)
class RankingMetrics:
    """Per-user ranking metrics of the users that have at least one relevant test movie.

    Attributes:
        k: the cut-off.
        relevance_threshold: a test rating >= this makes the movie relevant to the user.
        user_index: int64 (n_evaluated,), the users evaluated, ascending.
        precision: float64 (n_evaluated,), relevant movies in the top k / k.
        recall: float64 (n_evaluated,), relevant movies in the top k / relevant movies.
        ndcg: float64 (n_evaluated,), binary-relevance DCG@k over the ideal DCG@k.
        coverage: distinct movies in the top-k lists of the ranked users / n_movies (lower for a
            sample of users than for all of them).
        n_users: users ranked, each given a top-k list: every user the model knows, or a sample.
        relevant_cold_pairs: relevant test pairs dropped because the user or movie is unseen in
            training (the model cannot rank a movie it has no vector for).
    """

    k: int
    relevance_threshold: float
    user_index: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    ndcg: np.ndarray
    coverage: float
    n_users: int
    relevant_cold_pairs: int
    lists: TopLists | None = None

    def summary(self) -> dict[str, float | int]:
        """Means over the evaluated users (NaN when there are none) and the counts, rounded."""

        def mean(values: np.ndarray) -> float:
            return round(float(values.mean()), 6) if len(values) else float("nan")

        return {
            "k": self.k,
            "relevance_threshold": self.relevance_threshold,
            "precision": mean(self.precision),
            "recall": mean(self.recall),
            "ndcg": mean(self.ndcg),
            "coverage": round(self.coverage, 6),
            "users_ranked": self.n_users,
            "users_evaluated": len(self.user_index),
            "users_without_relevant": self.n_users - len(self.user_index),
            "relevant_cold_pairs": self.relevant_cold_pairs,
        }


def _block_metrics(
    top: np.ndarray, relevant: tuple[np.ndarray, np.ndarray], n_movies: int, k: int
) -> tuple[np.ndarray, ...]:
    """Rows with a relevant movie, and their precision@k, recall@k and NDCG@k.

    Relevance is looked up in the block's sorted (row, movie) keys, not in a dense
    (rows, n_movies) mask, so the cost follows the relevant pairs and the k columns.

    Args:
        top: int (rows, <= k), top_k's output.
        relevant: int (n,) rows in the block and int (n,) movies of the relevant test pairs.
    """
    keys = np.unique(relevant[0].astype(np.int64) * n_movies + relevant[1])
    n_relevant = np.bincount(keys // n_movies, minlength=len(top))
    rows = np.flatnonzero(n_relevant)
    top, n_relevant = top[rows], n_relevant[rows]
    wanted = rows[:, None].astype(np.int64) * n_movies + top
    found = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    hits = (top >= 0) & (keys[found] == wanted) if len(keys) else np.zeros(top.shape, bool)
    n_hits = hits.sum(axis=1)
    discount = 1.0 / np.log2(np.arange(2, top.shape[1] + 2))  # rank r (0-based) -> 1/log2(r + 2)
    # The ideal list puts min(k, n_relevant) relevant movies first.
    ideal = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))[np.minimum(k, n_relevant) - 1]
    return rows, n_hits / k, n_hits / n_relevant, (hits @ discount) / ideal


def metrics_of_lists(
    lists: TopLists,
    relevant: tuple[np.ndarray, np.ndarray],
    n_movies: int,
    k: int,
    relevance_threshold: float,
    relevant_cold_pairs: int = 0,
) -> RankingMetrics:
    """precision@k, recall@k, NDCG@k and coverage of given top-k lists.

    Args:
        lists: the lists (top_lists), k columns or fewer.
        relevant: int (m,) users and int (m,) movies of the relevant test pairs.
        n_movies: the catalogue size, for coverage.
    """
    relevant = by_user(*only_users(lists.users, relevant, _id_space(lists.users, relevant[0])))
    rows, precision, recall, ndcg = _block_metrics(lists.movies, relevant, n_movies, k)
    listed = lists.movies[lists.movies >= 0]
    return RankingMetrics(
        k=k,
        relevance_threshold=relevance_threshold,
        user_index=lists.users[rows],
        precision=precision.astype(np.float64),
        recall=recall.astype(np.float64),
        ndcg=ndcg.astype(np.float64),
        coverage=float(len(np.unique(listed)) / n_movies) if n_movies else float("nan"),
        n_users=len(lists.users),
        relevant_cold_pairs=relevant_cold_pairs,
        lists=lists,
    )


def _id_space(*index: np.ndarray) -> int:
    return int(max((int(np.max(i)) + 1 for i in index if len(i)), default=0))


def ranking_metrics(
    scorer: Scorer,
    train_users: np.ndarray,
    train_movies: np.ndarray,
    test_users: np.ndarray,
    test_movies: np.ndarray,
    test_ratings: np.ndarray,
    k: int,
    relevance_threshold: float,
    block_size: int,
    users: np.ndarray | None = None,
) -> RankingMetrics:
    """Rank every movie a user did not rate in training and score the top k against the test split.

    Every ranked user gets a top-k list (for coverage); precision, recall and NDCG are kept only for
    users with at least one relevant test movie, since they are undefined or zero by construction
    for the others.

    Args:
        scorer: the model's scores (scorer_of: Factors, or the model itself).
        train_users, train_movies: int (n_train,), the training pairs, excluded from the rankings.
        test_users, test_movies: int (n_test,), the test pairs; -1 where unseen in training.
        test_ratings: float (n_test,).
        k: the cut-off, >= 1.
        relevance_threshold: a test rating >= this makes the movie relevant.
        block_size: users scored per block, >= 1.
        users: int (n,), sorted distinct users to rank (sample_users); None ranks every user.

    Raises:
        ValueError: for k or block_size < 1.
        PipelineError: for an index outside the model's tables.
    """
    n_users, n_movies = scorer.n_users, scorer.n_movies
    test_users, test_movies = np.asarray(test_users), np.asarray(test_movies)
    liked = np.asarray(test_ratings) >= relevance_threshold
    warm = (test_users >= 0) & (test_movies >= 0)
    for name, index, size in (
        ("training user", train_users, n_users),
        ("training movie", train_movies, n_movies),
        ("test user", test_users[warm], n_users),
        ("test movie", test_movies[warm], n_movies),
    ):
        check_range(name, np.asarray(index), size)
    ranked = np.arange(n_users) if users is None else np.asarray(users)
    seen = (np.asarray(train_users), np.asarray(train_movies))
    lists = top_lists(scorer, ranked, seen, k, block_size)
    relevant = (test_users[liked & warm], test_movies[liked & warm])
    return metrics_of_lists(
        lists, relevant, n_movies, k, relevance_threshold, int((liked & ~warm).sum())
    )
