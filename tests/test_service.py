"""`movielens serve`: a real uvicorn server on 127.0.0.1 over a tiny trained project, no mocks.

The replies must be the CLI's answers (serve.answers, serve.folded) for the same files, every bad
request a 4xx with one line of JSON, and the next request answered as usual.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from test_recommend import BIASES, ROOT, randomised, write_project

from movielens.model.keras_model import build_model
from movielens.model.watch import fit_watch, history_matrix, save_watch
from movielens.plumbing import paths
from movielens.serve import answers, folded
from movielens.serve.command import serve_settings

# Real MovieLens titles, so that the page and its screenshot read as they would in use.
MOVIES = [
    (1, "Toy Story (1995)", "Adventure|Animation|Children|Comedy|Fantasy"),
    (2, "Jumanji (1995)", "Adventure|Children|Fantasy"),
    (32, "Twelve Monkeys (a.k.a. 12 Monkeys) (1995)", "Mystery|Sci-Fi|Thriller"),
    (47, "Seven (a.k.a. Se7en) (1995)", "Mystery|Thriller"),
    (50, "Usual Suspects, The (1995)", "Crime|Mystery|Thriller"),
    (110, "Braveheart (1995)", "Action|Drama|War"),
    (150, "Apollo 13 (1995)", "Adventure|Drama|IMAX"),
    (260, "Star Wars: Episode IV - A New Hope (1977)", "Action|Adventure|Sci-Fi"),
    (296, "Pulp Fiction (1994)", "Comedy|Crime|Drama|Thriller"),
    (318, "Shawshank Redemption, The (1994)", "Crime|Drama"),
    (356, "Forrest Gump (1994)", "Comedy|Drama|Romance|War"),
    (480, "Jurassic Park (1993)", "Action|Adventure|Sci-Fi|Thriller"),
    (527, "Schindler's List (1993)", "Drama|War"),
    (589, "Terminator 2: Judgment Day (1991)", "Action|Sci-Fi"),
    (593, "Silence of the Lambs, The (1991)", "Crime|Horror|Thriller"),
    (858, "Godfather, The (1972)", "Crime|Drama"),
    (1196, "Star Wars: Episode V - The Empire Strikes Back (1980)", "Action|Adventure|Sci-Fi"),
    (1198, "Raiders of the Lost Ark (Indiana Jones and the Raiders of the Lost Ark) (1981)", "Action|Adventure"),
    (1270, "Back to the Future (1985)", "Adventure|Comedy|Sci-Fi"),
    (2571, "Matrix, The (1999)", "Action|Sci-Fi|Thriller"),
    (2959, "Fight Club (1999)", "Action|Crime|Drama|Thriller"),
    (3114, "Toy Story 2 (1999)", "Adventure|Animation|Children|Comedy|Fantasy"),
    (4993, "Lord of the Rings: The Fellowship of the Ring, The (2001)", "Adventure|Fantasy"),
    (78499, "Toy Story 3 (2010)", "Adventure|Animation|Children|Comedy|Fantasy|IMAX"),
]  # fmt: skip
MOVIE_IDS = [m for m, _, _ in MOVIES]
USER_IDS = list(range(1, 31))
TEST_ONLY_USER = 99  # all its ratings in the test split: not personalised
LATE_MOVIE = 5000  # only in the test split: unknown to the models
EASE = {
    "model": "ease", "min_ratings": 2, "ease_l2": 5.0, "ease_max_movies": 20000,
    "als_factors": 4, "als_regularization": 1.0, "als_alpha": 4.0, "als_iterations": 2, "seed": 0,
}  # fmt: skip
START_TIMEOUT_S = 120


def cinema_pairs(seed: int = 0):
    """Each user rates 4 to 10 movies, the popular ones more often; a few pairs go to the test."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, len(MOVIE_IDS) + 1)
    pairs = []
    for user in USER_IDS:
        size = int(rng.integers(4, 11))
        chosen = rng.choice(len(MOVIE_IDS), size, replace=False, p=weights / weights.sum())
        pairs += [(user, MOVIE_IDS[i]) for i in chosen]
    test = [pairs.pop(int(i)) for i in sorted(rng.choice(len(pairs), 12, replace=False))[::-1]]
    return pairs, [*test, (TEST_ONLY_USER, 1), (TEST_ONLY_USER, 2571), (3, LATE_MOVIE)]


def cinema_model(seed: int):
    return randomised(build_model(len(USER_IDS), len(MOVIE_IDS), 4, 0.0, 0.0, (0.5, 5.0)), seed)


MAX_N = 50  # params.yaml's serve.max_n in the test project (the repository's is 100)


