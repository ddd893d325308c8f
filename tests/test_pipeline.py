"""End to end: the real pipeline under real DVC, in a temporary git repository, on small synthetic data."""

import json
import os
import signal
import struct
import subprocess
import zlib
from pathlib import Path

import pandas as pd
import pytest
import yaml

from benchmarks.project_copy import make_project, project_env
from benchmarks.project_copy import set_params as edit_params
from movielens.data.splits import split_hash
from movielens.model.weights import read_config

ROOT = Path(__file__).resolve().parents[1]
STAGE_NAMES = ("download", "preprocess", "train", "evaluate", "crossvalidate")

pytestmark = pytest.mark.slow


def run(repo: Path, *args: str, env: dict, check: bool = True) -> str:
    """Run a command in `repo`; return stdout and stderr together."""
    done = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({done.returncode}):\n{output}")
    return output


def ran(output: str) -> set[str]:
    """The stages that `dvc repro` or `dvc exp run` executed, from their log."""
    return {name for name in STAGE_NAMES if f"Running stage '{name}'" in output}


def paeth(a: int, b: int, c: int) -> int:
    """The PNG Paeth predictor of a byte from its left, upper and upper-left neighbours."""
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def png_has_two_colours(data: bytes) -> bool:
    """Whether an 8-bit, non-interlaced PNG has two pixels of different colours: its rows are
    unfiltered (PNG spec, section 9) one by one until one differs from the first pixel."""
    chunks, pos = {}, 8
    while pos < len(data):
        size, kind = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8]
        chunks[kind] = chunks.get(kind, b"") + data[pos + 8 : pos + 8 + size]
        pos += 12 + size
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert depth == 8 and interlace == 0 and colour in (0, 2, 4, 6)
    bpp, raw = {0: 1, 2: 3, 4: 2, 6: 4}[colour], zlib.decompress(chunks[b"IDAT"])
    stride, prior, first = width * bpp, bytearray(width * bpp), None
    for y in range(height):
        start = y * (stride + 1)
        kind, row = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            a, b = row[i - bpp] if i >= bpp else 0, prior[i]
            c = prior[i - bpp] if i >= bpp else 0
            row[i] = (row[i] + (0, a, b, (a + b) // 2, paeth(a, b, c))[kind]) & 255
        first = first or bytes(row[:bpp])
        if row != first * width:
            return True
        prior = row
    return False


def set_params(repo: Path, **changes) -> None:
    """Edit the copy's params.yaml in place: set_params(repo, train__epochs=2)."""
    edit_params(repo / "params.yaml", {key.replace("__", "."): v for key, v in changes.items()})


@pytest.fixture(scope="module")
def env(small_mirror) -> dict:
    return project_env(small_mirror)


@pytest.fixture(scope="module")
def repo(tmp_path_factory, env) -> Path:
    """A git + DVC copy of the project with a fast training setup, after one full `dvc repro`."""
    # Enough steps to learn on 6,000 ratings (a batch of 2,048 would take 3 steps an epoch).
    learns = {"train.epochs": 30, "train.batch_size": 256}
    repo = make_project(tmp_path_factory.mktemp("project"), learns, env)
    output = run(repo, "dvc", "repro", env=env)
    assert ran(output) == set(STAGE_NAMES), output
    run(repo, "git", "add", "-A", env=env)
    run(repo, "git", "commit", "-qm", "first run", env=env)
    return repo


def test_first_repro_writes_every_artifact(repo):
    scores = json.loads((repo / "metrics/scores.json").read_text())
    # A model that learned: below the user+movie bias model fitted on the same training split.
    assert scores["rmse"] < scores["baselines"]["user_movie_biases"]["rmse"]
    # The random split holds out the ratings whose seeded hash is below test_size (about 600).
    kept = pd.read_parquet(repo / "data/processed/ratings.parquet")
    prep = yaml.safe_load((repo / "params.yaml").read_text())["preprocess"]
    draws = split_hash(prep["seed"], kept["userId"].to_numpy(), kept["movieId"].to_numpy())
    assert len(kept) == 6000 and scores["test_pairs"] == int((draws < prep["test_size"]).sum())
    artifacts = ["models/model.keras", "models/baseline.npz", "models/watch.npz", "dvc.lock"]
    for path in [*artifacts, "metrics/live/train/metrics.json", "data/evaluation/topn.parquet"]:
        assert (repo / path).stat().st_size > 0


def test_the_model_plot_draws_the_saved_models_layers(repo):
    dot = (repo / "models/model.dot").read_text()
    for layer in read_config(repo / "models/model.keras")["layers"]:
        assert f"<b>{layer['name']}</b> ({layer['class_name']})" in dot
    assert png_has_two_colours((repo / "models/model.png").read_bytes()), "model.png is blank"


def test_second_repro_runs_nothing(repo, env):
    output = run(repo, "dvc", "repro", env=env)
    assert ran(output) == set()
    assert "up to date" in run(repo, "dvc", "status", env=env)


def test_first_repro_cross_validates(repo):
    cv = json.loads((repo / "metrics/cv.json").read_text())
    assert cv["folds"] == 5 and cv["split"] == "random"
    assert sum(row["test_ratings"] for row in cv["per_fold"]) == 6000  # every rating held out once
    # The model learned on every fold's training part: below the bias baseline on the same folds.
    assert cv["rmse_mean"] < cv["user_movie_biases"]["rmse_mean"]
    assert cv["rmse_std"] > 0


def test_a_train_param_reruns_train_evaluate_and_crossvalidate(repo, env):
    output = run(repo, "dvc", "exp", "run", "-S", "train.epochs=2", env=env)
    assert ran(output) == {"train", "evaluate", "crossvalidate"}, output
    run(repo, "git", "checkout", "--", "params.yaml", "dvc.lock", "metrics", env=env)
    run(repo, "dvc", "checkout", "-q", env=env)


# The served formula's weight has a section of its own: the watch fit does not read it.
@pytest.mark.parametrize("change", ["evaluate.k=5", "ranking.like_weight=2"])
def test_an_evaluate_param_reruns_evaluate_only(repo, env, change):
    output = run(repo, "dvc", "exp", "run", "-S", change, env=env)
    assert ran(output) == {"evaluate"}, output
    run(repo, "git", "checkout", "--", "params.yaml", "dvc.lock", "metrics", env=env)
    run(repo, "dvc", "checkout", "-q", env=env)


def test_a_preprocess_param_does_not_rerun_download(repo, env):
    # Another test split keeps the same kept ratings, so the K folds are not fitted again.
    output = run(repo, "dvc", "exp", "run", "-S", "preprocess.seed=7", env=env)
    assert ran(output) == {"preprocess", "train", "evaluate"}, output
    run(repo, "git", "checkout", "--", "params.yaml", "dvc.lock", "metrics", env=env)
    run(repo, "dvc", "checkout", "-q", env=env)


def test_the_history_size_reruns_only_what_reads_it(repo, env):
    # Under `random` it changes no output: preprocess writes the same files, so train and
    # evaluate do not run again; crossvalidate reads the key, so it does.
    output = run(repo, "dvc", "exp", "run", "-S", "preprocess.history_size=0.5", env=env)
    assert ran(output) == {"preprocess", "crossvalidate"}, output
    run(repo, "git", "checkout", "--", "params.yaml", "dvc.lock", "metrics", env=env)
    run(repo, "dvc", "checkout", "-q", env=env)


@pytest.mark.parametrize("split", ["time", "user", "heldout_users"])
def test_another_split_rule_runs_end_to_end(repo, env, split):
    output = run(repo, "dvc", "exp", "run", "-S", f"preprocess.split={split}", env=env)
    assert ran(output) == {"preprocess", "train", "evaluate", "crossvalidate"}, output
    summary = json.loads((repo / "data/processed/summary.json").read_text())
    cv = json.loads((repo / "metrics/cv.json").read_text())
    assert summary["split"] == cv["split"] == split
    assert (
        json.loads((repo / "metrics/scores.json").read_text())["test_pairs"]
        == summary["test_ratings"]
    )
    if split == "heldout_users":  # the held-out users' histories, folded in by evaluate
        assert summary["history_ratings"] > 0 and summary["heldout_users"] > 0
        assert all("history_ratings" in row for row in cv["per_fold"])
    run(repo, "git", "checkout", "--", "params.yaml", "dvc.lock", "metrics", env=env)
    run(repo, "dvc", "checkout", "-q", env=env)


def test_metrics_diff_between_branches_shows_rmse(repo, env):
    run(repo, "git", "checkout", "-q", "-b", "wider", env=env)
    set_params(repo, train__embedding_dim=8)
    assert ran(run(repo, "dvc", "repro", env=env)) == {"train", "evaluate", "crossvalidate"}
    run(repo, "git", "commit", "-qam", "embedding_dim 8", env=env)
    diff = run(repo, "dvc", "metrics", "diff", "main", "wider", env=env)
    assert "rmse" in diff and "metrics/scores.json" in diff
    assert "rmse_mean" in diff and "metrics/cv.json" in diff
    run(repo, "git", "checkout", "-q", "main", env=env)
    run(repo, "dvc", "checkout", "-q", env=env)


def test_a_killed_train_stage_is_rerun_and_recovers(repo, env):
    set_params(repo, train__epochs=100_000, train__patience=100_000)  # runs until killed
    proc = subprocess.Popen(
        ["dvc", "repro", "train"], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        for line in proc.stdout:
            if "epoch 2/" in line:  # training is under way; the model file is not written yet
                break
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (repo / "models/model.keras").exists()  # DVC removed the old one; no partial file
    set_params(repo, train__epochs=4)  # a setting not in DVC's run cache, so train really runs
    output = run(repo, "dvc", "repro", env=env)
    assert ran(output) == {"train", "evaluate", "crossvalidate"}, output
    assert "up to date" in run(repo, "dvc", "status", env=env)
    assert not list(repo.glob("models/.*.tmp*")), "a temporary file was left behind"
    run(repo, "git", "checkout", "--", "params.yaml", env=env)
    # The metrics are the rerun model's: 4 epochs, already below the bias baseline.
    assert json.loads((repo / "metrics/train.json").read_text())["epochs_run"] == 4
    scores = json.loads((repo / "metrics/scores.json").read_text())
    assert scores["rmse"] < scores["baselines"]["user_movie_biases"]["rmse"]
