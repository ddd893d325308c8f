"""Top-k ranking and the ranking metrics precision@k, recall@k, NDCG@k and coverage.

Movies are scored by a Scorer: the NumPy formula of the standard architecture (Factors), valid only
for a model that movielens.model.architecture.standard_problem accepts, or the trained model itself
(PairScorer) for any other; scorer_of picks the one a model allows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from movielens.model.architecture import standard_problem
from movielens.model.layers import (
    MOVIE_BIAS,
    MOVIE_EMBEDDING,
    TABLES,
    USER_BIAS,
    USER_EMBEDDING,
    rating_scale,
)
from movielens.model.scoring import predict_logits, rating_of_logit
from movielens.plumbing.errors import PipelineError


class Scorer(Protocol):
    """Scores every movie for a block of users; a higher score means a higher predicted rating."""

    @property
    def n_users(self) -> int: ...

    @property
    def n_movies(self) -> int: ...

    @property
    def rating_scale(self) -> tuple[float, float]: ...

    def scores(self, user_index: np.ndarray) -> np.ndarray:
        """float32 (len(user_index), n_movies), a new array, ordered as the predicted ratings."""
        ...

    def ratings(self, scores: np.ndarray) -> np.ndarray:
        """The predicted ratings of some of those scores."""
        ...


@dataclass(frozen=True)
class Factors:
    """The rating model's parameters as numpy arrays.

    logit(u, m) = user_vectors[u] · movie_vectors[m] + user_bias[u] + movie_bias[m] and
    rating = lo + (hi - lo) * sigmoid(logit). The sigmoid and the rescaling are strictly increasing,
    so ranking movies by the logit ranks them exactly as by the predicted rating, without the
    float32 saturation of the sigmoid merging distinct scores.

    Attributes:
        user_vectors: float32 (n_users, embedding_dim).
        movie_vectors: float32 (n_movies, embedding_dim).
        user_bias: float32 (n_users,).
        movie_bias: float32 (n_movies,).
        rating_scale: (lo, hi), the lowest and highest rating.
    """

    user_vectors: np.ndarray
    movie_vectors: np.ndarray
    user_bias: np.ndarray
    movie_bias: np.ndarray
    rating_scale: tuple[float, float]

    @property
    def n_users(self) -> int:
        return len(self.user_vectors)

    @property
    def n_movies(self) -> int:
        return len(self.movie_vectors)

    def scores(self, user_index: np.ndarray) -> np.ndarray:
        """The Scorer interface: the logits, ranked as the predicted ratings."""
        return self.logits(user_index)

    def logits(self, user_index: np.ndarray) -> np.ndarray:
        """float32 (len(user_index), n_movies): every movie's logit for each user."""
        users = np.asarray(user_index)
        return predict_logits(
            self.user_vectors[users], self.user_bias[users], self.movie_vectors, self.movie_bias
        )

    def ratings(self, logits: np.ndarray) -> np.ndarray:
        """Predicted ratings from logits, as the model's sigmoid and rescaling layers compute them."""
        return rating_of_logit(logits, self.rating_scale)


@dataclass(frozen=True)
class PairScorer:
    """Scores with the model itself: its predicted rating of every (user, movie) pair of a block.

    Attributes:
        predict: callable(user_index, movie_index) -> float (n,) predicted ratings.
        n_users, n_movies: sizes of the model's id spaces.
        rating_scale: (lo, hi), the model's lowest and highest rating.
    """

    predict: Callable[[np.ndarray, np.ndarray], np.ndarray]
    n_users: int
    n_movies: int
    rating_scale: tuple[float, float]

    def scores(self, user_index: np.ndarray) -> np.ndarray:
        users = np.asarray(user_index)
        pairs_user = np.repeat(users, self.n_movies)
        pairs_movie = np.tile(np.arange(self.n_movies), len(users))
        predicted = np.asarray(self.predict(pairs_user, pairs_movie), dtype=np.float32)
        return predicted.reshape(len(users), self.n_movies)

    def ratings(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores, dtype=np.float64)


