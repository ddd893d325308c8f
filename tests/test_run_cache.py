"""DVC's run-cache for every stage: a param set run once is restored, never recomputed, here and in
a teammate's fresh clone after `dvc push --run-cache` / `dvc pull --run-cache` (a directory remote
and moto's S3 server on 127.0.0.1).

Train, evaluate and crossvalidate declare their git-tracked files under `metrics:` / `plots:` with
`cache: false`; a plain `outs:` entry with `cache: false` would turn the run-cache off for the
whole stage (dvc/stage/__init__.py, `no_cache_outs`).
"""

import csv
import hashlib
import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from benchmarks.project_copy import make_project, set_params

ROOT = Path(__file__).resolve().parents[1]
MODEL_STAGES = {"train", "evaluate", "crossvalidate"}
STAGE_NAMES = ("download", "preprocess", *sorted(MODEL_STAGES))
PARAMS_A = {"train.epochs": 2, "train.embedding_dim": 8}
PARAMS_B = {"train.embedding_dim": 16}
BUCKET = "run-cache-bucket"

pytestmark = pytest.mark.slow


def run(repo: Path, *args: str, env: dict) -> str:
    """Run a command in `repo`; return stdout and stderr together; fail with both on an error."""
    done = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(args)} failed ({done.returncode}):\n{output}"
    return output


def ran(output: str) -> set[str]:
    return {name for name in STAGE_NAMES if f"Running stage '{name}'" in output}


def restored(output: str) -> set[str]:
    """The stages DVC took from its run-cache instead of running them."""
    return {
        name
        for name in STAGE_NAMES
        if f"Stage '{name}' is cached - skipping run, checking out outputs" in output
    }


