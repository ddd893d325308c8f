"""Faults across the stages: bad params at every entry point, the error surface, killed runs, safe loading."""

from __future__ import annotations

import ast
import copy
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from movielens.data.releases import get_dataset
from movielens.plumbing import paths
from movielens.plumbing.errors import PipelineError, run_stage

ROOT = Path(__file__).resolve().parents[1]
GOOD = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
DATASET = get_dataset("ml-latest-small")
# What TensorFlow's C++ runtime prints on stderr while it is imported, before any of our code runs.
TF_IMPORT_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"
    r"|[IWEF]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "
    r"|To enable the following instructions: "
)


def with_value(section: str, key: str, value: object) -> dict:
    params = copy.deepcopy(GOOD)
    params[section][key] = value
    return params


def python(*args: str, cwd: Path, **env: str) -> subprocess.Popen:
    """Start `python *args` in `cwd` with the project importable; stdout and stderr as text."""
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def error_lines(stderr: str) -> list[str]:
    """stderr without TensorFlow's import-time lines (which our code cannot stop)."""
    return [line for line in stderr.splitlines() if not TF_IMPORT_NOISE.match(line)]


# ---------------------------------------------------------------------------- bad params, every stage

# case: (stage module, params, words of the one error line)
BAD_PARAMS = {
    "download: unknown dataset": ("download", with_value("data", "dataset", "ml-99z"), "data.dataset='ml-99z' is invalid; it must be one of ml-latest-small, ml-latest, ml-100k"),
    "download: another stage's key": ("download", with_value("preprocess", "test_size", 1.5), "preprocess.test_size=1.5 is invalid; it must be a number > 0.0 and < 1.0"),
    "download: unknown key": ("download", with_value("train", "l2", 0.001), "unknown key 'train.l2'; allowed: backend, engine, shard_tables, refit, embedding_dim, epochs"),
    "preprocess: top_users 0": ("preprocess", with_value("preprocess", "top_users", 0), "preprocess.top_users=0 is invalid; it must be an integer >= 1 or null"),
    "preprocess: top_movies negative": ("preprocess", with_value("preprocess", "top_movies", -5), "preprocess.top_movies=-5 is invalid; it must be an integer >= 1 or null"),
    "preprocess: buckets not increasing": ("preprocess", with_value("evaluate", "activity_buckets", [20, 20]), "evaluate.activity_buckets=[20, 20] is invalid; it must be a non-empty list of increasing positive integers"),
    "train: embedding_dim 0": ("train", with_value("train", "embedding_dim", 0), "train.embedding_dim=0 is invalid; it must be an integer >= 1"),
    "evaluate: k 0": ("evaluate", with_value("evaluate", "k", 0), "evaluate.k=0 is invalid; it must be an integer >= 1"),
    "crossvalidate: one fold": ("crossvalidate", with_value("crossvalidate", "folds", 1), "crossvalidate.folds=1 is invalid; it must be an integer >= 2"),
}  # fmt: skip


