"""One row of the training benchmark for an engine on Keras' JAX backend, in a process of its own.

A process has one Keras backend, chosen before Keras is imported, and bench_train runs on
TensorFlow; so it runs `python -m benchmarks.bench_jax ENGINE` and reads the row this prints
(the last line of stdout, JSON). The fit is benchmarks.engines.bench_ours's, on the same split.
"""

from __future__ import annotations

import json
import sys

from benchmarks.library import quiet_fits
from benchmarks.splits import load_split
from movielens.params import load_params
from movielens.plumbing.errors import run_stage
from movielens.training.backend import use_backend


def main() -> None:
    use_backend("jax")  # before Keras is imported: benchmarks.engines imports it
    from benchmarks.engines import bench_ours

    params = load_params()
    params["train"] = {**params["train"], "backend": "jax"}
    engine = sys.argv[1] if len(sys.argv) > 1 else "xla"
    print(json.dumps(bench_ours(load_split(), params, engine)))


if __name__ == "__main__":
    quiet_fits()
    run_stage(main)
