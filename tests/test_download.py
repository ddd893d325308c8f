"""Tests for the download stage against a real local HTTP server and hand-built zips."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import zipfile
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from movielens.data import archive as zip_archive
from movielens.data import download, fetch
from movielens.data.releases import OFFICIAL_BASE_URL, get_dataset
from movielens.plumbing import paths
from movielens.plumbing.errors import PipelineError
from stages import download as download_stage

ROOT = Path(__file__).resolve().parents[1]
DATASET = get_dataset("ml-latest-small")
ZIP = DATASET.zip_name
RATINGS = (
    b"userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.0,964981247\n2,1,3.5,964982224\n"
)
MOVIES = b"movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n3,Grumpier Old Men (1995),Comedy|Romance\n"
LICENSE = b"Summary: a tiny MovieLens-shaped test set.\n"
LINKS = b"movieId,imdbId,tmdbId\n1,0114709,862\n"
FAST = fetch.RetryPolicy(attempts=3, backoff_s=0.01, timeout_s=2.0)
HOSTILE_ABSOLUTE = "/tmp/movielens-download-test-evil.txt"
TIMEOUT = fetch.RetryPolicy(attempts=3, backoff_s=0.01, timeout_s=0.3)
STALL_S = 10.0  # a stalled handler waits this long at most, far beyond TIMEOUT.timeout_s


def member(name: str) -> str:
    return f"{DATASET.folder}/{name}"


def good_entries() -> list[tuple[str | zipfile.ZipInfo, bytes]]:
    return [
        (member("ratings.csv"), RATINGS),
        (member("movies.csv"), MOVIES),
        (member("README.txt"), LICENSE),
        (member("links.csv"), LINKS),
    ]


def make_zip(entries: list[tuple[str | zipfile.ZipInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buffer.getvalue()


def symlink_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def forge_size(data: bytes, name: str, size: int) -> bytes:
    """Rewrite the uncompressed size in `name`'s central directory entry: a lying header."""
    out = bytearray(data)
    start = out.find(b"PK\x01\x02")
    while start != -1:
        name_len = struct.unpack_from("<H", out, start + 28)[0]
        if out[start + 46 : start + 46 + name_len] == name.encode():
            struct.pack_into("<I", out, start + 24, size)
        start = out.find(b"PK\x01\x02", start + 1)
    return bytes(out)


def md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def mirror_files(zip_bytes: bytes, checksum: str | None = None, style: str = "bsd") -> dict:
    checksum = checksum or md5_of(zip_bytes)
    line = f"MD5 ({ZIP}) = {checksum}" if style == "bsd" else f"{checksum}  {ZIP}"
    return {ZIP: zip_bytes, f"{ZIP}.md5": (line + "\n").encode()}


def write_mirror(directory: Path, files: dict) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return str(directory)


class MirrorHandler(BaseHTTPRequestHandler):
    """Serves `server.files`; `server.plans[path]` scripts failures for the next requests.

    Actions: "ok", 500, "truncate" (half the body, then close), "stall-headers" (say nothing
    until released) and "stall-body" (headers and half the body, then nothing until released).
    """

    def do_GET(self) -> None:
        path = urllib.parse.unquote(self.path)
        self.server.hits[path] += 1
        plan = self.server.plans.get(path)
        action = plan.pop(0) if plan else "ok"
        body = self.server.files.get(path.lstrip("/"))
        if action == "stall-headers":
            self.server.release.wait(STALL_S)
            return
        if action == 500:
            self.send_error(500)
        elif body is None:
            self.send_error(404)
        else:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            whole = action not in ("truncate", "stall-body")
            self.wfile.write(body if whole else body[: len(body) // 2])
            if action == "stall-body":
                self.wfile.flush()
                self.server.release.wait(STALL_S)

    def log_message(self, *args) -> None:
        pass


def start_server() -> ThreadingHTTPServer:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), MirrorHandler)
    httpd.files, httpd.plans, httpd.hits = {}, {}, Counter()
    httpd.release = threading.Event()
    httpd.thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    httpd.thread.start()
    return httpd


