"""Working as a team: DVC remotes on a real S3 API (moto) and a directory, the run-cache, shared
experiments through a bare git remote, and a parallel queued sweep, all on this machine.

One project copy ("alice") runs the pipeline once on small generated data and pushes it; every
scenario then starts a teammate's fresh `git clone` and checks what that teammate would check.
The S3 API is moto's server on 127.0.0.1 with a free port and dummy credentials, started the way
dvc-s3's own tests start it (ThreadedMotoServer("127.0.0.1", 0)).
"""

import json
import re
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from benchmarks.project_copy import make_project

ROOT = Path(__file__).resolve().parents[1]
STAGE_NAMES = ("download", "preprocess", "train", "evaluate")
TINY_TRAINING = {"train.epochs": 2, "train.embedding_dim": 8}
BUCKET = "team-bucket"
REMOTE_URL = f"s3://{BUCKET}/movielens"
QUEUE_TIMEOUT_S = 900


def run(repo: Path, *args: str, env: dict, check: bool = True, stdout_only: bool = False) -> str:
    """Run a command in `repo`; return stdout and stderr together (or stdout only)."""
    done = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    output = done.stdout + done.stderr
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({done.returncode}):\n{output}")
    return done.stdout if stdout_only else output


def ran(output: str) -> set[str]:
    """The stages that `dvc repro` or `dvc exp run` executed."""
    return {name for name in STAGE_NAMES if f"Running stage '{name}'" in output}


def restored(output: str) -> set[str]:
    """The stages that DVC restored from its cache instead of running them."""
    return {
        name
        for name in STAGE_NAMES
        if f"Stage '{name}' is cached - skipping run, checking out outputs" in output
    }


def unchanged(output: str) -> set[str]:
    """The stages `dvc repro` found up to date."""
    return {name for name in STAGE_NAMES if f"Stage '{name}' didn't change, skipping" in output}


def experiments(repo: Path, env: dict) -> dict[str, dict]:
    """`dvc exp show --json`: experiment name -> its data (params, metrics)."""
    found = {}
    for baseline in json.loads(
        run(repo, "dvc", "exp", "show", "--json", env=env, stdout_only=True)
    ):
        for group in baseline.get("experiments") or []:
            for rev in group["revs"]:
                found[rev["name"]] = rev["data"]
    return found


def exp_param(data: dict, section: str, key: str):
    return data["params"]["params.yaml"]["data"][section][key]


def exp_scores(data: dict) -> dict:
    return data["metrics"]["metrics/scores.json"]["data"]


def clone(origin: Path, dest: Path, env: dict) -> Path:
    """A teammate's fresh checkout of the shared git repository."""
    subprocess.run(["git", "clone", "-q", str(origin), str(dest)], env=env, check=True)
    return dest


def recommend(repo: Path, env: dict, user: int) -> list[dict]:
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
    return json.loads(run(repo, *command, env=env, stdout_only=True))


# Quick checks of the project itself ------------------------------------------------------------


def test_the_project_commits_no_default_remote():
    """A user's storage is theirs to name: .dvc/config names no remote, so `make repro` needs none."""
    from configobj import ConfigObj

    config = ConfigObj(str(ROOT / ".dvc" / "config"))
    assert "remote" not in config.get("core", {})
    assert not [section for section in config if section.startswith("remote")]


# The shared setting: an S3 server, a git remote, alice's first run -----------------------------


@pytest.fixture(scope="module")
def env(aws_env) -> dict:
    return aws_env


@pytest.fixture(scope="module")
def origin(tmp_path_factory, env) -> Path:
    """The team's git remote: a bare repository on disk."""
    origin = tmp_path_factory.mktemp("origin") / "movielens.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], env=env, check=True)
    return origin


@pytest.fixture(scope="module")
def alice(tmp_path_factory, env, s3_endpoint, origin) -> Path:
    """The first teammate: the S3 remote set as default and committed, one full run, pushed."""
    repo = make_project(tmp_path_factory.mktemp("alice"), TINY_TRAINING, env)
    run(repo, "dvc", "remote", "add", "-d", "storage", REMOTE_URL, env=env)
    run(repo, "dvc", "remote", "modify", "storage", "endpointurl", s3_endpoint, env=env)
    run(repo, "git", "commit", "-qam", "the team's S3 remote", env=env)  # HEAD~1: no dvc.lock
    output = run(repo, "dvc", "repro", env=env)
    assert ran(output) == set(STAGE_NAMES), output
    run(repo, "git", "add", "-A", env=env)
    run(repo, "git", "commit", "-qm", "first run", env=env)
    run(repo, "git", "remote", "add", "origin", str(origin), env=env)
    run(repo, "git", "push", "-q", "origin", "main", env=env)
    assert "files pushed" in run(repo, "dvc", "push", env=env)
    return repo


