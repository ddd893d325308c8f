"""The training benchmark's run: the results on the pipeline's split, the seed study, then the
cross-validation, each written to its JSON file and printed (benchmarks.bench_train's options)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from benchmarks.cv import cross_validation, spread_beside_folds
from benchmarks.engines import bench_engines, choose_default_engine
from benchmarks.machine import machine_info
from benchmarks.names import OURS, engine_row_name
from benchmarks.peers import bench_peer
from benchmarks.report import cv_lines, format_table, seed_lines, summary_lines
from benchmarks.seeds import check_seeds
from benchmarks.splits import Split, load_split, protocol
from movielens.params import load_params
from movielens.plumbing.files import write_json

log = logging.getLogger(__name__)


def publish(path: Path, data, lines: list[str]) -> None:
    """Write `data` to `path` as JSON and print `lines`."""
    write_json(path, data)
    print("\n".join(lines))
    log.info("wrote %s", path)


def bench_rows(models: list[str], params: dict, split: Split, train_stage: bool) -> list[dict]:
    """One row per model on the pipeline's split; ours gives one per engine (bench_engines)."""
    rows = []
    for name in models:
        if name == OURS:
            rows.extend(bench_engines(split, params, train_stage))
        else:
            rows.append(bench_peer(name, split, params["train"]["seed"]))
    return rows


def seed_study(
    args: argparse.Namespace, params: dict, rows: list[dict], context: dict
) -> dict | None:
    """The seed check beside the results (seeds.json); its split spread, when it made one."""
    default = engine_row_name(choose_default_engine(params))
    ours = next((r["rmse"] for r in rows if r["model"] == default), None)
    check = {**check_seeds(params, args.seeds, ours, args.spread), **context}
    publish(args.seeds_out or args.out.with_name("seeds.json"), check, seed_lines(check))
    return check.get("spread")


def cv_study(args: argparse.Namespace, params: dict, spread: dict | None, machine: dict) -> None:
    """Every model on the crossvalidate stage's folds (cv.json)."""
    result = cross_validation(params, args.models)
    if OURS in result["models"] and spread is not None:
        result["ours_rmse_std"] = spread_beside_folds(result, spread)
    cv_out = args.cv_out or args.out.with_name("cv.json")
    publish(cv_out, {**result, "machine": machine}, cv_lines(result, spread))


def run(args: argparse.Namespace) -> None:
    """Every part bench_train's options ask for, in turn."""
    params = load_params()
    split = load_split()
    context = {"protocol": protocol(params, split), "machine": machine_info()}
    rows = [{**row, **context} for row in bench_rows(args.models, params, split, args.train_stage)]
    publish(args.out, rows, [format_table(rows), "\n".join(summary_lines(rows))])
    spread = seed_study(args, params, rows, context) if args.seeds else None
    if args.cv:
        cv_study(args, params, spread, context["machine"])
