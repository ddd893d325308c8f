"""The training kernels' OpenMP threads sleep when a parallel loop ends (the entry points' runtime
set-up, movielens.plumbing.runtime.set_up, sets OMP_WAIT_POLICY before OpenMP loads), so that two fits sharing the cores, as in a queued sweep, do
not spin against each other (docs/team.md). OpenMP prints the settings it runs with when
OMP_DISPLAY_ENV is set; the last block printed is the runtime Numba loaded at the first fit."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIT = """
import numba
from movielens.plumbing.runtime import set_up
set_up()
from movielens.training.compiled.fit import warm_up_kernels
warm_up_kernels()
print(numba.threading_layer())
"""


def openmp_settings(**env) -> dict[str, str]:
    """The settings the OpenMP runtime of the kernels' threads runs with, as it prints them."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))}
    done = subprocess.run(
        [sys.executable, "-c", FIT],
        cwd=ROOT,
        env={**base, "OMP_DISPLAY_ENV": "VERBOSE", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    if done.stdout.split()[-1] != "omp" or "OPENMP DISPLAY ENVIRONMENT END" not in done.stderr:
        pytest.skip("Numba's threads do not run on an OpenMP runtime that shows its settings")
    last = done.stderr.rsplit("OPENMP DISPLAY ENVIRONMENT BEGIN", 1)[1]
    pairs = (line.split(" = ", 1) for line in last.splitlines() if " = " in line)
    return {name.strip(): value.strip().strip("'") for name, value in pairs}


def test_the_kernels_threads_sleep_between_loops():
    settings = openmp_settings()
    # libgomp shows OMP_WAIT_POLICY = 'PASSIVE' for its default too; the spin count tells them
    # apart (300000 by default, 0 when passive).
    if "GOMP_SPINCOUNT" not in settings:
        pytest.skip("the OpenMP runtime is not libgomp, whose spin count tells passive apart")
    assert settings["OMP_WAIT_POLICY"] == "PASSIVE"
    assert settings["GOMP_SPINCOUNT"] == "0"


def test_a_users_own_wait_policy_wins():
    settings = openmp_settings(OMP_WAIT_POLICY="ACTIVE")
    assert settings["OMP_WAIT_POLICY"] == "ACTIVE"
