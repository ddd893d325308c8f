"""Training history through dvclive: every epoch of every fit, and every cross-validation fold.

The train and crossvalidate stages each open one dvclive `Live` in their own folder
(movielens.plumbing.paths.LIVE_TRAIN, LIVE_CV). dvc.yaml declares its files (metrics.json, the
step plots), so `dvc exp show` shows the step and the last values, `dvc plots show` the curves
and DVC's VS Code extension follows them live. dvclive writes no dvc.yaml of its own, saves no
experiment and posts nothing to DVC Studio.

The engines' hook: `train_model` binds a phase to each fit (`epoch_hook(live, phase)`), and every
engine (keras, compiled, xla) calls it once an epoch with the epoch's history row, from the one
place that records it (movielens.training.epochs.EpochRecord; in the Keras engine that is a Keras
callback at each epoch's end). The row holds epoch and the figures: loss, rmse and, when
validating, val_rmse (floats). Each call is one dvclive step, named
`<phase>/train/loss`, `<phase>/train/rmse`, `<phase>/eval/rmse` (dvclive's own Keras names,
dvclive.utils.standardize_metric_name, under the phase). The step counts epochs over both fits:
the selection fit's n epochs are steps 0 to n-1, the refit's follow on from n.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dvclive import Live

SELECTION = "select"  # the fit whose validation RMSE early stopping watches
REFIT = "refit"  # the refit on every training rating for the epochs the selection fit chose
FOLD = "fold"  # crossvalidate: one step a fold

# History row names -> dvclive's (dvclive/utils.py, standardize_metric_name, "dvclive.keras").
METRIC_NAMES = {"loss": "train/loss", "rmse": "train/rmse", "val_rmse": "eval/rmse"}

EpochHook = Callable[[dict], None]


@contextmanager
def open_live(directory: Path) -> Iterator[Live]:
    """A dvclive `Live` writing into `directory` (its old files removed), ended on leaving.

    dvclive writes as training goes, so that DVC's VS Code extension can follow it; when the
    block fails, the folder is removed again (with the parents it made), so that a failed stage
    leaves no history that looks like a run's.

    DVC Studio is offline whatever the user's config says: dvc_studio_client's get_studio_config
    returns no config when DVC_STUDIO_OFFLINE is true (dvc_studio_client/config.py, lines 90-96),
    and dvclive posts nothing without one (dvclive/live.py, Live._init_studio).
    """
    os.environ["DVC_STUDIO_OFFLINE"] = "true"
    from dvclive import Live

    made = [folder for folder in (directory, *directory.parents) if not folder.exists()]
    live = Live(str(directory), dvcyaml=False, save_dvc_exp=False, report=None)
    try:
        yield live
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        for folder in made[1:]:  # innermost first; only those now empty
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    live.end()


def log_epoch(live: Live, phase: str, row: dict) -> None:
    """One step: the epoch's figures under `phase`, and the epoch (from 1) in the summary only,
    so that `dvc exp show` shows how many epochs each fit ran (`select/epoch`, `refit/epoch`)."""
    for name, value in row.items():
        if name in METRIC_NAMES:
            live.log_metric(f"{phase}/{METRIC_NAMES[name]}", float(value))
    live.log_metric(f"{phase}/epoch", int(row["epoch"]), plot=False)
    live.next_step()


def epoch_hook(live: Live | None, phase: str) -> EpochHook | None:
    """The per-epoch function the engines call with each history row; None without a Live."""
    return None if live is None else partial(log_epoch, live, phase)


def log_fold(live: Live, row: dict) -> None:
    """One step of crossvalidate: a fold's scores (metrics/cv.json's per_fold row)."""
    for name, value in row.items():
        if name != "fold":
            live.log_metric(f"{FOLD}/{name}", value)
    live.next_step()
