"""`movielens recommend --ratings FILE`: a list for the ratings a person gives, folded into the models.

The ratings (movielens.serve.given reads and checks them) are folded in, no retraining: the rating
model fits the person's embedding and bias against its fixed movie tables with the training's L2s,
the watch model scores the person's history row (movielens.ranking.foldin, the code path evaluate
uses for held-out users), and the served formula ranks as for a trained user. The list never holds
a movie of the history. Movies the models do not know are skipped and named; when none is known,
the list is the non-personal one, flagged. With --user, the user's training ratings are folded in
together with the given ones (a movie rated in both: the given rating, the newer, counts), and the
list also leaves out the user's test-split movies, as --user does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from movielens.data.custom import CustomTable
from movielens.data.ids import index_in
from movielens.data.releases import Dataset
from movielens.model import weights
from movielens.model.architecture import standard_problem
from movielens.model.watch import WatchModel
from movielens.plumbing import paths
from movielens.plumbing.errors import PipelineError, require
from movielens.ranking.foldin import (
    FoldInSettings,
    Histories,
    fold_in_settings,
    folded_ranker,
    folded_ratings,
)
from movielens.ranking.lists import top_n
from movielens.ranking.scorers import Factors
from movielens.ranking.served import ranked_by
from movielens.serve.answers import NON_PERSONAL, ServeSettings, indices_of, recommend
from movielens.serve.given import GivenRatings, read_given
from movielens.serve.load import (
    Catalogue,
    load_catalogue,
    load_non_personal,
    load_scorer,
    load_watch_model,
    rating_scale,
    unknown_user,
)
from movielens.serve.text import recommendations
from movielens.training.epochs import fitted_ratings

log = logging.getLogger(__name__)

NONE_KNOWN = "none of the movies given is known to the models"
NEITHER_KNOWN = "neither the user nor any movie given is known to the models"


@dataclass(frozen=True)
class History:
    """One person's history in the models' movie indices.

    Attributes:
        movies: int64 (h,), distinct movie indices folded in; ratings: float32 (h,), theirs.
        excluded: int64, the movie indices never to list (the history, and with --user the
            user's other rated movies).
        rated: how many distinct movies the person rated (known to the models or not).
        from_training: how many of the folded ratings are the user's training ratings (--user).
        replaced: int64, the movieIds whose training rating a given one replaced (--user).
    """

    movies: np.ndarray
    ratings: np.ndarray
    excluded: np.ndarray
    rated: int
    from_training: int
    replaced: np.ndarray


def fitted_count(n_train: int, settings: ServeSettings) -> int:
    """The ratings one epoch of the saved model's last fit went over (the fold-in's L2 needs it).

    Under train.refit the model was refitted on the whole training split; otherwise it is the
    fit of the split without its validation part.
    """
    return n_train if settings.refit else fitted_ratings(n_train, settings.validation_size)


def known_part(given: GivenRatings, catalogue: Catalogue) -> tuple[np.ndarray, np.ndarray]:
    """The given movies the models know: int64 movie indices and a bool mask over the given."""
    positions = index_in(catalogue.movie_ids, given.movie_ids).astype(np.int64)
    known = positions >= 0
    return positions[known], known


def given_history(given: GivenRatings, catalogue: Catalogue) -> History:
    """The history of a person the models never saw: the given ratings of known movies."""
    movies, known = known_part(given, catalogue)
    none = np.zeros(0, np.int64)
    return History(movies, given.ratings[known], movies, len(given.movie_ids), 0, none)


def training_ratings(user_id: int) -> pd.DataFrame:
    """movie_index and rating of a user's training ratings (the rows the models were fitted on)."""
    return pd.read_parquet(
        paths.TRAIN, columns=["movie_index", "rating"], filters=[("userId", "==", user_id)]
    )


def user_history(
    user_id: int, given: GivenRatings, catalogue: Catalogue, dataset: Dataset | CustomTable
) -> History:
    """--user with --ratings: the user's training ratings with the given ones on top.

    Raises:
        PipelineError: for a userId absent from the ratings (as --user alone).
    """
    movies, known = known_part(given, catalogue)
    ratings = given.ratings[known]
    in_splits = catalogue.ratings[catalogue.ratings["userId"] == user_id]
    if len(in_splits) and in_splits["user_index"].iloc[0] >= 0:
        train = training_ratings(user_id)
        old = train["movie_index"].to_numpy(np.int64)
        kept = ~np.isin(old, movies)
        replaced = catalogue.movie_ids[old[~kept]].astype(np.int64)
        history_movies = np.concatenate([old[kept], movies])
        history_ratings = np.concatenate([train["rating"].to_numpy(np.float32)[kept], ratings])
        rated_ids = in_splits["movieId"].to_numpy()
        from_training = int(kept.sum())
    else:  # the models do not know the user: only the given ratings can be folded in
        rated_ids = unknown_user(user_id, in_splits, dataset)[1]
        history_movies, history_ratings, from_training = movies, ratings, 0
        replaced = np.zeros(0, np.int64)
    rated_movies = indices_of(rated_ids, catalogue.movie_ids).astype(np.int64)
    excluded = np.union1d(rated_movies, history_movies)
    rated = len(np.union1d(np.unique(rated_ids), given.movie_ids))
    return History(
        history_movies, history_ratings, excluded, rated, from_training, np.sort(replaced)
    )


