"""dvclive: every epoch of the selection fit and of the refit from both engines, every
cross-validation fold, the folder layout dvc.yaml declares, and nothing posted to DVC Studio."""

import csv
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from movielens.plumbing import paths
from movielens.training import live as training_live
from movielens.training.fit import train_model
from movielens.training.settings import TrainSettings

PARAMS = {
    "engine": "compiled", "refit": True, "embedding_dim": 4, "epochs": 6, "batch_size": 64,
    "learning_rate": 0.01, "optimizer": "adam", "embeddings_l2": 0.0001, "activity_l2": 0.01,
    "validation_size": 0.2, "patience": 2, "seed": 0, "backend": "tensorflow", "shard_tables": False,
}  # fmt: skip


@pytest.fixture(autouse=True)
def studio_env(monkeypatch):
    """open_live sets DVC_STUDIO_OFFLINE in this process; monkeypatch puts it back afterwards."""
    monkeypatch.setenv("DVC_STUDIO_OFFLINE", "false")


def training_frame(n=600, n_users=20, n_movies=30, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "user_index": rng.integers(0, n_users, n).astype(np.int32),
            "movie_index": rng.integers(0, n_movies, n).astype(np.int32),
            "rating": rng.choice(np.arange(0.5, 5.01, 0.5), n).astype(np.float32),
        }
    )


def read_tsv(path: Path) -> list[dict]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file, delimiter="\t"))


def steps_and_values(folder: Path, name: str) -> tuple[list[int], list[float]]:
    rows = read_tsv(folder / "plots" / "metrics" / f"{name}.tsv")
    field = name.rsplit("/", 1)[-1]
    return [int(row["step"]) for row in rows], [float(row[field]) for row in rows]


@pytest.fixture(scope="module", params=["compiled", "keras"])
def logged(request, tmp_path_factory):
    """One train_model with a Live in a folder outside any repository, and what it wrote."""
    folder = tmp_path_factory.mktemp("live") / "train"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder.parent)
        patch.setenv("DVC_STUDIO_OFFLINE", "false")
        with training_live.open_live(folder) as live:
            settings = TrainSettings.from_params({**PARAMS, "engine": request.param})
            fit = train_model(training_frame(), 20, 30, settings, live=live)
    return fit, folder


def test_every_epoch_of_the_selection_fit_is_a_step(logged):
    fit, folder = logged
    steps, rmse = steps_and_values(folder, "select/train/rmse")
    assert steps == list(range(len(fit.history)))
    assert rmse == pytest.approx(fit.history["rmse"].tolist(), abs=1e-6)
    steps, val_rmse = steps_and_values(folder, "select/eval/rmse")
    assert val_rmse == pytest.approx(fit.history["val_rmse"].tolist(), abs=1e-6)
    _, loss = steps_and_values(folder, "select/train/loss")
    assert loss == pytest.approx(fit.history["loss"].tolist(), abs=1e-6)


def test_the_refit_follows_on_with_its_own_names(logged):
    fit, folder = logged
    assert fit.refit
    steps, rmse = steps_and_values(folder, "refit/train/rmse")
    assert steps == list(range(len(fit.history), len(fit.history) + fit.best_epoch))
    assert all(0 < value < 5 for value in rmse)
    assert not (folder / "plots" / "metrics" / "refit" / "eval").exists()  # no validation part


def test_the_summary_holds_the_last_step_and_values(logged):
    fit, folder = logged
    summary = json.loads((folder / "metrics.json").read_text())
    assert summary["step"] == fit.epochs_in_all - 1
    assert summary["select"]["eval"]["rmse"] == pytest.approx(fit.history["val_rmse"].iloc[-1])
    assert set(summary) == {"select", "refit", "step"}
    assert summary["select"]["epoch"] == len(fit.history)
    assert summary["refit"]["epoch"] == fit.best_epoch
    assert not (folder / "plots" / "metrics" / "select" / "epoch.tsv").exists()  # summary only


def test_dvclive_writes_where_dvc_yaml_looks():
    from dvclive import Live

    live = Live.__new__(Live)  # the paths only: no folder made, no repository looked for
    live._dir = str(paths.LIVE_TRAIN)
    assert Path(live.metrics_file) == paths.LIVE_TRAIN_METRICS
    assert Path(live.plots_dir) / "metrics" == paths.LIVE_TRAIN_PLOTS
    assert paths.LIVE_CV_PLOTS.relative_to(paths.LIVE_CV) == paths.LIVE_TRAIN_PLOTS.relative_to(
        paths.LIVE_TRAIN
    )


def test_log_fold_makes_one_step_a_fold(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = [{"fold": k, "rmse": 0.9 + k / 100, "epochs_run": 3 + k} for k in (1, 2, 3)]
    with training_live.open_live(tmp_path / "cv") as live:
        for row in rows:
            training_live.log_fold(live, row)
    steps, rmse = steps_and_values(tmp_path / "cv", "fold/rmse")
    assert steps == [0, 1, 2] and rmse == pytest.approx([0.91, 0.92, 0.93])
    assert not (tmp_path / "cv" / "plots" / "metrics" / "fold" / "fold.tsv").exists()


class Recorder(BaseHTTPRequestHandler):
    """Answers every request with 200 and records its path: Studio's API as far as a client sees."""

    requests: ClassVar[list[str]] = []

    def do_POST(self):
        Recorder.requests.append(self.path)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def test_nothing_is_posted_to_studio_even_with_a_token(tmp_path, monkeypatch):
    """A Studio token, URL and repository URL are set, as a user may have them; the only Studio
    there is a recorder on 127.0.0.1, and it must receive nothing."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Recorder.requests = []
    repo = tmp_path / "repo"
    repo.mkdir()
    for command in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(command, cwd=repo, check=True)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "x"],
        cwd=repo, check=True,
    )  # fmt: skip
    monkeypatch.chdir(repo)
    monkeypatch.setenv("DVC_STUDIO_TOKEN", "isat_dummy")
    monkeypatch.setenv("DVC_STUDIO_URL", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("DVC_STUDIO_REPO_URL", "https://example.invalid/movielens.git")
    try:
        with training_live.open_live(repo / "live") as live:
            training_live.log_epoch(live, training_live.SELECTION, {"epoch": 1, "rmse": 1.0})
    finally:
        server.shutdown()
    assert Recorder.requests == []


def test_a_failed_fit_leaves_no_history(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with (
        pytest.raises(RuntimeError, match="diverged"),
        training_live.open_live(Path("metrics/live/train")) as live,
    ):
        training_live.log_epoch(live, training_live.SELECTION, {"epoch": 1, "rmse": 1.0})
        raise RuntimeError("diverged")
    assert list(tmp_path.iterdir()) == []
