"""The process's runtime set-up, made once by each entry point (stages, the CLI, benchmarks), never
at import: logging, and the environment defaults TensorFlow and the compiled kernels read.

A user's own value of any of these variables wins.
"""

from __future__ import annotations

import logging
import os

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"

ENVIRONMENT_DEFAULTS = {
    # TensorFlow's C++ start-up banners are noise, not errors; read at TensorFlow's first import.
    "TF_CPP_MIN_LOG_LEVEL": "2",
    # The compiled kernels' OpenMP threads sleep when a parallel loop ends instead of spinning on
    # a core (OpenMP reads this when Numba loads it, at the first parallel call). Spinning threads
    # of two fits on two cores (a queued sweep, `dvc queue start -j 2`) take the cores from each
    # other: 5-fold crossvalidate took 27 s each, two at once, against 10 s passive; alone,
    # passive costs 3% on train and 8% on crossvalidate (docs/team.md).
    "OMP_WAIT_POLICY": "PASSIVE",
}


def set_up(level: str | None = None) -> None:
    """Configure logging (LOGLEVEL, default INFO) and set the environment defaults not yet set.

    Call it first thing in an entry point, before TensorFlow or the kernels load.
    """
    for name, value in ENVIRONMENT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    logging.basicConfig(
        level=level or os.environ.get("LOGLEVEL", "INFO"),
        format=LOG_FORMAT,
        datefmt="%H:%M:%S",
    )
