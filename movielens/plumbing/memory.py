"""How much memory this process may use: the smallest of its memory cgroup's limit (v1 or v2),
its address-space rlimit and the machine's RAM."""

from __future__ import annotations

import os
import resource
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
UNLIMITED_CGROUP = 1 << 60  # cgroup v1 writes "no limit" as a page-rounded 2**63 - 1


def _cgroup_paths(proc_cgroup: str) -> list[Path]:
    """The limit files of this process's memory cgroup, v1 then v2, from /proc/self/cgroup."""
    found = []
    for line in proc_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        relative = path.lstrip("/")
        if "memory" in controllers.split(","):
            found.append(CGROUP_ROOT / "memory" / relative / "memory.limit_in_bytes")
        elif controllers == "":
            found += [CGROUP_ROOT / relative / "memory.max", CGROUP_ROOT / "unified" / relative / "memory.max"]  # fmt: skip
    return found


def cgroup_limit(proc_cgroup: str | None = None) -> int | None:
    """This process's memory cgroup limit in bytes, or None when it has none."""
    if proc_cgroup is None:
        try:
            proc_cgroup = Path("/proc/self/cgroup").read_text()
        except OSError:
            return None
    limits = []
    for path in _cgroup_paths(proc_cgroup):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < UNLIMITED_CGROUP:
            limits.append(int(text))
    return min(limits, default=None)


def memory_limit() -> tuple[int, str]:
    """The bytes this process may use at most, and what sets that bound.

    Returns:
        (bytes, source): source is "memory cgroup limit", "address-space limit (ulimit -v)" or
        "physical memory".
    """
    bounds = [(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "physical memory")]
    cgroup = cgroup_limit()
    if cgroup is not None:
        bounds.append((cgroup, "memory cgroup limit"))
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        bounds.append((soft, "address-space limit (ulimit -v)"))
    return min(bounds)
