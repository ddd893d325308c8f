"""The latent rating model: its parameters, the ratings it gives, and their exact distribution."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from movielens.synth.choices import RELEVANT_RATING

# rating = clip(round_to_grid(GLOBAL_MEAN + b_u + b_m + p_u . q_m + noise))
LATENT_DIM = 8
GLOBAL_MEAN = 3.5
USER_BIAS_STD = 0.35
MOVIE_BIAS_STD = 0.45
FACTOR_STD = 0.46  # LATENT_DIM * FACTOR_STD**4 ~ 0.36, the variance of the interaction term
NOISE_STD = 0.5
MAX_RATING = 5.0
WHOLE_STAR_USER_SHARE = 0.4  # where half stars exist, these users still give whole stars only
# Activity and popularity: log-normal weights of who rates and what is rated.
USER_ACTIVITY_SIGMA = 1.3
MOVIE_POPULARITY_SIGMA = 2.0
# The correlation of a movie's choice vector with its rating vector q_m (see choice_factors).
TASTE_RATING_CORRELATION = 0.3
SCORE_CHUNK_ROWS = 1 << 20  # pairs rated at once, which bounds the memory of score


@dataclass(frozen=True)
class LatentModel:
    """Per-user and per-movie parameters of the rating model."""

    user_bias: np.ndarray  # (n_users,) float32
    movie_bias: np.ndarray  # (n_movies,) float32
    user_factors: np.ndarray  # (n_users, LATENT_DIM) float32
    movie_factors: np.ndarray  # (n_movies, LATENT_DIM) float32
    activity: np.ndarray  # (n_users,) float64, unnormalised
    popularity: np.ndarray  # (n_movies,) float64, unnormalised
    whole_stars_only: np.ndarray  # (n_users,) bool, users who never give half stars


def latent_model(n_users: int, n_movies: int, rng: np.random.Generator) -> LatentModel:
    """Draw every parameter of the model, in a fixed order from `rng`."""

    def normal(std: float, *shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    return LatentModel(
        user_bias=normal(USER_BIAS_STD, n_users),
        movie_bias=normal(MOVIE_BIAS_STD, n_movies),
        user_factors=normal(FACTOR_STD, n_users, LATENT_DIM),
        movie_factors=normal(FACTOR_STD, n_movies, LATENT_DIM),
        activity=rng.lognormal(0.0, USER_ACTIVITY_SIGMA, n_users),
        popularity=rng.lognormal(0.0, MOVIE_POPULARITY_SIGMA, n_movies),
        whole_stars_only=rng.random(n_users) < WHOLE_STAR_USER_SHARE,
    )


def affinity(model: LatentModel, users: np.ndarray, movies: np.ndarray) -> np.ndarray:
    """p_u . q_m, (n,) float32: the interaction term of the rating."""
    return np.einsum("ij,ij->i", model.user_factors[users], model.movie_factors[movies])


def choice_factors(model: LatentModel, rng: np.random.Generator) -> np.ndarray:
    """Movies' choice vectors c_m, (n_movies, LATENT_DIM) float32: taste's affinity is p_u . c_m.

    c_m = rho * q_m + sqrt(1 - rho^2) * s_m, s_m drawn like q_m and rho TASTE_RATING_CORRELATION:
    p_u . c_m has the spread of p_u . q_m and correlation rho with it, so users choose movies
    they like more often without every rating being chosen for being high.
    """
    rho = TASTE_RATING_CORRELATION
    own = rng.standard_normal(model.movie_factors.shape, dtype=np.float32) * FACTOR_STD
    return (rho * model.movie_factors + np.sqrt(1.0 - rho**2) * own).astype(np.float32)


def log_taste_of(
    model: LatentModel, choice: np.ndarray, taste: float
) -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
    """(users, movies) -> taste * p_u . c_m, the log of the weight taste gives each pair; None at 0."""
    if not taste:
        return None

    def log_taste(u: np.ndarray, m: np.ndarray) -> np.ndarray:
        return taste * np.einsum("ij,ij->i", model.user_factors[u], choice[m])

    return log_taste


def expected_rating(mean: np.ndarray, step: np.ndarray | float) -> np.ndarray:
    """E[clip(round_to_grid(mean + noise))], noise ~ N(0, NOISE_STD), float64 like `mean`.

    The grid is step, 2 * step, ..., MAX_RATING; the rating passes the threshold (k + 0.5) * step
    (k = 1 .. MAX_RATING / step - 1) with probability Phi((mean - threshold) / NOISE_STD), and
    each threshold passed adds one step to the lowest rating.
    """
    mean = np.asarray(mean, np.float64)
    step = np.broadcast_to(np.asarray(step, np.float64), mean.shape)
    expected = step.copy()
    for k in range(1, round(MAX_RATING / 0.5)):
        threshold = (k + 0.5) * step
        passed = ndtr((mean - threshold) / NOISE_STD)
        expected += np.where(threshold < MAX_RATING, step * passed, 0.0)
    return expected


def log_relevant(mean: np.ndarray, step: np.ndarray | float) -> np.ndarray:
    """log P(clip(round_to_grid(mean + noise)) >= RELEVANT_RATING), exact like expected_rating.

    RELEVANT_RATING is on both grids, so the rating reaches it when mean + noise passes
    RELEVANT_RATING - step / 2. Computed in mean's precision (float32 is ~5x faster).
    """
    mean = np.asarray(mean)
    threshold = (RELEVANT_RATING - np.asarray(step, mean.dtype) / 2).astype(mean.dtype)
    return np.log(ndtr((mean - threshold) / mean.dtype.type(NOISE_STD)))


def rating_step(model: LatentModel, users: np.ndarray, half_stars: bool) -> np.ndarray | float:
    """Each user's grid step: 0.5, or 1.0 for whole-star releases and whole-star-only users."""
    return np.where(model.whole_stars_only[users], 1.0, 0.5) if half_stars else 1.0


def score(
    users: np.ndarray,
    movies: np.ndarray,
    model: LatentModel,
    half_stars: bool,
    rng: np.random.Generator,
) -> tuple[np.ndarray, tuple[float, float]]:
    """Ratings on the grid, (n,) float32, in chunks to bound memory; Floor's floor and noiseless RMSE.

    With half stars, the users of `model.whole_stars_only` still round to whole stars, as many
    real users do.
    """
    rating = np.empty(len(users), dtype=np.float32)
    bayes_sse = noiseless_sse = 0.0
    for start in range(0, len(users), SCORE_CHUNK_ROWS):
        u, m = users[start : start + SCORE_CHUNK_ROWS], movies[start : start + SCORE_CHUNK_ROWS]
        raw = affinity(model, u, m)
        raw += GLOBAL_MEAN + model.user_bias[u] + model.movie_bias[m]
        mean = raw.astype(np.float64)
        raw += rng.standard_normal(len(u), dtype=np.float32) * NOISE_STD
        step = rating_step(model, u, half_stars)
        chunk = np.clip(np.round(raw / step) * step, step, MAX_RATING)
        rating[start : start + len(u)] = chunk
        bayes_sse += float(np.sum((chunk - expected_rating(mean, step)) ** 2))
        noiseless_sse += float(np.sum((chunk - np.clip(mean, step, MAX_RATING)) ** 2))
    n = max(len(users), 1)
    return rating, (float(np.sqrt(bayes_sse / n)), float(np.sqrt(noiseless_sse / n)))
