"""Tests for the atomic writers: a failed or killed write never leaves a partial output."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from movielens.plumbing.files import atomic_path, write_csv, write_json, write_parquet

ROOT = Path(__file__).resolve().parents[1]
OLD = pd.DataFrame({"userId": np.array([1, 2], dtype=np.int32), "rating": [4.0, 3.5]})


def temp_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.tmp*"))


def temp_sizes(folder: Path) -> list[int]:
    """Sizes of the temporaries now in `folder`; one renamed away meanwhile is skipped."""
    sizes = []
    for tmp in temp_files(folder):
        with contextlib.suppress(FileNotFoundError):
            sizes.append(tmp.stat().st_size)
    return sizes


@pytest.fixture
def umask():
    """Set the process umask for one test, then put the old one back."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


def test_atomic_path_yields_a_temporary_beside_the_target(tmp_path):
    target = tmp_path / "new" / "folder" / "train.parquet"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent
        assert tmp.name.startswith(".train.")
        assert tmp.name.endswith(".tmp.parquet")  # the suffix stays: Keras picks the format by it
        assert tmp.is_file()
        assert not target.exists()
        tmp.write_text("done")
    assert target.read_text() == "done"
    assert temp_files(target.parent) == []


class Boom(Exception):
    pass


def fail_midway(target: Path, error: BaseException) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text('{"half": ')
        raise error


@pytest.mark.parametrize(
    "error", [Boom("disk full"), KeyboardInterrupt()], ids=["exception", "interrupt"]
)
def test_a_failed_block_keeps_the_old_file_and_leaves_no_temporary(tmp_path, error):
    target = tmp_path / "summary.json"
    write_json(target, {"old": 1})
    before = target.read_bytes()
    with pytest.raises(type(error)):
        fail_midway(target, error)
    assert target.read_bytes() == before
    assert temp_files(tmp_path) == []


def test_a_failed_block_creates_no_target(tmp_path):
    with pytest.raises(Boom):
        fail_midway(tmp_path / "summary.json", Boom())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("write", "bad"),
    [
        (write_json, {"a": object()}),  # not JSON-serialisable
        (write_parquet, pd.DataFrame({"mixed": [1, "two", 3.0]})),  # pyarrow refuses mixed types
    ],
    ids=["json", "parquet"],
)
def test_a_failed_writer_keeps_the_old_file(tmp_path, write, bad):
    target = tmp_path / "out"
    write_parquet(target, OLD) if write is write_parquet else write_json(target, {"old": 1})
    before = target.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 (whatever the library raises)
        write(target, bad)
    assert target.read_bytes() == before
    assert temp_files(tmp_path) == []


def test_success_replaces_the_old_file(tmp_path):
    target = tmp_path / "train.parquet"
    write_parquet(target, OLD)
    new = OLD.assign(rating=[1.0, 0.5])
    write_parquet(target, new)
    pd.testing.assert_frame_equal(pd.read_parquet(target), new)
    json_target = tmp_path / "summary.json"
    write_json(json_target, {"b": 1, "a": [1, 2]})
    write_json(json_target, {"new": True})
    assert json.loads(json_target.read_text()) == {"new": True}
    assert json_target.read_text().endswith("}\n")
    assert temp_files(tmp_path) == []


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077], ids=oct)
@pytest.mark.parametrize(
    ("write", "data"),
    [(write_json, {"a": 1}), (write_parquet, OLD), (write_csv, OLD)],
    ids=["json", "parquet", "csv"],
)
def test_file_mode_follows_the_umask(tmp_path, umask, mask, write, data):
    umask(mask)
    target = tmp_path / "out"
    write(target, data)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    write(target, data)  # replacing keeps it
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask


# A child that writes one big output atomically, again and again, until the test kills it.
CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    import pandas as pd
    from movielens.plumbing.files import write_json, write_parquet

    kind, target = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(0)
    while True:
        if kind == "parquet":
            write_parquet(target, pd.DataFrame({"x": rng.random(4_000_000), "y": rng.random(4_000_000)}))
        else:
            write_json(target, {"x": rng.random(500_000).tolist()})
    """
)


@pytest.mark.parametrize("kind", ["parquet", "json"])
def test_a_write_killed_midway_leaves_the_old_file(tmp_path, kind):
    """Kill -9 while the temporary exists: once pyarrow has written part of it, or while the JSON
    text is being built (the text is then written in one call, too quickly to catch)."""
    target = tmp_path / f"out.{kind}"
    if kind == "parquet":
        write_parquet(target, OLD)
    else:
        write_json(target, {"old": True})
    before = target.read_bytes()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, kind, str(target)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        least = 1 if kind == "parquet" else 0
        while not [size for size in temp_sizes(tmp_path) if size >= least]:
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the child never started writing"
            time.sleep(0.001)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    assert target.read_bytes() == before  # the first write never finished, so nothing replaced
    if kind == "parquet":
        pd.testing.assert_frame_equal(pd.read_parquet(target), OLD)
    else:
        assert json.loads(target.read_text()) == {"old": True}
    leftovers = temp_files(tmp_path)
    assert len(leftovers) == 1  # the partial write was really under way, under another name
    assert leftovers[0].name.startswith(".out.")
