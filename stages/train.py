"""Train stage: fit the embedding model on the training split, with early stopping on a validation part."""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
import zipfile
import zlib
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from stages import kernels, paths
from stages.baseline import fit_bias_model, save_bias_model
from stages.common import (
    PipelineError,
    atomic_path,
    load_params,
    require,
    run_stage,
    write_csv,
    write_json,
)
from stages.fit import AdamTrainer
from stages.model import build_model

log = logging.getLogger(__name__)


def fitted_ratings(n: int, validation_size: float) -> int:
    """How many of n training rows the model fits on: all but the validation part."""
    return n - round(n * validation_size)


def carve_validation(n: int, validation_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split row positions 0..n-1 at random into fitting and validation positions (both sorted).

    validation_size=0 gives no validation rows.
    """
    n_val = n - fitted_ratings(n, validation_size)
    if n_val >= n:
        raise PipelineError(f"train.validation_size={validation_size} leaves no ratings to fit on")
    held_out = np.zeros(n, dtype=bool)
    held_out[np.random.default_rng(seed).permutation(n)[:n_val]] = True  # a mask: no sort of n rows
    return np.flatnonzero(~held_out), np.flatnonzero(held_out)


def rating_scale_of(ratings: np.ndarray) -> tuple[float, float]:
    """The rating range the model's sigmoid is scaled to: the lowest and highest training rating."""
    lo, hi = float(np.min(ratings)), float(np.max(ratings))
    if lo == hi:
        raise PipelineError(
            f"every training rating is {lo:g}; the model needs at least two distinct ratings"
        )
    return lo, hi


def check_optimizer(p: dict) -> None:
    """Refuse a whole-table L2 weight with the lazy optimizer, which cannot apply it.

    Raises:
        PipelineError: for train.optimizer=lazy_adam with train.embeddings_l2 > 0.
    """
    if p["optimizer"] == "lazy_adam" and p["embeddings_l2"] > 0:
        raise PipelineError(
            f"train.optimizer=lazy_adam cannot apply train.embeddings_l2={p['embeddings_l2']:g}: "
            "that L2 term on the whole tables has a gradient on every row, and a lazy update "
            "touches only the rows a batch looks up; set train.embeddings_l2 to 0 "
            "(train.activity_l2 regularises per rating) or use train.optimizer=adam"
        )


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow, and make TensorFlow's kernels deterministic."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def fit_model(
    train: pd.DataFrame, n_users: int, n_movies: int, p: dict
) -> tuple[keras.Model, pd.DataFrame]:
    """Build the model and fit it with Adam, one compiled loop per epoch (stages.fit).

    Args:
        train: user_index, movie_index (int32) and rating (float32) of the training split.
        n_users: number of encoded users.
        n_movies: number of encoded movies.
        p: the `train` params section.

    Returns:
        The fitted model (weights of the best validation epoch when there is a validation part)
        and the per-epoch history: epoch, loss, rmse, and val_rmse when validating.
    """
    seed_everything(p["seed"])
    users = train["user_index"].to_numpy(np.int32)
    movies = train["movie_index"].to_numpy(np.int32)
    ratings = train["rating"].to_numpy(np.float32)
    fit_rows, val_rows = carve_validation(len(train), p["validation_size"], p["seed"])
    model = build_model(
        n_users,
        n_movies,
        p["embedding_dim"],
        p["embeddings_l2"],
        p["activity_l2"],
        rating_scale_of(ratings[fit_rows]),
    )
    trainer = AdamTrainer(model, p["learning_rate"], p["batch_size"], optimizer=p["optimizer"])
    stopper = EarlyStopping(p["patience"]) if len(val_rows) else None
    validation = users[val_rows], movies[val_rows], ratings[val_rows]
    shuffle = np.random.default_rng(p["seed"])
    shuffled = [np.empty(len(fit_rows), a.dtype) for a in (users, movies, ratings)]
    history = []
    for epoch in range(1, p["epochs"] + 1):
        kernels.gather(shuffle.permutation(fit_rows), users, movies, ratings, *shuffled)
        row = {"epoch": epoch, **trainer.run_epoch(*shuffled)}
        if stopper is not None:
            row["val_rmse"] = trainer.rmse(*validation)
        history.append(row)
        log.info("epoch %d/%d: %s", epoch, p["epochs"], format_row(row))
        if not np.isfinite(row["loss"]):
            raise PipelineError(
                f"training diverged at epoch {epoch} (loss {row['loss']}); "
                "lower train.learning_rate or raise the L2 weights"
            )
        if stopper is not None and stopper.done(row["val_rmse"], trainer):
            log.info("early stop: val_rmse has not improved for %d epochs", p["patience"])
            break
    if stopper is not None:
        trainer.restore(stopper.best_weights)
    trainer.to_model()
    return model, pd.DataFrame(history)


def format_row(row: dict) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in row.items() if k != "epoch")


