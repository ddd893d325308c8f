"""The two training engines: Keras trains any model, the compiled one only the model it implements.

Both start from the same weights and read the same batches, so they must agree epoch by epoch; the
compiled one refuses, in one line, a model it does not implement, and is checked against Keras'
own predictions after every fit.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import yaml

from movielens.model import saving
from movielens.model.keras_model import build_model, model_inputs
from movielens.model.layers import (
    MOVIE_BIAS,
    MOVIE_EMBEDDING,
    MOVIE_INPUT,
    RATING,
    USER_BIAS,
    USER_EMBEDDING,
    USER_INPUT,
)
from movielens.plumbing import paths
from movielens.plumbing.errors import PipelineError
from movielens.training import engines
from movielens.training import fit as train
from movielens.training.compiled import fit as compiled_fit
from movielens.training.epochs import carve_validation, epoch_orders, training_data
from movielens.training.keras_fit import EpochBatches, fit_keras
from movielens.training.settings import TrainSettings
from stages import train as train_stage

ROOT = Path(__file__).resolve().parents[1]
N_USERS, N_MOVIES = 200, 300  # > 128 rows a table: several rows share each of the 64 Adam blocks
PARAMS = {
    "backend": "tensorflow",
    "engine": "auto",
    "shard_tables": False,
    "refit": False,
    "optimizer": "adam",
    "embedding_dim": 8,
    "epochs": 4,
    "batch_size": 256,  # most rows are untouched by a batch: the kernels' untouched-run path runs
    "learning_rate": 0.01,
    "embeddings_l2": 5e-5,
    "activity_l2": 0.03,
    "validation_size": 0.1,
    "patience": 10,
    "baseline_reg_users": 15.0,
    "baseline_reg_movies": 10.0,
    "baseline_iterations": 10,
    "seed": 3,
}


def planted_ratings(n: int = 8000, seed: int = 0) -> pd.DataFrame:
    """Ratings 3.5 + b_u + b_m + p_u . q_m + noise on the half-star grid (latent dimension 3)."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, N_USERS, n)
    movies = rng.integers(0, N_MOVIES, n)
    p, q = rng.normal(0, 0.6, (N_USERS, 3)), rng.normal(0, 0.6, (N_MOVIES, 3))
    raw = 3.5 + rng.normal(0, 0.3, N_USERS)[users] + rng.normal(0, 0.4, N_MOVIES)[movies]
    raw += (p[users] * q[movies]).sum(axis=1) + rng.normal(0, 0.4, n)
    return pd.DataFrame(
        {
            "user_index": users.astype(np.int32),
            "movie_index": movies.astype(np.int32),
            "rating": np.clip(np.round(raw * 2) / 2, 0.5, 5.0).astype(np.float32),
        }
    )


@pytest.fixture(scope="module")
def ratings() -> pd.DataFrame:
    return planted_ratings()


def settings_with(**changes) -> TrainSettings:
    """The train settings of PARAMS with some keys changed."""
    return TrainSettings.from_params({**PARAMS, **changes})


def fit_with(ratings, build=build_model, **changes) -> train.Fit:
    return train.train_model(ratings, N_USERS, N_MOVIES, settings_with(**changes), build=build)


def weights(model) -> list[np.ndarray]:
    return [np.asarray(w) for w in model.get_weights()]


