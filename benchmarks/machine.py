"""Where a benchmark's figures were measured: platform, CPU, load and library versions."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path

LIBRARIES = ("tensorflow", "keras", "numba", "scikit-surprise", "numpy")


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo, or what platform says elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    """Where the figures were measured: platform, CPU, load and library versions."""
    versions = {name: importlib.metadata.version(name) for name in LIBRARIES}
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        **versions,
    }
