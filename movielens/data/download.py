"""Fetch a MovieLens zip (GroupLens or a mirror), verify its MD5, extract the needed files safely."""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import shutil
import stat
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from movielens.data.releases import OFFICIAL_BASE_URL, Dataset
from movielens.plumbing.errors import PipelineError

log = logging.getLogger(__name__)

MIRROR_ENV = "MOVIELENS_MIRROR"
# Opt-in for synthetic or repackaged mirrors (benchmarks/bench_scale.py): check a frozen release's
# zip against the mirror's own .md5 instead of the MD5 pinned in movielens.data.releases, with a warning.
TRUST_MD5_ENV = "MOVIELENS_MIRROR_TRUST_MD5"
LICENSE_FILE = "README.txt"
CHUNK_BYTES = 1024**2
PROGRESS_INTERVAL_S = 2.0
OFFLINE_HINT = (
    f"set {MIRROR_ENV} to an absolute directory or an http(s) URL holding the zip "
    "and its .md5 to work offline"
)

_BSD_MD5 = re.compile(r"^MD5 \((?P<name>.+)\) = (?P<hex>[0-9a-fA-F]{32})$")
_GNU_MD5 = re.compile(r"^(?P<hex>[0-9a-fA-F]{32}) [ *](?P<name>.+)$")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard an HTTP fetch tries.

    Attempts: `attempts` tries, sleeping `backoff_s * 2**i` seconds after the i-th failure;
    network errors, truncated bodies and HTTP 5xx are retried, HTTP 4xx is not. `timeout_s`
    bounds the connect and every read, so with the defaults a dead network fails in ~35 s.
    """

    attempts: int = 3
    backoff_s: float = 1.0
    timeout_s: float = 10.0


class _Transient(Exception):
    """A failure worth another attempt (network error, 5xx, truncated body)."""


def resolve_base(mirror: str | None) -> str:
    """Where the zips live: the official URL, or the mirror named by MOVIELENS_MIRROR.

    Args:
        mirror: the variable's value; None or "" means the official site.

    Returns:
        An http(s) base URL without a trailing slash, or an absolute directory path.

    Raises:
        PipelineError: for a relative path, a missing directory or another URL scheme.
    """
    if not mirror:
        return OFFICIAL_BASE_URL
    parts = urllib.parse.urlsplit(mirror)
    if parts.scheme in ("http", "https") and parts.netloc:
        return mirror.rstrip("/")
    if not os.path.isabs(mirror):
        raise PipelineError(
            f"{MIRROR_ENV}={mirror!r} is not allowed; "
            "use an absolute directory path or an http:// or https:// base URL"
        )
    if not os.path.isdir(mirror):
        raise PipelineError(f"{MIRROR_ENV}={mirror!r} is not a directory; fix or unset it")
    return mirror


def is_url(base: str) -> bool:
    """Whether `base` (from resolve_base) is an http(s) URL rather than a directory."""
    return urllib.parse.urlsplit(base).scheme in ("http", "https")


def parse_md5(text: str, zip_name: str) -> str:
    """Find the checksum of `zip_name` in a published .md5 file.

    Accepts the BSD form `MD5 (name.zip) = <hex>` and the md5sum form `<hex>  name.zip`.

    Returns:
        The 32 lower-case hex digits.

    Raises:
        PipelineError: when no line gives a checksum for `zip_name`.
    """
    for line in text.splitlines():
        line = line.strip()
        match = _BSD_MD5.match(line) or _GNU_MD5.match(line)
        if match and PurePosixPath(match["name"].strip()).name == zip_name:
            return match["hex"].lower()
    raise PipelineError(
        f"no MD5 for {zip_name} in {zip_name}.md5 "
        f"(expected 'MD5 ({zip_name}) = <hex>' or '<hex>  {zip_name}'); fix the mirror's .md5 file"
    )


def trusts_mirror_md5(trust: str | None, mirror: str | None) -> bool:
    """Read MOVIELENS_MIRROR_TRUST_MD5: "1" trusts the mirror's .md5 file; unset, "" or "0" do not.

    Raises:
        PipelineError: for another value, or "1" without MOVIELENS_MIRROR (the official site
            is always checked against the pinned MD5s).
    """
    if trust in (None, "", "0"):
        return False
    if trust != "1":
        raise PipelineError(f"{TRUST_MD5_ENV}={trust!r} is not allowed; set it to 1 or unset it")
    if not mirror:
        raise PipelineError(
            f"{TRUST_MD5_ENV}=1 needs {MIRROR_ENV}: only a mirror's own .md5 can replace the "
            f"pinned MD5s; unset {TRUST_MD5_ENV} or set {MIRROR_ENV}"
        )
    return True


def expected_md5(
    dataset: Dataset, base: str, staging: Path, retry: RetryPolicy, trust_mirror: bool = False
) -> str:
    """The MD5 the zip must have: the pinned one, else (or when trusting the mirror) the .md5
    file published beside the zip, fetched into `staging`.

    Trusting the mirror over a pinned MD5 is logged as a warning when the two differ: the data
    is then not the official release (a synthetic benchmark mirror, for instance).
    """
    if dataset.md5 is not None and not trust_mirror:
        return dataset.md5
    md5_file = staging / f"{dataset.zip_name}.md5"
    fetch(base, md5_file.name, md5_file, retry)
    published = parse_md5(md5_file.read_text(encoding="utf-8", errors="replace"), dataset.zip_name)
    if dataset.md5 is not None and published != dataset.md5:
        log.warning(
            "%s=1: checking %s against the mirror's own %s (%s), not the official release's "
            "pinned MD5 %s; this is NOT the official %s data",
            TRUST_MD5_ENV, dataset.zip_name, md5_file.name, published, dataset.md5, dataset.name,
        )  # fmt: skip
    return published


def file_md5(path: Path) -> str:
    """The MD5 of a file, as 32 lower-case hex digits, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with Path(path).open("rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def verify_md5(path: Path, expected: str) -> None:
    """Raise PipelineError naming both hashes when `path` does not have MD5 `expected`."""
    actual = file_md5(path)
    if actual != expected.lower():
        raise PipelineError(
            f"{Path(path).name} has MD5 {actual} but {expected.lower()} was expected; "
            f"the download is damaged or the mirror is stale, fetch it again or fix {MIRROR_ENV} "
            f"(a synthetic mirror of a frozen release needs {TRUST_MD5_ENV}=1)"
        )
    log.info("%s: MD5 %s verified", Path(path).name, actual)


class _Progress:
    """Logs bytes received (and percent when the size is known) at most every interval."""

    def __init__(self, label: str, total: int | None, interval_s: float = PROGRESS_INTERVAL_S):
        self.label, self.total, self.interval_s = label, total, interval_s
        self.received = 0
        self.last = time.monotonic()

    def update(self, n: int) -> None:
        self.received += n
        now = time.monotonic()
        if now - self.last >= self.interval_s:
            self.last = now
            self.report()

    def report(self) -> None:
        mb = self.received / 1024**2
        if self.total:
            percent = 100 * self.received / self.total
            log.info("%s: %.1f of %.1f MB (%.0f%%)", self.label, mb, self.total / 1024**2, percent)
        else:
            log.info("%s: %.1f MB", self.label, mb)


def _http_get_once(url: str, dest: Path, timeout_s: float) -> int:
    """One GET of `url` into `dest`; returns the bytes written."""
    try:
        response = urllib.request.urlopen(url, timeout=timeout_s)
    except urllib.error.HTTPError as err:
        err.close()
        if err.code >= 500:
            raise _Transient(f"HTTP {err.code} {err.reason}") from None
        raise PipelineError(
            f"{url} answered HTTP {err.code} {err.reason}; check data.dataset and {MIRROR_ENV}"
        ) from None
    except (OSError, http.client.HTTPException) as err:
        raise _Transient(str(getattr(err, "reason", err)) or type(err).__name__) from None
    with response, dest.open("wb") as out:
        length = response.headers.get("Content-Length", "")
        total = int(length) if length.isdigit() else None
        progress = _Progress(PurePosixPath(urllib.parse.urlsplit(url).path).name, total)
        while True:
            try:
                chunk = response.read(CHUNK_BYTES)
            except (OSError, http.client.HTTPException) as err:
                reason = f"connection lost after {progress.received} bytes ({err})"
                raise _Transient(reason) from None
            if not chunk:
                break
            out.write(chunk)
            progress.update(len(chunk))
    if total is not None and progress.received < total:
        raise _Transient(f"truncated download: got {progress.received} of {total} bytes")
    log.info("%s: %d bytes received", progress.label, progress.received)
    return progress.received


def http_get(url: str, dest: Path, retry: RetryPolicy = RetryPolicy()) -> int:
    """Stream `url` into the file `dest`, retrying transient failures with exponential back-off.

    Returns:
        The number of bytes written.

    Raises:
        PipelineError: on HTTP 4xx at once, or once every attempt has failed.
    """
    reason = "no attempt made"
    for attempt in range(1, retry.attempts + 1):
        try:
            return _http_get_once(url, dest, retry.timeout_s)
        except _Transient as err:
            reason = str(err)
            if attempt < retry.attempts:
                delay = retry.backoff_s * 2 ** (attempt - 1)
                log.warning(
                    "%s: %s; retrying in %.1f s (attempt %d of %d)",
                    url, reason, delay, attempt + 1, retry.attempts,
                )  # fmt: skip
                time.sleep(delay)
    raise PipelineError(
        f"could not download {url} after {retry.attempts} attempts ({reason}); "
        f"check the network or {OFFLINE_HINT}"
    )


def fetch(base: str, filename: str, dest: Path, retry: RetryPolicy = RetryPolicy()) -> None:
    """Copy `filename` from `base` (an http(s) URL or an absolute directory) into `dest`.

    Raises:
        PipelineError: when the file cannot be had.
    """
    if is_url(base):
        log.info("downloading %s/%s", base, filename)
        http_get(f"{base}/{urllib.parse.quote(filename)}", dest, retry)
        return
    source = Path(base) / filename
    if not source.is_file():
        raise PipelineError(f"{source} not found; the {MIRROR_ENV} directory must hold {filename}")
    log.info("copying %s", source)
    shutil.copyfile(source, dest)


def _is_unsafe(name: str) -> bool:
    """Absolute (POSIX, UNC or drive-letter) or with a `..` component, either slash counted."""
    posix = name.replace("\\", "/")
    return (
        posix.startswith("/")
        or re.match(r"[A-Za-z]:", posix) is not None
        or ".." in posix.split("/")
    )


def check_archive(infos: list[zipfile.ZipInfo], dataset: Dataset) -> list[zipfile.ZipInfo]:
    """Choose the members to extract, refusing a hostile or wrong archive before anything is written.

    Args:
        infos: every member of the archive (`ZipFile.infolist()`).
        dataset: the release the archive should be.

    Returns:
        The ratings and movies members, plus the folder's README.txt (the license) if present.

    Raises:
        PipelineError: for an absolute or `..` member name, a symlink member, missing members,
            or a declared uncompressed size above `dataset.extracted_bytes`.
    """
    for info in infos:
        if _is_unsafe(info.filename):
            raise PipelineError(
                f"{dataset.zip_name} has an unsafe member path {info.filename!r} "
                "(absolute or containing '..'); refusing to extract it, use the official zip"
            )
        if stat.S_ISLNK(info.external_attr >> 16):
            raise PipelineError(
                f"{dataset.zip_name} has a symbolic link member {info.filename!r}; "
                "refusing to extract it, use the official zip"
            )
    by_name = {info.filename: info for info in infos}
    missing = [name for name in dataset.members if name not in by_name]
    if missing:
        raise PipelineError(
            f"{dataset.zip_name} lacks {', '.join(missing)}; "
            f"is it really the MovieLens {dataset.name} release?"
        )
    wanted = [*dataset.members, f"{dataset.folder}/{LICENSE_FILE}"]
    chosen = [by_name[name] for name in wanted if name in by_name]
    declared = sum(info.file_size for info in chosen)
    if declared > dataset.extracted_bytes:
        raise PipelineError(
            f"{dataset.zip_name} declares {declared} uncompressed bytes, more than the "
            f"{dataset.extracted_bytes} allowed for {dataset.name}; refusing a possible zip bomb"
        )
    return chosen


def extract_members(
    archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo], dest: Path, max_bytes: int
) -> list[Path]:
    """Stream the chosen members into `dest` under their base names, counting every byte.

    The cap is enforced on the bytes actually decompressed, so a header that understates
    a member's size cannot get past it.

    Returns:
        The files written, in the order of `infos`.

    Raises:
        PipelineError: when more than `max_bytes` come out or a member is damaged.
    """
    dest.mkdir(parents=True, exist_ok=True)
    written, total = [], 0
    for info in infos:
        target = dest / PurePosixPath(info.filename).name
        try:
            with archive.open(info) as source, target.open("xb") as out:
                while chunk := source.read(CHUNK_BYTES):
                    total += len(chunk)
                    if total > max_bytes:
                        raise PipelineError(
                            f"{info.filename} decompresses past the cap of {max_bytes} bytes; "
                            "refusing a possible zip bomb, use the official zip"
                        )
                    out.write(chunk)
        except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError) as err:
            raise PipelineError(
                f"cannot extract {info.filename} ({err}); the zip is damaged, fetch it again"
            ) from None
        written.append(target)
    return written