@pytest.fixture(scope="module")
def bad_params_runs(tmp_path_factory):
    """Run every BAD_PARAMS stage at once in a folder holding only params.yaml (TensorFlow is slow
    to import, so the runs overlap)."""
    base = tmp_path_factory.mktemp("bad-params")
    running = {}
    for case, (stage, params, _) in BAD_PARAMS.items():
        root = base / re.sub(r"\W+", "-", case)
        root.mkdir()
        (root / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
        running[case] = (root, python("-m", f"stages.{stage}", cwd=root))
    results = {}
    for case, (root, process) in running.items():
        _, stderr = process.communicate(timeout=300)
        results[case] = (root, process.returncode, stderr)
    return results


@pytest.mark.parametrize("case", list(BAD_PARAMS))
def test_every_stage_refuses_bad_params_with_one_line_and_writes_nothing(bad_params_runs, case):
    root, returncode, stderr = bad_params_runs[case]
    assert "Traceback" not in stderr
    assert returncode == 1
    lines = error_lines(stderr)
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: params.yaml: ")
    assert BAD_PARAMS[case][2] in lines[0]
    assert sorted(p.name for p in root.iterdir()) == ["params.yaml"]


# ---------------------------------------------------------------------------- the error surface


def fails_with(error: BaseException):
    def main() -> None:
        raise error

    return main


@pytest.mark.parametrize(
    ("error", "status", "stderr"),
    [
        (PipelineError("ratings.csv row 3: rating='x' is not a number"), 1, "error: ratings.csv row 3: rating='x' is not a number\n"),
        (KeyboardInterrupt(), 130, "error: interrupted\n"),
    ],
    ids=["expected error", "interrupt"],
)  # fmt: skip
def test_run_stage_turns_expected_errors_into_one_line_and_a_status(capsys, error, status, stderr):
    with pytest.raises(SystemExit) as caught:
        run_stage(fails_with(error))
    assert caught.value.code == status
    assert capsys.readouterr().err == stderr


@pytest.mark.parametrize(
    "error", [ValueError("a bug"), KeyError("userId"), ZeroDivisionError("division by zero")]
)
def test_run_stage_lets_unexpected_errors_through(capsys, error):
    with pytest.raises(type(error)):
        run_stage(fails_with(error))
    assert capsys.readouterr().err == ""


# A bug deep inside a real stage: the library's split_ratings replaced by one that divides by zero.
BUGGY_PREPROCESS = textwrap.dedent(
    """
    from movielens.data import preprocess
    from movielens.plumbing.errors import run_stage
    from stages import preprocess as preprocess_stage

    def split_ratings(ratings, test_size, seed, split):
        return 1 / 0

    preprocess.split_ratings = split_ratings
    run_stage(preprocess_stage.main)
    """
)


def ratings_csv(n_users: int, n_movies: int, seed: int) -> bytes:
    """Every user rates every movie, ratings on the half-star grid; deterministic for a seed."""
    rng = np.random.default_rng(seed)
    users, movies = np.meshgrid(np.arange(1, n_users + 1), np.arange(1, n_movies + 1))
    frame = pd.DataFrame(
        {
            "userId": users.ravel() + 100 * seed,
            "movieId": movies.ravel() + 1000 * seed,
            "rating": rng.integers(1, 11, users.size) / 2,
            "timestamp": rng.integers(0, 2**31, users.size),
        }
    )
    return frame.to_csv(index=False).encode()


def movies_csv(n_movies: int, seed: int) -> bytes:
    ids = np.arange(1, n_movies + 1) + 1000 * seed
    return (
        pd.DataFrame({"movieId": ids, "title": [f"M{m}" for m in ids], "genres": "Drama"})
        .to_csv(index=False)
        .encode()
    )


def write_raw(root: Path, seed: int) -> None:
    """params.yaml and a small raw release in `root`; another seed gives other ids, counts and
    ratings, so that every output of preprocess differs."""
    n_users, n_movies = 30 + seed, 20 + seed
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(GOOD), encoding="utf-8")
    raw = root / paths.raw_dir(DATASET.name)
    raw.mkdir(parents=True, exist_ok=True)
    (raw / DATASET.ratings).write_bytes(ratings_csv(n_users, n_movies, seed))
    (raw / DATASET.movies).write_bytes(movies_csv(n_movies, seed))


def test_a_bug_in_a_real_stage_keeps_its_traceback(tmp_path):
    write_raw(tmp_path, seed=1)
    process = python("-c", BUGGY_PREPROCESS, cwd=tmp_path)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1
    assert "Traceback (most recent call last)" in stderr
    assert "stages/preprocess.py" in stderr
    assert stderr.splitlines()[-1] == "ZeroDivisionError: division by zero"
    assert "error: " not in stderr
    assert not (tmp_path / paths.PROCESSED_DIR).exists()


# ---------------------------------------------------------------------------- killed mid-write

