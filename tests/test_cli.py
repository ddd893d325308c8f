"""The `movielens` command: each subcommand reaches its tool; bad input is one line and status 1."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from movielens import cli, synth
from movielens.data.fetch import file_md5, parse_md5
from movielens.serve import command as recommend_module

MOVIELENS = shutil.which("movielens", path=str(Path(sys.executable).parent))


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "movielens.cli", *args], cwd=cwd, capture_output=True, text=True
    )


def test_the_console_script_is_installed():
    """make installs the package in editable mode; its `movielens` script is the cli module."""
    assert MOVIELENS is not None
    done = subprocess.run([MOVIELENS, "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "movielens recommend --user" in done.stdout


def test_no_command_prints_the_usage_and_fails():
    done = run_cli()
    assert done.returncode == 1 and done.stdout.startswith("usage:")


def test_an_unknown_command_is_one_line_and_status_1():
    done = run_cli("recomend")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: unknown command 'recomend'; run `movielens --help`"
    ]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["recommend", "--user", "7", "-n", "3"], ["--user", "7", "-n", "3"]),
        (["similar", "12", "-n", "4", "--json"], ["--similar-to", "12", "-n", "4", "--json"]),
        (["similar", "--similar-to", "12"], ["--similar-to", "12"]),
        (["recommend", "--ratings", "-", "-n", "3"], ["--ratings", "-", "-n", "3"]),
        (
            ["recommend", "--user", "7", "--ratings", "new.csv", "--json"],
            ["--user", "7", "--ratings", "new.csv", "--json"],
        ),
    ],
)
def test_recommend_and_similar_reach_recommend_with_its_options(monkeypatch, argv, expected):
    calls = []
    monkeypatch.setattr(recommend_module, "main", lambda args, prog: calls.append((args, prog)))
    assert cli.main(argv) == 0
    assert calls == [(expected, f"movielens {argv[0]}")]


def test_a_usage_error_names_the_subcommand(tmp_path):
    done = run_cli("recommend", "--user", "x", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith("error: ") and "--user" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_recommend_help_shows_the_ratings_option_with_examples():
    done = run_cli("recommend", "--help")
    assert done.returncode == 0
    assert "--ratings FILE" in done.stdout
    assert "movielens recommend --ratings my_ratings.csv -n 10" in done.stdout
    assert "cat my_ratings.json | movielens recommend --ratings - --json" in done.stdout


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["--ratings", "-", "--all-users", "--out", "x.csv"],
            "error: argument --ratings: not allowed with argument --all-users (see --help)",
        ),
        (
            ["--ratings", "-", "--similar-to", "1"],
            "error: argument --ratings: not allowed with argument --similar-to (see --help)",
        ),
        (
            ["-n", "2"],
            "error: one of the arguments --user --all-users --similar-to --ratings is required "
            "(see --help)",
        ),
    ],
)
def test_ratings_with_another_target_is_one_line_before_any_work(tmp_path, args, line):
    done = run_cli("recommend", *args, cwd=tmp_path)  # no project here: refused before loading
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.strip().splitlines() == [line]


def test_synth_writes_a_release_and_its_floor(tmp_path):
    args = ["--dataset", "ml-latest-small", "--ratings", "2000", "--users", "100", "--movies", "80"]
    done = run_cli("synth", *args, "--out", str(tmp_path / "cli"))
    assert done.returncode == 0, done.stderr
    # synth's own files for these arguments, byte for byte: the options reached it unchanged
    assert synth.main([*args, "--out", str(tmp_path / "direct")]) == 0
    names = ["ml-latest-small.zip", "ml-latest-small.zip.md5", "ml-latest-small.floor.json"]
    for name in names:
        assert (tmp_path / "cli" / name).read_bytes() == (tmp_path / "direct" / name).read_bytes()
    release = tmp_path / "cli" / names[0]
    # the checksum the download stage will check, and the ratings that were asked for
    assert parse_md5((tmp_path / "cli" / names[1]).read_text(), names[0]) == file_md5(release)
    with zipfile.ZipFile(release) as archive:
        ratings = pd.read_csv(archive.open("ml-latest-small/ratings.csv"))
    assert len(ratings) == 2000 and ratings["userId"].nunique() == 100
    assert ratings["movieId"].nunique() <= 80
    assert not ratings.duplicated(["userId", "movieId"]).any()
    floor = json.loads((tmp_path / "cli" / names[2]).read_text())
    assert (floor["n_ratings"], floor["n_users"], floor["n_movies"]) == (2000, 100, 80)


def test_synth_refuses_impossible_counts_in_one_line(tmp_path):
    done = run_cli(
        "synth", "--dataset", "ml-latest-small", "--ratings", "2000", "--users", "40",
        "--movies", "60", "--out", str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.startswith("error: n_ratings=2000 is more than n_users=40 can give")
    assert len(done.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
