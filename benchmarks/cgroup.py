"""A memory cap for a benchmark's commands: a memory cgroup (v1 or v2) of their own, made for one
command and removed after it, with the command's whole process tree inside (DVC, the stage, Spark's
JVM and Python workers). The kernel enforces the cap; the pandas engine reads it before it reads a
table (movielens.plumbing.memory), and the cgroup's own counters say the peak and any OOM kill.

Needs root and a writable cgroup file system (the shared machines have v1's memory controller).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from movielens.plumbing.memory import CGROUP_ROOT

_SIZE = re.compile(r"^(?P<number>\d+(\.\d+)?)(?P<unit>[kmgt]?)b?$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes of a size as people write it: 4g, 4096m, 4GB, 1.5g, 123456.

    Raises:
        ValueError: for anything else, saying the form expected.
    """
    match = _SIZE.match(text.strip())
    if match is None:
        raise ValueError(f"memory cap {text!r}: write a size such as 4g or 4096m")
    return int(float(match["number"]) * _UNITS[match["unit"].lower()])


@dataclass(frozen=True)
class Cgroup:
    """One memory cgroup: its folder and its version (1: the memory controller's tree, 2: unified)."""

    path: Path
    version: int

    def join(self) -> None:
        """Move the calling process into the group (a child's preexec_fn, before it execs)."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def peak_bytes(self) -> int:
        """The most memory the group held at once (page cache of the files it read included)."""
        name = "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"
        return int((self.path / name).read_text())

    def resident_bytes(self) -> int:
        """The group's resident memory now: its processes' anonymous pages (heaps, the JVM's too)
        and the file pages they map (libraries), as a process's RSS counts them, no other cache;
        the kernel charges a file page to the group that read it first, so libraries another
        group loaded already are not in it."""
        keys = ("total_rss", "total_mapped_file") if self.version == 1 else ("anon", "file_mapped")
        stat = dict(
            line.split(" ", 1) for line in (self.path / "memory.stat").read_text().splitlines()
        )
        return sum(int(stat.get(key, 0)) for key in keys)

    def oom_kills(self) -> int:
        """How many of the group's processes the kernel killed for memory."""
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        for line in (self.path / name).read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0


def _root() -> tuple[Path, int]:
    if (CGROUP_ROOT / "memory" / "memory.limit_in_bytes").exists():
        return CGROUP_ROOT / "memory", 1
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return CGROUP_ROOT, 2
    raise RuntimeError(f"no memory cgroup file system under {CGROUP_ROOT}; run without the cap")


def can_make_groups() -> bool:
    """Whether memory_cgroup can work here: a memory cgroup file system this process may write."""
    try:
        root, _ = _root()
    except RuntimeError:
        return False
    return os.access(root, os.W_OK)


@contextmanager
def memory_cgroup(limit_bytes: int | None, name: str) -> Iterator[Cgroup]:
    """A new memory cgroup capped at `limit_bytes` (memory and swap alike; None: no cap, to
    measure), removed afterwards.

    Raises:
        RuntimeError: when the group cannot be made (not root, read-only cgroup file system).
    """
    root, version = _root()
    group = Cgroup(root / f"{name}-{os.getpid()}", version)
    try:
        group.path.mkdir()
        if limit_bytes is None:
            pass
        elif version == 1:
            (group.path / "memory.limit_in_bytes").write_text(str(limit_bytes))
            swap = group.path / "memory.memsw.limit_in_bytes"  # present where swap is accounted
            if swap.exists():
                swap.write_text(str(limit_bytes))
        else:
            (group.path / "memory.max").write_text(str(limit_bytes))
            (group.path / "memory.swap.max").write_text("0")
    except OSError as err:
        raise RuntimeError(
            f"cannot make a memory cgroup under {root} ({err.strerror}); run as root, or without "
            "the cap"
        ) from None
    try:
        yield group
    finally:
        for _ in range(50):  # the group's last processes may still be exiting
            try:
                group.path.rmdir()
                break
            except OSError:
                time.sleep(0.1)


class PeakSampler:
    """The largest resident_bytes of a group seen while the block runs, read every `interval` s."""

    def __init__(self, group: Cgroup, interval: float = 0.2):
        self.group, self.interval, self.peak = group, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.group.resident_bytes())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
