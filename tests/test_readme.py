"""The README's DVC commands, run the way the README tells a user to: in a shell that activated
.venv, in a git + DVC copy of the project on small generated data."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.project_copy import make_project, project_env

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
ACTIVATE = ". .venv/bin/activate"
SECTION = "## Using it with DVC"


def dvc_section_commands() -> list[str]:
    """The commands of the first ```bash block of the README's DVC section, comments dropped."""
    section = README[README.index(SECTION) :]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.DOTALL).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]


def a_users_shell(env: dict) -> dict:
    """The environment of a shell that has not activated .venv: its bin is not on PATH."""
    venv_bin = str(Path(sys.executable).parent)
    path = [p for p in env["PATH"].split(os.pathsep) if p and Path(p) != Path(venv_bin)]
    shell = {k: v for k, v in env.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    return {**shell, "PATH": os.pathsep.join(path)}


def test_the_dvc_section_says_to_activate_the_environment():
    section = README[README.index(SECTION) :]
    assert ACTIVATE in section.split("```")[0]
    assert any(command.startswith("dvc repro") for command in dvc_section_commands())


@pytest.mark.slow
def test_the_readme_dvc_commands_work_as_written(small_mirror, tmp_path):
    env = a_users_shell(project_env(small_mirror))
    repo = make_project(tmp_path / "project", {"train.epochs": 2, "train.embedding_dim": 8}, env)
    (repo / ".venv").symlink_to(sys.prefix)  # what `make` builds in a real checkout
    subprocess.run(["git", "branch", "other-branch"], cwd=repo, env=env, check=True)
    script = "\n".join(["set -e", ACTIVATE, *dvc_section_commands()])
    done = subprocess.run(
        ["bash", "-c", script], cwd=repo, env=env, capture_output=True, text=True, timeout=1200
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Running stage 'train'" in done.stdout + done.stderr
    assert "metrics/scores.json" in done.stdout  # dvc metrics show
