"""The service's replies, from models loaded once (state.Served), in the shape `movielens recommend
--json` prints: the same steps as serve.answers and serve.folded, which load the models per call.

A known user's list is serve.answers.recommend over the served ranker; a user the models do not
know gets the non-personal list, flagged with the reason; ratings given in a request are checked
as `--ratings` checks a file (serve.given) and folded in through ranking.foldin.folded_ranker;
similar movies come from the watch model, or from the rating model's embeddings. Each failure a
request can cause is a ReplyError: an HTTP status and one line.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pandas as pd

from movielens.data.custom import CustomTable, raw_ratings_path, read_raw_ratings
from movielens.data.ids import index_in
from movielens.data.releases import Dataset
from movielens.plumbing.errors import PipelineError
from movielens.ranking.lists import top_n
from movielens.ranking.served import ranked_by
from movielens.serve.answers import (
    NON_PERSONAL,
    index_of,
    indices_of,
    known_user_top,
    similar_movies,
    user_answer,
)
from movielens.serve.folded import NONE_KNOWN, FoldModels, folded_in_summary, given_history
from movielens.serve.folded import folded_top as fold_top
from movielens.serve.given import GivenRatings, check_values, last_per_movie
from movielens.serve.http.state import ModelStore, Served, ServiceSettings
from movielens.serve.load import FILTERED, IN_TEST, raw_ratings_of
from movielens.serve.text import Neighbour, Recommendation

GIVEN = "the request's ratings"  # how a ratings error names what was wrong (as --ratings FILE)
SIMILAR_BY_WATCH = {"ease": "EASE's item-item weight", "als": "cosine of ALS item factors"}
SIMILAR_BY_EMBEDDINGS = (
    "cosine similarity of the rating model's movie embeddings (the watch model does "
    "not score movies with fewer than watch.min_ratings training ratings)"
)


class ReplyError(Exception):
    """A request the service cannot answer: its HTTP status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class RawIds:
    """The raw release's (userId, movieId) pairs, read on the first id absent from the splits.

    They tell a user or movie that preprocess.top_users / top_movies filtered out from an id no
    one rated; read once per process (not per request, as the CLI does), so unknown ids cost a
    lookup.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pairs: dict[Dataset | CustomTable, pd.DataFrame] = {}

    def pairs(self, dataset: Dataset | CustomTable) -> pd.DataFrame:
        """userId and movieId of every raw rating of `dataset`.

        Raises:
            PipelineError: when the raw ratings are absent (serve.load's message says so).
        """
        with self._lock:
            if dataset not in self._pairs:
                if not raw_ratings_path(dataset).exists():
                    raw_ratings_of("userId", -1, "user", dataset)  # raises: which is unknown
                ratings = read_raw_ratings(dataset)
                self._pairs[dataset] = ratings[["userId", "movieId"]].copy()
            return self._pairs[dataset]

    def rated(
        self, column: str, value: int, kind: str, dataset: Dataset | CustomTable
    ) -> pd.DataFrame:
        """The raw pairs whose `column` is `value`; ReplyError 404 when there are none."""
        try:
            pairs = self.pairs(dataset)
        except PipelineError as err:
            raise ReplyError(404, str(err)) from None
        found = pairs[pairs[column] == value]
        if found.empty:
            raise ReplyError(
                404, f"unknown {kind} {value}: {dataset.name} has no ratings by that {column}"
            )
        return found


RAW = RawIds()


def stranger(served: Served, user_id: int, rows: pd.DataFrame) -> tuple[str, np.ndarray]:
    """serve.load.unknown_user's answer: why the models do not know the user, and its movieIds."""
    if len(rows):
        return IN_TEST, rows["movieId"].to_numpy()
    raw = RAW.rated("userId", user_id, "user", served.settings.dataset)
    return FILTERED, raw["movieId"].to_numpy()


def listed(served: Served, best: np.ndarray, scores, predicted) -> list[dict]:
    """serve.text.recommendations' rows (its dataclass, its rounding) of the movie indices `best`.

    The titles come from the served MovieTable: text.movie_info indexes the whole movies frame on
    each call, which costs more than the ranking (tests/test_service.py holds the rows equal).
    """
    ids = served.catalogue.movie_ids[best]
    titles, genres = served.titles_of(ids)
    rows = zip(ids, titles, genres, scores, predicted, strict=True)
    return [
        vars(Recommendation(int(m), t, g, round(float(s), 6), round(float(r), 4)))
        for m, t, g, s, r in rows
    ]


def user_reply(served: Served, user_id: int, n: int) -> dict:
    """GET /users/{userId}/recommendations: serve.answers.user_list's answer."""
    catalogue = served.catalogue
    rows = served.user_rows(user_id)
    user = index_of(user_id, catalogue.user_ids)
    if user is not None:
        best, scores, predicted, how = known_user_top(served.ranker, user, rows, n)
        reason, count = None, len(rows)
    else:
        reason, rated_ids = stranger(served, user_id, rows)
        best = top_n(served.non_personal, indices_of(rated_ids, catalogue.movie_ids), n)
        scores, predicted = served.non_personal[best], served.average[best]
        how, count = NON_PERSONAL, len(np.unique(rated_ids))
    return user_answer(user_id, reason, how, count, listed(served, best, scores, predicted))


def given_ratings(served: Served, movie_ids: list[int], ratings: list[float]) -> GivenRatings:
    """The request's ratings checked as `--ratings` checks a file's rows (serve.given).

    Raises:
        ReplyError: 422, naming the first rating off the model's scale.
    """
    if not movie_ids:
        raise ReplyError(422, 'ratings: give at least one {"movieId": .., "rating": ..}')
    cells = pd.DataFrame(
        {"movieId": [str(m) for m in movie_ids], "rating": [repr(r) for r in ratings]}
    )
    labels = [f"item {i}" for i in range(1, len(cells) + 1)]
    try:
        return last_per_movie(*check_values(cells, labels, GIVEN, served.rating_scale))
    except PipelineError as err:
        raise ReplyError(422, str(err)) from None


def folded_top(served: Served, history, n: int) -> tuple[np.ndarray, ...]:
    """serve.folded.folded_top on the loaded models: indices, scores, predicted ratings."""
    if served.fold_in is None:
        raise ReplyError(
            501,
            f"this service's rating model is not the standard architecture "
            f"({served.fold_in_problem}): it cannot fold ratings in; ask for a user's list",
        )
    ranker = served.ranker
    models = FoldModels(ranker.rating, ranker.watch.watch, served.fold_in)
    return fold_top(history, models, n, ranker.like_weight)


def ratings_reply(served: Served, movie_ids: list[int], ratings: list[float], n: int) -> dict:
    """POST /recommendations: serve.folded.ratings_list's answer for ratings given in the request."""
    catalogue = served.catalogue
    given = given_ratings(served, movie_ids, ratings)
    history = given_history(given, catalogue)
    personalised = len(history.movies) > 0
    if personalised:
        best, scores, predicted = folded_top(served, history, n)
        how = ranked_by(served.ranker.watch.watch.kind, served.ranker.like_weight)
    else:
        best = top_n(served.non_personal, history.excluded, n)
        scores, predicted, how = served.non_personal[best], served.average[best], NON_PERSONAL
    found = listed(served, best, scores, predicted)
    unknown = given.movie_ids[index_in(catalogue.movie_ids, given.movie_ids) < 0]
    return {
        "userId": None,
        "personalised": personalised,
        "reason": None if personalised else NONE_KNOWN,
        "ranked_by": how,
        "rated": history.rated,
        "folded_in": folded_in_summary(given, history, unknown),
        "recommendations": found,
    }


def known_movie(served: Served, movie_id: int) -> bool:
    return index_of(movie_id, served.catalogue.movie_ids) is not None


def unknown_movie(served: Served, movie_id: int) -> ReplyError:
    """serve.load.explain_unknown_movie's message, as a 404."""
    if (served.catalogue.ratings["movieId"] == movie_id).any():
        return ReplyError(404, f"movie {movie_id} is unknown to the model: {IN_TEST}")
    RAW.rated("movieId", movie_id, "movie", served.settings.dataset)
    return ReplyError(404, f"movie {movie_id} is unknown to the model: {FILTERED}")


def similar_reply(served: Served, movie_id: int, n: int) -> dict:
    """GET /movies/{movieId}/similar: serve.answers.similar_list's answer."""
    catalogue = served.catalogue
    movie = index_of(movie_id, catalogue.movie_ids)
    if movie is None:
        raise unknown_movie(served, movie_id)
    watch = served.ranker.watch.watch
    similarity = watch.similarity(movie)
    if similarity is not None:
        best = top_n(similarity, np.array([movie]), n)
        values = similarity[best]
        how = (
            f"the watch model: {SIMILAR_BY_WATCH[watch.kind]} (how watching it goes with "
            "watching each other movie)"
        )
    else:
        best, values = similar_movies(served.movie_vectors, movie, n)
        how = SIMILAR_BY_EMBEDDINGS
    ids = catalogue.movie_ids[best]
    titles, genres = served.titles_of(np.array([movie_id, *ids]))
    return {
        "movieId": movie_id,
        "title": titles[0],
        "genres": genres[0],
        "similar_by": how,
        "similar": [
            vars(Neighbour(int(m), t, g, round(float(v), 4)))
            for m, t, g, v in zip(ids, titles[1:], genres[1:], values, strict=True)
        ],
    }


def search_reply(served: Served, query: str, limits: ServiceSettings) -> dict:
    """GET /movies?q=: the movies whose title holds every word of the query, most rated first.

    Words match anywhere in the title, case-insensitively, in any order ("matrix the" finds
    "Matrix, The (1999)"); ties go to the title's alphabetical order.
    """
    words = query.casefold().split()
    if not words:
        raise ReplyError(422, "q: give one or more words of a title")
    if len(query) > limits.max_query_chars:
        raise ReplyError(422, f"q: at most {limits.max_query_chars} characters")
    table = served.movie_table
    hits = np.array([i for i, t in enumerate(table.folded) if all(w in t for w in words)], int)
    order = np.lexsort((table.titles[hits], -table.ratings[hits])) if len(hits) else hits
    hits = hits[order][: limits.search_results]
    return {
        "q": query,
        "found": len(order),
        "movies": [
            {
                "movieId": int(table.movie_ids[i]),
                "title": str(table.titles[i]),
                "genres": str(table.genres[i]),
                "ratings": int(table.ratings[i]),
                "known": bool(table.known[i]),
            }
            for i in hits
        ],
    }


def health_reply(store: ModelStore) -> dict:
    """GET /health: up, what is served (files, hashes, the params that made them), and reloads."""
    served = store.current
    ranker = served.ranker
    return {
        "status": "ok",
        "pid": os.getpid(),
        "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(served.loaded_at)),
        "reloads": store.reloads,
        "failed_reloads": store.failed_reloads,
        "last_reload_error": store.last_error,
        "models": served.versions,
        "serving": {
            "users": len(served.catalogue.user_ids),
            "movies": len(served.catalogue.movie_ids),
            "watch_model": ranker.watch.watch.kind,
            "ranked_by": ranked_by(ranker.watch.watch.kind, ranker.like_weight),
            "like_weight": ranker.like_weight,
            "rating_scale": list(served.rating_scale),
            "fold_in": served.fold_in is not None,
        },
    }
