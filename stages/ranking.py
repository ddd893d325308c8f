"""Top-k ranking from the model's factors and the ranking metrics precision@k, recall@k, NDCG@k, coverage."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages.common import PipelineError

# The layer names stages.model.build_model gives the tables and the output rescaling.
USER_EMBEDDING, MOVIE_EMBEDDING = "user_embedding", "movie_embedding"
USER_BIAS, MOVIE_BIAS, RATING = "user_bias", "movie_bias", "rating"


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

    def logits(self, user_index: np.ndarray) -> np.ndarray:
        """float32 (len(user_index), n_movies): every movie's logit for each user, one matmul."""
        users = np.asarray(user_index)
        return (
            self.user_vectors[users] @ self.movie_vectors.T
            + self.user_bias[users, None]
            + self.movie_bias[None, :]
        )

    def ratings(self, logits: np.ndarray) -> np.ndarray:
        """Predicted ratings from logits, as the model's sigmoid and rescaling layers compute them."""
        lo, hi = self.rating_scale
        # tanh form of the sigmoid: no overflow warning for large negative logits.
        return lo + (hi - lo) * 0.5 * (1.0 + np.tanh(0.5 * logits))


def factors_from_model(model) -> Factors:
    """Read the embedding tables, biases and rating scale out of a model from stages.model.build_model.

    Raises:
        PipelineError: when a weight is NaN or infinite (training diverged).
    """

    def table(name: str) -> np.ndarray:
        return np.asarray(model.get_layer(name).get_weights()[0], dtype=np.float32)

    rescale = model.get_layer(RATING)
    lo = float(np.asarray(rescale.offset))
    hi = lo + float(np.asarray(rescale.scale))
    factors = Factors(
        table(USER_EMBEDDING),
        table(MOVIE_EMBEDDING),
        table(USER_BIAS)[:, 0],
        table(MOVIE_BIAS)[:, 0],
        (lo, hi),
    )
    arrays = (factors.user_vectors, factors.movie_vectors, factors.user_bias, factors.movie_bias)
    if not all(np.isfinite(a).all() for a in arrays):
        raise PipelineError(
            "the model has NaN or infinite weights (training diverged); lower train.learning_rate "
            "and retrain (dvc repro train)"
        )
    return factors


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
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    # argpartition finds each row's k-th best value; which of several items equal to it it keeps
    # is arbitrary, so the items at that value are re-chosen by lowest column.
    kth_col = np.argpartition(-scores, k - 1, axis=1)[:, k - 1]
    kth = scores[np.arange(rows), kth_col][:, None]
    keep = scores > kth
    room = k - keep.sum(axis=1)  # >= 1: at most k-1 items beat the k-th value
    at_kth = scores == kth
    crowded = np.flatnonzero(at_kth.sum(axis=1) > room)
    if len(crowded):  # cumsum only on rows where a tie straddles position k
        at_kth[crowded] &= np.cumsum(at_kth[crowded], axis=1) <= room[crowded, None]
    keep |= at_kth
    cols = np.nonzero(keep)[1].reshape(rows, k)  # exactly k per row, columns ascending
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
        coverage: distinct movies in the top-k lists of all users / n_movies.
        n_users: users the model knows (all of them got a top-k list).
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
            "users_evaluated": len(self.user_index),
            "users_without_relevant": self.n_users - len(self.user_index),
            "relevant_cold_pairs": self.relevant_cold_pairs,
        }


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


def _block_metrics(top: np.ndarray, is_relevant: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    """Rows with a relevant movie, and their precision@k, recall@k and NDCG@k.

    Args:
        top: int (rows, <= k), top_k's output.
        is_relevant: bool (rows, n_movies).
    """
    n_relevant = is_relevant.sum(axis=1)
    rows = np.flatnonzero(n_relevant)
    top = top[rows]
    hits = (top >= 0) & np.take_along_axis(is_relevant[rows], np.maximum(top, 0), axis=1)
    n_hits, n_relevant = hits.sum(axis=1), n_relevant[rows]
    discount = 1.0 / np.log2(np.arange(2, top.shape[1] + 2))  # rank r (0-based) -> 1/log2(r + 2)
    # The ideal list puts min(k, n_relevant) relevant movies first.
    ideal = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))[np.minimum(k, n_relevant) - 1]
    return rows, n_hits / k, n_hits / n_relevant, (hits @ discount) / ideal


def ranking_metrics(
    factors: Factors,
    train_users: np.ndarray,
    train_movies: np.ndarray,
    test_users: np.ndarray,
    test_movies: np.ndarray,
    test_ratings: np.ndarray,
    k: int,
    relevance_threshold: float,
    block_size: int,
) -> RankingMetrics:
    """Rank every movie a user did not rate in training and score the top k against the test split.

    Every known user gets a top-k list (for coverage); precision, recall and NDCG are kept only for
    users with at least one relevant test movie, since they are undefined or zero by construction
    for the others. Users are scored block_size at a time, so memory is O(block_size * n_movies).

    Args:
        factors: the model's parameters (factors_from_model).
        train_users, train_movies: int (n_train,), the training pairs, excluded from the rankings.
        test_users, test_movies: int (n_test,), the test pairs; -1 where unseen in training.
        test_ratings: float (n_test,).
        k: the cut-off, >= 1.
        relevance_threshold: a test rating >= this makes the movie relevant.
        block_size: users scored per matrix product, >= 1.

    Raises:
        ValueError: for k or block_size < 1.
        PipelineError: for an index outside the model's tables.
    """
    if k < 1 or block_size < 1:
        raise ValueError(f"k={k} and block_size={block_size} must be positive")
    n_users, n_movies = factors.n_users, factors.n_movies
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
    seen = _by_user(train_users, train_movies)
    relevant = _by_user(test_users[liked & warm], test_movies[liked & warm])

    recommended = np.zeros(n_movies, dtype=bool)
    parts = []
    for start in range(0, n_users, block_size):
        stop = min(start + block_size, n_users)
        scores = factors.logits(np.arange(start, stop))
        scores[_rows_of(*seen, start, stop)] = -np.inf
        top = top_k(scores, k)
        recommended[top[top >= 0]] = True
        is_relevant = np.zeros(scores.shape, dtype=bool)
        is_relevant[_rows_of(*relevant, start, stop)] = True
        rows, *values = _block_metrics(top, is_relevant, k)
        parts.append((rows + start, *values))
    user_index, precision, recall, ndcg = (
        np.concatenate(column) for column in zip(*parts, strict=True)
    )
    return RankingMetrics(
        k=k,
        relevance_threshold=relevance_threshold,
        user_index=user_index.astype(np.int64),
        precision=precision.astype(np.float64),
        recall=recall.astype(np.float64),
        ndcg=ndcg.astype(np.float64),
        coverage=float(recommended.sum() / n_movies) if n_movies else float("nan"),
        n_users=n_users,
        relevant_cold_pairs=int((liked & ~warm).sum()),
    )