def swap_dir(new: Path, target: Path, trash: Path) -> None:
    """Put the complete directory `new` at `target`, removing the old one only afterwards.

    Args:
        new: the finished directory, on the same filesystem as `target`.
        target: where it must end up; an existing one is moved to `trash` first.
        trash: a free path on the same filesystem, deleted at the end.
    """
    had_old = target.exists()
    if had_old:
        os.replace(target, trash)
    try:
        os.replace(new, target)
    except OSError:
        if had_old:
            os.replace(trash, target)
        raise
    if had_old:
        shutil.rmtree(trash)


def _open_zip(path: Path, zip_name: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise PipelineError(
            f"{zip_name} is not a zip file; the mirror or server sent something else, "
            f"check {MIRROR_ENV}"
        ) from None


def download_dataset(
    dataset: Dataset,
    base: str,
    target: Path,
    retry: RetryPolicy = RetryPolicy(),
    trust_mirror_md5: bool = False,
) -> list[Path]:
    """Fetch, verify and safely extract one release into `target`, atomically.

    All work happens in a temporary directory beside `target`; on any failure it is removed
    and an earlier `target` is left as it was. Temporary directories that a killed run left
    beside `target` are removed first.

    Args:
        dataset: the release.
        base: from resolve_base: an http(s) base URL or an absolute directory.
        target: the output directory, e.g. `paths.raw_dir(dataset.name)`.
        retry: how HTTP fetches retry.
        trust_mirror_md5: check a frozen release against the mirror's .md5 file instead of its
            pinned MD5 (see expected_md5); from MOVIELENS_MIRROR_TRUST_MD5.

    Returns:
        The files now in `target`.

    Raises:
        PipelineError: for any download, checksum or archive problem.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a run that was killed midway
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        expected = expected_md5(dataset, base, staging, retry, trust_mirror_md5)
        zip_path = staging / dataset.zip_name
        fetch(base, dataset.zip_name, zip_path, retry)
        verify_md5(zip_path, expected)
        with _open_zip(zip_path, dataset.zip_name) as archive:
            chosen = check_archive(archive.infolist(), dataset)
            files = extract_members(archive, chosen, staging / "new", dataset.extracted_bytes)
        swap_dir(staging / "new", target, staging / "old")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [target / file.name for file in files]
