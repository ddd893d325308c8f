"""The error surface: an expected failure is one line for the user and exit status 1."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from movielens.plumbing.runtime import set_up


class PipelineError(Exception):
    """An expected failure: bad params, bad data or a failed download. Its message is one line for the user."""


def require(*files: Path) -> None:
    """Raise PipelineError naming the first missing pipeline output."""
    for path in files:
        if not Path(path).is_file():
            raise PipelineError(
                f"{path} not found; run the pipeline first (dvc repro, or make repro)"
            )


def run_stage(main: Callable[[], None]) -> None:
    """Set the process up (runtime.set_up), then run a stage's main(): a PipelineError becomes one line on stderr and exit status 1."""
    set_up()
    try:
        main()
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
