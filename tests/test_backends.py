"""Keras' JAX backend beside TensorFlow: the Keras engine on both, the xla engine, devices.

The backend is chosen once per process, before Keras is imported, and this test process runs
TensorFlow; so every JAX run here is a subprocess that picks JAX the way the train stage does
(movielens.training.backend.use_backend) and prints its results as JSON.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from movielens.model.keras_model import load_model, predict_ratings
from movielens.plumbing import paths
from movielens.training import fit as train
from movielens.training.epochs import carve_validation

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_engines import N_MOVIES, N_USERS, planted_ratings, settings_with

ROOT = Path(__file__).resolve().parents[1]
# Long enough for both backends' fits to settle: they start from different initial weights
# (each backend draws its own), so only their end points can be compared.
CONVERGED = {"epochs": 40, "patience": 3, "batch_size": 512, "learning_rate": 0.01}

PRELUDE = """
import hashlib, json, sys
from movielens.training.backend import use_backend
use_backend("jax")
sys.path.insert(0, "tests")
from test_backends import CONVERGED
from test_engines import N_MOVIES, N_USERS, planted_ratings, settings_with, variant
from movielens.training import fit as train

def fit(engine, ratings, build=None, **changes):
    settings = settings_with(backend="jax", engine=engine, **changes)
    extra = {} if build is None else {"build": build}
    return train.train_model(ratings, N_USERS, N_MOVIES, settings, **extra)

def digest(model):
    return hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest()
"""

JAX_RUN = (
    PRELUDE
    + """
ratings = planted_ratings(20000)
xla = fit("xla", ratings, **CONVERGED)
keras_fit = fit("keras", ratings, **CONVERGED)
edited = {}
for kind in ("dense", "no_biases"):
    trained = fit("xla", ratings, build=variant(kind), epochs=6)
    untrained = fit("xla", ratings, build=variant(kind), epochs=1, learning_rate=1e-12)
    edited[kind] = [trained.engine, float(trained.history["val_rmse"].min()),
                    float(untrained.history["val_rmse"].iloc[0])]
lazy = {"optimizer": "lazy_adam", "embeddings_l2": 0.0, "epochs": 4}
lazy_runs = {e: fit(e, ratings, **lazy).history["val_rmse"].tolist() for e in ("xla", "keras", "compiled")}
print(json.dumps({
    "lazy": lazy_runs,
    "engines": [xla.engine, keras_fit.engine],
    "xla": xla.history["val_rmse"].tolist(),
    "keras": keras_fit.history["val_rmse"].tolist(),
    "digest": digest(xla.model),
    "edited": edited,
    "tensorflow_imported": "tensorflow" in sys.modules,
}))
"""
)

DIGEST_RUN = (
    PRELUDE
    + """
print(json.dumps({"digest": digest(fit("xla", planted_ratings(20000), **CONVERGED).model)}))
"""
)


def run_jax(script: str, **env_changes) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env |= {"PYTHONPATH": str(ROOT), "LOGLEVEL": "WARNING", **env_changes}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def jax_run() -> dict:
    return run_jax(JAX_RUN)


def test_tensorflow_is_not_imported_when_the_backend_is_jax(jax_run):
    assert jax_run["tensorflow_imported"] is False


def test_the_xla_engine_is_within_0_005_of_model_fit_on_jax(jax_run):
    assert jax_run["engines"] == ["xla", "keras"]
    assert min(jax_run["xla"]) == pytest.approx(min(jax_run["keras"]), abs=0.005)
    assert len(jax_run["xla"]) > 5  # trained past its first epochs


def test_lazy_adam_on_jax_agrees_with_the_compiled_kernel_at_every_epoch(jax_run):
    """The backend-neutral LazyAdam against the compiled engine's lazy kernel, 4 epochs from the
    same initial weights: under model.fit (the same batches) epoch by epoch, under
    stateless_apply (xla: its own on-device order) at the end."""
    lazy = jax_run["lazy"]
    np.testing.assert_allclose(lazy["keras"], lazy["compiled"], rtol=0, atol=1e-3)
    assert lazy["xla"][-1] == pytest.approx(lazy["compiled"][-1], abs=0.005)
    assert lazy["compiled"][-1] < lazy["compiled"][0]


def test_tensorflow_and_jax_train_the_model_to_within_0_005(jax_run):
    ratings = planted_ratings(20000)
    tensorflow = train.train_model(
        ratings, N_USERS, N_MOVIES, settings_with(engine="keras", **CONVERGED)
    )
    assert tensorflow.backend == "tensorflow"
    best = float(tensorflow.history["val_rmse"].min())
    assert best == pytest.approx(min(jax_run["keras"]), abs=0.005)
    assert best < 0.6  # both learned the planted interaction (the noise alone is 0.4)


@pytest.mark.parametrize("kind", ["dense", "no_biases"])
def test_an_edited_model_trains_under_the_xla_engine(jax_run, kind):
    engine, trained, untrained = jax_run["edited"][kind]
    assert engine == "xla"
    assert trained < untrained - 0.05


def test_the_xla_engine_gives_the_same_weights_bit_for_bit_run_after_run(jax_run):
    assert run_jax(DIGEST_RUN)["digest"] == jax_run["digest"]


# Two virtual CPU devices stand in for two GPUs; XLA reads the flag when JAX starts.
DEVICES_RUN = """
import json, sys
from movielens.training.backend import use_backend
use_backend("jax")
import jax, keras
sys.path.insert(0, "tests")
from dataclasses import replace
from test_engines import N_MOVIES, N_USERS, planted_ratings, settings_with
from movielens.training import fit as train
from movielens.training.backend import default_distribution
ratings = planted_ratings()
p = settings_with(backend="jax", engine=sys.argv[1], epochs=3)
devices = jax.devices()
one = keras.distribution.DataParallel(devices=devices[:1])
results = {"devices": len(devices)}
for name, shard_tables in (("data", False), ("tables", True)):
    distribution = default_distribution(shard_tables)
    fit = train.train_model(ratings, N_USERS, N_MOVIES, replace(p, shard_tables=shard_tables))
    table = fit.model.get_layer("user_embedding").embeddings.value
    results[name] = {
        "kind": type(distribution).__name__,
        "val_rmse": fit.history["val_rmse"].tolist(),
        "table_devices": len(table.sharding.device_set),
        "table_shard_rows": table.addressable_shards[0].data.shape[0],
    }
