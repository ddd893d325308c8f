"""What a perfect model scores on generated ratings: the Floor, and the oracle ranker behind it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from movielens.synth.choices import log_held_out, log_inclusion
from movielens.synth.latent import GLOBAL_MEAN, LatentModel, log_relevant, rating_step
from movielens.synth.sampling import TASTE_OVERSAMPLING


@dataclass(frozen=True)
class Floor:
    """How well a perfect model can do on generated ratings: its RMSE, and its top-N ranking.

    floor_rmse: the RMSE of the Bayes-optimal prediction E[rating | user, movie], computed
        exactly from the generator's own noise, rounding and clipping (expected_rating): what a
        model that knew every b_u, b_m, p_u, q_m would score; no prediction does better on average.
    noiseless_rmse: the RMSE of the noiseless rating clip(GLOBAL_MEAN + b_u + b_m + p_u . q_m)
        (clipped to the user's grid); above floor_rmse on average, since rounding and clipping
        shift the rating's mean away from it near the ends of the scale.
    ranking: choices.estimate_ranking's precision@10 and NDCG@10 of the oracle (Oracle,
        approximately the Bayes-optimal ranker) and of the most-popular ranker, on a sample.
    """

    floor_rmse: float
    noiseless_rmse: float
    ranking: dict[str, float | int]


@dataclass(frozen=True)
class Oracle:
    """A Scorer that knows the generator: log P(movie in u's test split and rated >= 4).

    The chance to be chosen is log_inclusion's of weight popularity * exp(taste * p_u . c_m)
    among the user's per_user[u] picks, turned into the chance to be held out given that the
    movie is not in training (log_held_out); the chance of the rating is log_relevant's.
    """

    model: LatentModel
    choice_factors: np.ndarray  # (n_movies, LATENT_DIM) float32, latent.choice_factors'
    taste: float
    per_user: np.ndarray  # (n_users,) int64
    half_stars: bool

    @property
    def n_users(self) -> int:
        return len(self.per_user)

    @property
    def n_movies(self) -> int:
        return len(self.model.popularity)

    def scores(self, user_index: np.ndarray) -> np.ndarray:
        """float32 (len(user_index), n_movies)."""
        model, users = self.model, np.asarray(user_index)
        affinity = model.user_factors[users] @ model.movie_factors.T  # float32
        wanted = self.per_user[users]
        if self.taste:
            log_taste = self.taste * (model.user_factors[users] @ self.choice_factors.T)
            chosen = log_inclusion(model.popularity, wanted, log_taste, wanted * TASTE_OVERSAMPLING)
        else:
            chosen = log_inclusion(model.popularity, wanted)
        mean = affinity + (GLOBAL_MEAN + model.user_bias[users, None] + model.movie_bias)
        step = rating_step(model, users, self.half_stars)
        liked = log_relevant(mean, np.broadcast_to(step, users.shape)[:, None])
        return (log_held_out(chosen) + liked).astype(np.float32)
