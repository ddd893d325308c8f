"""The models one service process serves, loaded together once, and swapped whole when they change.

`load_served` reads everything a reply needs (the id tables, the served ranker, the non-personal
list, the rating model's movie tables for similarity and fold-in) with serve.load's loaders, the
ones `movielens recommend` uses. `ModelStore.current` is one reference to a frozen `Served`: a
request takes it once and uses nothing else, so a reload (SIGHUP, or the files under models/ and
data/processed changing) loads a complete new `Served` first and then rebinds that one reference.
Requests already running finish on the models they started with; none waits and none fails.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from movielens.data.ids import index_in
from movielens.model import weights
from movielens.model.architecture import standard_problem
from movielens.plumbing import paths
from movielens.plumbing.errors import PipelineError
from movielens.ranking.foldin import FoldInSettings, fold_in_settings
from movielens.ranking.served import Ranker
from movielens.serve.answers import ServeSettings
from movielens.serve.folded import fitted_count
from movielens.serve.load import (
    Catalogue,
    load_catalogue,
    load_movie_vectors,
    load_non_personal,
    load_ranker,
    rating_scale,
)

log = logging.getLogger(__name__)

DVC_LOCK = Path("dvc.lock")
MODEL_FILES = (paths.MODEL, paths.BASELINE, paths.WATCH_MODEL)
DATA_FILES = (paths.TRAIN, paths.TEST, paths.USER_IDS, paths.MOVIE_IDS, paths.MOVIES)
WATCHED = (*MODEL_FILES, *DATA_FILES)  # a change to any of them reloads


@dataclass(frozen=True)
class ServiceSettings:
    """The service's limits and reload timing: params.yaml's `serve` section (serve.command).

    Attributes:
        max_n: the longest list a request may ask for.
        max_history: the most ratings one POST /recommendations may give.
        max_body_bytes: the largest request body read; larger is refused unread (413).
        max_query_chars: the longest title search.
        search_results: movies a title search returns at most.
        reload_poll_s: how often the watched files' sizes and times are compared (0: never;
            SIGHUP still reloads).
        reload_settle_s: how long they must stay unchanged before a reload (dvc repro writes
            them one after another).
    """

    max_n: int = 100
    max_history: int = 5000
    max_body_bytes: int = 262_144
    max_query_chars: int = 200
    search_results: int = 20
    reload_poll_s: float = 2.0
    reload_settle_s: float = 1.0


@dataclass(frozen=True)
class MovieTable:
    """The movies as the page lists them, by movie table row (not movie index).

    Attributes:
        movie_ids: int64 (m,) ascending; titles, genres: str (m,); folded: casefolded titles.
        ratings: int64 (m,), training ratings of each movie (its popularity); known: bool (m,),
            whether the models have a row for it.
    """

    movie_ids: np.ndarray
    titles: np.ndarray
    genres: np.ndarray
    folded: list[str]
    ratings: np.ndarray
    known: np.ndarray


@dataclass(frozen=True)
class Served:
    """Everything one reply reads, from one consistent set of files.

    Attributes:
        settings: the ServeSettings the CLI would use (serve.command.serve_settings).
        catalogue, ranker: as serve.load loads them; non_personal, average: load_non_personal's.
        movie_vectors: the rating model's movie table (similarity when the watch model has none).
        fold_in: the rating model's fold-in settings, or None with fold_in_problem saying why.
        rating_scale: (lo, hi) of the rating model.
        user_order, user_starts: catalogue.ratings' rows grouped by userId (stable), and where
            each of user_keys' runs starts (user_keys: the distinct userIds in the ratings).
        movie_table: the title search's table.
        versions: /health's description of the files (model_versions).
        loaded_at: time.time() when loading finished.
    """

    settings: ServeSettings
    catalogue: Catalogue
    ranker: Ranker
    non_personal: np.ndarray
    average: np.ndarray
    movie_vectors: np.ndarray
    fold_in: FoldInSettings | None
    fold_in_problem: str | None
    rating_scale: tuple[float, float]
    user_keys: np.ndarray
    user_order: np.ndarray
    user_starts: np.ndarray
    movie_table: MovieTable
    versions: list[dict]
    loaded_at: float = field(default_factory=time.time)

    def titles_of(self, movie_ids: np.ndarray) -> tuple[list[str], list[str]]:
        """The title and genres of each movieId (serve.text.movie_info's lookup, kept indexed).

        Raises:
            PipelineError: when data/processed/movies.parquet lacks one (as movie_info says).
        """
        table, wanted = self.movie_table, np.asarray(movie_ids)
        rows = np.minimum(np.searchsorted(table.movie_ids, wanted), len(table.movie_ids) - 1)
        if len(rows) and (table.movie_ids[rows] != wanted).any():
            raise PipelineError(f"{paths.MOVIES} lacks some movies; rerun the pipeline (dvc repro)")
        return table.titles[rows].tolist(), table.genres[rows].tolist()

    def user_position(self, user_id: int) -> int | None:
        """Where `user_id` stands in user_keys, or None when the splits hold no rating by it."""
        position = int(np.searchsorted(self.user_keys, user_id))
        found = position < len(self.user_keys) and self.user_keys[position] == user_id
        return position if found else None

    def user_rows(self, user_id: int):
        """The catalogue's ratings by `user_id`, in their order there (as a boolean mask gives)."""
        position = self.user_position(user_id)
        if position is None:
            return self.catalogue.ratings.iloc[:0]
        rows = self.user_order[self.user_starts[position] : self.user_starts[position + 1]]
        return self.catalogue.ratings.iloc[rows]


def movie_table(catalogue: Catalogue) -> MovieTable:
    movies = catalogue.movies.drop_duplicates("movieId").sort_values("movieId")
    ids = movies["movieId"].to_numpy(np.int64)
    titles = movies["title"].astype(str).to_numpy()
    positions = index_in(catalogue.movie_ids, ids)
    counts = np.bincount(catalogue.train["movie_index"], minlength=len(catalogue.movie_ids))
    return MovieTable(
        ids,
        titles,
        movies["genres"].astype(str).to_numpy(),
        [title.casefold() for title in titles],
        np.where(positions >= 0, counts[np.maximum(positions, 0)], 0).astype(np.int64),
        positions >= 0,
    )


def user_groups(catalogue: Catalogue) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct userIds, the rows ordered by userId (stable), and where each run starts."""
    users = catalogue.ratings["userId"].to_numpy()
    order = np.argsort(users, kind="stable")
    ordered = users[order]
    starts = np.flatnonzero(np.append(True, ordered[1:] != ordered[:-1])) if len(users) else []
    keys = ordered[starts] if len(users) else ordered
    return keys, order, np.append(starts, len(users)).astype(np.int64)


def load_served(settings: ServeSettings) -> Served:
    """Load every served artifact from the current directory (a project after dvc repro).

    Raises:
        PipelineError: a missing or inconsistent artifact, as `movielens recommend` says it.
    """
    versions = model_versions()
    catalogue = load_catalogue()
    ranker = load_ranker(catalogue, settings.like_weight, settings.batch_size)
    non_personal, average = load_non_personal(catalogue, settings.like_weight)
    problem = standard_problem(weights.read_config(paths.MODEL))
    fold = None
    if problem is None:
        fold = fold_in_settings(paths.MODEL, fitted_count(catalogue.n_train, settings))
    keys, order, starts = user_groups(catalogue)
    return Served(
        settings=settings,
        catalogue=catalogue,
        ranker=ranker,
        non_personal=non_personal,
        average=average,
        movie_vectors=load_movie_vectors(paths.MODEL, len(catalogue.movie_ids)),
        fold_in=fold,
        fold_in_problem=problem,
        rating_scale=rating_scale(),
        user_keys=keys,
        user_order=order,
        user_starts=starts,
        movie_table=movie_table(catalogue),
        versions=versions,
    )


def file_md5(path: Path) -> str:
    digest = hashlib.md5()  # DVC's hash, to compare with dvc.lock's
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_versions(lock_path: Path = DVC_LOCK) -> list[dict]:
    """Each served model file: its md5 and size on disk, and what dvc.lock says made it.

    Returns:
        One dict per MODEL_FILES entry: path, md5 (of the file served), size, stage (the dvc.lock
        stage whose out it is, or None), lock_md5 (dvc.lock's hash of it), matches_lock, and
        params (that stage's params.yaml keys and values in dvc.lock).
    """
    stages = {}
    if lock_path.is_file():
        try:
            stages = (yaml.safe_load(lock_path.read_text(encoding="utf-8")) or {}).get("stages", {})
        except yaml.YAMLError as err:
            log.warning("%s cannot be read (%s): serving without it", lock_path, err)
    made_by = {
        out["path"]: (name, out.get("md5"), (stage.get("params") or {}).get(str(paths.PARAMS), {}))
        for name, stage in stages.items()
        for out in stage.get("outs") or []
    }
    found = []
    for path in MODEL_FILES:
        stage, lock_md5, params = made_by.get(str(path), (None, None, {}))
        md5 = file_md5(path) if path.is_file() else None
        found.append(
            {
                "path": str(path),
                "md5": md5,
                "size": path.stat().st_size if path.is_file() else None,
                "stage": stage,
                "lock_md5": lock_md5,
                "matches_lock": md5 is not None and md5 == lock_md5,
                "params": params,
            }
        )
    return found


def stamp(files: tuple[Path, ...] = (*WATCHED, DVC_LOCK)) -> tuple:
    """The watched files' (size, mtime_ns, inode), None for an absent one: any write changes it."""
    found = []
    for path in files:
        try:
            info = os.stat(path)
        except OSError:
            found.append(None)
        else:
            found.append((info.st_size, info.st_mtime_ns, info.st_ino))
    return tuple(found)


class ModelStore:
    """The one reference to the served models, and their reload.

    Args:
        load: builds a complete Served (load_served with the settings), or raises PipelineError.
    """

    def __init__(self, load) -> None:
        self._load = load
        self._lock = threading.Lock()  # one reload at a time; requests never take it
        self._stamp = stamp()
        self._failed: tuple | None = None  # the files a reload failed on: not tried again
        self.current: Served = load()
        self.reloads = 0
        self.failed_reloads = 0
        self.last_error: str | None = None

    def reload(self) -> bool:
        """Load everything again and swap it in; on failure keep serving the models there are.

        Returns:
            Whether new models are now served.
        """
        with self._lock:
            before = stamp()
            started = time.perf_counter()
            try:
                fresh = self._load()
            except (PipelineError, OSError, ValueError, KeyError) as err:
                self.failed_reloads += 1
                self._failed = before
                self.last_error = str(err).splitlines()[0] if str(err) else type(err).__name__
                log.error("reload failed, still serving the models loaded before: %s", err)
                return False
            self.current = fresh  # the swap: one reference, rebound after the load is complete
            self._stamp = before
            self.reloads += 1
            self.last_error = None
            log.info("reloaded the models in %.2f s", time.perf_counter() - started)
            return True

    def changed(self) -> tuple | None:
        """The watched files' stamp when it differs from the served models' and from the last
        failed reload's, else None."""
        now = stamp()
        return now if now not in (self._stamp, self._failed) else None


class FileWatch:
    """Reloads once the watched files have changed and then stayed unchanged for settle_s.

    `due()` is called every poll; it says whether to reload now.
    """

    def __init__(self, store: ModelStore, settle_s: float) -> None:
        self.store, self.settle_s = store, settle_s
        self._seen: tuple | None = None
        self._since = 0.0

    def due(self) -> bool:
        now = self.store.changed()
        if now is None:
            self._seen = None
            return False
        if now != self._seen:  # still being written: wait until it settles
            self._seen, self._since = now, time.monotonic()
            return False
        return time.monotonic() - self._since >= self.settle_s