# Run preprocess, but SIGKILL it inside its `kill_at`-th atomic write: the temporary is written,
# then cut to half its size (a write caught midway), and the process dies before the rename.
KILLED_PREPROCESS = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from movielens.plumbing import files
    from movielens.plumbing.errors import run_stage
    from stages import preprocess as preprocess_stage

    kill_at, writes, fsync = int(sys.argv[1]), [], files._fsync

    def fsync_or_die(path):
        if ".tmp" in Path(path).name:
            writes.append(path)
            if len(writes) == kill_at:
                os.truncate(path, os.path.getsize(path) // 2)
                os.kill(os.getpid(), signal.SIGKILL)
        fsync(path)

    files._fsync = fsync_or_die
    run_stage(preprocess_stage.main)
    """
)
PREPROCESS_OUTPUTS = [
    paths.TRAIN, paths.TEST, paths.USER_IDS, paths.MOVIE_IDS, paths.MOVIES, paths.RATINGS,
    paths.PREPROCESS_SUMMARY,
]  # fmt: skip


def run_preprocess(root: Path) -> dict[Path, bytes]:
    process = python("-m", "stages.preprocess", cwd=root, LOGLEVEL="ERROR")
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    return {path: (root / path).read_bytes() for path in PREPROCESS_OUTPUTS}


@pytest.fixture(scope="module")
def old_and_new(tmp_path_factory) -> tuple[Path, dict, dict]:
    """A project after a run on release 1, and the outputs a clean run on release 2 gives."""
    base = tmp_path_factory.mktemp("killed")
    write_raw(base / "old", seed=1)
    old = run_preprocess(base / "old")
    write_raw(base / "new", seed=2)
    new = run_preprocess(base / "new")
    assert all(old[path] != new[path] for path in PREPROCESS_OUTPUTS)  # so each file tells which
    return base / "old", old, new


@pytest.mark.parametrize("kill_at", range(1, len(PREPROCESS_OUTPUTS) + 1))
def test_a_preprocess_killed_mid_write_leaves_whole_files_and_the_next_run_recovers(
    tmp_path, old_and_new, kill_at
):
    old_project, old, new = old_and_new
    root = tmp_path / "project"
    shutil.copytree(old_project, root)
    write_raw(root, seed=2)  # the raw data changed: this run must replace every output

    process = python("-c", KILLED_PREPROCESS, str(kill_at), cwd=root, LOGLEVEL="ERROR")
    process.communicate(timeout=120)

    assert process.returncode == -signal.SIGKILL
    now = {path: (root / path).read_bytes() for path in PREPROCESS_OUTPUTS}
    replaced = [path for path in PREPROCESS_OUTPUTS if now[path] == new[path]]
    kept = [path for path in PREPROCESS_OUTPUTS if now[path] == old[path]]
    assert len(replaced) == kill_at - 1  # the writes before the kill finished, whole
    assert len(kept) == len(PREPROCESS_OUTPUTS) - kill_at + 1  # the others are the old files
    half_written = list((root / paths.PROCESSED_DIR).glob(".*.tmp*"))
    assert len(half_written) == 1  # the cut temporary, never under an output's name

    assert run_preprocess(root) == new
    assert list((root / paths.PROCESSED_DIR).glob(".*.tmp*")) == []


# ---------------------------------------------------------------------------- safe loading


def test_load_model_refuses_a_model_that_carries_code(tmp_path, monkeypatch):
    """A Lambda layer holds Python bytecode; safe mode refuses to deserialise it, let alone run it."""
    import keras

    from movielens.model.keras_model import load_model

    monkeypatch.chdir(tmp_path)
    inputs = keras.Input(shape=(1,))
    outputs = keras.layers.Lambda(lambda x: [Path("pwned").touch(), x][1])(inputs)
    keras.Model(inputs, outputs).save("model.keras")
    Path("pwned").unlink()  # building the model called the function once

    with pytest.raises(ValueError, match="safe_mode"):
        load_model(tmp_path / "model.keras")
    assert not Path("pwned").exists()


UNSAFE_MODULES = {
    "pickle",
    "cPickle",
    "_pickle",
    "dill",
    "cloudpickle",
    "joblib",
    "shelve",
    "marshal",
}
UNSAFE_CALLS = {"read_pickle", "unsafe_load", "full_load", "unsafe_load_all", "full_load_all"}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "_UniqueKeyLoader"}
SOURCES = sorted(
    p for folder in ("stages", "scripts", "benchmarks") for p in (ROOT / folder).glob("*.py")
)


def _unsafe_import(node: ast.Import | ast.ImportFrom) -> str | None:
    module = getattr(node, "module", None) or ""
    names = [alias.name for alias in node.names]
    if any(name.split(".")[0] in UNSAFE_MODULES for name in [module, *names]):
        return f"import of {module or names[0]}"
    if module.split(".")[0] in ("keras", "tensorflow") and "load_model" in names:
        return f"load_model imported from {module} (use movielens.model.keras_model.load_model, safe mode)"
    return None


def _unsafe_call(node: ast.Call) -> str | None:
    name = getattr(node.func, "attr", getattr(node.func, "id", ""))
    keywords = {k.arg: k.value for k in node.keywords}

    def is_constant(key: str, value: bool) -> bool:
        return isinstance(keywords.get(key), ast.Constant) and keywords[key].value is value

    if name in UNSAFE_CALLS:
        return f"{name}()"
    if is_constant("allow_pickle", True):
        return "allow_pickle=True"
    if name in ("load", "load_all") and getattr(node.func.value, "id", "") == "yaml":
        loader = keywords.get("Loader")
        loader_name = getattr(loader, "attr", getattr(loader, "id", None))
        return None if loader_name in SAFE_YAML_LOADERS else f"yaml.{name}, Loader={loader_name}"
    # keras' load_model is called by attribute (keras.saving.load_model); a bare load_model(path)
    # is movielens.model.keras_model's, which always passes safe_mode=True, and an import of keras' own is caught.
    keras_call = name == "load_model" and isinstance(node.func, ast.Attribute)
    if (keras_call or "safe_mode" in keywords) and not is_constant("safe_mode", True):
        return f"{ast.unparse(node.func)} without safe_mode=True"
    return None


def unsafe_loads(tree: ast.AST) -> list[str]:
    """Every way `tree` could unpickle or run code from a file, as 'line: what'."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            problem = _unsafe_import(node)
        elif isinstance(node, ast.Call):
            problem = _unsafe_call(node)
        else:
            continue
        if problem:
            found.append(f"{node.lineno}: {problem}")
    return found


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_code_loads_pickles_or_unsafe_yaml_or_unsafe_models(source):
    assert unsafe_loads(ast.parse(source.read_text(encoding="utf-8"))) == []


@pytest.mark.parametrize(
    "code",
    [
        "import pickle",
        "import joblib as jl",
        "from joblib import load",
        "from keras.saving import load_model",
        "pd.read_pickle(p)",
        "np.load(p, allow_pickle=True)",
        "yaml.load(text)",
        "yaml.load(text, Loader=yaml.Loader)",
        "yaml.unsafe_load(text)",
        "keras.saving.load_model(p)",
        "keras.models.load_model(p, safe_mode=False)",
        "tf.keras.models.load_model(p, compile=False)",
    ],
)
def test_the_scan_finds_each_unsafe_load(code):
    assert len(unsafe_loads(ast.parse(code))) == 1


@pytest.mark.parametrize(
    "code",
    [
        "yaml.load(text, Loader=_UniqueKeyLoader)",
        "yaml.safe_load(text)",
        "keras.saving.load_model(p, compile=False, safe_mode=True)",
        "load_model(path)",
        "np.load(p)",
        "pd.read_parquet(p)",
    ],
)
def test_the_scan_passes_safe_loads(code):
    assert unsafe_loads(ast.parse(code)) == []
