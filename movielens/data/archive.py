"""Extract a release's zip safely: only the members it needs, no unsafe path or link, a cap on the bytes, and an atomic swap into place."""

from __future__ import annotations

import os
import re
import shutil
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from movielens.data.fetch import CHUNK_BYTES, MIRROR_ENV
from movielens.data.releases import Dataset
from movielens.plumbing.errors import PipelineError

LICENSE_FILE = "README.txt"


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


def open_zip(path: Path, zip_name: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise PipelineError(
            f"{zip_name} is not a zip file; the mirror or server sent something else, "
            f"check {MIRROR_ENV}"
        ) from None