def variant(kind: str):
    """A builder like movielens.model.keras_model.build_model for an edited model (`kind` says what is edited)."""

    def build(n_users, n_movies, dim, embeddings_l2, activity_l2, rating_scale):
        lo, hi = rating_scale
        user = keras.Input(shape=(), dtype="int32", name=USER_INPUT)
        movie = keras.Input(shape=(), dtype="int32", name=MOVIE_INPUT)
        init = keras.initializers.RandomNormal(stddev=0.05)
        u = keras.layers.Embedding(n_users, dim, embeddings_initializer=init, name=USER_EMBEDDING)(
            user
        )
        m = keras.layers.Embedding(
            n_movies, dim, embeddings_initializer=init, name=MOVIE_EMBEDDING
        )(movie)
        if kind == "dropout":
            u = keras.layers.Dropout(0.1, name="dropout")(u)
        dot = keras.layers.Dot(axes=1, normalize=kind == "cosine", name="dot")([u, m])
        if kind == "dense":
            dot = keras.layers.Dense(1, name="dense")(dot)
        terms = [dot]
        if kind != "no_biases":
            terms.append(keras.layers.Embedding(n_users, 1, "zeros", name=USER_BIAS)(user))
            terms.append(keras.layers.Embedding(n_movies, 1, "zeros", name=MOVIE_BIAS)(movie))
        logit = keras.layers.Add(name="logit")(terms) if len(terms) > 1 else dot
        activation = "tanh" if kind == "tanh" else "sigmoid"
        unit = keras.layers.Activation(activation, name="squash")(logit)
        rating = keras.layers.Rescaling(scale=hi - lo, offset=lo, name=RATING)(unit)
        return keras.Model({USER_INPUT: user, MOVIE_INPUT: movie}, rating)

    return build


@pytest.mark.parametrize(
    "optimizer", [{"optimizer": "adam"}, {"optimizer": "lazy_adam", "embeddings_l2": 0.0}]
)
def test_the_engines_agree_at_every_epoch(ratings, optimizer):
    """Same initial weights, same batches: validation RMSEs within 1e-3 at each of 4 epochs,
    with the dense and with the lazy Adam update."""
    compiled = fit_with(ratings, engine="compiled", **optimizer)
    keras_fit = fit_with(ratings, engine="keras", **optimizer)
    assert (compiled.engine, keras_fit.engine) == ("compiled", "keras")
    assert len(compiled.history) == len(keras_fit.history) == PARAMS["epochs"]
    np.testing.assert_allclose(
        keras_fit.history["val_rmse"], compiled.history["val_rmse"], rtol=0, atol=1e-3
    )
    np.testing.assert_allclose(keras_fit.history["rmse"], compiled.history["rmse"], atol=1e-3)
    assert compiled.history["val_rmse"].iloc[-1] < compiled.history["val_rmse"].iloc[0]


def test_the_keras_engine_gives_the_same_weights_run_after_run(ratings):
    first = fit_with(ratings, engine="keras", epochs=2)
    second = fit_with(ratings, engine="keras", epochs=2)
    for a, b in zip(weights(first.model), weights(second.model), strict=True):
        np.testing.assert_array_equal(a, b)
    pd.testing.assert_frame_equal(first.history, second.history)


def test_the_saved_keras_model_holds_no_optimizer(ratings, tmp_path):
    fitted = fit_with(ratings, engine="keras", epochs=1).model
    assert getattr(fitted, "optimizer", None) is None
    saving.save_model(fitted, tmp_path / "model.keras")  # as the train stage saves it


@pytest.mark.parametrize("engine", ["keras", "auto"])
def test_an_edited_model_trains_under_keras_and_auto(ratings, engine):
    build = variant("dense")
    fitted = fit_with(ratings, build=build, engine=engine, epochs=6)
    assert fitted.engine == "keras"
    assert "dense" in [layer.name for layer in fitted.model.layers]
    val = ratings.iloc[carve_validation(len(ratings), 0.1, PARAMS["seed"])[1]]
    untrained = fit_with(ratings, build=build, engine="keras", epochs=1, learning_rate=1e-12)

    def val_rmse(model) -> float:
        inputs = model_inputs(val["user_index"], val["movie_index"])
        predicted = model.predict(inputs, verbose=0)[:, 0]
        return float(np.sqrt(np.mean((predicted - val["rating"].to_numpy()) ** 2)))

    assert val_rmse(fitted.model) < val_rmse(untrained.model) - 0.05
    assert val_rmse(fitted.model) == pytest.approx(fitted.history["val_rmse"].min(), abs=1e-4)


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        ("dense", "layer 'dense' (Dense) is not part of it"),
        ("dropout", "layer 'dropout' (Dropout) is not part of it"),
        ("cosine", "the Dot 'dot' normalises its inputs (cosine similarity)"),
        ("tanh", "activation 'squash' is 'tanh', not sigmoid"),
        ("no_biases", "it has no layer named 'user_bias'"),
    ],
)
def test_the_compiled_engine_refuses_what_it_does_not_implement(ratings, kind, problem):
    with pytest.raises(PipelineError) as err:
        fit_with(ratings, build=variant(kind), engine="compiled")
    assert str(err.value) == (
        f"train.engine=compiled cannot train this model: {problem}; train.engine=keras trains it"
    )


