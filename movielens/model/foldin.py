"""Fold-in of the rating model: a new person's embedding and bias, fitted to their ratings.

The movie tables stay as trained; only the person's row (u, b) is fitted, to the loss the model
was trained with (movielens.model.keras_model.build_model, written out in
movielens.training.compiled.kernels):

    f(u, b) = sum_i (lo + span * sigmoid(u . m_i + b + c_i) - r_i)^2 + user_l2(...) * ||u||^2

over the person's ratings r_i of movies with vectors m_i and biases c_i; the bias b carries no
L2, as in the model. The solver is a damped Newton method (Levenberg-Marquardt on the exact
Hessian, 51 x 51 for 50 dimensions): a step is kept only when it lowers f, the damping grows
when it does not, and it stops when the gradient is below a tolerance per rating. In NumPy, no
TensorFlow; `sigmoid` here is the one the ranking's formula (movielens.ranking.formula) uses.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np

from movielens.model.baseline import BiasModel
from movielens.model.layers import USER_EMBEDDING
from movielens.plumbing.errors import PipelineError

# |b| <= BIAS_LIMIT (in logits). Unregularised, the bias of a person whose ratings are all at the
# top (or bottom) of the scale has no finite optimum: f keeps falling as b grows. At 5 the
# sigmoid is within 0.7 % of its limit, and trained users' biases stay far inside (within +-1.1
# on ml-latest-small), so the bound binds only for such one-sided histories.
BIAS_LIMIT = 5.0
MAX_ITERATIONS = 100  # Newton steps tried, kept or not; a few to ten usually suffice
TOLERANCE = 1e-7  # stop when every gradient entry is below this, per rating (f sums ratings)
_MAX_DAMPING = 1e12  # no step lowers f any more: f is at its minimum within float64


def user_l2(embeddings_l2: float, activity_l2: float, n_history, n_fitted: int):
    """The weight of ||u||^2 in one person's fold-in objective, as the training loss sets it.

    One training step on a batch of B ratings minimises (Keras, movielens.training.compiled.kernels)

        sum_batch (pred - r)^2 / B + activity_l2 * sum_batch ||u_row||^2 / B
            + embeddings_l2 * ||U||^2 (the whole table)

    and an epoch is S = n_fitted / B such steps. Summed over an epoch, a user with n_history
    ratings sees its squared errors and its looked-up row (activity_l2 / B per look-up, n_history
    look-ups) each once, and the whole-table term S times; times B:

        sum_i (pred_i - r_i)^2 + (activity_l2 * n_history + embeddings_l2 * n_fitted) * ||u||^2.

    Args:
        embeddings_l2, activity_l2: the model's L2 weights (regularisation_of).
        n_history: the person's ratings (an int or an int array, one per person).
        n_fitted: ratings in one epoch of the fit that produced the tables.
    """
    return activity_l2 * np.asarray(n_history, np.float64) + embeddings_l2 * float(n_fitted)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The model's sigmoid, 1 / (1 + exp(-z)), written with tanh, which does not overflow for
    large negative z; movielens.ranking.formula.rating_of_logit scores with it too."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z)))


def _objective(theta, design, offset, ratings, l2, scale, order: int):
    """f at theta = [u, b], and for order 2 its gradient and Hessian (float64)."""
    lo, span = scale
    s = sigmoid(design @ theta + offset)
    residual = lo + span * s - ratings
    u = theta[:-1]
    f = float(residual @ residual + l2 * (u @ u))
    if order == 0:
        return f, None, None
    slope = span * s * (1.0 - s)  # d pred / d logit
    gradient = 2.0 * (design.T @ (residual * slope))
    gradient[:-1] += 2.0 * l2 * u
    # d^2 f / d logit^2 / 2 = slope^2 + residual * d slope / d logit; the second part can be < 0,
    # which the damping covers.
    curvature = slope * slope + residual * slope * (1.0 - 2.0 * s)
    hessian = 2.0 * ((design.T * curvature) @ design)
    hessian[np.diag_indices(len(u))] += 2.0 * l2
    return f, gradient, hessian


def _first_guess(offset, ratings, scale, limit) -> np.ndarray:
    """u = 0 and the b whose sigmoid gives the mean rating at the mean movie bias."""
    lo, span = scale
    share = np.clip((float(np.mean(ratings)) - lo) / span, 0.01, 0.99)
    return float(np.clip(np.log(share / (1.0 - share)) - float(np.mean(offset)), -limit, limit))


def _pinned(theta, gradient, limit) -> bool:
    """Whether the bias sits at its bound with the gradient pushing it further out."""
    b, g = theta[-1], gradient[-1]
    return (b >= limit and g < 0) or (b <= -limit and g > 0)


def _step(gradient, hessian, damping, pinned) -> np.ndarray | None:
    """The damped Newton step, or None when the damped Hessian is not positive definite."""
    size = len(gradient)
    system = hessian + damping * np.eye(size)
    rhs = -gradient
    if pinned:  # the bias stays where it is: solve for u alone
        system = system.copy()
        system[-1, :] = system[:, -1] = 0.0
        system[-1, -1], rhs = 1.0, np.append(rhs[:-1], 0.0)
    try:
        np.linalg.cholesky(system)
    except np.linalg.LinAlgError:
        return None
    return np.linalg.solve(system, rhs)


def fit_person(design, offset, ratings, l2, scale, limit=BIAS_LIMIT) -> np.ndarray:
    """One person's [u, b], float64 (dim + 1,), minimising f (see the module's docstring).

    Args:
        design: float64 (n, dim + 1), the rated movies' vectors with a column of ones (for b).
        offset: float64 (n,), their movie biases; ratings: float64 (n,).
        l2: user_l2 for this person; scale: (lo, hi - lo); limit: the bound on |b|.
    """
    theta = np.zeros(design.shape[1])
    theta[-1] = _first_guess(offset, ratings, scale, limit)
    f, gradient, hessian = _objective(theta, design, offset, ratings, l2, scale, 2)
    damping = 1e-6 * (1.0 + float(np.abs(np.diag(hessian)).max()))
    for _ in range(MAX_ITERATIONS):
        pinned = _pinned(theta, gradient, limit)
        free = gradient[:-1] if pinned else gradient
        if np.abs(free).max() <= TOLERANCE * len(ratings) or damping > _MAX_DAMPING:
            break
        step = _step(gradient, hessian, damping, pinned)
        if step is None:
            damping *= 4.0
            continue
        trial = theta + step
        trial[-1] = np.clip(trial[-1], -limit, limit)
        trial_f = _objective(trial, design, offset, ratings, l2, scale, 0)[0]
        if trial_f < f:
            theta = trial
            f, gradient, hessian = _objective(theta, design, offset, ratings, l2, scale, 2)
            damping = max(damping / 3.0, 1e-12)
        else:
            damping *= 4.0
    return theta


@cache
def _blas_controller():
    """threadpoolctl's controller, made once (1 ms: it scans the loaded libraries; a limit: 10 us)."""
    import threadpoolctl

    return threadpoolctl.ThreadpoolController()