def stop_server(httpd: ThreadingHTTPServer) -> None:
    httpd.release.set()  # wake stalled handlers, or server_close waits for them
    httpd.shutdown()
    httpd.server_close()
    httpd.thread.join()


@pytest.fixture
def server():
    httpd = start_server()
    yield httpd
    stop_server(httpd)


def serve(httpd: ThreadingHTTPServer, files: dict) -> str:
    httpd.files.update(files)
    return f"http://127.0.0.1:{httpd.server_address[1]}"


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A project directory as cwd, so that paths.raw_dir() lands inside tmp_path."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    monkeypatch.chdir(root)
    monkeypatch.delenv(fetch.MIRROR_ENV, raising=False)
    return root


def assert_raw_empty(project: Path) -> None:
    raw = project / paths.RAW_DIR
    assert not raw.exists() or list(raw.iterdir()) == []


@pytest.mark.parametrize(("kind", "style"), [("http", "bsd"), ("dir", "gnu")])
def test_fetches_verifies_and_extracts(kind, style, project, tmp_path, request):
    files = mirror_files(make_zip(good_entries()), style=style)
    if kind == "http":
        base = serve(request.getfixturevalue("server"), files)
    else:
        base = write_mirror(tmp_path / "mirror", files)
    target = paths.raw_dir(DATASET.name)

    written = download.download_dataset(DATASET, fetch.resolve_base(base), target, FAST)

    assert written == [target / "ratings.csv", target / "movies.csv", target / "README.txt"]
    assert {p.name: p.read_bytes() for p in target.iterdir()} == {
        "ratings.csv": RATINGS,
        "movies.csv": MOVIES,
        "README.txt": LICENSE,
    }
    assert [p.name for p in (project / paths.RAW_DIR).iterdir()] == [DATASET.name]


def test_frozen_release_needs_no_md5_file(project, tmp_path):
    zip_bytes = make_zip(good_entries())
    base = write_mirror(tmp_path / "mirror", {ZIP: zip_bytes})
    frozen = dataclasses.replace(DATASET, md5=md5_of(zip_bytes))

    download.download_dataset(frozen, base, paths.raw_dir(DATASET.name), FAST)

    assert (paths.raw_dir(DATASET.name) / "ratings.csv").read_bytes() == RATINGS


@pytest.mark.parametrize("frozen", [False, True], ids=["published-md5", "table-md5"])
def test_checksum_mismatch_is_rejected(frozen, project, tmp_path):
    zip_bytes = make_zip(good_entries())
    wrong = "0" * 32
    base = write_mirror(tmp_path / "mirror", mirror_files(zip_bytes, checksum=wrong))
    dataset = dataclasses.replace(DATASET, md5=wrong) if frozen else DATASET

    with pytest.raises(PipelineError, match=f"MD5 {md5_of(zip_bytes)} but {wrong} was expected"):
        download.download_dataset(dataset, base, paths.raw_dir(DATASET.name), FAST)
    assert_raw_empty(project)


@pytest.mark.parametrize(
    ("plan", "publish", "message", "hits"),
    [
        ([], False, r"HTTP 404 Not Found; check data.dataset and MOVIELENS_MIRROR", 1),
        ([500] * 3, True, r"after 3 attempts \(HTTP 500 .*MOVIELENS_MIRROR", 3),
        (["truncate"] * 3, True, r"after 3 attempts \(truncated download: got \d+ of \d+ bytes", 3),
    ],
    ids=["404-not-retried", "500-gives-up", "truncated"],
)
def test_http_failures(plan, publish, message, hits, server, project):
    files = mirror_files(make_zip(good_entries()))
    base = serve(server, files if publish else {f"{ZIP}.md5": files[f"{ZIP}.md5"]})
    server.plans[f"/{ZIP}"] = list(plan)

    with pytest.raises(PipelineError, match=message):
        download.download_dataset(DATASET, base, paths.raw_dir(DATASET.name), FAST)
    assert server.hits[f"/{ZIP}"] == hits
    assert_raw_empty(project)


