"""Atomic writes: an output appears whole under its name, or not at all."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.stem}.*.tmp{target.suffix}"):
        stale.unlink(missing_ok=True)  # left by a run that was killed mid-write
    tmp_path = _create_beside(target)
    try:
        yield tmp_path
        _fsync(tmp_path)  # the data is on disk before the name points at it
        os.replace(tmp_path, target)
        _fsync(target.parent)
    finally:
        tmp_path.unlink(missing_ok=True)


def _create_beside(target: Path) -> Path:
    """Create an empty, unused `.<stem>.<random>.tmp<suffix>` beside `target`.

    The suffix stays because some writers (Keras) choose the format from it. Mode 0666 lets the
    kernel apply the umask (mkstemp would make 0600), so outputs get the usual permissions
    without calling os.umask, which changes the umask process-wide for a moment.
    """
    for _ in range(100):
        tmp = target.with_name(f".{target.stem}.{secrets.token_hex(4)}.tmp{target.suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no free temporary name beside {target}")


def _fsync(path: Path) -> None:
    """Flush a file or folder to disk; a no-op where the platform refuses (folders on Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json(target: Path, data: Any) -> None:
    """Write `data` as indented JSON, keys in the order given (metrics: RMSE first), atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def write_parquet(target: Path, frame) -> None:
    """Write a DataFrame to parquet atomically, without its index."""
    with atomic_path(target) as tmp:
        frame.to_parquet(tmp, index=False)


def write_csv(target: Path, frame) -> None:
    """Write a DataFrame to CSV atomically, without its index."""
    with atomic_path(target) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")