def _by_person(users: np.ndarray, n_people: int) -> list[np.ndarray]:
    """The positions of each person's ratings, people 0..n_people-1 (stable order)."""
    order = np.argsort(users, kind="stable")
    bounds = np.searchsorted(users[order], np.arange(n_people + 1))
    return [order[bounds[p] : bounds[p + 1]] for p in range(n_people)]


def _check_indices(users, movies, ratings, n_people: int, n_movies: int) -> None:
    if not len(users) == len(movies) == len(ratings):
        raise ValueError(f"{len(users)} users, {len(movies)} movies, {len(ratings)} ratings")
    if not np.isfinite(ratings).all():
        raise ValueError("ratings must be finite numbers")
    if len(users) and (users.min() < 0 or users.max() >= n_people):
        raise ValueError(f"people must be numbered 0..{n_people - 1}")
    if len(movies) and (movies.min() < 0 or movies.max() >= n_movies):
        raise ValueError(f"movie indices must be in the model's 0..{n_movies - 1}")


def fold_in_ratings(
    movie_vectors: np.ndarray,
    movie_bias: np.ndarray,
    rating_scale: tuple[float, float],
    users: np.ndarray,
    movies: np.ndarray,
    ratings: np.ndarray,
    embeddings_l2: float,
    activity_l2: float,
    n_fitted: int,
    *,
    n_people: int | None = None,
    bias_limit: float = BIAS_LIMIT,
) -> tuple[np.ndarray, np.ndarray]:
    """The people's user rows fitted to their ratings against the fixed movie tables.

    Args:
        movie_vectors: float (n_movies, dim); movie_bias: float (n_movies,).
        rating_scale: (lo, hi) of the model's Rescaling layer.
        users: int (n,), each rating's person 0..n_people-1; movies: int (n,), its movie index
            (0..n_movies-1); ratings: float (n,).
        embeddings_l2, activity_l2, n_fitted: the training's L2s and epoch size (user_l2).
        n_people: how many people (default max(users) + 1); one with no rating gets u = 0, b = 0.
        bias_limit: the bound on |b| (BIAS_LIMIT's comment says why there is one).

    Returns:
        user_vectors float32 (n_people, dim), user_bias float32 (n_people,).
    """
    users, movies = np.asarray(users, np.int64), np.asarray(movies, np.int64)
    ratings = np.asarray(ratings, np.float64)
    n_people = (int(users.max()) + 1 if len(users) else 0) if n_people is None else n_people
    _check_indices(users, movies, ratings, n_people, len(movie_vectors))
    design = np.empty((len(movies), movie_vectors.shape[1] + 1))
    design[:, :-1] = movie_vectors[movies]
    design[:, -1] = 1.0
    offset = np.asarray(movie_bias, np.float64)[movies]
    lo, hi = rating_scale
    l2 = user_l2(embeddings_l2, activity_l2, np.bincount(users, minlength=n_people), n_fitted)
    rows = np.zeros((n_people, design.shape[1]))
    # (dim + 1)-sized products gain nothing from BLAS threads, and on busy cores waiting for them
    # cost 300 ms for a 1,000-rating history instead of 3 (measured on the 2-core machine).
    with _blas_controller().limit(limits=1, user_api="blas"):
        for person, at in enumerate(_by_person(users, n_people)):
            if len(at):
                rows[person] = fit_person(
                    design[at], offset[at], ratings[at], l2[person], (lo, hi - lo), bias_limit
                )
    return rows[:, :-1].astype(np.float32), rows[:, -1].astype(np.float32)


