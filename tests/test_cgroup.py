"""The benchmark's memory cap: a real memory cgroup, made and removed, that the kernel enforces and
whose counters say the peak and the OOM kills (root and a writable cgroup file system only)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from benchmarks import bench_scale
from benchmarks.cgroup import PeakSampler, can_make_groups, memory_cgroup, parse_size
from movielens.plumbing.memory import cgroup_limit

needs_cgroups = pytest.mark.skipif(not can_make_groups(), reason="no writable memory cgroups")
MB = 1 << 20


def hold(megabytes: int, seconds: float = 0.6) -> list[str]:
    """A Python process that touches `megabytes` of memory and holds it."""
    code = f"import time; b = bytearray({megabytes} << 20); time.sleep({seconds})"
    return [sys.executable, "-c", code]


@pytest.mark.parametrize(
    ("text", "size"),
    [("4g", 4 << 30), ("4096m", 4 << 30), ("4GB", 4 << 30), ("1.5g", 3 << 29), ("123", 123)],
)
def test_sizes_are_read_as_people_write_them(text, size):
    assert parse_size(text) == size


def test_a_size_that_is_not_one_says_the_form():
    with pytest.raises(ValueError, match="write a size such as 4g"):
        parse_size("four gigs")


@needs_cgroups
def test_the_group_measures_its_tree_and_is_removed_after():
    with memory_cgroup(None, "test-measure") as group, PeakSampler(group, 0.05) as resident:
        # the parent holds nothing; its child's 200 MB count: the group holds the whole tree
        code = f"import subprocess; subprocess.run({hold(200)!r}, check=True)"
        subprocess.run([sys.executable, "-c", code], preexec_fn=group.join, check=True)
        assert group.peak_bytes() >= 200 * MB
        assert group.oom_kills() == 0
    assert 190 * MB <= resident.peak < 400 * MB
    assert not group.path.exists()


@needs_cgroups
def test_the_cap_is_the_kernels_and_its_kill_is_counted():
    with memory_cgroup(150 * MB, "test-cap") as group:
        inside = subprocess.run(
            [sys.executable, "-c", "from movielens.plumbing.memory import cgroup_limit; print(cgroup_limit())"],
            preexec_fn=group.join, capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert int(inside.stdout) == 150 * MB  # what the pandas engine's refusal reads
        killed = subprocess.run(hold(300), preexec_fn=group.join)
        assert killed.returncode == -9 and group.oom_kills() == 1
    assert cgroup_limit() != 150 * MB  # this process stayed outside


@needs_cgroups
def test_a_stage_that_refuses_under_the_cap_is_a_refused_row(tmp_path, monkeypatch):
    """capped_stage runs `dvc repro -s <stage>`; a `dvc` on PATH that refuses as a stage does."""
    fake = tmp_path / "bin" / "dvc"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\necho 'some log line'\necho 'error: too big; use spark' >&2\nexit 1\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:/usr/bin:/bin")
    env = dict(os.environ)
    run = bench_scale.capped_stage("preprocess", tmp_path, env, tmp_path / "p.log", 512 * MB)
    assert run.refused == "too big; use spark"
    assert run.memory_cap_mb == 512 and run.oom_kills == 0
    with pytest.raises(RuntimeError, match="failed"):  # without a cap a failure is a failure
        bench_scale.capped_stage("preprocess", tmp_path, env, tmp_path / "q.log", None)
