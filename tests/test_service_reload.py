"""Models change under `movielens serve` safely: a reload loads everything, then swaps one reference.

Requests that started on the old models finish on them, none fails during the swap, and a reload
that fails leaves the old models served. Over HTTP: a loop of requests in a thread while the model
files are replaced and the service reloaded several times, by SIGHUP and by its file watch.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
from test_service import Service, cinema_model, write_cinema

from movielens.plumbing import paths
from movielens.plumbing.errors import PipelineError
from movielens.serve import answers
from movielens.serve.command import serve_settings
from movielens.serve.http.state import FileWatch, ModelStore

RELOAD_WAIT_S = 60


class Loads:
    """A loader that returns a new object per call, or raises when told to."""

    def __init__(self) -> None:
        self.calls, self.fail = 0, False

    def __call__(self) -> dict:
        self.calls += 1
        if self.fail:
            raise PipelineError("models/model.keras has 4 users but data/processed has 5")
        return {"generation": self.calls}


def test_a_request_keeps_the_models_it_started_with_while_new_ones_are_swapped_in():
    store = ModelStore(Loads())
    started_on = store.current  # what a request takes once, first thing
    assert store.reload() and store.reload()
    assert started_on == {"generation": 1}  # untouched: the reload built new objects
    assert store.current == {"generation": 3} and store.reloads == 2


def test_a_failed_reload_keeps_serving_the_old_models_and_is_not_retried_unchanged(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    loads = Loads()
    store = ModelStore(loads)
    (tmp_path / "models").mkdir()
    (tmp_path / paths.MODEL).write_bytes(b"new")
    loads.fail = True
    assert store.changed() is not None
    assert not store.reload()
    assert store.current == {"generation": 1}
    assert (store.failed_reloads, store.last_error) == (
        1,
        "models/model.keras has 4 users but data/processed has 5",
    )
    assert store.changed() is None  # the same files: the watch does not try them again
    (tmp_path / paths.MODEL).write_bytes(b"newer")
    loads.fail = False
    assert store.changed() is not None and store.reload()
    assert store.current == {"generation": 3} and store.last_error is None


def test_the_file_watch_waits_until_the_files_stop_changing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = ModelStore(Loads())
    watch = FileWatch(store, settle_s=0.2)
    assert not watch.due()
    (tmp_path / "models").mkdir()
    (tmp_path / paths.MODEL).write_bytes(b"half")
    assert not watch.due()  # just seen: it may still be being written
    (tmp_path / paths.MODEL).write_bytes(b"whole")
    assert not watch.due()  # changed again: wait again
    time.sleep(0.3)
    assert watch.due()
    store.reload()
    assert not watch.due()


@pytest.fixture
def project(tmp_path) -> Path:
    """The cinema project, and a second rating model (other weights) beside it."""
    (tmp_path / "project").mkdir()
    root = write_cinema(tmp_path / "project")
    shutil.copy2(root / paths.MODEL, root / "model_a.keras")
    cinema_model(seed=11).save(root / "model_b.keras")
    return root


def swap_in(root: Path, name: str) -> None:
    """Replace models/model.keras by one of the prepared files, atomically as DVC does."""
    shutil.copy2(root / name, root / "incoming.keras")
    os.replace(root / "incoming.keras", root / paths.MODEL)


class Traffic:
    """Requests in a loop in a thread (a user's list and a fold-in in turn), failures counted."""

    def __init__(self, service: Service) -> None:
        self.service, self.done, self.failures, self.stop = service, 0, [], threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        body = {"ratings": [{"movieId": 1, "rating": 5}, {"movieId": 296, "rating": 2}], "n": 5}
        while not self.stop.is_set():
            try:
                if self.done % 2:
                    status, answer, _ = self.service.call("POST", "/recommendations", body)
                else:
                    status, answer, _ = self.service.call("GET", "/users/3/recommendations?n=5")
            except OSError as err:
                status, answer = None, repr(err)
            if status != 200:
                self.failures.append((status, answer))
            self.done += 1

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(timeout=60)


def wait_for_reloads(service: Service, at_least: int) -> dict:
    deadline = time.monotonic() + RELOAD_WAIT_S
    while time.monotonic() < deadline:
        health = service.get("/health")
        if health["reloads"] >= at_least:
            return health
        time.sleep(0.1)
    raise AssertionError(f"fewer than {at_least} reloads in {RELOAD_WAIT_S} s: {health}")


def expected_list(root: Path, monkeypatch) -> dict:
    monkeypatch.chdir(root)
    return answers.user_list(3, 5, serve_settings())


def test_no_request_fails_while_sighup_reloads_new_models_several_times(project, monkeypatch):
    service = Service(project)
    try:
        traffic = Traffic(service)
        for turn in range(1, 5):
            swap_in(project, "model_b.keras" if turn % 2 else "model_a.keras")
            service.process.send_signal(signal.SIGHUP)
            wait_for_reloads(service, turn)
            time.sleep(0.3)  # requests on the new models
        traffic.finish()
        assert traffic.failures == [] and traffic.done > 20
        assert service.get("/users/3/recommendations?n=5") == expected_list(project, monkeypatch)
    finally:
        service.stop()


def test_the_file_watch_serves_new_models_without_a_signal(project, monkeypatch):
    service = Service(project)
    try:
        before = service.get("/users/3/recommendations?n=5")
        traffic = Traffic(service)
        swap_in(project, "model_b.keras")
        health = wait_for_reloads(service, 1)
        traffic.finish()
        assert traffic.failures == []
        after = service.get("/users/3/recommendations?n=5")
        assert after == expected_list(project, monkeypatch) != before
        model = next(f for f in health["models"] if f["path"] == str(paths.MODEL))
        assert not model["matches_lock"]  # dvc.lock describes the model before the swap
    finally:
        service.stop()


@pytest.mark.slow
def test_sighup_to_the_supervisor_reloads_every_worker(project):
    service = Service(project, "--workers", "2")
    try:
        traffic = Traffic(service)
        service.process.send_signal(signal.SIGHUP)  # the files are as they were: no watch reload
        reloaded, deadline = set(), time.monotonic() + RELOAD_WAIT_S
        while len(reloaded) < 2 and time.monotonic() < deadline:
            health = service.get("/health")
            if health["reloads"] >= 1:
                reloaded.add(health["pid"])
        traffic.finish()
        assert len(reloaded) == 2, reloaded
        assert traffic.failures == []
    finally:
        service.stop()