@pytest.mark.parametrize("failure", [500, "truncate"])
def test_transient_failure_is_retried(failure, server, project):
    base = serve(server, mirror_files(make_zip(good_entries())))
    server.plans[f"/{ZIP}"] = [failure]

    download.download_dataset(DATASET, base, paths.raw_dir(DATASET.name), FAST)

    assert server.hits[f"/{ZIP}"] == 2
    assert (paths.raw_dir(DATASET.name) / "movies.csv").read_bytes() == MOVIES


@pytest.mark.parametrize(
    ("stall", "reason"),
    [("stall-headers", r"\(timed out\)"), ("stall-body", r"\(connection lost after \d+ bytes")],
    ids=["no-answer", "body-stops"],
)
def test_a_silent_server_times_out_and_gives_up(stall, reason, server, project):
    base = serve(server, mirror_files(make_zip(good_entries())))
    server.plans[f"/{ZIP}"] = [stall] * TIMEOUT.attempts

    with pytest.raises(PipelineError, match=f"after 3 attempts {reason}.*set MOVIELENS_MIRROR"):
        download.download_dataset(DATASET, base, paths.raw_dir(DATASET.name), TIMEOUT)
    assert server.hits[f"/{ZIP}"] == TIMEOUT.attempts
    assert_raw_empty(project)


def test_a_stall_once_is_retried(server, project):
    base = serve(server, mirror_files(make_zip(good_entries())))
    server.plans[f"/{ZIP}"] = ["stall-body"]

    download.download_dataset(DATASET, base, paths.raw_dir(DATASET.name), TIMEOUT)

    assert server.hits[f"/{ZIP}"] == 2
    assert (paths.raw_dir(DATASET.name) / "ratings.csv").read_bytes() == RATINGS


def test_the_default_retry_policy_gives_up_well_under_a_minute():
    """Worst case of one fetch against a server that never answers: every attempt waits out its
    timeout, plus the back-off sleeps between attempts. The stage stops at the first failed fetch."""
    policy = fetch.RetryPolicy()
    sleeps = sum(policy.backoff_s * 2**i for i in range(policy.attempts - 1))
    assert policy.attempts >= 2
    assert policy.attempts * policy.timeout_s + sleeps < 45


def test_unreachable_server_names_the_mirror_variable(project):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    with pytest.raises(PipelineError, match=r"after 3 attempts .*set MOVIELENS_MIRROR"):
        download.download_dataset(
            DATASET, f"http://127.0.0.1:{port}", paths.raw_dir(DATASET.name), FAST
        )
    assert_raw_empty(project)


def test_not_a_zip_is_rejected(project, tmp_path):
    base = write_mirror(tmp_path / "mirror", mirror_files(b"<html>not found</html>\n"))

    with pytest.raises(PipelineError, match=f"{ZIP} is not a zip file"):
        download.download_dataset(DATASET, base, paths.raw_dir(DATASET.name), FAST)
    assert_raw_empty(project)


