"""Recommendations as served: a user's top-N unrated movies, every user's lists, a movie's neighbours.

A user's list is ranked by movielens.ranking.served (will-watch x will-like), the same lists the evaluate
stage scores, and leaves out every movie the user rated anywhere in data/processed (training split,
its validation part included, and test split). A user the models do not know (every rating in the
test split, or filtered out by preprocess.top_users / top_movies) gets a list that is not
personalised, by popularity and the average user's predicted rating, and the answer says so. Equal
scores go to the lower movieId.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from movielens.data.custom import CustomTable
from movielens.data.ids import index_in
from movielens.data.releases import Dataset
from movielens.plumbing import paths
from movielens.plumbing.errors import PipelineError
from movielens.plumbing.files import write_csv, write_parquet
from movielens.ranking.lists import top_lists, top_n
from movielens.ranking.scorers import Scorer
from movielens.ranking.served import Ranker, lists_frame, ranked_by
from movielens.serve.load import (
    explain_unknown_movie,
    load_catalogue,
    load_movie_vectors,
    load_non_personal,
    load_ranker,
    load_watch_model,
    unknown_user,
)
from movielens.serve.text import movie_info, neighbours, recommendations

log = logging.getLogger(__name__)

NON_PERSONAL = "popularity (training ratings) x the average user's predicted rating (mu + b_m)"
LIST_WRITERS = {".csv": write_csv, ".parquet": write_parquet}


@dataclass(frozen=True)
class ServeSettings:
    """What `recommend` and `similar` take from params.yaml, read once by the CLI (serve.command).

    Attributes:
        like_weight: ranking.like_weight, the served formula's weight of the predicted rating.
        block_size: evaluate.block_size, users ranked per matrix product (--all-users).
        batch_size: evaluate.batch_size, pairs per model.predict call (a non-standard model).
        dataset: data.dataset's release or data.custom's table (movielens.data.custom.source_of),
            whose raw ratings tell why an id is missing from the splits.
        refit, validation_size: train.refit and train.validation_size, which tell how many
            ratings the saved rating model's last fit went over (--ratings' fold-in needs it).
    """

    like_weight: float
    block_size: int
    batch_size: int
    dataset: Dataset | CustomTable
    refit: bool
    validation_size: float


def recommend(
    scorer: Scorer, user_index: int, seen_movie_indices: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """One user's list: top_lists for that user alone, the path every user's lists take.

    Returns:
        int64 (m,) movie indices, best first, and float32 (m,) their scores; m <= n.
    """
    seen = np.asarray(seen_movie_indices, dtype=np.int64)
    lists = top_lists(scorer, np.array([user_index]), (np.full(len(seen), user_index), seen), n, 1)
    kept = lists.movies[0] >= 0
    return lists.movies[0][kept], lists.scores[0][kept]


def similar_movies(vectors: np.ndarray, movie_index: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The n movies whose vectors have the highest cosine similarity to movie_index's, itself left out.

    Args:
        vectors: float (n_movies, dim), the movie embedding table; a zero row has similarity 0.
        movie_index: the movie to compare with.
        n: how many, >= 1.

    Returns:
        int64 (m,) movie indices, most similar first (ties: lower index), and float64 (m,) their
        cosine similarities; m = min(n, n_movies - 1).
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1)
    unit = np.divide(vectors, norms[:, None], out=np.zeros_like(vectors), where=norms[:, None] > 0)
    similarity = unit @ unit[movie_index]
    best = top_n(similarity, np.array([movie_index]), n)
    return best, similarity[best]


def index_of(value: int, ids: np.ndarray) -> int | None:
    """The position of `value` in the sorted `ids` (row i holds index i's id), or None."""
    position = int(index_in(ids, np.array([value]))[0])
    return None if position < 0 else position


def indices_of(values: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The positions in the sorted `ids` of those `values` that it holds."""
    positions = index_in(ids, np.asarray(values))
    return positions[positions >= 0]


def user_list(user_id: int, n: int, settings: ServeSettings) -> dict:
    """The --user answer: userId, personalised, reason, ranked_by, rated (count), recommendations."""
    catalogue = load_catalogue()
    rows = catalogue.ratings[catalogue.ratings["userId"] == user_id]
    user = index_of(user_id, catalogue.user_ids)
    if user is not None:
        ranker = load_ranker(catalogue, settings.like_weight, settings.batch_size)
        best, scores, predicted, how = known_user_top(ranker, user, rows, n)
        reason, count = None, len(rows)
    else:
        reason, rated_ids = unknown_user(user_id, rows, settings.dataset)
        scores_all, average = load_non_personal(catalogue, settings.like_weight)
        best = top_n(scores_all, indices_of(rated_ids, catalogue.movie_ids), n)
        scores, predicted = scores_all[best], average[best]
        how, count = NON_PERSONAL, len(np.unique(rated_ids))
    if len(best) < n:
        log.warning("user %d has only %d unrated movies left", user_id, len(best))
    found = recommendations(catalogue.movie_ids[best], scores, predicted, catalogue.movies)
    return user_answer(user_id, reason, how, count, [vars(r) for r in found])


def known_user_top(
    ranker: Ranker, user: int, rows: pd.DataFrame, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """A trained user's list: movie indices, served scores, predicted ratings and ranked_by's words.

    Args:
        user: the user's index; rows: the user's ratings (movie_index -1: unseen in training).
    """
    rated = rows["movie_index"].to_numpy()
    best, scores = recommend(ranker, user, rated[rated >= 0], n)
    predicted = ranker.predicted_ratings(user, best)
    return best, scores, predicted, ranked_by(ranker.watch.watch.kind, ranker.like_weight)


def user_answer(user_id: int, reason: str | None, how: str, count: int, found: list[dict]) -> dict:
    """The --user answer's fields, for the CLI and the service alike."""
    return {
        "userId": user_id,
        "personalised": reason is None,
        "reason": reason,
        "ranked_by": how,
        "rated": count,
        "recommendations": found,
    }


def check_list_path(out: Path) -> None:
    """Refuse an --out path that cannot be written, before any work is done.

    Raises:
        PipelineError: for another extension than .csv or .parquet, or a folder that is missing
            or not writable.
    """
    if out.suffix not in LIST_WRITERS:
        raise PipelineError(
            f"--out {out}: use a .csv or .parquet file name (the format follows it)"
        )
    folder = out.parent
    if not folder.is_dir():
        raise PipelineError(f"--out {out}: the folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise PipelineError(f"--out {out}: the folder {folder} is not writable; choose another")


def all_user_lists(n: int, settings: ServeSettings) -> tuple[pd.DataFrame, str]:
    """Every user's served list: userId, movieId, rank, score, title; and what it is ranked by.

    Users the models know are ranked in blocks of settings.block_size (one matrix product each);
    a user with ratings only in the test split gets the non-personal list.
    """
    catalogue = load_catalogue()
    ranker = load_ranker(catalogue, settings.like_weight, settings.batch_size)
    ratings = catalogue.ratings
    known = ratings[(ratings["user_index"] >= 0) & (ratings["movie_index"] >= 0)]
    excluded = (known["user_index"].to_numpy(), known["movie_index"].to_numpy())
    users = np.arange(len(catalogue.user_ids))
    lists = top_lists(ranker, users, excluded, n, settings.block_size)
    frames = [lists_frame(lists, catalogue.user_ids, catalogue.movie_ids)]
    strangers = ratings[ratings["user_index"] < 0]
    if len(strangers):
        log.info(
            "%d users are unknown to the models: not personalised", strangers["userId"].nunique()
        )
        scores, _ = load_non_personal(catalogue, ranker.like_weight)
        for user_id, rows in strangers.groupby("userId", sort=True):
            rated = rows["movie_index"].to_numpy()
            best = top_n(scores, rated[rated >= 0], n)
            frames.append(
                pd.DataFrame(
                    {
                        "userId": np.full(len(best), user_id, dtype=catalogue.user_ids.dtype),
                        "movieId": catalogue.movie_ids[best],
                        "rank": np.arange(1, len(best) + 1, dtype=np.int32),
                        "score": scores[best],
                    }
                )
            )
    frame = pd.concat(frames, ignore_index=True).sort_values(["userId", "rank"], kind="stable")
    frame["title"] = movie_info(frame["movieId"].to_numpy(), catalogue.movies)["title"].to_numpy()
    return frame.reset_index(drop=True), ranked_by(ranker.watch.watch.kind, ranker.like_weight)


def write_lists(frame: pd.DataFrame, out: Path) -> None:
    """Write the lists atomically, as CSV or parquet by the file's extension."""
    LIST_WRITERS[out.suffix](out, frame)


def similar_list(movie_id: int, n: int, settings: ServeSettings) -> dict:
    """The --similar-to answer: the movie, what similarity means, and its `similar` movies.

    Movies are compared by the watch model's representation (what people watch together: it
    gives neighbours that share genres and co-ratings more often than the rating model's
    embeddings, docs/recommendations.md), or by the rating model's embeddings for a movie the
    watch model does not score.
    """
    catalogue = load_catalogue()
    movie = index_of(movie_id, catalogue.movie_ids)
    if movie is None:
        raise PipelineError(explain_unknown_movie(movie_id, catalogue, settings.dataset))
    n_users, n_movies = len(catalogue.user_ids), len(catalogue.movie_ids)
    watch = load_watch_model(n_users, n_movies)
    similarity = watch.similarity(movie)
    if similarity is not None:
        best = top_n(similarity, np.array([movie]), n)
        values = similarity[best]
        how = {"ease": "EASE's item-item weight", "als": "cosine of ALS item factors"}[watch.kind]
        how = f"the watch model: {how} (how watching it goes with watching each other movie)"
    else:
        best, values = similar_movies(load_movie_vectors(paths.MODEL, n_movies), movie, n)
        how = (
            "cosine similarity of the rating model's movie embeddings (the watch model does "
            "not score movies with fewer than watch.min_ratings training ratings)"
        )
    info = movie_info(np.array([movie_id]), catalogue.movies)
    return {
        "movieId": movie_id,
        "title": str(info["title"].iloc[0]),
        "genres": str(info["genres"].iloc[0]),
        "similar_by": how,
        "similar": [
            vars(r) for r in neighbours(catalogue.movie_ids[best], values, catalogue.movies)
        ],
    }
