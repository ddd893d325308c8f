"""One row of benchmarks/bench_train.py for an engine on Keras' JAX backend, in a process of its own.

A process has one Keras backend, chosen before Keras is imported, and bench_train runs on
TensorFlow; so it runs `python -m benchmarks.bench_jax ENGINE` and reads the row this prints
(the last line of stdout, JSON). The fit is bench_train.bench_ours's, on the same split.
"""

from __future__ import annotations

import json
import logging
import sys

from movielens.training.backend import use_backend

use_backend("jax")  # before Keras is imported; the modules below import it

from benchmarks.bench_train import bench_ours, load_split  # noqa: E402
from movielens.params import load_params  # noqa: E402
from movielens.plumbing.errors import run_stage  # noqa: E402


def main() -> None:
    params = load_params()
    params["train"] = {**params["train"], "backend": "jax"}
    engine = sys.argv[1] if len(sys.argv) > 1 else "xla"
    print(json.dumps(bench_ours(load_split(), params, engine)))


if __name__ == "__main__":
    logging.getLogger("movielens.model").setLevel(logging.WARNING)
    run_stage(main)