def write_cinema(root: Path, seed: int = 3) -> Path:
    """A project with the MOVIES catalogue, a random rating model, EASE, and a dvc.lock."""
    train, test = cinema_pairs()
    params = yaml.safe_load((ROOT / paths.PARAMS).read_text(encoding="utf-8"))
    params["watch"] = {**params["watch"], **EASE}
    params["serve"] = {**params["serve"], "max_n": MAX_N}  # not the default: the limit is read
    biases = type(BIASES)(3.5, np.zeros(len(USER_IDS)), np.linspace(0.4, -0.4, len(MOVIE_IDS)))
    model = cinema_model(seed)
    write_project(root, model, USER_IDS, MOVIE_IDS, train, test, [], biases, params=params)
    movies = pd.DataFrame([*MOVIES, (LATE_MOVIE, "Late Arrival (2020)", "Drama")])
    movies.columns = ["movieId", "title", "genres"]
    movies.astype({"movieId": np.int32}).to_parquet(root / paths.MOVIES, index=False)
    frame = pd.read_parquet(root / paths.TRAIN)
    history = history_matrix(
        frame["user_index"], frame["movie_index"], len(USER_IDS), len(MOVIE_IDS)
    )
    save_watch(fit_watch(history, **EASE), root / paths.WATCH_MODEL)
    write_lock(root, params)
    return root


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_lock(root: Path, params: dict) -> None:
    """A dvc.lock naming the model files as the train stages' outs, with their params."""
    train_params = {f"train.{k}": v for k, v in params["train"].items()}
    stages = {
        "train": {"params": {"params.yaml": train_params}, "outs": [
            {"path": str(p), "md5": md5(root / p)} for p in (paths.MODEL, paths.BASELINE)
        ]},
        "train_watch": {"params": {"params.yaml": {"watch.model": "ease"}}, "outs": [
            {"path": str(paths.WATCH_MODEL), "md5": md5(root / paths.WATCH_MODEL)}
        ]},
    }  # fmt: skip
    (root / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": stages}))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Service:
    """`movielens serve` started in a project, and plain HTTP requests to it."""

    def __init__(self, root: Path, *extra: str) -> None:
        self.root, self.port = root, free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "LOGLEVEL": "WARNING"}
        command = [sys.executable, "-m", "movielens.cli", "serve", "--port", str(self.port)]
        self.process = subprocess.Popen([*command, *extra], cwd=root, env=env)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"movielens serve exited {self.process.returncode}"
            try:
                if self.call("GET", "/health")[0] == 200:
                    return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise AssertionError("movielens serve did not answer")

    def call(self, method: str, path: str, body=None, headers=None, raw: bytes | None = None):
        """(status, parsed JSON or text, headers) of one request on a new connection."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            data = raw if raw is not None else None if body is None else json.dumps(body).encode()
            sent = {"Content-Type": "application/json"} if body is not None else {}
            connection.request(method, path, body=data, headers={**sent, **(headers or {})})
            answer = connection.getresponse()
            text = answer.read().decode()
            kind = answer.getheader("content-type", "")
            return answer.status, json.loads(text) if "json" in kind else text, answer
        finally:
            connection.close()

    def get(self, path: str):
        status, data, _ = self.call("GET", path)
        assert status == 200, data
        return data

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def cinema(tmp_path_factory) -> Path:
    return write_cinema(tmp_path_factory.mktemp("cinema"))


@pytest.fixture(scope="module")
def service(cinema):
    running = Service(cinema)
    yield running
    running.stop()


@pytest.fixture
def in_project(cinema, monkeypatch) -> Path:
    monkeypatch.chdir(cinema)
    return cinema


def test_health_names_the_models_their_dvc_hashes_and_params(service, cinema):
    health = service.get("/health")
    assert health["status"] == "ok"
    files = {f["path"]: f for f in health["models"]}
    assert set(files) == {str(p) for p in (paths.MODEL, paths.BASELINE, paths.WATCH_MODEL)}
    for path, found in files.items():
        assert found["md5"] == found["lock_md5"] == md5(cinema / path) and found["matches_lock"]
    assert files[str(paths.MODEL)]["stage"] == "train"
    assert files[str(paths.MODEL)]["params"]["train.embedding_dim"] == 50  # params.yaml's
    assert files[str(paths.WATCH_MODEL)]["params"] == {"watch.model": "ease"}
    assert health["serving"]["users"] == len(USER_IDS)
    assert health["serving"]["movies"] == len(MOVIE_IDS)


@pytest.mark.parametrize("user", [*USER_IDS[:8], TEST_ONLY_USER])
def test_a_users_list_is_the_cli_answer(service, in_project, user):
    expected = answers.user_list(user, 5, serve_settings())
    assert service.get(f"/users/{user}/recommendations?n=5") == expected
    assert expected["personalised"] == (user != TEST_ONLY_USER)


@pytest.mark.parametrize(
    "ratings",
    [
        [(1, 5.0), (2571, 4.5), (296, 1.0)],
        [(318, 4.0), (318, 2.0), (LATE_MOVIE, 3.0), (123456, 5.0)],  # repeated, unknown
        [(123456, 5.0)],  # nothing known: the non-personal list, flagged
    ],
)
def test_a_list_for_ratings_given_is_the_cli_answer(service, in_project, tmp_path, ratings):
    source = tmp_path / "ratings.csv"
    source.write_text("movieId,rating\n" + "".join(f"{m},{r}\n" for m, r in ratings))
    expected = folded.ratings_list(str(source), None, 7, serve_settings())
    body = {"ratings": [{"movieId": m, "rating": r} for m, r in ratings], "n": 7}
    status, found, _ = service.call("POST", "/recommendations", body)
    assert (status, found) == (200, expected)
    listed = {r["movieId"] for r in found["recommendations"]}
    assert not listed & {m for m, _ in ratings}


@pytest.mark.parametrize("movie", [1, 2571, 78499])
def test_similar_movies_are_the_cli_answer(service, in_project, movie):
    assert service.get(f"/movies/{movie}/similar?n=4") == answers.similar_list(
        movie, 4, serve_settings()
    )


def test_title_search_matches_words_in_any_order_most_rated_first(service):
    found = service.get("/movies?q=toy+STORY")
    assert [m["movieId"] for m in found["movies"]][:1] == [1]
    assert {m["movieId"] for m in found["movies"]} == {1, 3114, 78499}
    assert found["found"] == 3 and all(m["known"] for m in found["movies"])
    assert [m["movieId"] for m in service.get("/movies?q=the%20matrix")["movies"]] == [2571]
    late = service.get("/movies?q=late+arrival")["movies"]
    assert [(m["movieId"], m["known"], m["ratings"]) for m in late] == [(LATE_MOVIE, False, 0)]


OVER = {"ratings": [{"movieId": 1, "rating": 4.0}] * 5001}
BAD_REQUESTS = [
    ("GET", "/users/abc/recommendations", None, {}, 422, "userId: Input should be a valid integer"),
    ("GET", "/users/1/recommendations?n=0", None, {}, 422, "n: must be from 1 to 50, got 0"),
    ("GET", "/users/1/recommendations?n=51", None, {}, 422, "n: must be from 1 to 50, got 51"),
    ("GET", "/users/1/recommendations?n=x", None, {}, 422, "n: Input should be a valid integer"),
    ("GET", "/users/777/recommendations", None, {}, 404, "unknown user 777: ml-latest-small has no ratings"),
    ("GET", f"/users/{10**30}/recommendations", None, {}, 422, "userId: Input should be less than"),
    ("GET", "/movies/999/similar", None, {}, 404, "unknown movie 999"),
    ("GET", f"/movies/{LATE_MOVIE}/similar", None, {}, 404, "unknown to the model: all its ratings fell in the test split"),
    ("GET", "/movies?q=%20", None, {}, 422, "q: give one or more words"),
    ("GET", "/movies", None, {}, 422, "q: Field required"),
    ("GET", "/nowhere", None, {}, 404, "Not Found"),
    ("DELETE", "/recommendations", None, {}, 405, "Method Not Allowed"),
    ("POST", "/recommendations", b"{not json", {"Content-Type": "application/json"}, 400, "the body is not valid JSON"),
    ("POST", "/recommendations", b'{"ratings": []}', {"Content-Type": "text/plain"}, 415, "Content-Type must be application/json"),
    ("POST", "/recommendations", b"[]", {"Content-Type": "application/json"}, 422, "body: Input should be a valid dictionary"),
    ("POST", "/recommendations", {"ratings": []}, {}, 422, 'ratings: give at least one {"movieId"'),
    ("POST", "/recommendations", {"rating": []}, {}, 422, "ratings: Field required"),
    ("POST", "/recommendations", {"ratings": [{"movieId": 1, "rating": 9}]}, {}, 422, "item 1: rating '9.0' is off the model's scale, 0.5 to 5"),
    ("POST", "/recommendations", {"ratings": [{"movieId": "1", "rating": 4}]}, {}, 422, "ratings.0.movieId: Input should be a valid integer"),
    ("POST", "/recommendations", {"ratings": [{"movieId": 1.5, "rating": 4}]}, {}, 422, "ratings.0.movieId: Input should be a valid integer"),
    ("POST", "/recommendations", b'{"ratings": [{"movieId": 1, "rating": NaN}]}', {"Content-Type": "application/json"}, 422, "ratings.0.rating: Input should be a finite number"),
    ("POST", "/recommendations", {"ratings": [{"movieId": 1}]}, {}, 422, "ratings.0.rating: Field required"),
    ("POST", "/recommendations", {"ratings": [{"movieId": 1, "rating": 4}], "n": 500}, {}, 422, "n: must be from 1 to 50, got 500"),
    ("POST", "/recommendations", {"ratings": [{"movieId": 1, "rating": 4}], "userId": 1}, {}, 422, "userId: Extra inputs are not permitted"),
    ("POST", "/recommendations", OVER, {}, 413, "ratings: at most 5000, got 5001"),
    ("POST", "/recommendations", b"x" * 300_000, {"Content-Type": "application/json"}, 413, "the body is over 262144 bytes"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body", "headers", "status", "message"), BAD_REQUESTS)
def test_a_bad_request_is_a_4xx_with_one_line_of_json_and_the_next_is_answered(
    service, method, path, body, headers, status, message
):
    raw = body if isinstance(body, bytes) else None
    found, answer, _ = service.call(method, path, None if raw else body, headers, raw=raw)
    assert found == status, answer
    assert isinstance(answer, dict) and list(answer) == ["error"], answer
    assert message in answer["error"] and "\n" not in answer["error"]
    assert service.call("GET", "/users/1/recommendations?n=2")[0] == 200


def test_a_chunked_body_over_the_limit_is_refused(service):
    connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=30)
    chunks = (b"[" + b"1," * 1000 for _ in range(200))  # ~400 kB, no Content-Length
    connection.request(
        "POST", "/recommendations", body=chunks, headers={"Content-Type": "application/json"},
        encode_chunked=True,
    )  # fmt: skip
    answer = connection.getresponse()
    assert answer.status == 413 and "over 262144 bytes" in json.loads(answer.read())["error"]
    connection.close()
    assert service.call("GET", "/health")[0] == 200


def test_the_page_and_its_assets_are_served_from_the_app(service):
    status, page, _ = service.call("GET", "/")
    assert status == 200 and "<title>MovieLens recommender</title>" in page
    for asset, kind in (("/static/app.js", "javascript"), ("/static/style.css", "text/css")):
        found, text, answer = service.call("GET", asset)
        assert found == 200 and kind in answer.getheader("content-type") and text
        assert "http://" not in text and "https://" not in text  # nothing from elsewhere
    assert "https://" not in page and "http://" not in page


def test_the_openapi_docs_list_every_endpoint(service):
    schema = service.get("/openapi.json")
    assert {
        "/health", "/users/{userId}/recommendations", "/recommendations",
        "/movies/{movieId}/similar", "/movies",
    } <= set(schema["paths"])  # fmt: skip
    assert service.call("GET", "/docs")[0] == 200


def test_serve_without_the_pipelines_outputs_is_one_error_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LOGLEVEL": "ERROR"}
    done = subprocess.run(
        [sys.executable, "-m", "movielens.cli", "serve", "--port", str(free_port())],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "error: models/model.keras not found; run the pipeline first (dvc repro, or make repro)"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "argument --workers: must be a positive integer, got 0"),
        (["--port", "70000"], "argument --port: 70000 is not a port number"),
        (["--port", "x"], "argument --port: invalid int value: 'x'"),
    ],
)
def test_bad_serve_arguments_are_one_error_line(tmp_path, args, message):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "movielens.cli", "serve", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1 and done.stderr.startswith(f"error: {message}")


@pytest.mark.slow
def test_the_load_benchmark_runs_bounded_and_counts_no_error(tmp_path):
    (tmp_path / "project").mkdir()
    root = write_cinema(tmp_path / "project")
    out = tmp_path / "serve.json"
    bounds = ["--requests", "40", "--seconds", "2", "--total", "60", "--reloads", "2"]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_serve", "--workers", "1", "--clients", "1,16",
         "--endpoints", "user,foldin,similar", *bounds, "--reload-seconds", "4", "--out", str(out)],
        cwd=root, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())
    assert [(c["endpoint"], c["clients"]) for c in results["cells"]] == [
        (e, c) for e in ("user", "foldin", "similar") for c in (1, 16)
    ]
    assert all(c["errors"] == 0 and 0 < c["requests"] <= 40 for c in results["cells"])
    assert results["total_run"]["requests"] == 60 and results["total_run"]["errors"] == 0
    assert (
        results["reload_run"]["errors"] == 0
        and results["reload_run"]["reloads_seen_by_one_worker"] >= 2
    )
    assert "user      " in done.stdout and "p99 ms" in done.stdout