single = train.train_model(ratings, N_USERS, N_MOVIES, p, distribution=one)
results["single"] = single.history["val_rmse"].tolist()
print(json.dumps(results))
"""


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["xla", "keras"])
def test_data_parallel_on_two_devices_matches_one_device(engine):
    result = run_jax(
        DEVICES_RUN.replace("sys.argv[1]", repr(engine)),
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
    )
    assert result["devices"] == 2
    data, tables = result["data"], result["tables"]
    assert (data["kind"], tables["kind"]) == ("DataParallel", "ModelParallel")
    assert data["table_devices"] == 2 and data["table_shard_rows"] == N_USERS  # a copy on each
    assert tables["table_devices"] == 2 and tables["table_shard_rows"] == N_USERS // 2  # halves
    for run in (data, tables):
        assert len(run["val_rmse"]) == len(result["single"]) == 3
        np.testing.assert_allclose(run["val_rmse"], result["single"], atol=0.005)


STAGE_RUN = """
import json, sys
from stages import train
train.main()
print(json.dumps({"tensorflow_imported": "tensorflow" in sys.modules}))
"""


def stage_dir(tmp_path: Path, **train_changes) -> Path:
    """A working directory with params.yaml and the preprocessed files the train stage reads."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["train"].update(train_changes)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    (tmp_path / paths.PROCESSED_DIR).mkdir(parents=True)
    planted_ratings().to_parquet(tmp_path / paths.TRAIN)
    ids = {"userId": N_USERS, "movieId": N_MOVIES}
    for path, (column, n) in zip((paths.USER_IDS, paths.MOVIE_IDS), ids.items(), strict=True):
        pd.DataFrame({column: np.arange(n, dtype=np.int32)}).to_parquet(tmp_path / path)
    return tmp_path


def test_the_train_stage_on_jax_saves_the_model_and_records_backend_and_engine(tmp_path):
    cwd = stage_dir(tmp_path, backend="jax", engine="xla", epochs=2, refit=False)
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"} | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", STAGE_RUN], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"tensorflow_imported": False}
    metrics = json.loads((cwd / paths.TRAIN_METRICS).read_text())
    assert (metrics["backend"], metrics["engine"], metrics["epochs_run"]) == ("jax", "xla", 2)
    # The saved file is the trained model: loaded here, on TensorFlow, the kept epoch's weights
    # score the validation RMSE the stage recorded for them.
    train_params = yaml.safe_load((cwd / "params.yaml").read_text(encoding="utf-8"))["train"]
    ratings = planted_ratings()
    _, val = carve_validation(len(ratings), train_params["validation_size"], train_params["seed"])
    held_out = ratings.iloc[val]
    saved = load_model(cwd / paths.MODEL)
    predicted = predict_ratings(saved, held_out["user_index"], held_out["movie_index"], 4096)
    rmse = float(np.sqrt(np.mean((predicted - held_out["rating"].to_numpy()) ** 2)))
    assert rmse == pytest.approx(metrics["val_rmse"], abs=1e-5)


def test_a_keras_backend_variable_that_disagrees_with_the_params_is_refused(tmp_path):
    cwd = stage_dir(tmp_path, backend="tensorflow")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KERAS_BACKEND": "jax"}
    done = subprocess.run(
        [sys.executable, "-m", "stages.train"], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "error: KERAS_BACKEND=jax is set but train.backend=tensorflow; unset KERAS_BACKEND "
        "(params.yaml chooses the backend: dvc exp run -S train.backend=jax)"
    )
    assert not (cwd / paths.MODELS_DIR).exists()