@pytest.fixture(scope="module")
def a_user(alice) -> int:
    return int(pd.read_parquet(alice / "data/processed/user_ids.parquet")["userId"].iloc[0])


@pytest.fixture(scope="module")
def dim16(alice, env) -> dict:
    """alice's experiment `dim16`, run in her workspace, which is then reset to the baseline."""
    run(alice, "dvc", "exp", "run", "-n", "dim16", "-S", "train.embedding_dim=16", env=env)
    found = {
        "data": experiments(alice, env)["dim16"],
        "model": (alice / "models/model.keras").read_bytes(),
    }
    run(alice, "git", "reset", "-q", "--hard", "HEAD", env=env)
    run(alice, "dvc", "checkout", "-q", env=env)
    return found


def model_hash(data: dict) -> str:
    return data["outs"]["models/model.keras"]["hash"]


def assert_has_everything(bob: Path, alice: Path, env: dict) -> None:
    """After a pull: nothing to do for DVC and the same bytes as alice's run."""
    assert "Data and pipelines are up to date." in run(bob, "dvc", "status", env=env)
    output = run(bob, "dvc", "repro", env=env)
    assert ran(output) == set() and unchanged(output) == set(STAGE_NAMES), output
    for path in ("models/model.keras", "data/processed/train.parquet", "metrics/scores.json"):
        assert (bob / path).read_bytes() == (alice / path).read_bytes(), path


# Scenarios ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_fresh_clone_pulls_from_s3_and_reproduces_nothing(alice, origin, a_user, env, tmp_path):
    bob = clone(origin, tmp_path / "bob", env)
    before = run(bob, "dvc", "status", env=env)
    assert "not in cache:       models/model.keras" in before, before
    pulled = run(bob, "dvc", "pull", env=env)
    assert "files fetched" in pulled, pulled
    assert_has_everything(bob, alice, env)
    assert recommend(bob, env, a_user) == recommend(alice, env, a_user)


@pytest.mark.slow
def test_the_run_cache_lets_a_clone_restore_stages_it_has_no_lock_for(alice, origin, env, tmp_path):
    """At the commit before dvc.lock existed only the run-cache pushed by alice knows the
    stages' results: download and preprocess are restored from it, not run. (train, evaluate
    and crossvalidate: tests/test_run_cache.py, which also pushes their `cache: false` files.)"""
    # The setting some S3-compatible stores need with botocore >= 1.36 (moto takes both).
    checksums = {**env, "AWS_REQUEST_CHECKSUM_CALCULATION": "WHEN_REQUIRED"}
    pushed = run(alice, "dvc", "push", "--run-cache", env=checksums)
    assert "files pushed" in pushed or "Everything is up to date" in pushed, pushed
    carol = clone(origin, tmp_path / "carol", env)
    run(carol, "git", "checkout", "-q", "HEAD~1", env=env)
    assert not (carol / "dvc.lock").exists()
    run(carol, "dvc", "fetch", "--run-cache", env=env)  # pull would check out what no lock names
    runs = sorted(p.name for p in (carol / ".dvc/cache/runs").glob("*/*"))
    assert runs == sorted(p.name for p in (alice / ".dvc/cache/runs").glob("*/*")), runs
    output = run(carol, "dvc", "repro", "--pull", "download", "preprocess", env=env)
    assert ran(output) == set(), output
    assert restored(output) == {"download", "preprocess"}, output
    for path in ("data/processed/train.parquet", "data/processed/test.parquet"):
        assert (carol / path).read_bytes() == (alice / path).read_bytes(), path


@pytest.mark.slow
def test_a_directory_remote_round_trip(alice, origin, env, tmp_path):
    shelf = tmp_path / "nfs" / "dvc-storage"  # stands for a directory every teammate mounts
    run(alice, "dvc", "remote", "add", "--local", "shelf", str(shelf), env=env)
    assert "files pushed" in run(alice, "dvc", "push", "-r", "shelf", env=env)
    assert any((shelf / "files" / "md5").iterdir())
    dave = clone(origin, tmp_path / "dave", env)
    run(dave, "dvc", "remote", "add", "--local", "shelf", str(shelf), env=env)
    assert "files fetched" in run(dave, "dvc", "pull", "-r", "shelf", env=env)
    assert_has_everything(dave, alice, env)


def log_span(log: str) -> tuple[int, int]:
    """Seconds of the day of the first and last line a stage logged (`HH:MM:SS name LEVEL ...`)."""
    seconds = [
        int(h) * 3600 + int(m) * 60 + int(s)
        for h, m, s in re.findall(r"^(\d\d):(\d\d):(\d\d) \S+ [A-Z]+ ", log, flags=re.MULTILINE)
    ]
    assert seconds, log
    return seconds[0], seconds[-1]