@pytest.mark.parametrize(
    ("extra", "drop", "cap", "message"),
    [
        ([(HOSTILE_ABSOLUTE, b"x")], None, None, "unsafe member path '/tmp/"),
        ([(member("../../../evil.txt"), b"x")], None, None, r"unsafe member path .*\.\./evil"),
        ([(member("..\\..\\..\\evil.txt"), b"x")], None, None, "unsafe member path"),
        ([(symlink_info(member("evil.txt")), b"/etc/passwd")], None, None, "symbolic link"),
        ([], "movies.csv", None, f"lacks {DATASET.folder}/movies.csv;"),
        (
            [(member("ratings.csv"), b"0" * 200_000)],
            "ratings.csv",
            10_000,
            "declares \\d+ uncompressed bytes, more than the 10000",
        ),
        ([("C:/evil.txt", b"x")], None, None, "unsafe member path 'C:/evil.txt'"),
        ([(member("sub/../../evil.txt"), b"x")], None, None, "unsafe member path"),
        ([(symlink_info(member("ratings.csv")), b"/etc/passwd")], "ratings.csv", None, "symbolic link"),
        ([], "ratings.csv", None, f"lacks {DATASET.folder}/ratings.csv;"),
        ([("ratings.csv", RATINGS), ("movies.csv", MOVIES)], "*", None, "lacks .*ratings.csv, .*movies.csv; is it really"),
        (
            [(member("ratings.csv"), b"1" * 6_000), (member("movies.csv"), b"2" * 6_000)],
            "*",
            10_000,
            "declares 12000 uncompressed bytes, more than the 10000",
        ),
    ],
    ids=[
        "absolute", "dotdot", "backslash-dotdot", "symlink", "missing-member", "zip-bomb",
        "drive-letter", "dotdot-inside", "symlink-as-ratings", "missing-ratings", "no-top-folder",
        "bomb-across-members",
    ],
)  # fmt: skip
def test_hostile_archive_is_rejected(extra, drop, cap, message, project, tmp_path):
    entries = [(n, d) for n, d in good_entries() if drop != "*" and n != (drop and member(drop))]
    entries += extra
    base = write_mirror(tmp_path / "mirror", mirror_files(make_zip(entries)))
    dataset = dataclasses.replace(DATASET, extracted_bytes=cap) if cap else DATASET

    with pytest.raises(PipelineError, match=message):
        download.download_dataset(dataset, base, paths.raw_dir(DATASET.name), FAST)
    assert_raw_empty(project)
    assert list(tmp_path.rglob("evil*")) == []
    assert not Path(HOSTILE_ABSOLUTE).exists()


def test_lying_size_header_does_not_get_past(project, tmp_path):
    bomb = [(n, d) for n, d in good_entries() if n != member("ratings.csv")]
    bomb.append((member("ratings.csv"), b"0" * 500_000))
    forged = forge_size(make_zip(bomb), member("ratings.csv"), 100)
    base = write_mirror(tmp_path / "mirror", mirror_files(forged))
    dataset = dataclasses.replace(DATASET, extracted_bytes=10_000)

    with pytest.raises(PipelineError, match=r"cannot extract .*ratings\.csv.*damaged"):
        download.download_dataset(dataset, base, paths.raw_dir(DATASET.name), FAST)
    assert_raw_empty(project)


def test_extraction_counts_decompressed_bytes_against_the_cap(tmp_path):
    archive = zipfile.ZipFile(io.BytesIO(make_zip([(member("ratings.csv"), b"0" * 50_000)])))

    with archive, pytest.raises(PipelineError, match="decompresses past the cap of 1000 bytes"):
        zip_archive.extract_members(archive, archive.infolist(), tmp_path / "out", max_bytes=1000)


def test_failed_run_keeps_previous_output_and_good_run_replaces_it(project, tmp_path):
    target = paths.raw_dir(DATASET.name)
    target.mkdir(parents=True)
    (target / "ratings.csv").write_bytes(b"old ratings\n")
    (target / "stale.txt").write_bytes(b"from an older release\n")
    zip_bytes = make_zip(good_entries())
    bad = write_mirror(tmp_path / "bad", mirror_files(zip_bytes, checksum="f" * 32))

    with pytest.raises(PipelineError, match="was expected"):
        download.download_dataset(DATASET, bad, target, FAST)
    assert sorted(p.name for p in (project / paths.RAW_DIR).iterdir()) == [DATASET.name]
    assert (target / "ratings.csv").read_bytes() == b"old ratings\n"

    good = write_mirror(tmp_path / "good", mirror_files(zip_bytes))
    download.download_dataset(DATASET, good, target, FAST)
    assert sorted(p.name for p in target.iterdir()) == ["README.txt", "movies.csv", "ratings.csv"]
    assert sorted(p.name for p in (project / paths.RAW_DIR).iterdir()) == [DATASET.name]


