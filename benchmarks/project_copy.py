"""A git + DVC copy of the project in another folder, for the scale benchmark and the pipeline tests.

The copy holds what `dvc repro` needs (the stages, dvc.yaml, params.yaml, DVC's config) as a fresh
git repository, with some params changed, so a run there never touches this checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = (
    "movielens",
    "stages",
    "dvc.yaml",
    "params.yaml",
    ".dvc/config",
    ".dvcignore",
    ".gitignore",
    "data/custom/.gitignore",  # the custom table's folder, a dependency of preprocess
)
OPTIONAL_FILES = (".dvc/plots",)  # custom plot templates, where the project has them


def set_params(params_path: Path, overrides: dict) -> None:
    """Set dotted keys (`train.epochs`) in a params.yaml, keeping the others."""
    params = yaml.safe_load(params_path.read_text(encoding="utf-8"))
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        params[section][key] = value
    params_path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def project_env(mirror: Path, **extra: str) -> dict:
    """The environment to run DVC in the copy: this interpreter's bin first, the mirror, a git
    identity, no DVC analytics; `extra` adds variables."""
    return {
        **os.environ,
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
        "MOVIELENS_MIRROR": str(Path(mirror).resolve()),
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "movielens-copy",
        "GIT_AUTHOR_EMAIL": "movielens-copy@example.invalid",
        "GIT_COMMITTER_NAME": "movielens-copy",
        "GIT_COMMITTER_EMAIL": "movielens-copy@example.invalid",
        **extra,
    }


def make_project(dest: Path, overrides: dict, env: dict) -> Path:
    """Copy the project into `dest` as a fresh git repository with `overrides` in params.yaml."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES + OPTIONAL_FILES:
        source = ROOT / name
        if source.is_dir():
            # Numba's compiled kernels are cached outside the checkout by their source's content
            # (movielens.training.compiled.cache), so no copy compiles them again.
            shutil.copytree(source, dest / name)
        elif source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
        elif name in PROJECT_FILES:
            raise FileNotFoundError(f"{source} is missing; run from a complete checkout")
    set_params(dest / "params.yaml", overrides)
    for command in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "project"],
    ):
        subprocess.run(command, cwd=dest, env=env, check=True, capture_output=True)
    return dest
