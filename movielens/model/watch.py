"""The "will watch" model: which movies a user will rate, learnt from who rated what.

A rating model says how much a user would like a movie if they watched it; which movies a person
watches is information of its own (Cremonesi, Koren and Turrin 2010). This model learns it from the
binary user x movie matrix of the training split, every unrated movie a negative:

- ease: EASE (Steck 2019), the closed-form item-item model B = I - P / diag(P) with
  P = (X^T X + ease_l2 I)^-1 and diag(B) = 0; a user's scores are their history row times B.
  Memory and time grow with the catalogue squared and cubed, so it suits catalogues of up to a
  few ten thousand movies.
- als: implicit's AlternatingLeastSquares (weighted matrix factorisation, Hu, Koren and Volinsky
  2008): implicit 0.7 multiplies the binary matrix by als_alpha, so a rated pair has confidence
  als_alpha and an unrated one 1 (not the paper's 1 + alpha); memory and time grow with the
  ratings, so it suits the large releases.

Both score a person the training never saw from their history row (WatchModel.fold_in).

Only movies with at least `min_ratings` training ratings are scored (the catalogue); the others,
with too few ratings to learn from, get score 0, the score of "no evidence to watch".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from movielens.plumbing.choices import WATCH_MODELS
from movielens.plumbing.errors import PipelineError
from movielens.plumbing.files import atomic_path

log = logging.getLogger(__name__)

EASE_BYTES_PER_ENTRY = 8 * 3  # float64 Gram matrix, its inverse and the float32 copy, with room


@dataclass(frozen=True)
class WatchModel:
    """A fitted watch model.

    Attributes:
        kind: "ease" or "als".
        catalogue: int64 (n_kept,), ascending movie indices the model scores.
        n_users, n_movies: sizes of the id spaces it was fitted on.
        item_weights: ease: float32 (n_kept, n_kept), B; als: float32 (n_kept, factors).
        user_factors: als: float32 (n_users, factors); ease: float32 (0, 0), unused.
        als_regularization, als_alpha: als: the fit's settings, which fold_in solves with
            (None in a file saved before they were); ease: None, unused.
    """

    kind: str
    catalogue: np.ndarray
    n_users: int
    n_movies: int
    item_weights: np.ndarray
    user_factors: np.ndarray
    als_regularization: float | None = None
    als_alpha: float | None = None

    def scores(self, user_index: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """float32 (len(user_index), n_movies): each user's will-watch score of every movie.

        Args:
            user_index: int (rows,), the users.
            history: binary (n_users, n_movies) CSR of the training pairs the model was fitted on
                (EASE reads a user's row; ALS has it in its user factors).
        """
        users = np.asarray(user_index, dtype=np.int64)
        if self.kind == "ease":
            # Sparse rows times B: a user's scores sum the rows of B for the movies they rated,
            # O(ratings * catalogue) where a dense product is O(catalogue ** 2) per user.
            rows = history[users][:, self.catalogue].astype(np.float32)
            kept = np.asarray(rows @ self.item_weights, dtype=np.float32)
        else:
            kept = self.user_factors[users] @ self.item_weights.T
        out = np.zeros((len(users), self.n_movies), dtype=np.float32)
        out[:, self.catalogue] = kept
        return out

    def fold_in(self, history: sp.csr_matrix) -> WatchModel:
        """The model over other people: the same movies, scored from the rows of `history`.

        Args:
            history: binary (n_people, n_movies) CSR of each person's rated movies.

        Returns:
            A WatchModel of n_people users whose `scores(users, history)` scores them as this
            model scores its own users: EASE reads the row (the same B); ALS solves each person's
            factors against the fixed item factors (fold_in_als).
        """
        n_people, n_movies = history.shape
        if n_movies != self.n_movies:
            raise ValueError(f"history has {n_movies} movies, the model {self.n_movies}")
        if self.kind == "ease":
            user_factors = self.user_factors
        elif self.als_regularization is None or self.als_alpha is None:
            raise PipelineError(
                "the ALS watch model was saved without its settings, which fold-in needs; "
                "rebuild it (dvc repro train_watch)"
            )
        else:
            user_factors = fold_in_als(
                self.item_weights,
                history[:, self.catalogue],
                self.als_regularization,
                self.als_alpha,
            )
        return replace(self, n_users=n_people, user_factors=user_factors)

    def similarity(self, movie_index: int) -> np.ndarray | None:
        """float32 (n_movies,): how alike each movie is to `movie_index` for watching; None if unscored.

        EASE: the weight B[i, j], how much watching i raises the score of j; ALS: the cosine of
        the movies' factors. Movies outside the catalogue get 0.
        """
        position = int(np.searchsorted(self.catalogue, movie_index))
        if position == len(self.catalogue) or self.catalogue[position] != movie_index:
            return None
        if self.kind == "ease":
            kept = self.item_weights[position]
        else:
            norms = np.linalg.norm(self.item_weights, axis=1)
            unit = self.item_weights / np.maximum(norms, np.finfo(np.float32).tiny)[:, None]
            kept = unit @ unit[position]
        out = np.zeros(self.n_movies, dtype=np.float32)
        out[self.catalogue] = kept
        return out


def history_matrix(user_index: np.ndarray, movie_index: np.ndarray, n_users: int, n_movies: int):
    """The binary (n_users, n_movies) CSR matrix of rated pairs, float32, duplicates counted once."""
    matrix = sp.csr_matrix(
        (np.ones(len(user_index), dtype=np.float32), (user_index, movie_index)),
        shape=(n_users, n_movies),
    )
    matrix.data[:] = 1.0  # a pair listed twice still counts once
    return matrix


def catalogue_of(counts: np.ndarray, min_ratings: int) -> np.ndarray:
    """int64: the movies whose count of training ratings (`counts`, (n_movies,)) is >= min_ratings,
    ascending."""
    return np.flatnonzero(counts >= min_ratings).astype(np.int64)


def fit_ease(history: sp.csr_matrix, ease_l2: float) -> np.ndarray:
    """EASE's item-item matrix B of the columns of `history`, float32 (n, n), zero diagonal.

    Solved in float64 (the Gram matrix of a large catalogue loses precision in float32), through
    its Cholesky factor (it is symmetric positive definite): half the work of a general inverse.
    """
    return ease_of_gram((history.T @ history).toarray().astype(np.float64), ease_l2)


def ease_of_gram(gram: np.ndarray, ease_l2: float) -> np.ndarray:
    """EASE's B from the Gram matrix X^T X (float64 (n, n), overwritten), as fit_ease describes."""
    from scipy.linalg import lapack

    gram[np.diag_indices_from(gram)] += ease_l2
    factor, info = lapack.dpotrf(gram, lower=False, overwrite_a=True)
    precision, info2 = lapack.dpotri(factor, lower=False, overwrite_c=True)
    if info or info2:
        raise PipelineError(
            f"EASE's Gram matrix is not positive definite (LAPACK info {info or info2})"
        )
    precision = np.triu(precision) + np.triu(precision, 1).T  # dpotri fills the upper triangle
    weights = precision / -np.diag(precision)
    np.fill_diagonal(weights, 0.0)
    return weights.astype(np.float32)


def check_ease_size(n_kept: int, ease_max_movies: int) -> None:
    """Refuse an EASE catalogue over `ease_max_movies`: its matrices grow with its square.

    Raises:
        PipelineError: naming the memory it would take and the params that fix it.
    """
    if n_kept > ease_max_movies:
        gigabytes = n_kept**2 * EASE_BYTES_PER_ENTRY / 1e9
        raise PipelineError(
            f"watch.model=ease on {n_kept} movies needs about {gigabytes:.1f} GB (more than "
            f"watch.ease_max_movies={ease_max_movies}); set watch.model=als, or raise "
            "watch.min_ratings to keep fewer movies"
        )


def fit_als(
    history: sp.csr_matrix,
    factors: int,
    regularization: float,
    alpha: float,
    iterations: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """implicit's ALS on `history`: user factors float32 (n_users, f), item factors (n_items, f).

    Each user's (and each movie's) least-squares solve is independent of the others', so the
    threads only share the work and the result is the same run after run.
    """
    import threadpoolctl
    from implicit.cpu.als import AlternatingLeastSquares

    # implicit's own advice: its threads, not BLAS's, should use the cores.
    with threadpoolctl.threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=factors,
            regularization=regularization,
            alpha=alpha,
            iterations=iterations,
            random_state=seed,
        )
        model.fit(history, show_progress=False)
    return np.asarray(model.user_factors, np.float32), np.asarray(model.item_factors, np.float32)


def fold_in_als(
    item_factors: np.ndarray, history: sp.csr_matrix, regularization: float, alpha: float
) -> np.ndarray:
    """Each row's ALS user factors against fixed item factors: implicit's recalculate_user.

    For a binary row p, implicit 0.7.3 weighs a rated item by confidence c = alpha (its matrix
    times alpha; not 1 + alpha), and solves (Y^T Y + reg I + (c - 1) Y_p^T Y_p) x = c Y_p^T 1,
    exactly (Cholesky): the user step of its fit, which solves it with a few conjugate-gradient
    steps instead.

    Args:
        item_factors: float32 (n_items, factors); history: binary (n_people, n_items) CSR.
        regularization, alpha: the fit's settings (watch.als_regularization, watch.als_alpha).

    Returns:
        float32 (n_people, factors).
    """
    import threadpoolctl
    from implicit.cpu.als import AlternatingLeastSquares

    with threadpoolctl.threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=item_factors.shape[1], regularization=regularization, alpha=alpha
        )
        model.item_factors = np.ascontiguousarray(item_factors, np.float32)
        rows = sp.csr_matrix(history, dtype=np.float32)
        factors = model.recalculate_user(np.arange(rows.shape[0]), rows)
    return np.asarray(factors, np.float32).reshape(rows.shape[0], item_factors.shape[1])