@pytest.mark.parametrize(
    ("mirror", "expected"),
    [
        (None, OFFICIAL_BASE_URL),
        ("", OFFICIAL_BASE_URL),
        ("http://127.0.0.1:8000/movielens/", "http://127.0.0.1:8000/movielens"),
        ("https://mirror.example.org/ml", "https://mirror.example.org/ml"),
    ],
)
def test_resolve_base_accepts(mirror, expected):
    assert fetch.resolve_base(mirror) == expected


def test_resolve_base_accepts_absolute_directory(tmp_path):
    assert fetch.resolve_base(str(tmp_path)) == str(tmp_path)


@pytest.mark.parametrize(
    ("mirror", "message"),
    [
        ("../shared/data", "use an absolute directory path or an http:// or https:// base URL"),
        ("data", "use an absolute directory path"),
        ("ftp://mirror.example.org/ml", "is not allowed"),
        ("file:///work/shared/data", "is not allowed"),
        ("/nonexistent/movielens-mirror", "is not a directory"),
    ],
)
def test_resolve_base_rejects(mirror, message):
    with pytest.raises(PipelineError, match=message):
        fetch.resolve_base(mirror)


@pytest.mark.parametrize(
    "text",
    [
        f"MD5 ({ZIP}) = 91F91AD0F0846E764DDF79CF44A0CBE1\n",
        f"91f91ad0f0846e764ddf79cf44a0cbe1  {ZIP}\n",
        f"91f91ad0f0846e764ddf79cf44a0cbe1 *{ZIP}",
        f"{'0' * 32}  other.zip\n91f91ad0f0846e764ddf79cf44a0cbe1  ./{ZIP}\n",
    ],
    ids=["bsd", "md5sum", "md5sum-binary", "several-lines"],
)
def test_parse_md5(text):
    assert fetch.parse_md5(text, ZIP) == "91f91ad0f0846e764ddf79cf44a0cbe1"


@pytest.mark.parametrize(
    "text", ["", "<html>404</html>", f"MD5 (other.zip) = {'0' * 32}", "abc  x"]
)
def test_parse_md5_rejects(text):
    with pytest.raises(PipelineError, match=f"no MD5 for {ZIP}"):
        fetch.parse_md5(text, ZIP)


def test_main_reads_params_and_mirror(project, tmp_path, monkeypatch):
    base = write_mirror(tmp_path / "mirror", mirror_files(make_zip(good_entries())))
    monkeypatch.setenv(fetch.MIRROR_ENV, base)

    download_stage.main()

    assert (project / "data/raw/ml-latest-small/ratings.csv").read_bytes() == RATINGS


# ---------------------------------------------------------------------------- the stage, by CLI


def closed_port() -> int:
    """A local port nothing listens on: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dir_mirror(zip_bytes: bytes | Callable[[], bytes], checksum: str | None = None) -> Callable:
    """A directory mirror holding the zip (or what the callable makes, when it runs) and its .md5."""

    def make(folder: Path, _) -> str:
        data = zip_bytes() if callable(zip_bytes) else zip_bytes
        return write_mirror(folder, mirror_files(data, checksum))

    return make


def http_mirror(files: dict | None, plan: list | None = None) -> Callable:
    """A folder on the shared test server holding `files`; `plan` scripts the zip's requests."""

    def make(folder: Path, httpd: ThreadingHTTPServer) -> str:
        path = f"/{folder.parent.name}"  # the case's own folder on the shared server
        for name, data in (files or {}).items():
            httpd.files[f"{path[1:]}/{name}"] = data
        httpd.plans[f"{path}/{ZIP}"] = list(plan or [])
        return f"http://127.0.0.1:{httpd.server_address[1]}{path}"

    return make


def hostile(extra: list, drop: str | None = None) -> bytes:
    entries = [(n, d) for n, d in good_entries() if n != (drop and member(drop))]
    return make_zip(entries + extra)


GOOD_ZIP = make_zip(good_entries())