def test_auto_names_the_reason_it_picks_keras(ratings):
    fitted = fit_with(ratings, build=variant("tanh"), engine="auto", epochs=1)
    assert fitted.engine == "keras"
    assert fitted.reason.endswith("activation 'squash' is 'tanh', not sigmoid")


@pytest.mark.parametrize(
    ("requested", "backend", "n_gpus", "engine", "reason"),
    [
        (
            "auto",
            "tensorflow",
            0,
            "compiled",
            "the standard architecture and no GPU or TPU visible",
        ),
        ("auto", "jax", 0, "compiled", "the standard architecture and no GPU or TPU visible"),
        ("auto", "tensorflow", 1, "keras", "tensorflow sees 1 GPU/TPU device(s)"),
        ("auto", "jax", 2, "xla", "jax sees 2 GPU/TPU device(s)"),
        ("keras", "jax", 0, "keras", "train.engine=keras"),
        ("xla", "jax", 0, "xla", "train.engine=xla"),
    ],
)
def test_auto_takes_the_compiled_engine_only_without_an_accelerator(
    requested, backend, n_gpus, engine, reason
):
    model = build_model(3, 4, 2, 0.0, 0.0, (0.5, 5.0))
    assert engines.choose_engine(requested, model, backend, n_gpus) == (engine, reason)


@pytest.mark.parametrize(("backend", "engine"), [("tensorflow", "keras"), ("jax", "xla")])
def test_auto_trains_an_edited_model_with_the_backends_engine_for_any_model(backend, engine):
    model = variant("dense")(3, 4, 2, 0.0, 0.0, (0.5, 5.0))
    assert engines.choose_engine("auto", model, backend, 0)[0] == engine


def test_the_xla_engine_is_refused_off_jax_in_one_line():
    model = build_model(3, 4, 2, 0.0, 0.0, (0.5, 5.0))
    with pytest.raises(PipelineError, match=r"^train.engine=xla runs on JAX, not tensorflow; set"):
        engines.choose_engine("xla", model, "tensorflow", 0)


def test_a_corrupted_write_back_is_caught_before_anything_is_saved(ratings, monkeypatch):
    write_back = compiled_fit.AdamTrainer.to_model

    def corrupted(self):
        write_back(self)
        table = self.variables[0]
        table.assign(table.numpy() + np.float32(0.05))

    monkeypatch.setattr(compiled_fit.AdamTrainer, "to_model", corrupted)
    with pytest.raises(PipelineError, match=r"Keras predictions score RMSE .* nothing was saved"):
        fit_with(ratings, engine="compiled", epochs=1)