def checked_catalogue(
    counts: np.ndarray, model: str, min_ratings: int, ease_max_movies: int
) -> np.ndarray:
    """The movies the watch model `model` will score, from each movie's training count (n_movies,).

    Raises:
        PipelineError: for an unknown model, no movie with min_ratings ratings, or an EASE
            catalogue over ease_max_movies.
    """
    if model not in WATCH_MODELS:
        raise PipelineError(
            f"watch.model={model!r} is unknown; use one of {', '.join(WATCH_MODELS)}"
        )
    catalogue = catalogue_of(counts, min_ratings)
    if len(catalogue) == 0:
        raise PipelineError(
            f"no movie has watch.min_ratings={min_ratings} training ratings; lower watch.min_ratings"
        )
    log.info(
        "watch model %s on %d of %d movies (>= %d ratings)",
        model,
        len(catalogue),
        len(counts),
        min_ratings,
    )
    if model == "ease":
        check_ease_size(len(catalogue), ease_max_movies)
    return catalogue


def fit_watch(
    history: sp.csr_matrix,
    model: str,
    min_ratings: int,
    ease_l2: float,
    ease_max_movies: int,
    als_factors: int,
    als_regularization: float,
    als_alpha: float,
    als_iterations: int,
    seed: int,
) -> WatchModel:
    """Fit the watch model `model` ("ease" or "als") on a binary history matrix.

    The other arguments are params.yaml's watch section, key for key (movielens.params).

    Raises:
        PipelineError: for an unknown model, no movie with min_ratings ratings, or an EASE
            catalogue over ease_max_movies.
    """
    n_users, n_movies = history.shape
    counts = np.asarray(history.sum(axis=0)).ravel()
    catalogue = checked_catalogue(counts, model, min_ratings, ease_max_movies)
    kept = history[:, catalogue]
    if model == "ease":
        item_weights, user_factors = fit_ease(kept, ease_l2), np.zeros((0, 0), np.float32)
    else:
        user_factors, item_weights = fit_als(
            kept, als_factors, als_regularization, als_alpha, als_iterations, seed
        )
    settings = (als_regularization, als_alpha) if model == "als" else ()
    return WatchModel(model, catalogue, n_users, n_movies, item_weights, user_factors, *settings)


