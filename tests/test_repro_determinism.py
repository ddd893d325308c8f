"""Reproducibility on one machine: two `dvc repro --force` runs give byte-identical results,
with either training engine."""

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from benchmarks.project_copy import make_project, project_env

ROOT = Path(__file__).resolve().parents[1]
STAGE_NAMES = ("download", "preprocess", "train", "evaluate", "crossvalidate")
FAST_TRAIN = {"epochs": 3, "embedding_dim": 8}  # tiny and quick; determinism does not need quality
# Keras writes the save time into model.keras (metadata.json "date_saved", the weights' zip
# entry time) and Python object ids into it (config.json "shared_object_id") and into model.dot
# (the node names model_to_dot takes from id(layer)): movielens/model/saving.py has to canonicalise them.
MODEL_FILES = ("models/model.keras", "models/model.dot")

pytestmark = pytest.mark.slow


@dataclass
class Run:
    """What one `dvc repro` left: the stages it ran, every metrics/ file, the outputs' hashes."""

    ran: set[str]
    metrics: dict[str, bytes]
    out_hashes: dict[str, str]
    requested_engine: str


def run(repo: Path, *args: str, env: dict) -> str:
    done = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(args)} failed ({done.returncode}):\n{output}"
    return output


def snapshot(repo: Path, output: str, requested_engine: str) -> Run:
    lock = yaml.safe_load((repo / "dvc.lock").read_text(encoding="utf-8"))
    return Run(
        ran={name for name in STAGE_NAMES if f"Running stage '{name}'" in output},
        metrics={
            str(p.relative_to(repo)): p.read_bytes()
            for p in sorted((repo / "metrics").rglob("*"))
            if p.is_file()
        },
        out_hashes={
            out["path"]: out["md5"]
            for stage in lock["stages"].values()
            for out in stage.get("outs", [])
        },
        requested_engine=requested_engine,
    )


@pytest.fixture(scope="module", params=["auto", "keras"])
def runs(request, tmp_path_factory, small_mirror) -> list[Run]:
    """A git + DVC copy of the project on small synthetic data: `dvc repro`, then twice
    `dvc repro --force`; with the default engine (compiled here) and with train.engine=keras."""
    env = project_env(small_mirror)
    overrides = {f"train.{key}": value for key, value in FAST_TRAIN.items()}
    overrides["train.engine"] = request.param
    repo = make_project(tmp_path_factory.mktemp(f"determinism-{request.param}"), overrides, env)
    commands = [("dvc", "repro"), ("dvc", "repro", "--force"), ("dvc", "repro", "--force")]
    return [snapshot(repo, run(repo, *command, env=env), request.param) for command in commands]


def differing(first: dict, second: dict) -> list[str]:
    return sorted(key for key in first.keys() | second.keys() if first.get(key) != second.get(key))


def test_every_run_runs_every_stage(runs):
    assert [run.ran for run in runs] == [set(STAGE_NAMES)] * 3


def test_forced_runs_write_byte_identical_metrics(runs):
    first, second = runs[1].metrics, runs[2].metrics
    assert {"metrics/train.json", "metrics/scores.json", "metrics/cv.json"} <= first.keys()
    # auto takes the compiled engine for the standard model on a machine without a GPU.
    expected = {"auto": "compiled", "keras": "keras"}[runs[0].requested_engine]
    assert json.loads(first["metrics/train.json"])["engine"] == expected
    history = "metrics/live/train/plots/metrics/select/train/rmse.tsv"  # dvclive's
    assert {history, "metrics/plots/predictions.csv"} <= first.keys()
    assert differing(first, second) == []
    assert differing(runs[0].metrics, first) == []  # the unforced first run agrees too


def test_forced_runs_record_identical_output_hashes(runs):
    first, second = runs[1].out_hashes, runs[2].out_hashes
    assert len(first) >= 14  # raw folder, seven processed files, model files, metrics and plots
    assert differing(first, second) == []  # model files included: saved byte-reproducibly
