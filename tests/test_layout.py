"""The house rules a newcomer relies on, read from the code itself: folders import only the layers
below them, no cycle, params.yaml read only at the doors, modules and functions short enough to
read, and importing the package changes nothing (docs/layout.md)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "movielens"

# Low to high: a module imports only its own layer and the ones before it.
LAYERS = (
    "plumbing",
    "data",
    "model",
    "training",
    "ranking",
    "evaluation",
    "spark",  # the Spark engine: the same jobs as data..evaluation, on Spark
    "serve",
    "synth",
    "params",  # read only by the doors: below them, above the library
    "cli",
)
# The doors inside the package: the command line and the CLI's own argument parsing.
DOORS = {"movielens.cli", "movielens.serve.command"}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def project_imports(path: Path) -> set[str]:
    """The `movielens.*` modules a file imports, at any depth of its code (lazy imports too)."""
    modules = package_modules()
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "movielens":
                submodules = {f"{node.module}.{a.name}" for a in node.names} & set(modules)
                found |= submodules
                # `from package import submodule` names the submodule, not the package's face.
                if len(submodules) < len(node.names):
                    found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "movielens"}
    return {name for name in found if name in modules and name != "movielens"}


def layer_of(module: str) -> int:
    return LAYERS.index(module.split(".")[1])


def test_every_module_has_a_layer():
    assert {m.split(".")[1] for m in package_modules() if m != "movielens"} <= set(LAYERS)


@pytest.mark.parametrize("module", [m for m in package_modules() if m != "movielens"])
def test_no_import_runs_back_up(module):
    upward = {
        imported
        for imported in project_imports(package_modules()[module])
        if layer_of(imported) > layer_of(module)
        and not (module in DOORS and imported == "movielens.params")
    }
    assert not upward, f"{module} imports the higher layer(s) {sorted(upward)}"


def test_no_import_cycle():
    graph = {m: project_imports(p) for m, p in package_modules().items()}
    done, on_path = set(), []

    def visit(module: str) -> None:
        if module in on_path:
            cycle = [*on_path[on_path.index(module) :], module]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        on_path.append(module)
        for imported in graph.get(module, ()):
            visit(imported)
        on_path.pop()
        done.add(module)

    for module in graph:
        visit(module)


def test_params_are_read_only_at_the_doors():
    readers = {m for m, p in package_modules().items() if "movielens.params" in project_imports(p)}
    assert readers <= DOORS, f"library modules read params.yaml: {sorted(readers - DOORS)}"
    assert project_imports(PACKAGE / "params.py") <= {
        m for m in package_modules() if m.startswith("movielens.plumbing")
    }


def source_files() -> list[Path]:
    return [
        p for folder in ("movielens", "stages", "benchmarks") for p in (ROOT / folder).rglob("*.py")
    ]


def test_no_module_of_the_package_is_too_long_to_read():
    long = {
        str(p.relative_to(ROOT)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_is_too_long_to_read():
    long = {}
    for path in source_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                if (n := node.end_lineno - start + 1) > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(ROOT)}:{node.name}"] = n
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


# Imports every module of the package after the third-party libraries (which set variables of
# their own, TensorFlow among them), and prints the variables the package's modules changed.
IMPORT_ALL = """
import importlib, os, pkgutil, sys
import keras, numba, pandas, pyarrow, scipy, dvclive, implicit  # their own variables first
before = dict(os.environ)
import movielens
for info in pkgutil.walk_packages(movielens.__path__, "movielens."):
    importlib.import_module(info.name)
changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))
print(changed)
"""


def clean_env() -> dict[str, str]:
    from movielens.plumbing.runtime import ENVIRONMENT_DEFAULTS

    return {k: v for k, v in __import__("os").environ.items() if k not in ENVIRONMENT_DEFAULTS}


def test_importing_the_package_changes_no_environment_variable():
    code = (
        "import os; before = dict(os.environ); import movielens; print(dict(os.environ) == before)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=clean_env(), capture_output=True, text=True
    )
    assert done.stdout.split() == ["True"], done.stderr


@pytest.mark.slow
def test_importing_any_module_of_the_package_changes_no_environment_variable():
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    "entry",
    [f"stages.{p.stem}" for p in sorted((ROOT / "stages").glob("[a-z]*.py"))] + ["movielens.cli"],
)
def test_entry_points_load_no_framework_before_their_set_up(entry):
    """The runtime set-up (TensorFlow's log level, the kernels' OpenMP wait policy) is read when
    those libraries load, so an entry point's own imports must not load them."""
    code = f"import sys, {entry}; print(sorted({{'tensorflow', 'keras', 'numba', 'jax'}} & set(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=clean_env(), capture_output=True, text=True
    )
    assert done.stdout.split() == ["[]"], done.stderr
