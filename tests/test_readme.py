"""The README and docs/: the README's DVC commands run as written (in a shell that activated .venv,
in a git + DVC copy of the project on small generated data), its headline figures are the committed
metrics, and every link, file path and module name the pages give exists."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.project_copy import make_project, project_env

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ACTIVATE = ". .venv/bin/activate"
SECTION = "## Using it with DVC"
MAX_README_BYTES = 12 * 1024
FIRST_SCREEN_LINES = 45


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


def table_row(label: str) -> list[str]:
    """The cells after the label of the README's table row that starts with `label`."""
    rows = [line for line in README.splitlines() if line.startswith(f"| {label}")]
    assert len(rows) == 1, f"the README has {len(rows)} table rows starting {label!r}"
    return [cell.strip().strip("*") for cell in rows[0].strip("|").split("|")[1:]]


def test_the_dvc_section_says_to_activate_the_environment():
    section = README[README.index(SECTION) :]
    assert ACTIVATE in section.split("```")[0]
    assert any(command.startswith("dvc repro") for command in dvc_section_commands())


def test_the_readme_is_one_screen_first_and_at_most_12_kb():
    assert len(README.encode("utf-8")) <= MAX_README_BYTES
    first_screen = "\n".join(README.splitlines()[:FIRST_SCREEN_LINES])
    for needed in ("make repro", "make test", "MOVIELENS_MIRROR=", "movielens recommend --user"):
        assert needed in first_screen, f"{needed!r} is not in the README's first screen"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_a_page_names_no_folder_of_the_machine_it_was_written_on(page):
    text = page.read_text(encoding="utf-8")
    found = re.findall(r"(?<![\w.~])/(?:work|tmp|home|root|Users)/[^\s`)]*", text)
    assert not found, f"{page.name} names folders of one machine: {found}"


def test_the_readme_headline_figures_are_the_committed_metrics():
    scores = json.loads((ROOT / "metrics" / "scores.json").read_text())
    cv = json.loads((ROOT / "metrics" / "cv.json").read_text())
    ranking = scores["ranking"]

    def ranks(name: str) -> list[str]:
        return [f"{ranking[name][m]:.4f}" for m in ("ndcg@10", "precision@10", "recall@10")]

    assert table_row("**served") == ["", *ranks("served")]
    assert table_row("the will-watch model alone") == ["", *ranks("watch")]
    assert table_row("most popular") == ["", *ranks("most_popular")]
    assert table_row("**the rating model") == [f"{scores['rmse']:.4f}", *ranks("model")]
    assert f"5-fold cross-validation: {cv['rmse_mean']:.4f} ± {cv['rmse_std']:.4f}" in README
    baselines = scores["baselines"]
    assert table_row("user + movie biases")[0] == f"{baselines['user_movie_biases']['rmse']:.4f}"
    assert table_row("global mean")[0] == f"{baselines['global_mean']['rmse']:.4f}"


def test_the_readme_peer_figures_are_the_committed_benchmark():
    rows = {
        row["model"]: row
        for row in json.loads((ROOT / "benchmarks" / "topn.json").read_text())["rows"]
    }

    def ranks(name: str) -> list[str]:
        return ["", *(f"{rows[name][m]:.4f}" for m in ("ndcg@10", "precision@10", "recall@10"))]

    best_ease = max(
        (n for n in rows if n.startswith("EASE (lambda")), key=lambda n: rows[n]["ndcg@10"]
    )
    assert table_row("EASE, whole catalogue") == ranks(best_ease)
    assert (
        f"best λ chosen on the test split itself ({best_ease[len('EASE (lambda ') : -1]})" in README
    )
    assert table_row("implicit's ALS, best") == ranks("implicit ALS (256 factors, reg 20, alpha 4)")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_readme_scale_table_is_the_committed_benchmark():
    """Each row of the README's bench-scale table holds its run's figures (benchmarks/scale*.json)."""

    def rows(name: str) -> dict:
        text = (ROOT / "benchmarks" / name).read_text(encoding="utf-8")
        return {row["stage"]: row for row in json.loads(text)}

    pandas, spark = rows("scale.json")["pipeline"], rows("scale-spark.json")["pipeline"]
    capped = rows("scale-100m-spark.json")["preprocess"]
    refused = rows("scale-100m-pandas-capped.json")["preprocess"]
    uncapped = rows("scale-100m-pandas.json")["preprocess"]
    assert refused["refused"].startswith("about 100 M ratings need") and not refused["oom_kills"]
    assert capped["memory_cap_mb"] == 4096 and capped["oom_kills"] == 0
    for label, run in [
        ("25 M, download → evaluate", pandas),
        ("25 M, download → evaluate, every user's list", spark),
        ("100 M, preprocess, in a 4 GB memory cgroup", capped),
        ("100 M, preprocess, no cap", uncapped),
    ]:
        cells = table_row(f"{label} |")
        assert cells[1].startswith(f"{run['wall_seconds']:.1f} s"), label
        assert cells[2] == f"{run['tree_peak_mb']:,}", label


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_points_to_an_existing_file_and_heading(page):
    for link in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+://", link):
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path) if path else page
        assert target.exists(), f"{page.name} links to {link}, which does not exist"
        if anchor:
            headings = re.findall(r"^#+ (.*)$", target.read_text(encoding="utf-8"), flags=re.M)
            assert anchor in map(github_anchor, headings), f"{page.name}: no heading for {link}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_code_path_and_module_a_page_names_exists(page):
    text = page.read_text(encoding="utf-8")
    paths = re.findall(
        r"(?<![\w/.~-])((?:movielens|stages|benchmarks|scripts|tests)/[\w/.*{<-]*)", text
    )
    for path in (p.rstrip(".") for p in paths):
        if not any(c in path for c in "*{<"):
            assert (ROOT / path).exists(), f"{page.name} names {path}, which does not exist"
    for dotted in re.findall(r"`(movielens(?:\.\w+)+)`", text):
        parts = dotted.split(".")
        prefixes = [Path(*parts[:n]) for n in range(len(parts), 0, -1)]
        module = next(
            p
            for p in prefixes
            if (ROOT / p).with_suffix(".py").exists() or (ROOT / p / "__init__.py").exists()
        )
        rest = parts[len(module.parts) :]
        assert len(rest) <= 1, f"{page.name} names {dotted}: no module {'.'.join(parts[:-1])}"
        if rest:
            source = ROOT / module.with_suffix(".py")
            source = source if source.exists() else ROOT / module / "__init__.py"
            assert re.search(rf"\b{rest[0]}\b", source.read_text()), f"{page.name} names {dotted}"


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