def save_watch(model: WatchModel, path: Path) -> None:
    """Write the model as one .npz, atomically (uncompressed: the same model, the same bytes).

    ALS's settings are saved with it (fold_in solves with them); EASE needs none, so its file
    holds the five arrays it always did.
    """
    settings = {}
    if model.kind == "als" and None not in (model.als_regularization, model.als_alpha):
        settings = {"als_settings": np.array([model.als_regularization, model.als_alpha])}
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(
            handle,
            kind=np.array(model.kind),
            catalogue=model.catalogue,
            shape=np.array([model.n_users, model.n_movies], dtype=np.int64),
            item_weights=model.item_weights,
            user_factors=model.user_factors,
            **settings,
        )


def load_watch(path: Path, n_users: int, n_movies: int) -> WatchModel:
    """Read a saved watch model and check it against the processed data's id spaces.

    Raises:
        PipelineError: when the file is unreadable or was fitted on other data.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            model = WatchModel(
                str(data["kind"]),
                data["catalogue"],
                *(int(v) for v in data["shape"]),
                data["item_weights"],
                data["user_factors"],
                *(data["als_settings"].tolist() if "als_settings" in data.files else ()),
            )
    except (OSError, ValueError, KeyError) as err:
        raise PipelineError(
            f"{path} cannot be read ({err}); rebuild it (dvc repro train_watch)"
        ) from None
    if (model.n_users, model.n_movies) != (n_users, n_movies):
        raise PipelineError(
            f"{path} has {model.n_users} users and {model.n_movies} movies but data/processed has "
            f"{n_users} and {n_movies}; rerun the pipeline (dvc repro)"
        )
    return model
