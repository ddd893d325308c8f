"""bench_topn under heldout_users: every ranker folds the held-out people in from their history.

Tiny data whose answer is known: the trained users watch in two blocks, {0, 1} and {2, 3}; a
held-out person who gives movie 0 must get movie 1 first, one who gives movie 2 movie 3, from
every watch ranker and from the served lists, and never a movie they gave.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks.audience import audience_of
from benchmarks.bench_topn import SERVED, score_rows
from movielens.evaluation.topn import popularity_factors, ranking_table
from movielens.model.watch import fit_watch, history_matrix
from movielens.ranking.foldin import FoldInSettings
from movielens.ranking.scorers import Factors

N_MOVIES = 6
# trained user -> movies: two blocks, and movies 4 and 5 watched across them
TRAINED = {0: [0, 1, 4], 1: [0, 1, 5], 2: [0, 1], 3: [0, 1], 4: [2, 3, 4], 5: [2, 3, 5], 6: [2, 3]}
# held-out userId -> (the movie given, the planted movie to predict)
PEOPLE = {100: (0, 1), 200: (2, 3)}
EVALUATE = {
    "k": 2, "relevance_threshold": 4.0, "block_size": 8, "bootstrap_resamples": 50, "seed": 0,
}  # fmt: skip
WATCH = {
    "min_ratings": 1, "ease_l2": 1.0, "ease_max_movies": 100, "als_factors": 2,
    "als_regularization": 0.01, "als_alpha": 10.0, "als_iterations": 15, "seed": 0,
}  # fmt: skip


def frames() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """train, test and history as the preprocess stage writes them under heldout_users."""
    train = pd.DataFrame(
        [(u, m, 4.0) for u, movies in TRAINED.items() for m in movies],
        columns=["user_index", "movie_index", "rating"],
    )

    def held_out(position: int, rating: float) -> pd.DataFrame:
        rows = [(uid, -1, pair[position], rating) for uid, pair in PEOPLE.items()]
        return pd.DataFrame(rows, columns=["userId", "user_index", "movie_index", "rating"])

    return train, held_out(1, 5.0), held_out(0, 4.0)


def watch_model(train: pd.DataFrame, model: str):
    history = history_matrix(train["user_index"], train["movie_index"], len(TRAINED), N_MOVIES)
    return fit_watch(history, model=model, **WATCH)


@pytest.mark.parametrize("model", ["ease", "als"])
def test_a_held_out_person_gets_the_movie_their_history_points_to(model):
    train, test, history = frames()
    audience = audience_of(train, test, history, len(TRAINED), N_MOVIES)
    assert audience.folded and audience.n_users == len(PEOPLE)
    ranker = {model: audience.watch(watch_model(train, model))}
    metrics = ranking_table(ranker, audience.given, audience.targets, 2, 4.0, 8)[model]
    # people are numbered by userId: 100 gave movie 0, 200 movie 2
    assert metrics.lists.movies[:, 0].tolist() == [1, 3]
    assert metrics.ndcg.tolist() == [1.0, 1.0]
    given = set(audience.given.itertuples(index=False, name=None))
    listed = {(p, m) for p, row in enumerate(metrics.lists.movies) for m in row if m >= 0}
    assert not listed & given


def test_the_served_row_folds_people_in_and_is_compared_with_intervals():
    train, test, history = frames()
    audience = audience_of(train, test, history, len(TRAINED), N_MOVIES)
    # a rating model that likes every movie the same: the served order is the watch model's
    rating = Factors(
        np.zeros((len(TRAINED), 1), np.float32), np.zeros((N_MOVIES, 1), np.float32),
        np.zeros(len(TRAINED), np.float32), np.zeros(N_MOVIES, np.float32), (0.5, 5.0),
    )  # fmt: skip
    served = audience.served(
        rating, watch_model(train, "ease"), 1.0, FoldInSettings(0.0, 0.01, len(train))
    )
    popular = popularity_factors(train["movie_index"].to_numpy(), audience.n_users, N_MOVIES)
    rankers = {"most popular": popular, SERVED: served}
    rows = {
        row["model"]: row
        for row in score_rows(rankers, audience.given, audience.targets, EVALUATE, {})
    }
    assert rows[SERVED]["ndcg@2"] == 1.0 and rows[SERVED]["users_evaluated"] == 2
    lead = rows["most popular"]["served_minus"]
    assert lead["users"] == 2
    assert lead["mean_difference"] == pytest.approx(1.0 - rows["most popular"]["ndcg@2"])
    assert lead["low"] <= lead["mean_difference"] <= lead["high"]