def fold_in_biases(
    bias_model: BiasModel,
    reg_users: float,
    users: np.ndarray,
    movies: np.ndarray,
    ratings: np.ndarray,
    *,
    n_people: int | None = None,
) -> np.ndarray:
    """The bias baseline's b_u of each person: the user step of its ALS (model/baseline.fit_biases)
    against the trained mu and b_m, sum_i (r_i - mu - b_m_i) / (reg_users + n_u).

    Args:
        bias_model: the trained bias model; reg_users: train.baseline_reg_users.
        users: int (n,), people 0..n_people-1; movies: int (n,), movie indices (0..n_movies-1);
            ratings: float (n,).
        n_people: how many people (default max(users) + 1); one with no rating gets b_u = 0.

    Returns:
        float64 (n_people,).
    """
    users, movies = np.asarray(users, np.intp), np.asarray(movies, np.intp)
    n_people = (int(users.max()) + 1 if len(users) else 0) if n_people is None else n_people
    ratings = np.asarray(ratings, np.float64)
    _check_indices(users, movies, ratings, n_people, len(bias_model.movie_bias))
    residual = ratings - bias_model.mu - bias_model.movie_bias[movies]
    counts = np.bincount(users, minlength=n_people)
    return np.bincount(users, residual, n_people) / (reg_users + counts)


def _l2_of(regulariser, where: str) -> float:
    """The l2 weight of a serialised Keras regulariser (None: 0)."""
    if regulariser is None:
        return 0.0
    config = regulariser.get("config") if isinstance(regulariser, dict) else None
    if not isinstance(config, dict) or regulariser.get("class_name") not in ("L2", "L1L2"):
        raise PipelineError(f"{where} is {regulariser!r}, not an L2 weight")
    if float(config.get("l1", 0.0) or 0.0):
        raise PipelineError(f"{where} has an L1 weight, which fold-in does not model")
    return float(config.get("l2", 0.0) or 0.0)


def regularisation_of(model_path: Path) -> tuple[float, float]:
    """(embeddings_l2, activity_l2) of the user embedding of a saved .keras model (no TensorFlow).

    Raises:
        PipelineError: when the file cannot be read or has no user embedding with L2 weights.
    """
    from movielens.model.weights import read_config  # h5py, only for this: fold-in stays NumPy

    config = read_config(model_path)
    layer = next((x for x in config.get("layers", []) if x.get("name") == USER_EMBEDDING), None)
    if layer is None or not isinstance(layer.get("config"), dict):
        raise PipelineError(f"{model_path} has no {USER_EMBEDDING} layer to fold people into")
    return tuple(
        _l2_of(layer["config"].get(key), f"{model_path}'s {USER_EMBEDDING} {key}")
        for key in ("embeddings_regularizer", "activity_regularizer")
    )
