"""The pandas engine refuses, in one line and before reading, a ratings table over the memory the
process may use (a real address-space limit in a real stage run), and reads the limits it has."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from movielens.data.footprint import (
    PANDAS_BYTES_PER_RATING,
    TEXT_BYTES_PER_ROW,
    estimated_ratings,
    refuse_over_memory,
)
from movielens.plumbing import memory
from movielens.plumbing.errors import PipelineError

ROOT = Path(__file__).resolve().parents[1]
GB = 1_000_000_000


def test_text_rows_are_under_counted_and_parquet_rows_are_exact(tmp_path):
    import pandas as pd

    text = tmp_path / "ratings.csv"
    text.write_text("userId,movieId,rating,timestamp\n" + "1,2,3.5,1000000000\n" * 1000)
    parquet = tmp_path / "ratings.parquet"
    pd.DataFrame({"userId": range(777)}).to_parquet(parquet)
    assert estimated_ratings([text]) == text.stat().st_size // TEXT_BYTES_PER_ROW < 1000
    assert estimated_ratings([parquet]) == 777
    assert estimated_ratings([text, parquet]) == estimated_ratings([text]) + 777


def test_a_table_over_the_limit_is_refused_naming_the_spark_engine():
    n = 100_000_000
    with pytest.raises(PipelineError) as caught:
        refuse_over_memory(n, (4 * GB, "memory cgroup limit"))
    message = str(caught.value)
    assert "about 100 M ratings need about 11.9 GB" in message
    assert "over this process's 4.0 GB (memory cgroup limit)" in message
    assert "compute.engine: spark" in message and "\n" not in message
    refuse_over_memory(n, (n * PANDAS_BYTES_PER_RATING, "physical memory"))  # just fits


def test_the_cgroup_limit_is_read_for_v1_and_v2_and_no_limit_is_none(tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "CGROUP_ROOT", tmp_path)
    v1 = tmp_path / "memory" / "jobs" / "a" / "memory.limit_in_bytes"
    v1.parent.mkdir(parents=True)
    v1.write_text(f"{4 * 2**30}\n")
    assert memory.cgroup_limit("4:memory:/jobs/a\n1:cpu:/\n") == 4 * 2**30
    v1.write_text("9223372036854771712\n")  # v1's "no limit"
    assert memory.cgroup_limit("4:memory:/jobs/a\n") is None
    v2 = tmp_path / "jobs" / "b" / "memory.max"
    v2.parent.mkdir(parents=True)
    v2.write_text("max\n")
    assert memory.cgroup_limit("0::/jobs/b\n") is None
    v2.write_text("2147483648\n")
    assert memory.cgroup_limit("0::/jobs/b\n") == 2**31


def test_the_limit_is_at_most_the_machines_memory():
    limit, source = memory.memory_limit()
    assert limit > 0 and source in (
        "physical memory", "memory cgroup limit", "address-space limit (ulimit -v)",
    )  # fmt: skip


def test_the_stage_under_a_real_address_space_limit_refuses_before_reading(tmp_path):
    """A 2 GB address-space limit (ulimit -v) and a ratings file that would need far more: the
    stage exits 1 with the one line, writes nothing, and never reads the (sparse) file."""
    project = tmp_path / "project"
    raw = project / "data" / "raw" / "ml-latest-small"
    raw.mkdir(parents=True)
    (project / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (raw / "movies.csv").write_text("movieId,title,genres\n1,A,Drama\n")
    with open(raw / "ratings.csv", "wb") as file:  # 1 GiB on paper, no block on disk
        file.write(b"userId,movieId,rating,timestamp\n")
        file.truncate(2**30)
    cap = 2 * 2**30

    def limited():
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    done = subprocess.run(
        [sys.executable, "-m", "stages.preprocess"], cwd=project, preexec_fn=limited,
        capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("error: about 34 M ratings need about 4.0 GB on the pandas engine")
    assert "(address-space limit (ulimit -v)); set compute.engine: spark" in line
    assert not (project / "data" / "processed").exists()