def bomb() -> bytes:
    """16 MiB of zeros: about 16 KiB zipped, one byte over ml-latest-small's cap unzipped."""
    return hostile([(member("ratings.csv"), b"0" * (DATASET.extracted_bytes + 1))], "ratings.csv")


# case: (how to make the mirror from a folder and the shared server, words of the one error line)
CLI_FAULTS = {
    "unreachable": (lambda *_: f"http://127.0.0.1:{closed_port()}", ["could not download http://127.0.0.1:", "after 3 attempts", "set MOVIELENS_MIRROR to an absolute directory"]),
    "http 404": (http_mirror({}), ["answered HTTP 404 Not Found; check data.dataset and MOVIELENS_MIRROR"]),
    "http 500": (http_mirror(mirror_files(GOOD_ZIP), [500] * 3), ["after 3 attempts (HTTP 500", "set MOVIELENS_MIRROR"]),
    "truncated": (http_mirror(mirror_files(GOOD_ZIP), ["truncate"] * 3), ["after 3 attempts (truncated download: got"]),
    "relative mirror": (lambda *_: "relative/mirror", ["MOVIELENS_MIRROR='relative/mirror' is not allowed; use an absolute directory"]),
    "mirror lacks the zip": (lambda folder, _: write_mirror(folder, {}), [f"{ZIP}.md5 not found; the MOVIELENS_MIRROR directory must hold {ZIP}.md5"]),
    "checksum mismatch": (dir_mirror(GOOD_ZIP, "0" * 32), [f"{ZIP} has MD5 {md5_of(GOOD_ZIP)} but {'0' * 32} was expected", "fix MOVIELENS_MIRROR"]),
    "truncated file": (dir_mirror(GOOD_ZIP[: len(GOOD_ZIP) // 2], md5_of(GOOD_ZIP)), ["was expected; the download is damaged or the mirror is stale"]),
    "not a zip": (dir_mirror(b"<html>502 Bad Gateway</html>\n"), [f"{ZIP} is not a zip file; the mirror or server sent something else"]),
    "absolute member": (dir_mirror(hostile([(HOSTILE_ABSOLUTE, b"x")])), [f"unsafe member path '{HOSTILE_ABSOLUTE}'", "refusing to extract it"]),
    "dotdot member": (dir_mirror(hostile([(member("../../evil.txt"), b"x")])), ["unsafe member path 'ml-latest-small/../../evil.txt'"]),
    "symlink member": (dir_mirror(hostile([(symlink_info(member("evil.txt")), b"/etc/passwd")])), ["symbolic link member 'ml-latest-small/evil.txt'"]),
    "zip bomb": (dir_mirror(bomb), [f"more than the {DATASET.extracted_bytes} allowed for ml-latest-small; refusing a possible zip bomb"]),
    "missing member": (dir_mirror(hostile([], "movies.csv")), ["lacks ml-latest-small/movies.csv; is it really the MovieLens ml-latest-small release?"]),
}  # fmt: skip


@pytest.fixture(scope="module")
def cli_faults(tmp_path_factory):
    """Run `python -m stages.download` against every CLI_FAULTS mirror at once (each start is slow)."""
    base = tmp_path_factory.mktemp("cli")
    httpd = start_server()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    running = {}
    for case, (make_mirror, _) in CLI_FAULTS.items():
        folder = base / case.replace(" ", "-")
        root = folder / "project"
        root.mkdir(parents=True)
        shutil.copy(ROOT / "params.yaml", root / "params.yaml")
        case_env = {**env, fetch.MIRROR_ENV: make_mirror(folder / "mirror", httpd)}
        running[case] = (folder, subprocess.Popen(
            [sys.executable, "-m", "stages.download"], cwd=root, env=case_env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))  # fmt: skip
    results = {}
    try:
        for case, (folder, process) in running.items():
            _, stderr = process.communicate(timeout=120)
            results[case] = (folder, process.returncode, stderr)
    finally:
        stop_server(httpd)
    return results


@pytest.mark.parametrize("case", list(CLI_FAULTS))
def test_download_faults_stop_the_stage_with_one_line_and_write_nothing(cli_faults, case):
    folder, returncode, stderr = cli_faults[case]
    assert "Traceback" not in stderr
    assert returncode == 1
    lines = stderr.splitlines()
    assert [line for line in lines if line.startswith("error: ")] == lines[-1:]  # logs may precede
    for words in CLI_FAULTS[case][1]:
        assert words in lines[-1]
    raw = folder / "project" / paths.RAW_DIR
    assert not raw.exists() or list(raw.iterdir()) == []
    assert list(folder.rglob("evil*")) == []
    assert not Path(HOSTILE_ABSOLUTE).exists()


@pytest.mark.slow
def test_a_server_that_never_answers_stops_the_stage_well_under_a_minute(tmp_path):
    """The real entry point with the default retry policy against a socket that accepts
    connections (the kernel's backlog) but never answers."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    with socket.socket() as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(8)
        port = black_hole.getsockname()[1]
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            fetch.MIRROR_ENV: f"http://127.0.0.1:{port}",
        }
        start = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "stages.download"],
            cwd=root, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        elapsed = time.monotonic() - start
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]
    assert "after 3 attempts (timed out)" in last
    assert "set MOVIELENS_MIRROR" in last
    assert elapsed < 50
    assert not (root / paths.RAW_DIR).exists() or list((root / paths.RAW_DIR).iterdir()) == []


# ---------------------------------------------------------------------------- killed mid-run

# Run the download stage but SIGKILL it at `point`: right after extracting (the last file cut to
# half its size, as if caught mid-write), or between moving the old folder aside and moving the
# new one into place.
KILLED_DOWNLOAD = """
import os, signal, sys
from movielens.data import download
from stages import download as download_stage
from movielens.plumbing.errors import run_stage

point = sys.argv[1]
extract, replace, replaced = download.extract_members, os.replace, []

def extract_then_die(archive, infos, dest, max_bytes):
    files = extract(archive, infos, dest, max_bytes)
    os.truncate(files[-1], os.path.getsize(files[-1]) // 2)
    os.kill(os.getpid(), signal.SIGKILL)

def replace_or_die(src, dst):
    replaced.append(dst)
    if len(replaced) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    replace(src, dst)

if point == "extracting":
    download.extract_members = extract_then_die
else:
    os.replace = replace_or_die
run_stage(download_stage.main)
"""


def run_download(root: Path, mirror: str, *args: str) -> subprocess.CompletedProcess:
    code = ["-c", KILLED_DOWNLOAD, *args] if args else ["-m", "stages.download"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), fetch.MIRROR_ENV: mirror, "LOGLEVEL": "ERROR"}
    return subprocess.run(
        [sys.executable, *code], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.exists() else {}


@pytest.mark.parametrize(("point", "left"), [("extracting", "old"), ("swapping", "none")])
def test_a_download_killed_midway_leaves_old_or_no_folder_and_the_next_run_recovers(
    tmp_path, point, left
):
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    target = root / paths.raw_dir(DATASET.name)
    old_mirror = write_mirror(tmp_path / "old", mirror_files(make_zip(good_entries())))
    assert run_download(root, old_mirror).returncode == 0
    old = folder_bytes(target)
    new_entries = [
        (n, d + b"9,9,1.0,9\n" if n.endswith("ratings.csv") else d) for n, d in good_entries()
    ]
    new_mirror = write_mirror(tmp_path / "new", mirror_files(make_zip(new_entries)))

    killed = run_download(root, new_mirror, point)

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert folder_bytes(target) == (old if left == "old" else {})  # never a partial folder
    assert run_download(root, new_mirror).returncode == 0
    assert folder_bytes(target)["ratings.csv"] == RATINGS + b"9,9,1.0,9\n"
    assert sorted(p.name for p in target.iterdir()) == ["README.txt", "movies.csv", "ratings.csv"]
    assert [p.name for p in target.parent.iterdir()] == [DATASET.name]  # no staging left behind