def wait_for_queue(repo: Path, env: dict, done, timeout_s: float) -> str:
    """Poll `dvc queue status` every 2 s until `done(status)`; return that status."""
    deadline = time.monotonic() + timeout_s
    while not done(status := run(repo, "dvc", "queue", "status", env=env)):
        if time.monotonic() > deadline:
            raise AssertionError(f"the queue did not settle in {timeout_s} s:\n{status}")
        time.sleep(2)
    return status


def settled(names: list[str]):
    """A test of a `dvc queue status`: every one of `names` is neither queued nor running."""

    def done(status: str) -> bool:
        states = {
            words[1]: words[-1]
            for words in map(str.split, status.splitlines())
            if len(words) > 2 and words[1] in names
        }
        return len(states) == len(names) and not {"Queued", "Running"} & set(states.values())

    return done


@pytest.mark.slow
def test_a_queued_sweep_runs_two_experiments_at_once(alice, dim16, env):
    """16 was run in the workspace (dim16), so its temporary workspace restores it from the
    run-cache; 24 and 32 run, at the same time."""
    grid = "train.embedding_dim=16,24,32"
    queued = run(alice, "dvc", "exp", "run", "--queue", "-S", grid, env=env)
    names = re.findall(r"Queued experiment '([^']+)' for future execution", queued)
    assert len(names) == 3, queued
    try:
        run(alice, "dvc", "queue", "start", "-j", "2", env=env)
        status = wait_for_queue(alice, env, settled(names), QUEUE_TIMEOUT_S)
    finally:
        run(alice, "dvc", "queue", "stop", "--kill", env=env, check=False)
    no_workers = "Worker status: 0 active, 0 idle"  # no celery worker outlives the test
    wait_for_queue(alice, env, lambda status: no_workers in status, timeout_s=120)
    for name in names:
        assert re.search(rf"\b{name}\s.*\bSuccess\b", status), status
    everything = experiments(alice, env)
    by_dim = {exp_param(everything[name], "train", "embedding_dim"): name for name in names}
    assert sorted(by_dim) == [16, 24, 32], by_dim
    logs = {dim: run(alice, "dvc", "queue", "logs", name, env=env) for dim, name in by_dim.items()}
    assert restored(logs[16]) == {"train", "evaluate"}, logs[16]
    assert model_hash(everything[by_dim[16]]) == model_hash(dim16["data"])
    assert exp_scores(everything[by_dim[16]]) == exp_scores(dim16["data"])
    spans = [log_span(logs[dim]) for dim in (24, 32)]
    assert max(start for start, _ in spans) < min(end for _, end in spans), spans  # overlapped
    rmses = [exp_scores(everything[by_dim[dim]])["rmse"] for dim in (24, 32)]
    assert rmses[0] != rmses[1] and all(0 < rmse < 2 for rmse in rmses), rmses
    assert run(alice, "git", "status", "--porcelain", env=env) == ""  # the workspace untouched
    # A temporary workspace trains the very model the workspace itself trains: forced (-f), the
    # workspace's run does not take 24 from the run-cache (dvc/stage/run.py: `if not force`).
    forced = run(
        alice, "dvc", "exp", "run", "-f", "-n", "dim24", "-S", "train.embedding_dim=24", env=env
    )
    assert ran(forced) == set(STAGE_NAMES) and restored(forced) == set(), forced
    assert model_hash(experiments(alice, env)["dim24"]) == model_hash(everything[by_dim[24]])
    run(alice, "git", "reset", "-q", "--hard", "HEAD", env=env)
    run(alice, "dvc", "checkout", "-q", env=env)


@pytest.mark.slow
def test_an_experiment_travels_through_the_git_and_s3_remotes(alice, dim16, origin, env, tmp_path):
    run(alice, "dvc", "exp", "push", "origin", "dim16", env=env)
    erin = clone(origin, tmp_path / "erin", env)
    assert "dim16" not in experiments(erin, env)
    run(erin, "dvc", "exp", "pull", "origin", "dim16", env=env)
    shown = experiments(erin, env)["dim16"]
    assert exp_param(shown, "train", "embedding_dim") == 16
    assert exp_scores(shown) == exp_scores(dim16["data"])

    run(erin, "dvc", "exp", "apply", "dim16", env=env)
    run(erin, "dvc", "pull", env=env)
    params = yaml.safe_load((erin / "params.yaml").read_text(encoding="utf-8"))
    assert params["train"]["embedding_dim"] == 16
    assert json.loads((erin / "metrics/scores.json").read_text()) == exp_scores(dim16["data"])
    assert (erin / "models/model.keras").read_bytes() == dim16["model"]
    assert dim16["model"] != (alice / "models/model.keras").read_bytes()  # not the baseline's
    assert "Data and pipelines are up to date." in run(erin, "dvc", "status", env=env)