class EarlyStopping:
    """Stops after `patience` epochs without a better validation RMSE; keeps the best weights."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best = np.inf
        self.best_weights = None
        self.waited = 0

    def done(self, val_rmse: float, trainer: AdamTrainer) -> bool:
        if val_rmse < self.best:
            self.best, self.best_weights, self.waited = val_rmse, trainer.snapshot(), 0
            return False
        self.waited += 1
        return self.waited >= self.patience


def summarize_history(history: pd.DataFrame) -> dict:
    """The train stage's metrics: epochs run, best epoch and the RMSEs at the best epoch."""
    monitor = "val_rmse" if "val_rmse" in history else "rmse"
    best = int(history[monitor].to_numpy().argmin())
    summary = {
        "epochs_run": len(history),
        "best_epoch": best + 1,
        "train_rmse": float(history["rmse"].iloc[best]),
    }
    if "val_rmse" in history:
        summary["val_rmse"] = float(history["val_rmse"].iloc[best])
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in summary.items()}


def blank_png() -> bytes:
    """A valid 1x1 white PNG, written in place of the model plot when graphviz is missing."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = (1).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff"))
        + chunk(b"IEND", b"")
    )


def plot_model(model: keras.Model, png: Path, dot: Path) -> None:
    """Draw the model with Keras' plot_model into `png` and keep its DOT source in `dot`.

    Without graphviz's `dot` program the PNG is a blank placeholder and a warning says so.
    """
    dot_source = keras.utils.model_to_dot(model, show_shapes=True, show_layer_names=True)
    with atomic_path(dot) as tmp:
        tmp.write_text(stable_node_names(dot_source.to_string(), model), encoding="utf-8")
    with atomic_path(png) as tmp:
        if shutil.which("dot"):
            keras.utils.plot_model(model, to_file=str(tmp), show_shapes=True, show_layer_names=True)
        else:
            tmp.write_bytes(blank_png())
            log.warning(
                "graphviz's 'dot' program is missing: %s is blank, %s holds the graph; "
                "install graphviz (make deps does) and rerun",
                png,
                dot,
            )


def stable_node_names(dot_source: str, model: keras.Model) -> str:
    """Replace the Python object ids Keras uses as DOT node names by the layer names."""
    names = {str(id(layer)): f'"{layer.name}"' for layer in model.layers}
    return re.sub(r"\b\d{6,}\b", lambda m: names.get(m.group(0), m.group(0)), dot_source)


def save_model(model: keras.Model, target: Path) -> None:
    """`model.save`, atomically and byte-reproducibly: the same weights give the same file.

    Keras stamps the save time into metadata.json and the zip entries, and numbers shared objects in
    config.json by their Python id(); those are replaced by fixed values (ids renumbered in order of
    appearance, which keeps the references between them).
    """
    with atomic_path(target) as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp) as archive:
            entries = [(info, archive.read(info)) for info in archive.infolist()]
        with zipfile.ZipFile(tmp, "w") as archive:
            for info, data in entries:
                fixed = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
                fixed.compress_type = info.compress_type
                archive.writestr(fixed, normalise_entry(info.filename, data))


def normalise_entry(name: str, data: bytes) -> bytes:
    """An entry of a .keras archive without the save date and with stable shared-object ids."""
    if name == "metadata.json":
        metadata = json.loads(data)
        metadata.pop("date_saved", None)
        return json.dumps(metadata).encode()
    if name == "config.json":
        numbers: dict[bytes, bytes] = {}

        def renumber(match: re.Match) -> bytes:
            number = numbers.setdefault(match.group(1), str(len(numbers) + 1).encode())
            return b'"shared_object_id": ' + number

        return re.sub(rb'"shared_object_id": (\d+)', renumber, data)
    return data


def main() -> None:
    p = load_params()["train"]
    check_optimizer(p)
    require(paths.TRAIN, paths.USER_IDS, paths.MOVIE_IDS)
    train = pd.read_parquet(paths.TRAIN, columns=["user_index", "movie_index", "rating"])
    n_users = len(pd.read_parquet(paths.USER_IDS))
    n_movies = len(pd.read_parquet(paths.MOVIE_IDS))
    log.info("training on %d ratings of %d users and %d movies", len(train), n_users, n_movies)
    start = time.perf_counter()
    kernels.warm_up()
    log.info(
        "training kernels ready in %.1f s (compiled once, then cached)", time.perf_counter() - start
    )
    start = time.perf_counter()
    model, history = fit_model(train, n_users, n_movies, p)
    seconds = time.perf_counter() - start
    fitted = fitted_ratings(len(train), p["validation_size"]) * len(history)
    log.info("fit took %.1f s (%.0f ratings/s)", seconds, fitted / seconds)
    save_model(model, paths.MODEL)
    save_bias_model(fit_bias_model(train, n_users, n_movies, p), paths.BASELINE)
    plot_model(model, paths.MODEL_PLOT, paths.MODEL_DOT)
    write_csv(paths.HISTORY, history)
    write_json(paths.TRAIN_METRICS, summarize_history(history))


if __name__ == "__main__":
    run_stage(main)
