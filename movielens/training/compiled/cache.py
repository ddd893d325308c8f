"""Where Numba caches the compiled training kernels: one folder per content of their package,
outside the checkout, so that every copy of the project (DVC's temporary workspaces for queued
experiments, fresh clones) loads the machine code the first one compiled.

Numba's own locators key the folder by the source file's place: `__pycache__` beside it
(numba/core/caching.py, InTreeCacheLocator), or under NUMBA_CACHE_DIR a subfolder named by a hash
of the source file's directory path (get_suitable_cache_subpath). A temporary workspace under
.dvc/tmp/exps has neither, so each one compiled the kernels again (docs/team.md). The freshness
stamp inside the folder is already the source's SHA-256 (_SourceFileBackedLocatorMixin.
get_source_stamp), but of the function's own file only, while its cached machine code also holds
the kernels it calls from other files; this locator keys the folder by the content of every
module of the function's package (movielens.training.compiled.kernels), so that a change to any
kernel misses, and versions of the kernels (branches, experiments) keep their own code side by
side.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from numba.core import caching, config

PACKAGE = Path(__file__).resolve().parents[2]  # the movielens package of this copy


def cache_root() -> Path:
    """NUMBA_CACHE_DIR when set, else the user's cache folder ($XDG_CACHE_HOME or ~/.cache)."""
    if config.CACHE_DIR:
        return Path(config.CACHE_DIR) / "movielens"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "movielens" / "numba"


def package_digest(folder: Path) -> str:
    """A SHA-256 prefix of every module in `folder`: their names and contents, in name order."""
    digest = hashlib.sha256()
    for module in sorted(folder.glob("*.py")):
        digest.update(module.name.encode() + b"\0" + module.read_bytes() + b"\0")
    return digest.hexdigest()[:20]


class ContentKeyedLocator(caching._SourceFileBackedLocatorMixin, caching._CacheLocator):
    """Caches a function of the movielens package in cache_root()/<its folder>-<package_digest>."""

    def __init__(self, py_func, py_file):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        folder = Path(py_file).parent
        self._cache_path = str(cache_root() / f"{folder.name}-{package_digest(folder)}")

    def get_cache_path(self):
        return self._cache_path

    @classmethod
    def from_function(cls, py_func, py_file):
        """This locator for files of the movielens package; None (Numba's own) for others."""
        if not Path(py_file).resolve().is_relative_to(PACKAGE):
            return None
        return super().from_function(py_func, py_file)


def use_content_keyed_cache() -> None:
    """Make Numba try ContentKeyedLocator first; call before the kernels are decorated."""
    locators = caching.CacheImpl._locator_classes
    if ContentKeyedLocator not in locators:
        locators.insert(0, ContentKeyedLocator)