def factors_from_tables(tables: dict[str, np.ndarray], scale: tuple[float, float]) -> Factors:
    """Factors from the four weight tables (layer name -> float32 (rows, dim)) and the rating scale.

    Raises:
        PipelineError: when a weight is NaN or infinite (training diverged).
    """
    factors = Factors(
        np.asarray(tables[USER_EMBEDDING], dtype=np.float32),
        np.asarray(tables[MOVIE_EMBEDDING], dtype=np.float32),
        np.asarray(tables[USER_BIAS], dtype=np.float32)[:, 0],
        np.asarray(tables[MOVIE_BIAS], dtype=np.float32)[:, 0],
        scale,
    )
    arrays = (factors.user_vectors, factors.movie_vectors, factors.user_bias, factors.movie_bias)
    if not all(np.isfinite(a).all() for a in arrays):
        raise PipelineError(
            "the model has NaN or infinite weights (training diverged); lower train.learning_rate "
            "and retrain (dvc repro train)"
        )
    return factors


def factors_from_model(model) -> Factors:
    """Read the embedding tables, biases and rating scale out of a model from movielens.model.keras_model.build_model.

    Raises:
        PipelineError: when a weight is NaN or infinite (training diverged).
    """
    tables = {name: model.get_layer(name).get_weights()[0] for name in TABLES}
    return factors_from_tables(tables, rating_scale(model))


def scorer_of(model, n_users: int, n_movies: int, batch_size: int) -> Scorer:
    """The NumPy Factors for a model of the standard architecture, else the model's own predict.

    Args:
        model: a trained Keras model taking user_index and movie_index.
        n_users, n_movies: sizes of the processed data's id spaces.
        batch_size: pairs per model.predict call (PairScorer only).
    """
    if standard_problem(model.get_config()) is None:
        return factors_from_model(model)
    from movielens.model.keras_model import (
        predict_ratings,  # TensorFlow is loaded already: `model` is Keras
    )

    return PairScorer(
        lambda u, m: predict_ratings(model, u, m, batch_size),
        n_users,
        n_movies,
        rating_scale(model),
    )


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """The columns of each row's k highest scores, best first; equal scores go to the lower column.

    Args:
        scores: float (rows, n_items), no NaN; -inf marks an item that must not be recommended.
        k: how many items per row, >= 1.

    Returns:
        int64 (rows, min(k, n_items)); -1 fills the tail of a row with fewer than k finite scores.
    """
    scores = np.asarray(scores)
    rows, n_items = scores.shape
    k = min(k, n_items)
    if rows == 0 or k == 0:
        return np.zeros((rows, k), dtype=np.int64)
    if np.isnan(scores.max(axis=1)).any():  # max propagates NaN, without a mask as large as scores
        raise ValueError("scores contain NaN")
    # Each row's k-th best value; np.partition moves no indices, so it beats argpartition.
    kth = np.partition(scores, n_items - k, axis=1)[:, n_items - k, None]
    keep = scores >= kth  # exactly k per row, unless values equal to the k-th straddle position k
    crowded = np.flatnonzero(np.count_nonzero(keep, axis=1) > k)
    if len(crowded):  # re-choose the tied items by lowest column, on those rows only
        above = scores[crowded] > kth[crowded]
        at_kth = scores[crowded] == kth[crowded]
        room = k - above.sum(axis=1)  # >= 1: at most k-1 items beat the k-th value
        keep[crowded] = above | (at_kth & (np.cumsum(at_kth, axis=1) <= room[:, None]))
    # Flat positions are row-major, so each row's k columns come out together, ascending.
    cols = (np.flatnonzero(keep) % n_items).reshape(rows, k)
    order = np.argsort(-np.take_along_axis(scores, cols, axis=1), axis=1, kind="stable")
    cols = np.take_along_axis(cols, order, axis=1)
    cols[np.take_along_axis(scores, cols, axis=1) == -np.inf] = -1
    return cols


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


