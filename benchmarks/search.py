"""Grid search over the train params, scored only on the validation part of the training split.

Run `make search` (or `python -m benchmarks.search` from the project root after
`dvc repro preprocess`). Every combination fits with movielens.training.fit.train_model on
data/processed/train.parquet and is scored by its best `val_rmse`, the RMSE on the part
train.validation_size carves out of the training split; the test split is never read, so the
chosen params can still be judged on it by the pipeline. Override or add grid keys with
`--grid train.activity_l2=0.01,0.03 train.patience=3,5`; keys the grid leaves out keep their
params.yaml values.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import logging
import time
from pathlib import Path

import pandas as pd
import yaml

from benchmarks.library import quiet_fits, train_ours
from benchmarks.machine import machine_info
from movielens.params import load_params, params_schema, validate_params
from movielens.plumbing import paths
from movielens.plumbing.errors import PipelineError, run_stage
from movielens.plumbing.files import write_json

log = logging.getLogger(__name__)

OUT = Path("benchmarks/search.json")
SECTION = "train"
DEFAULT_GRID = {
    "train.embedding_dim": [32, 50, 64],
    "train.learning_rate": [0.003, 0.006],
    "train.activity_l2": [0.01, 0.03],
}


def parse_value(text: str):
    """A grid value as typed: an int, a float (1e-4 included) or YAML (null, true)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


def parse_grid_item(text: str) -> tuple[str, list]:
    """`train.key=v1,v2` as ("train.key", [v1, v2]).

    Raises:
        PipelineError: for a missing '=', an empty value, a section other than train or a key
            params.yaml's train section does not have.
    """
    key, sep, values = text.partition("=")
    allowed = ", ".join(f"{SECTION}.{k}" for k in params_schema()[SECTION])
    section, _, name = key.partition(".")
    if not sep or not values or any(not v.strip() for v in values.split(",")):
        raise PipelineError(f"--grid {text!r}: write {SECTION}.KEY=VALUE[,VALUE...]")
    if section != SECTION or name not in params_schema()[SECTION]:
        raise PipelineError(f"--grid {text!r}: unknown key {key!r}; allowed: {allowed}")
    return key, [parse_value(v.strip()) for v in values.split(",")]


def build_grid(items: list[str], base: dict | None = None) -> dict[str, list]:
    """The default grid (or `base`) with each `--grid` item replacing or adding its key."""
    grid = dict(DEFAULT_GRID if base is None else base)
    for item in items:
        key, values = parse_grid_item(item)
        grid[key] = values
    return grid


def combinations(grid: dict[str, list], params: dict) -> list[dict]:
    """Every combination of the grid as a {"train.key": value} dict, each checked as params.yaml.

    Raises:
        PipelineError: when a combination is not valid params (validate_params's message), or
            leaves no validation part to score on.
    """
    keys = list(grid)
    combos = [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]
    for combo in combos:
        p = train_params(params, combo)
        if p["validation_size"] <= 0:
            raise PipelineError(
                "the search scores on the validation part: train.validation_size must be > 0"
            )
    return combos


def train_params(params: dict, combo: dict) -> dict:
    """params.yaml's train section with the combination's values, validated like params.yaml."""
    changed = copy.deepcopy(params)
    for key, value in combo.items():
        changed[SECTION][key.partition(".")[2]] = value
    return validate_params(changed)[SECTION]


def search(
    train: pd.DataFrame, n_users: int, n_movies: int, params: dict, combos: list[dict]
) -> list[dict]:
    """Fit each combination on `train` and score it by its best validation RMSE.

    Returns:
        One row per combination, best val_rmse first: params ({"train.key": value}), val_rmse,
        best_epoch, epochs_run, train_rmse, fit_seconds, hit_epoch_cap.
    """
    from movielens.training.fit import summarize_fit  # Keras loads with it, after set_up

    rows = []
    for number, combo in enumerate(combos, 1):
        start = time.perf_counter()
        p = {**train_params(params, combo), "refit": False}  # scored on validation: no refit
        fit = train_ours(train, n_users, n_movies, p)
        seconds = time.perf_counter() - start
        row = {"params": combo, **summarize_fit(fit), "fit_seconds": round(seconds, 3)}
        # Still improving when train.epochs ran out: more epochs might score better.
        row["hit_epoch_cap"] = row["best_epoch"] == p["epochs"]
        log.info(
            "[%d/%d] %s: val_rmse=%.4f (best epoch %d of %d, %.1f s)",
            number,
            len(combos),
            " ".join(f"{k}={v}" for k, v in combo.items()),
            row["val_rmse"],
            row["best_epoch"],
            row["epochs_run"],
            seconds,
        )
        rows.append(row)
    return sorted(rows, key=lambda r: (r["val_rmse"], r["fit_seconds"]))


def format_table(rows: list[dict], current: dict) -> str:
    """The rows as an aligned text table.

    `*` marks the combination params.yaml holds now, `^` one whose best epoch was its last allowed.
    """
    keys = list(rows[0]["params"]) if rows else []
    names = [k.partition(".")[2] for k in keys]
    widths = [max(len(n), 8) for n in names]
    header = "  ".join(n.rjust(w) for n, w in zip(names, widths, strict=True))
    header += f"  {'val RMSE':>8}  {'best ep':>7}  {'epochs':>6}  {'fit s':>6}"
    lines = [header, "-" * len(header)]
    for r in rows:
        cells = [f"{r['params'][k]:>{w}}" for k, w in zip(keys, widths, strict=True)]
        mark = " *" if all(current.get(k) == r["params"][k] for k in keys) else ""
        mark += " ^" if r["hit_epoch_cap"] else ""
        lines.append(
            "  ".join(cells)
            + f"  {r['val_rmse']:>8.4f}  {r['best_epoch']:>7d}  {r['epochs_run']:>6d}"
            + f"  {r['fit_seconds']:>6.1f}{mark}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.search", description=__doc__)
    parser.add_argument(
        "--grid",
        nargs="+",
        default=[],
        metavar="train.KEY=V1,V2",
        help=f"replace or add a grid key; default grid: {DEFAULT_GRID}",
    )
    parser.add_argument("--out", type=Path, default=OUT, help="results JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    params = load_params()
    grid = build_grid(args.grid)
    combos = combinations(grid, params)
    # The test split stays unread: only the training rows and the id vocabularies are loaded.
    train = pd.read_parquet(paths.TRAIN, columns=["user_index", "movie_index", "rating"])
    n_users = len(pd.read_parquet(paths.USER_IDS))
    n_movies = len(pd.read_parquet(paths.MOVIE_IDS))
    log.info("searching %d combinations on %d training ratings", len(combos), len(train))
    rows = search(train, n_users, n_movies, params, combos)
    current = {f"{SECTION}.{k}": v for k, v in params[SECTION].items()}
    write_json(
        args.out,
        {
            "scored_on": f"best val_rmse on the train.validation_size part of {paths.TRAIN}",
            "base_params": params[SECTION],
            "grid": grid,
            "results": rows,
            "machine": machine_info(),
        },
    )
    print(format_table(rows, current))
    print("* = the values params.yaml holds now; ^ = best at the train.epochs cap (may gain more)")
    best = rows[0]
    chosen = " ".join(f"{k}={v}" for k, v in best["params"].items())
    print(f"best on validation: {chosen} (val RMSE {best['val_rmse']:.4f})")
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    quiet_fits()  # one progress line per fit, not one per epoch
    run_stage(main)
