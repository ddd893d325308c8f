"""Fetch a file from GroupLens or a mirror (an http(s) URL or a folder), with retries, and check its MD5."""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from movielens.data.releases import OFFICIAL_BASE_URL, Dataset
from movielens.plumbing.errors import PipelineError

log = logging.getLogger(__name__)

MIRROR_ENV = "MOVIELENS_MIRROR"
CHUNK_BYTES = 1024**2


# Opt-in for synthetic or repackaged mirrors (benchmarks/bench_scale.py): check a frozen release's
# zip against the mirror's own .md5 instead of the MD5 pinned in movielens.data.releases, with a warning.
TRUST_MD5_ENV = "MOVIELENS_MIRROR_TRUST_MD5"


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


DEFAULT_RETRY = RetryPolicy()


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


def http_get(url: str, dest: Path, retry: RetryPolicy = DEFAULT_RETRY) -> int:
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


def fetch(base: str, filename: str, dest: Path, retry: RetryPolicy = DEFAULT_RETRY) -> None:
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