def stage_outputs(repo: Path) -> dict[str, str]:
    """Every file the model stages wrote, as dvc.lock names them, with the MD5 of its bytes."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text(encoding="utf-8"))
    files = {}
    for name in MODEL_STAGES:
        for out in lock["stages"][name]["outs"]:
            path = repo / out["path"]
            for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
                if file.is_file():
                    files[str(file.relative_to(repo))] = hashlib.md5(file.read_bytes()).hexdigest()
    return files


def repro_with(repo: Path, params: dict, env: dict, *options: str) -> str:
    set_params(repo / "params.yaml", params)
    return run(repo, "dvc", "repro", *options, env=env)


@pytest.fixture(scope="module")
def env(aws_env) -> dict:
    return aws_env


def test_every_stage_keeps_the_run_cache():
    """No stage has a plain `outs:` entry with `cache: false` (DVC's `no_cache_outs`)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    for name, stage in stages.items():
        for out in stage.get("outs", []):
            flags = next(iter(out.values())) if isinstance(out, dict) else {}
            assert flags.get("cache", True), f"{name}: {out} turns its run-cache off"


def test_another_train_param_runs_the_model_stages(aba):
    assert ran(aba["second"]) == MODEL_STAGES, aba["second"]
    assert aba["outputs_b"]["models/model.keras"] != aba["outputs_a"]["models/model.keras"]


def test_a_param_set_run_before_is_restored_byte_identical(aba):
    assert ran(aba["third"]) == set(), aba["third"]
    assert restored(aba["third"]) == MODEL_STAGES, aba["third"]
    assert stage_outputs(aba["repo"]) == aba["outputs_a"]
    live = "metrics/live/train/plots/metrics/select/train/rmse.tsv"  # a file in a declared folder
    assert {live, "metrics/plots/predictions.csv", "metrics/cv.json"} <= aba["outputs_a"].keys()


@pytest.fixture(scope="module")
def remotes(tmp_path_factory, s3_endpoint) -> dict[str, tuple[str, ...]]:
    """The team's DVC remotes: `dvc remote add` arguments (then `modify` ones) of each kind."""
    shelf = tmp_path_factory.mktemp("nfs") / "dvc-storage"  # a directory every teammate mounts
    return {
        "directory": (str(shelf),),
        "s3": (f"s3://{BUCKET}/movielens", "endpointurl", s3_endpoint),
    }


def add_remote(repo: Path, name: str, spec: tuple[str, ...], env: dict, *flags: str) -> None:
    run(repo, "dvc", "remote", "add", "--local", *flags, name, spec[0], env=env)
    if len(spec) > 1:
        run(repo, "dvc", "remote", "modify", "--local", name, *spec[1:], env=env)


def share(repo: Path, remotes: dict, env: dict) -> None:
    """What a teammate does after a run: push its outputs, DVC's record of it and the files the
    record names (scripts/push_run_outputs.py: `cache: false` ones too) to each remote."""
    for name in remotes:
        pushed = run(repo, "dvc", "push", "--run-cache", "-r", name, env=env)
        assert "pushed" in pushed or "up to date" in pushed, pushed
        script = str(ROOT / "scripts" / "push_run_outputs.py")
        assert "files pushed" in run(repo, "python", script, "-r", name, env=env)


@pytest.fixture(scope="module")
def aba(tmp_path_factory, env, remotes) -> dict:
    """alice: params A run, committed, pushed; then B, pushed but never committed; then A again."""
    repo = make_project(tmp_path_factory.mktemp("alice"), PARAMS_A, env)
    for name, spec in remotes.items():
        add_remote(repo, name, spec, env)
    first = run(repo, "dvc", "repro", env=env)
    assert ran(first) == set(STAGE_NAMES), first
    run(repo, "git", "add", "-A", env=env)
    run(repo, "git", "commit", "-qm", "run A", env=env)
    origin = tmp_path_factory.mktemp("origin") / "movielens.git"
    run(repo, "git", "init", "-q", "--bare", "-b", "main", str(origin), env=env)
    run(repo, "git", "remote", "add", "origin", str(origin), env=env)
    run(repo, "git", "push", "-q", "origin", "main", env=env)
    share(repo, remotes, env)
    outputs_a = stage_outputs(repo)
    second = repro_with(repo, PARAMS_B, env)
    share(repo, remotes, env)
    outputs_b = stage_outputs(repo)
    third = repro_with(repo, PARAMS_A, env)
    return {
        "repo": repo, "origin": origin, "second": second, "third": third,
        "outputs_a": outputs_a, "outputs_b": outputs_b,
    }  # fmt: skip


@pytest.mark.parametrize("kind", ["directory", "s3"])
def test_a_fresh_clone_restores_a_param_set_only_alice_ran(aba, kind, remotes, env, tmp_path):
    """bob has alice's commit (params A) and her remote; B is only in her run-cache and remote."""
    bob = tmp_path / "bob"
    run(tmp_path, "git", "clone", "-q", str(aba["origin"]), str(bob), env=env)
    add_remote(bob, kind, remotes[kind], env, "-d")
    run(bob, "dvc", "pull", "--run-cache", env=env)
    output = repro_with(bob, PARAMS_B, env, "--pull")
    assert ran(output) == set(), output
    assert restored(output) == MODEL_STAGES, output
    assert stage_outputs(bob) == aba["outputs_b"]

    user = int(pd.read_parquet(bob / "data/processed/user_ids.parquet")["userId"].iloc[0])
    command = [
        "python",
        "-m",
        "movielens.cli",
        "recommend",
        "--user",
        str(user),
        "-n",
        "5",
        "--json",
    ]
    answer = json.loads(run(bob, *command, env=env))
    assert len(answer["recommendations"]) == 5, answer


def live_history(repo: Path, name: str) -> list[dict]:
    """One of dvclive's step files of the train stage, as rows of strings."""
    path = repo / "metrics/live/train/plots/metrics" / f"{name}.tsv"
    with path.open(newline="") as file:
        return list(csv.DictReader(file, delimiter="\t"))


def test_dvclive_has_a_row_per_epoch_of_both_fits_agreeing_with_train_json(aba):
    """After `dvc repro`: one step per epoch of the selection fit, then one per refit epoch."""
    repo = aba["repo"]
    summary = json.loads((repo / "metrics/train.json").read_text())
    train_rmse = live_history(repo, "select/train/rmse")
    val_rmse = live_history(repo, "select/eval/rmse")
    refit = live_history(repo, "refit/train/rmse")
    assert len(train_rmse) == len(val_rmse) == summary["epochs_run"]
    assert len(refit) == summary["best_epoch"] and summary["refit"]
    steps = [int(row["step"]) for row in train_rmse + refit]
    assert steps == list(range(summary["epochs_run"] + summary["best_epoch"]))
    best = summary["best_epoch"] - 1
    assert float(train_rmse[best]["rmse"]) == pytest.approx(summary["train_rmse"], abs=1e-6)
    assert float(val_rmse[best]["rmse"]) == pytest.approx(summary["val_rmse"], abs=1e-6)
    live_summary = json.loads((repo / "metrics/live/train/metrics.json").read_text())
    assert live_summary["step"] == steps[-1]
    assert live_summary["refit"]["train"]["rmse"] == float(refit[-1]["rmse"])
