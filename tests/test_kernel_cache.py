"""The compiled kernels are cached by their package's content, outside the checkout: a second copy
of the project in another folder (a DVC temporary workspace, a clone) loads them, compiles nothing;
a change to any kernel module, even one a kernel only calls into, compiles again."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from numba.core import caching

from movielens.training.compiled import cache as kernel_cache
from movielens.training.compiled import kernels

ROOT = Path(__file__).resolve().parents[1]
# Run in a project copy: warm the kernels up and say what Numba's cache did for them.
WARM_UP = """
import json
from movielens.training.compiled import kernels
from movielens.training.compiled.fit import warm_up_kernels
warm_up_kernels()
dispatchers = [kernels.adam_epoch, kernels.lazy_adam_epoch, kernels.squared_error, kernels.gather]
print(json.dumps({
    "hits": sum(sum(d.stats.cache_hits.values()) for d in dispatchers),
    "misses": sum(sum(d.stats.cache_misses.values()) for d in dispatchers),
    "epoch_misses": sum(kernels.adam_epoch.stats.cache_misses.values()),
    "folder": kernels.adam_epoch._cache._cache_path,
}))
"""


KERNELS = ROOT / "movielens/training/compiled/kernels"


def test_the_locator_comes_first_and_only_for_the_package():
    assert caching.CacheImpl._locator_classes[0] is kernel_cache.ContentKeyedLocator
    assert kernel_cache.ContentKeyedLocator.from_function(json.dumps, json.__file__) is None
    path = Path(kernels.adam_epoch._cache._cache_path)
    assert path.parent == kernel_cache.cache_root()
    assert path.name == f"kernels-{kernel_cache.package_digest(KERNELS)}"
    assert ROOT not in path.parents


def test_the_kernels_of_every_module_share_the_packages_folder():
    """adam_epoch (minibatch.py) holds the code of the kernels it calls in gradients.py and
    adam.py: one folder, keyed by all of them, for all of them."""
    modules = {
        Path(d.py_func.__code__.co_filename).name
        for d in (kernels.adam_epoch, kernels.squared_error)
    }
    assert modules == {"minibatch.py", "gradients.py"}
    assert kernels.squared_error._cache._cache_path == kernels.adam_epoch._cache._cache_path


def copy_package(dest: Path, extra: str = "") -> Path:
    """The movielens package alone in `dest`, with `extra` appended to kernels/gradients.py (a
    module adam_epoch calls into, not its own)."""
    shutil.copytree(
        ROOT / "movielens", dest / "movielens", ignore=shutil.ignore_patterns("__pycache__")
    )
    if extra:
        with (dest / "movielens/training/compiled/kernels/gradients.py").open("a") as file:
            file.write(extra)
    return dest


def warm_up_in(copy: Path, cache_dir: Path) -> dict:
    env = {"PATH": "/usr/bin:/bin", "NUMBA_CACHE_DIR": str(cache_dir), "HOME": str(cache_dir)}
    done = subprocess.run(
        [sys.executable, "-c", WARM_UP],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
def test_a_copy_elsewhere_loads_what_the_first_compiled(tmp_path):
    cache_dir = tmp_path / "numba-cache"
    first = warm_up_in(copy_package(tmp_path / "workspace"), cache_dir)
    assert first["misses"] > 0 and first["hits"] == 0, first
    second = warm_up_in(copy_package(tmp_path / ".dvc/tmp/exps/tmpabc123"), cache_dir)
    assert second["misses"] == 0 and second["hits"] == first["misses"], second
    assert second["folder"] == first["folder"]
    changed = warm_up_in(copy_package(tmp_path / "branch", "\n# another version\n"), cache_dir)
    assert changed["folder"] != first["folder"], changed
    assert changed["hits"] == 0 and changed["epoch_misses"] == first["epoch_misses"] > 0, changed