def check_foldable() -> None:
    """Refuse a rating model that fold-in cannot fit rows for (before anything is loaded).

    Raises:
        PipelineError: for a model other than the standard architecture.
    """
    problem = standard_problem(weights.read_config(paths.MODEL))
    if problem is not None:
        raise PipelineError(
            f"--ratings folds people into the standard rating model only; {paths.MODEL} is not "
            f"({problem}); recommend for a trained user with --user instead"
        )


@dataclass(frozen=True)
class FoldModels:
    """What folding a person in needs, loaded once: the rating model's tables, the watch model,
    and the fold-in settings (the training's L2s and epoch size)."""

    factors: Factors
    watch: WatchModel
    fold: FoldInSettings


def load_fold_models(catalogue: Catalogue, settings: ServeSettings) -> FoldModels:
    """Load the saved models for fold-in (no TensorFlow: the standard model's tables, by h5py).

    Raises:
        PipelineError: for a rating model other than the standard architecture.
    """
    check_foldable()
    require(paths.WATCH_MODEL)
    n_users, n_movies = len(catalogue.user_ids), len(catalogue.movie_ids)
    factors = load_scorer(paths.MODEL, n_users, n_movies, settings.batch_size)
    watch = load_watch_model(n_users, n_movies)
    fold = fold_in_settings(paths.MODEL, fitted_count(catalogue.n_train, settings))
    return FoldModels(factors, watch, fold)


def folded_top(
    history: History, models: FoldModels, n: int, like_weight: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The folded-in person's list: movie indices, served scores, predicted ratings.

    The work of one request once the models are loaded (benchmarks/bench_foldin.py times it).
    """
    people = Histories.of(np.zeros(len(history.movies)), history.movies, history.ratings, 1)
    ranker = folded_ranker(people, models.factors, models.watch, like_weight, models.fold)
    best, scores = recommend(ranker, 0, history.excluded, n)
    # The listed movies' ratings alone: not a second product over the whole catalogue.
    return best, scores, folded_ratings(ranker, np.zeros(len(best), np.int64), best)


def non_personal_top(
    history: History, catalogue: Catalogue, n: int, like_weight: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The list when nothing can be folded in: the non-personal one, the history left out."""
    require(paths.BASELINE)
    scores, average = load_non_personal(catalogue, like_weight)
    best = top_n(scores, history.excluded, n)
    return best, scores[best], average[best]


def named(ids: np.ndarray) -> list[int]:
    return [int(i) for i in ids]


def ratings_list(source: str, user_id: int | None, n: int, settings: ServeSettings) -> dict:
    """The --ratings answer: the --user answer's fields, and `folded_in`, what was folded in.

    Args:
        source: the --ratings argument, a path or "-" (standard input).
        user_id: --user, whose training ratings are folded in too, or None.
        n: the list's length.

    Raises:
        PipelineError: for bad input (movielens.serve.given), a missing pipeline output, a userId
            absent from the ratings, or a rating model fold-in cannot fit.
    """
    require(paths.USER_IDS, paths.MOVIE_IDS, paths.TRAIN, paths.TEST, paths.MOVIES, paths.MODEL)
    given = read_given(source, rating_scale())
    catalogue = load_catalogue()
    if user_id is None:
        history = given_history(given, catalogue)
    else:
        history = user_history(user_id, given, catalogue, settings.dataset)
    personalised = len(history.movies) > 0
    if personalised:
        models = load_fold_models(catalogue, settings)
        best, scores, predicted = folded_top(history, models, n, settings.like_weight)
        how = ranked_by(models.watch.kind, settings.like_weight)
    else:
        best, scores, predicted = non_personal_top(history, catalogue, n, settings.like_weight)
        how = NON_PERSONAL
    if len(best) < n:
        log.warning("only %d movies are left that the history does not hold", len(best))
    found = recommendations(catalogue.movie_ids[best], scores, predicted, catalogue.movies)
    unknown = given.movie_ids[index_in(catalogue.movie_ids, given.movie_ids) < 0]
    return {
        "userId": user_id,
        "personalised": personalised,
        "reason": None if personalised else NONE_KNOWN if user_id is None else NEITHER_KNOWN,
        "ranked_by": how,
        "rated": history.rated,
        "folded_in": folded_in_summary(given, history, unknown),
        "recommendations": [vars(r) for r in found],
    }


def folded_in_summary(given, history, unknown: np.ndarray) -> dict:
    """What a folded-in answer says of its history: the counts, and the movies skipped or replaced."""
    return {
        "ratings_given": given.rows,
        "movies_given": len(given.movie_ids),
        "ratings_folded_in": len(history.movies),
        "training_ratings": history.from_training,
        "unknown_movies": named(np.sort(unknown)),
        "repeated_movies": named(given.repeated),
        "replaced_training_ratings": named(history.replaced),
    }