def sample_users(n_users: int, ranking_users: int | None, seed: int) -> np.ndarray | None:
    """The users to rank: `ranking_users` of 0..n_users-1 drawn at random with `seed`, ascending.

    Returns:
        int64 (ranking_users,), or None (rank every user) when ranking_users is None or not below
        n_users.
    """
    if ranking_users is None or ranking_users >= n_users:
        return None
    return np.sort(np.random.default_rng(seed).choice(n_users, ranking_users, replace=False))


def _rows_of(users: np.ndarray, movies: np.ndarray, start: int, stop: int) -> tuple:
    """The (row in block, movie) pairs of users start..stop-1; `users` must be sorted."""
    lo, hi = np.searchsorted(users, [start, stop])
    return users[lo:hi] - start, movies[lo:hi]


def _by_user(users: np.ndarray, movies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(users, kind="stable")
    return np.asarray(users)[order], np.asarray(movies)[order]


def _check_range(name: str, index: np.ndarray, size: int) -> None:
    bad = index[(index < 0) | (index >= size)]
    if len(bad):
        raise PipelineError(
            f"{name} index {int(bad[0])} is outside the model's 0..{size - 1}: the model and "
            "data/processed disagree; rerun the pipeline (dvc repro)"
        )


def _only(users: np.ndarray, pairs: tuple[np.ndarray, np.ndarray], n_users: int) -> tuple:
    """The (user, movie) pairs of the sorted `users`, with each user renumbered by its position."""
    position = np.full(n_users, -1, dtype=np.int64)
    position[users] = np.arange(len(users))
    renumbered = position[pairs[0]]
    kept = renumbered >= 0
    return renumbered[kept], pairs[1][kept]


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


@dataclass(frozen=True)
class TopLists:
    """Each ranked user's top-k list, what evaluate scores and recommend serves.

    Attributes:
        users: int64 (n,), the users, in the order ranked.
        movies: int64 (n, k), each user's movies best first; -1 pads a list with fewer than k.
        scores: float32 (n, k), their scores; -inf where movies is -1.
    """

    users: np.ndarray
    movies: np.ndarray
    scores: np.ndarray


def top_lists(
    scorer: Scorer,
    users: np.ndarray,
    excluded: tuple[np.ndarray, np.ndarray],
    k: int,
    block_size: int,
) -> TopLists:
    """Rank every movie for each user, leave out the excluded pairs, keep the k best.

    Users are scored block_size at a time, so memory is O(block_size * n_movies), and a user's
    list does not depend on which block it falls in.

    Args:
        scorer: scores of every movie for a block of users (higher is better).
        users: int (n,), distinct users to rank.
        excluded: int (m,) users and int (m,) movies never to list (what the user has rated).
        k: the list length, >= 1.
        block_size: users scored per block, >= 1.
    """
    if k < 1 or block_size < 1:
        raise ValueError(f"k={k} and block_size={block_size} must be positive")
    users = np.asarray(users, dtype=np.int64)
    excluded = _by_user(*_only(users, excluded, scorer.n_users))  # rows: positions in `users`
    movies, scores = [], []
    for start in range(0, len(users), block_size):
        stop = min(start + block_size, len(users))
        block = np.asarray(scorer.scores(users[start:stop]), dtype=np.float32)
        block[_rows_of(*excluded, start, stop)] = -np.inf
        top = top_k(block, k)
        movies.append(top)
        scores.append(np.where(top >= 0, np.take_along_axis(block, np.maximum(top, 0), 1), -np.inf))
    width = min(k, scorer.n_movies)
    return TopLists(
        users,
        np.concatenate(movies) if movies else np.zeros((0, width), np.int64),
        np.concatenate(scores).astype(np.float32) if scores else np.zeros((0, width), np.float32),
    )


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
    relevant = _by_user(*_only(lists.users, relevant, _id_space(lists.users, relevant[0])))
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
        _check_range(name, np.asarray(index), size)
    ranked = np.arange(n_users) if users is None else np.asarray(users)
    seen = (np.asarray(train_users), np.asarray(train_movies))
    lists = top_lists(scorer, ranked, seen, k, block_size)
    relevant = (test_users[liked & warm], test_movies[liked & warm])
    return metrics_of_lists(
        lists, relevant, n_movies, k, relevance_threshold, int((liked & ~warm).sum())
    )
