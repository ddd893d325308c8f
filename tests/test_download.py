"""Tests for the download stage against a real local HTTP server and hand-built zips."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import shutil
import socket
import stat
import struct
import subprocess
import sys
import threading
import urllib.parse
import zipfile
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from stages import download, paths
from stages.common import PipelineError
from stages.datasets import OFFICIAL_BASE_URL, get_dataset

ROOT = Path(__file__).resolve().parents[1]
DATASET = get_dataset("ml-latest-small")
ZIP = DATASET.zip_name
RATINGS = (
    b"userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.0,964981247\n2,1,3.5,964982224\n"
)
MOVIES = b"movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n3,Grumpier Old Men (1995),Comedy|Romance\n"
LICENSE = b"Summary: a tiny MovieLens-shaped test set.\n"
LINKS = b"movieId,imdbId,tmdbId\n1,0114709,862\n"
FAST = download.RetryPolicy(attempts=3, backoff_s=0.01, timeout_s=2.0)
HOSTILE_ABSOLUTE = "/tmp/movielens-download-test-evil.txt"


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
    """Serves `server.files`; `server.plans[path]` scripts failures for the next requests."""

    def do_GET(self) -> None:
        path = urllib.parse.unquote(self.path)
        self.server.hits[path] += 1
        plan = self.server.plans.get(path)
        action = plan.pop(0) if plan else "ok"
        body = self.server.files.get(path.lstrip("/"))
        if action == 500:
            self.send_error(500)
        elif body is None:
            self.send_error(404)
        else:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if action == "truncate" else body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), MirrorHandler)
    httpd.files, httpd.plans, httpd.hits = {}, {}, Counter()
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


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
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)
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

    written = download.download_dataset(DATASET, download.resolve_base(base), target, FAST)

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
    ],
    ids=["absolute", "dotdot", "backslash-dotdot", "symlink", "missing-member", "zip-bomb"],
)
def test_hostile_archive_is_rejected(extra, drop, cap, message, project, tmp_path):
    entries = [(n, d) for n, d in good_entries() if n != (drop and member(drop))] + extra
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
        download.extract_members(archive, archive.infolist(), tmp_path / "out", max_bytes=1000)


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
    assert download.resolve_base(mirror) == expected


def test_resolve_base_accepts_absolute_directory(tmp_path):
    assert download.resolve_base(str(tmp_path)) == str(tmp_path)


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
        download.resolve_base(mirror)


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
    assert download.parse_md5(text, ZIP) == "91f91ad0f0846e764ddf79cf44a0cbe1"


@pytest.mark.parametrize(
    "text", ["", "<html>404</html>", f"MD5 (other.zip) = {'0' * 32}", "abc  x"]
)
def test_parse_md5_rejects(text):
    with pytest.raises(PipelineError, match=f"no MD5 for {ZIP}"):
        download.parse_md5(text, ZIP)


def test_main_reads_params_and_mirror(project, tmp_path, monkeypatch):
    base = write_mirror(tmp_path / "mirror", mirror_files(make_zip(good_entries())))
    monkeypatch.setenv(download.MIRROR_ENV, base)

    download.main()

    assert (project / "data/raw/ml-latest-small/ratings.csv").read_bytes() == RATINGS


@pytest.mark.parametrize(
    ("mirror", "message"),
    [
        ("relative/mirror", "error: MOVIELENS_MIRROR='relative/mirror' is not allowed"),
        ("bad-checksum", "error: ml-latest-small.zip has MD5"),
    ],
)
def test_stage_fails_with_one_line(mirror, message, tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    if mirror == "bad-checksum":
        files = mirror_files(make_zip(good_entries()), checksum="0" * 32)
        mirror = write_mirror(tmp_path / "mirror", files)
    env = {**os.environ, "PYTHONPATH": str(ROOT), download.MIRROR_ENV: mirror, "LOGLEVEL": "ERROR"}

    result = subprocess.run(
        [sys.executable, "-m", "stages.download"],
        cwd=root, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert result.returncode == 1
    assert result.stderr.startswith(message)
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert not (root / paths.RAW_DIR).exists() or list((root / paths.RAW_DIR).iterdir()) == []