def test_the_train_stage_writes_nothing_when_the_check_fails(ratings, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = yaml_params(engine="compiled", epochs=1)
    (tmp_path / "params.yaml").write_text(params, encoding="utf-8")
    paths.PROCESSED_DIR.mkdir(parents=True)
    ratings.to_parquet(paths.TRAIN)
    pd.DataFrame({"userId": np.arange(N_USERS, dtype=np.int32)}).to_parquet(paths.USER_IDS)
    pd.DataFrame({"movieId": np.arange(N_MOVIES, dtype=np.int32)}).to_parquet(paths.MOVIE_IDS)
    monkeypatch.setattr(compiled_fit.AdamTrainer, "to_model", lambda self: None)  # writes nothing
    with pytest.raises(PipelineError, match="nothing was saved"):
        train_stage.main()
    assert not paths.MODELS_DIR.exists() and not paths.METRICS_DIR.exists()


def yaml_params(**train_changes) -> str:
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["train"].update(train_changes)
    return yaml.safe_dump(params, sort_keys=False)


def test_the_refit_trains_on_every_row_for_the_chosen_epochs(ratings):
    selected = fit_with(ratings, engine="compiled", epochs=6, patience=1, learning_rate=0.05)
    refitted = fit_with(
        ratings, engine="compiled", epochs=6, patience=1, learning_rate=0.05, refit=True
    )
    pd.testing.assert_frame_equal(selected.history, refitted.history)
    assert (selected.refit, refitted.refit) == (False, True)
    assert (selected.fitted_ratings, refitted.fitted_ratings) == (len(ratings) - 800, len(ratings))
    assert refitted.best_epoch == selected.best_epoch
    summary = train.summarize_fit(refitted)
    assert (summary["refit"], summary["fitted_ratings"], summary["best_epoch"]) == (
        True,
        len(ratings),
        selected.best_epoch,
    )
    # The saved weights are those of a fresh model fitted on every row for best_epoch epochs.
    settings = settings_with(epochs=6, patience=1, learning_rate=0.05)
    keras.utils.set_random_seed(settings.seed)
    fresh = build_model(N_USERS, N_MOVIES, 8, 5e-5, 0.03, (0.5, 5.0))
    every = whole_data(ratings, settings)
    fit_settings = settings.fitting().for_epochs(refitted.best_epoch)
    compiled_fit.fit_compiled(fresh, every, fit_settings, every.fit_rows[:10])
    for a, b in zip(weights(refitted.model), weights(fresh), strict=True):
        np.testing.assert_array_equal(a, b)


def whole_data(ratings, settings: TrainSettings):
    """The training data with every row fitted, as the refit sees it."""
    return training_data(
        ratings["user_index"].to_numpy(),
        ratings["movie_index"].to_numpy(),
        ratings["rating"].to_numpy(),
        settings.validation_size,
        settings.seed,
    ).whole()


# Two logical CPU devices stand in for two GPUs, as Keras' own distribution tests do.
MIRRORED = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, "tests")
from test_engines import N_USERS, N_MOVIES, planted_ratings, settings_with
from movielens.training import fit as train
ratings = planted_ratings()
p = settings_with(engine="keras", epochs=3)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
mirrored = train.train_model(ratings, N_USERS, N_MOVIES, p, distribution=strategy)
single = train.train_model(ratings, N_USERS, N_MOVIES, p)
print(json.dumps({
    "replicas": strategy.num_replicas_in_sync,
    "mirrored": mirrored.history["val_rmse"].tolist(),
    "single": single.history["val_rmse"].tolist(),
}))
"""


@pytest.mark.slow
def test_mirrored_strategy_on_two_devices_matches_one_device():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LOGLEVEL": "WARNING"}
    done = subprocess.run(
        [sys.executable, "-c", MIRRORED], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert len(result["mirrored"]) == len(result["single"]) == 3
    np.testing.assert_allclose(result["mirrored"][-1], result["single"][-1], atol=0.005)


def test_the_keras_refit_equals_a_fresh_model_fitted_on_every_row(ratings):
    """The refit fits the selection run's compiled model again after `restart`: its weights must
    be those of a new model, new optimizer, fitted on every row for the chosen epochs."""
    changes = {"engine": "keras", "epochs": 5, "patience": 1, "learning_rate": 0.05}
    refitted = fit_with(ratings, refit=True, **changes)
    settings = settings_with(**changes)
    data = whole_data(ratings, settings)
    keras.utils.set_random_seed(settings.seed)
    fresh = build_model(N_USERS, N_MOVIES, 8, 5e-5, 0.03, (0.5, 5.0))
    fit_keras(fresh, data, settings.fitting().for_epochs(refitted.best_epoch))
    for a, b in zip(weights(refitted.model), weights(fresh), strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_keras_engine_traces_its_train_step_once_selection_and_refit_together(
    ratings, monkeypatch
):
    """A trace costs about half a second: the optimizer's slots are made before the first step
    (else TensorFlow traces a variable-creating step twice) and the refit reuses the trace."""
    traces = []
    train_step = keras.Model.train_step

    def counted(self, data):
        traces.append(1)  # Python runs only while TensorFlow traces the step
        return train_step(self, data)

    monkeypatch.setattr(keras.Model, "train_step", counted)
    fit = fit_with(ratings, engine="keras", refit=True, epochs=3, patience=1)
    assert fit.refit and len(fit.history) >= 2
    assert len(traces) == 1


def test_the_refitted_models_of_both_engines_agree(ratings):
    changes = {"epochs": 4, "patience": 1, "refit": True}
    compiled = fit_with(ratings, engine="compiled", **changes)
    keras_fit = fit_with(ratings, engine="keras", **changes)
    assert compiled.best_epoch == keras_fit.best_epoch
    inputs = model_inputs(ratings["user_index"], ratings["movie_index"])
    rmse = [
        float(np.sqrt(np.mean((np.asarray(fit.model(inputs)).ravel() - ratings["rating"]) ** 2)))
        for fit in (compiled, keras_fit)
    ]
    assert abs(rmse[0] - rmse[1]) < 1e-3


def test_an_extra_iterator_does_not_shift_the_epoch_orders(ratings):
    """Keras may open an iterator before the first epoch (to build a model under a strategy):
    the order set for the epoch, not the number of iterators opened, picks the batches."""
    data = training_data(
        ratings["user_index"].to_numpy(),
        ratings["movie_index"].to_numpy(),
        ratings["rating"].to_numpy(),
        0.1,
        3,
    )
    orders = epoch_orders(data.fit_rows, 7)
    epoch_1, epoch_2 = next(orders), next(orders)
    batches = EpochBatches(data, 256)
    dataset = batches.dataset()
    batches.order = epoch_1
    peeked = next(dataset.as_numpy_iterator())
    first = list(dataset.as_numpy_iterator())
    batches.order = epoch_2
    second = list(dataset.as_numpy_iterator())
    for got, order in ((first, epoch_1), (second, epoch_2)):
        assert len(got) == batches.steps == -(-len(data.fit_rows) // 256)
        assert [len(r) for _, r in got] == [256] * (batches.steps - 1) + [
            len(order) - 256 * (batches.steps - 1)
        ]
        np.testing.assert_array_equal(
            np.concatenate([x[USER_INPUT] for x, _ in got]), data.users[order]
        )
        np.testing.assert_array_equal(
            np.concatenate([x[MOVIE_INPUT] for x, _ in got]), data.movies[order]
        )
        np.testing.assert_array_equal(np.concatenate([r for _, r in got]), data.ratings[order])
    np.testing.assert_array_equal(peeked[0][USER_INPUT], first[0][0][USER_INPUT])


def test_an_epoch_of_whole_batches_ends_without_an_empty_batch(ratings):
    data = training_data(
        ratings["user_index"].to_numpy(),
        ratings["movie_index"].to_numpy(),
        ratings["rating"].to_numpy(),
        0.0,
        3,
    )
    size = next(b for b in range(200, 2, -1) if len(data.fit_rows) % b == 0)
    batches = EpochBatches(data, size)
    batches.order = next(epoch_orders(data.fit_rows, 7))
    got = list(batches.dataset().as_numpy_iterator())
    assert [len(r) for _, r in got] == [size] * (len(data.fit_rows) // size)
    np.testing.assert_array_equal(np.concatenate([r for _, r in got]), data.ratings[batches.order])
