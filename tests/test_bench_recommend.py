"""Tests for benchmarks.bench_recommend: the alternation, the summary arithmetic, failures."""

from __future__ import annotations

import sys

import pytest

from benchmarks.bench_recommend import alternate, run_once, summarise
from movielens.plumbing.errors import PipelineError


def test_commands_alternate_after_one_uncounted_run_of_each():
    calls = []

    def timer(command):
        calls.append(command[0])
        return float(len(calls))

    times_a, times_b = alternate(["a"], ["b"], 3, timer)
    assert calls == ["a", "b"] * 4
    assert (times_a, times_b) == ([3.0, 5.0, 7.0], [4.0, 6.0, 8.0])


def test_summary_gives_medians_spread_and_ratios():
    summary = summarise([1.0, 3.0, 2.0], [4.0, 4.0, 10.0])
    assert summary["recommend_s"] == {"median": 2.0, "min": 1.0, "max": 3.0}
    assert summary["import_tensorflow_s"] == {"median": 4.0, "min": 4.0, "max": 10.0}
    assert summary["ratio_of_medians"] == 0.5
    assert summary["median_pair_ratio"] == 0.25  # median of 1/4, 3/4, 2/10


def test_a_whole_process_is_timed_and_a_failing_one_is_one_line():
    assert run_once([sys.executable, "-c", "import time; time.sleep(0.2)"]) >= 0.2
    with pytest.raises(PipelineError, match=r"exited with 1: error: no model$"):
        run_once([sys.executable, "-c", "import sys; sys.exit('error: no model')"])
