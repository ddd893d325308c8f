"""Start-up benchmark (issue 11): the whole `recommend` process beside `python -c "import tensorflow"`.

Run `make bench` (or `python -m benchmarks.bench_recommend` from the project root after
`dvc repro train`). The two commands run in turn, A B A B ..., after one uncounted run of each;
each run is timed from process start to exit (wall clock). The medians, their ratio and each pair's
ratio go to stdout and to benchmarks/recommend.json. Target: recommend under a third of the import.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from movielens.plumbing.errors import PipelineError, run_stage
from movielens.plumbing.files import write_json

log = logging.getLogger(__name__)

RESULTS = Path("benchmarks/recommend.json")
DEFAULT_RUNS = 7
TARGET_RATIO = 1 / 3  # issue 11: recommend, start to printed answer, vs the TensorFlow import
# The console script users run (make installs it beside the interpreter).
RECOMMEND = [
    str(Path(sys.executable).with_name("movielens")),
    "recommend",
    "--user",
    "1",
    "-n",
    "10",
]
IMPORT_TENSORFLOW = [sys.executable, "-c", "import tensorflow"]


def run_once(command: list[str]) -> float:
    """Wall seconds of one run of `command`, start to exit (output discarded).

    Raises:
        PipelineError: when the command fails.
    """
    env = {**os.environ, "LOGLEVEL": "ERROR", "TF_CPP_MIN_LOG_LEVEL": "3"}
    start = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        last = (done.stderr.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
        raise PipelineError(f"{' '.join(command)} exited with {done.returncode}: {last}")
    return seconds


def alternate(a: list[str], b: list[str], runs: int, timer=run_once) -> tuple[list, list]:
    """Run a and b in turn `runs` times each after one uncounted run of each: the seconds of each."""
    timer(a), timer(b)
    times_a, times_b = [], []
    for _ in range(runs):
        times_a.append(timer(a))
        times_b.append(timer(b))
    return times_a, times_b


def summarise(times_a: list[float], times_b: list[float]) -> dict:
    """Median, min and max of each, the ratio of the medians and the median of the pairs' ratios."""

    def spread(times: list[float]) -> dict:
        return {
            k: round(f(times), 3)
            for k, f in (("median", statistics.median), ("min", min), ("max", max))
        }

    pair_ratios = [a / b for a, b in zip(times_a, times_b, strict=True)]
    return {
        "recommend_s": spread(times_a),
        "import_tensorflow_s": spread(times_b),
        "ratio_of_medians": round(statistics.median(times_a) / statistics.median(times_b), 3),
        "median_pair_ratio": round(statistics.median(pair_ratios), 3),
        "target_ratio": round(TARGET_RATIO, 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="counted runs of each")
    args = parser.parse_args(argv)
    if args.runs < 1:
        raise PipelineError(f"--runs={args.runs} must be at least 1")
    times_a, times_b = alternate(RECOMMEND, IMPORT_TENSORFLOW, args.runs)
    result = {
        "commands": {
            "recommend": " ".join(["movielens", *RECOMMEND[1:]]),
            "tensorflow": " ".join(IMPORT_TENSORFLOW[1:]),
        },
        "runs": args.runs,
        **summarise(times_a, times_b),
        "seconds": {
            "recommend": [round(t, 3) for t in times_a],
            "import_tensorflow": [round(t, 3) for t in times_b],
        },
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
    }
    write_json(RESULTS, result)
    a, b = result["recommend_s"], result["import_tensorflow_s"]
    print(f"{'command':<32} {'median s':>9} {'min':>7} {'max':>7}")
    print(f"{'recommend --user 1 -n 10':<32} {a['median']:>9.3f} {a['min']:>7.3f} {a['max']:>7.3f}")
    print(f"{'import tensorflow':<32} {b['median']:>9.3f} {b['min']:>7.3f} {b['max']:>7.3f}")
    print(
        f"ratio {result['ratio_of_medians']:.3f} (median of pairs {result['median_pair_ratio']:.3f}); "
        f"target < {TARGET_RATIO:.3f}; {args.runs} alternated runs each, written to {RESULTS}"
    )


if __name__ == "__main__":
    run_stage(main)
