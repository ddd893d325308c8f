"""Whom bench_topn's rankers rank: the users the models were trained on, or, under
preprocess.split=heldout_users, the held-out people folded in from their histories.

Either way every ranker gets the same input a served request gives it (a trained user's training
row, a new person's history row), leaves those movies out of its list and is scored on the same
targets with the evaluate stage's code (movielens.evaluation), so a row of the benchmark and the
evaluate stage's figure of the same model agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import scipy.sparse as sp

from movielens.evaluation.evaluate import folded_people
from movielens.model.watch import WatchModel, history_matrix
from movielens.plumbing.errors import PipelineError
from movielens.ranking.foldin import FoldInSettings, Histories, folded_ranker
from movielens.ranking.scorers import Factors, Scorer
from movielens.ranking.served import Ranker, WatchScorer, served_ranker

GIVEN = ["user_index", "movie_index"]
TARGETS = ["user_index", "movie_index", "rating"]


@dataclass(frozen=True)
class Audience:
    """The users every ranker ranks, what each one gives and what is predicted.

    Attributes:
        given: user_index, movie_index of the ratings each user gives (the training split's, or a
            person's history): the rankers' input, never in their lists.
        targets: user_index, movie_index (-1: a movie unseen in training) and rating of the
            ratings to predict.
        rows: binary (n_users, n_movies) CSR of `given`.
        histories: the people's ratings (people 0..n-1, their user_index) when they are folded in;
            None for the trained users.
    """

    given: pd.DataFrame
    targets: pd.DataFrame
    rows: sp.csr_matrix
    histories: Histories | None = None

    @property
    def n_users(self) -> int:
        return self.rows.shape[0]

    @property
    def folded(self) -> bool:
        return self.histories is not None

    def watch(self, model: WatchModel) -> WatchScorer:
        """A fitted watch model (EASE, implicit's ALS) as a Scorer of these users: a trained user
        from the fit, a person from their history row (WatchModel.fold_in: EASE's row times B,
        ALS's recalculate_user against the fixed item factors)."""
        return WatchScorer(model.fold_in(self.rows) if self.folded else model, self.rows)

    def served(
        self,
        rating: Scorer,
        watch: WatchModel,
        like_weight: float,
        fold_in: FoldInSettings | None,
    ) -> Ranker:
        """The served ranking of these users: the evaluate stage's (served_ranker for trained
        users, movielens.ranking.foldin.folded_ranker for people, fitted with `fold_in`).

        Raises:
            PipelineError: when people are to be folded into a model that is not the standard
                architecture, or without fold-in settings.
        """
        if not self.folded:
            users, movies = (self.given[column].to_numpy() for column in GIVEN)
            return served_ranker(rating, watch, users, movies, like_weight)
        if not isinstance(rating, Factors) or fold_in is None:
            raise PipelineError(
                "folding held-out users in needs the standard rating model and its fold-in "
                "settings; use another preprocess.split or the standard model"
            )
        return folded_ranker(self.histories, rating, watch, like_weight, fold_in)


def trained_users(train: pd.DataFrame, test: pd.DataFrame, n_users: int, n_movies: int) -> Audience:
    """The trained users: their training ratings given, their test ratings predicted."""
    rows = history_matrix(train["user_index"], train["movie_index"], n_users, n_movies)
    return Audience(train[GIVEN], test[TARGETS], rows)


def held_out_people(history: pd.DataFrame, test: pd.DataFrame, n_movies: int) -> Audience:
    """The held-out people (heldout_users), numbered by userId as the evaluate stage does
    (movielens.evaluation.evaluate.folded_people): their history given (ratings of movies no
    model knows left out), their later ratings predicted."""
    _, histories, targets, _ = folded_people(history, test)
    given = pd.DataFrame({"user_index": histories.users, "movie_index": histories.movies})
    return Audience(given, targets[TARGETS], histories.rows(n_movies), histories)


def audience_of(
    train: pd.DataFrame, test: pd.DataFrame, history: pd.DataFrame, n_users: int, n_movies: int
) -> Audience:
    """The held-out people when data/processed/history.parquet has rows (heldout_users), else
    the trained users."""
    if len(history):
        return held_out_people(history, test, n_movies)
    return trained_users(train, test, n_users, n_movies)
