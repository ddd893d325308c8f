"""Download one MovieLens release: fetch its zip (GroupLens or a mirror), verify its MD5, extract the
needed files safely, atomically (movielens.data.fetch, movielens.data.archive)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from movielens.data.archive import check_archive, extract_members, open_zip, swap_dir
from movielens.data.fetch import DEFAULT_RETRY, RetryPolicy, expected_md5, fetch, verify_md5
from movielens.data.releases import Dataset


def download_dataset(
    dataset: Dataset,
    base: str,
    target: Path,
    retry: RetryPolicy = DEFAULT_RETRY,
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
        with open_zip(zip_path, dataset.zip_name) as archive:
            chosen = check_archive(archive.infolist(), dataset)
            files = extract_members(archive, chosen, staging / "new", dataset.extracted_bytes)
        swap_dir(staging / "new", target, staging / "old")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [target / file.name for file in files]
