"""Training benchmark (issue #3): our model beside Surprise's algorithms on the pipeline's own split.

Run `make bench` (or `python -m benchmarks.bench_train` from the project root after
`dvc repro preprocess`). Every model fits the rows of data/processed/train.parquet and predicts
every pair of data/processed/test.parquet; the table goes to stdout, one JSON row per model to
benchmarks/results.json and the preprocess-seed check to benchmarks/seeds.json. Then every model
fits and scores the folds of the crossvalidate stage (the same params,
movielens.evaluation.crossvalidation.fold_splits), written to benchmarks/cv.json.

This module is the command line; benchmarks.studies runs the parts in turn: the splits
(benchmarks.splits), our model by each engine (engines), Surprise's algorithms (peers), the
seed study (seeds), the cross-validation (cv) and the printed text (report).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.library import quiet_fits
from benchmarks.names import OURS
from benchmarks.peers import PEERS
from movielens.plumbing.errors import run_stage

MODELS = (OURS, *PEERS)
RESULTS = Path("benchmarks/results.json")
DEFAULT_SEEDS = (1, 2, 3)
DEFAULT_SPREAD = 20  # splits of preprocess seeds 1..N that show how much the test RMSE moves


def add_switch(parser: argparse.ArgumentParser, flag: str, help: str) -> None:
    """A `--flag` / `--no-flag` option, on unless turned off."""
    parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=True, help=help)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_train", description=__doc__)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON (a list of rows)")
    parser.add_argument(
        "--seeds",
        nargs="*",
        type=int,
        default=list(DEFAULT_SEEDS),
        help="preprocess seeds for the seed check; none disables it",
    )
    parser.add_argument(
        "--spread",
        type=int,
        default=DEFAULT_SPREAD,
        metavar="N",
        help="also fit the splits of preprocess seeds 1..N and report how the test RMSE varies "
        "over them (with the seed check; 0 disables)",
    )
    parser.add_argument(
        "--seeds-out", type=Path, help="seed check JSON; default: seeds.json beside --out"
    )
    add_switch(parser, "--cv", "also fit every model on the crossvalidate stage's folds")
    parser.add_argument(
        "--cv-out", type=Path, help="cross-validation JSON; default: cv.json beside --out"
    )
    add_switch(
        parser, "--train-stage", f"also time `python -m stages.train` as a process (with {OURS})"
    )
    args = parser.parse_args(argv)
    if args.spread < 0:
        parser.error(f"--spread must be 0 or more, got {args.spread}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # The fits' modules import TensorFlow, which reads its environment as it loads: only now,
    # after run_stage's runtime set-up (movielens.plumbing.runtime.set_up).
    from benchmarks.studies import run

    run(args)


if __name__ == "__main__":
    quiet_fits()  # one progress line per fit, not one per epoch
    run_stage(main)
