"""The compiled Adam trainer against Keras' own training step, and the train stage's fit loop."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import keras
import numba
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from movielens.model.keras_model import build_model, model_inputs
from movielens.plumbing.errors import PipelineError
from movielens.training.compiled import kernels
from movielens.training.compiled.fit import AdamTrainer, objective_of, warm_up_kernels
from movielens.training.epochs import carve_validation, fitted_ratings
from movielens.training.fit import fit_model
from movielens.training.settings import TrainSettings

N_USERS, N_MOVIES, DIM = 6, 9, 4
SCALE = (0.5, 5.0)


def random_model(embeddings_l2=0.01, activity_l2=0.05, seed=0):
    model = build_model(N_USERS, N_MOVIES, DIM, embeddings_l2, activity_l2, SCALE)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Embedding):
            layer.embeddings.assign(rng.normal(0.0, 0.5, layer.embeddings.shape).astype("float32"))
    return model


def weights(model):
    return [layer.embeddings.numpy() for layer in model.layers if layer.weights]


def batch(n, seed=1):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, N_USERS, n).astype(np.int32)  # repeats: rows get summed gradients
    movies = rng.integers(0, N_MOVIES, n).astype(np.int32)
    ratings = rng.choice(np.arange(0.5, 5.01, 0.5), n).astype(np.float32)
    return users, movies, ratings


def test_objective_is_read_from_the_model():
    o = objective_of(random_model(0.01, 0.05))
    assert (o.lo, o.hi) == pytest.approx(SCALE)
    assert o.embeddings_l2 == pytest.approx((0.01, 0.0, 0.01, 0.0))  # user_emb, user_bias, ...
    assert o.activity_l2 == pytest.approx((0.05, 0.0, 0.05, 0.0))


def keras_adam_steps(model, users, movies, ratings, batch_size, learning_rate):
    """Keras' reference: the model's own loss (MSE + model.losses), Keras' Adam on dense gradients.

    The gradients are made dense on purpose: Keras applies an embedding's IndexedSlices gradient
    row occurrence by row occurrence, so a row looked up twice in one batch gets its squared
    gradient summed per occurrence; Adam is defined on the summed gradient, which is what both
    Keras' dense path and the compiled trainer use.
    """
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
    variables = model.trainable_variables
    for start in range(0, len(ratings), batch_size):
        part = slice(start, start + batch_size)
        with tf.GradientTape() as tape:
            predicted = model(model_inputs(users[part], movies[part]), training=True)[:, 0]
            loss = tf.reduce_mean(tf.square(predicted - ratings[part])) + sum(model.losses)
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)]
        optimizer.apply(grads, variables)


@pytest.mark.parametrize("rows, batch_size", [(8, 8), (5, 8), (16, 8), (13, 8)])
@pytest.mark.parametrize("embeddings_l2, activity_l2", [(0.0, 0.0), (0.01, 0.05)])
def test_steps_match_keras_adam_on_the_models_own_loss(
    rows, batch_size, embeddings_l2, activity_l2
):
    """Same start, same batches: the compiled epoch and Keras reach the same weights.

    (5, 8) is one short batch; (16, 8) runs two steps; (13, 8) ends on a short batch. The batches
    repeat users and movies, so summed row gradients are exercised.
    """
    users, movies, ratings = batch(rows)
    ours = random_model(embeddings_l2, activity_l2)
    reference = random_model(embeddings_l2, activity_l2)
    trainer = AdamTrainer(ours, learning_rate=0.05, batch_size=batch_size)
    trainer.run_epoch(users, movies, ratings)
    trainer.to_model()
    keras_adam_steps(reference, users, movies, ratings, batch_size, learning_rate=0.05)
    for got, want in zip(weights(ours), weights(reference), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_epoch_reports_the_objective_and_the_training_rmse():
    users, movies, ratings = batch(8)
    model = random_model(embeddings_l2=0.0, activity_l2=0.0)
    before = model.predict(model_inputs(users, movies), verbose=0)[:, 0]
    stats = AdamTrainer(model, 1e-9, 8).run_epoch(users, movies, ratings)  # ~no update
    rmse = np.sqrt(np.mean((before - ratings) ** 2))
    assert stats["rmse"] == pytest.approx(rmse, rel=1e-4)
    assert stats["loss"] == pytest.approx(rmse**2, rel=1e-4)  # no L2: the loss is the MSE


def test_rmse_of_the_current_weights_matches_numpy():
    users, movies, ratings = batch(7)
    model = random_model()
    predicted = model.predict(model_inputs(users, movies), verbose=0)[:, 0]
    trainer = AdamTrainer(model, 0.01, 4)
    assert trainer.rmse(users, movies, ratings) == pytest.approx(
        np.sqrt(np.mean((predicted - ratings) ** 2)), rel=1e-5
    )


def training_frame(n=600, seed=3):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 20, n)
    movies = rng.integers(0, 30, n)
    taste = rng.normal(size=20)[users] * rng.normal(size=30)[movies]
    ratings = np.clip(np.round((3 + taste) * 2) / 2, 0.5, 5.0)
    return pd.DataFrame(
        {
            "user_index": users.astype(np.int32),
            "movie_index": movies.astype(np.int32),
            "rating": ratings.astype(np.float32),
        }
    )


SETTINGS = TrainSettings(
    backend="tensorflow",
    engine="compiled",
    shard_tables=False,
    refit=False,
    embedding_dim=4,
    epochs=12,
    batch_size=64,
    learning_rate=0.05,
    optimizer="adam",
    embeddings_l2=1e-4,
    activity_l2=0.01,
    validation_size=0.2,
    patience=2,
    seed=7,
)


def test_fit_is_bit_for_bit_repeatable():
    first, h1 = fit_model(training_frame(), 20, 30, SETTINGS)
    second, h2 = fit_model(training_frame(), 20, 30, SETTINGS)
    for a, b in zip(weights(first), weights(second), strict=True):
        np.testing.assert_array_equal(a, b)
    pd.testing.assert_frame_equal(h1, h2)


def test_weights_do_not_depend_on_the_number_of_threads():
    """Each batch is cut into fixed chunks and Adam into fixed blocks, whatever the thread count."""
    users, movies, ratings = batch(200, seed=4)
    results = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(threads)
        model = random_model()
        try:
            trainer = AdamTrainer(model, 0.05, 64)
            stats = trainer.run_epoch(users, movies, ratings)
            trainer.to_model()
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        results.append((stats, weights(model)))
    (stats_a, weights_a), (stats_b, weights_b) = results
    assert stats_a == stats_b
    for a, b in zip(weights_a, weights_b, strict=True):
        np.testing.assert_array_equal(a, b)


def test_warm_up_compiles_exactly_what_the_trainer_calls():
    """After warm_up_kernels a real epoch needs no new compilation (no second signature)."""
    warm_up_kernels()
    epochs = (kernels.adam_epoch, kernels.lazy_adam_epoch, kernels.squared_error)
    before = {k: len(k.signatures) for k in epochs}
    users, movies, ratings = batch(16)
    for optimizer, l2 in (("adam", 0.01), ("lazy_adam", 0.0)):
        trainer = AdamTrainer(random_model(embeddings_l2=l2), 0.05, 8, optimizer=optimizer)
        trainer.run_epoch(users, movies, ratings)
        trainer.rmse(users, movies, ratings)
    assert {k: len(k.signatures) for k in before} == before


def test_restore_puts_back_a_snapshot():
    users, movies, ratings = batch(16)
    model = random_model()
    trainer = AdamTrainer(model, 0.05, 8)
    saved, before = trainer.snapshot(), weights(model)
    trainer.run_epoch(users, movies, ratings)
    trainer.to_model()
    assert not np.array_equal(weights(model)[0], before[0])
    trainer.restore(saved)
    trainer.to_model()
    for got, want in zip(weights(model), before, strict=True):
        np.testing.assert_array_equal(got, want)


def test_fit_learns_and_keeps_the_best_validation_epoch():
    model, history = fit_model(training_frame(), 20, 30, SETTINGS)
    assert list(history.columns) == ["epoch", "loss", "rmse", "val_rmse"]
    assert history["rmse"].iloc[-1] < history["rmse"].iloc[0]
    best = history["val_rmse"].min()
    frame = training_frame()
    # Rebuild the validation part the way fit_model carves it and score the returned weights.
    _, val = carve_validation(len(frame), SETTINGS.validation_size, SETTINGS.seed)
    v = frame.iloc[val]
    trainer = AdamTrainer(model, 0.01, 8)
    score = trainer.rmse(
        v["user_index"].to_numpy(), v["movie_index"].to_numpy(), v["rating"].to_numpy()
    )
    assert score == pytest.approx(best, rel=1e-5)


def test_early_stopping_stops_patience_epochs_after_the_best_and_keeps_the_best():
    """The run ends exactly `patience` epochs after its best validation epoch, long before the
    limit, and the returned weights score that best epoch's validation RMSE."""
    settings = replace(SETTINGS, epochs=200, learning_rate=0.2, patience=1)
    model, history = fit_model(training_frame(), 20, 30, settings)
    best = int(history["val_rmse"].to_numpy().argmin())
    assert len(history) == best + 1 + settings.patience < 200
    assert list(history["epoch"]) == list(range(1, len(history) + 1))
    frame = training_frame()
    v = frame.iloc[carve_validation(len(frame), SETTINGS.validation_size, SETTINGS.seed)[1]]
    score = AdamTrainer(model, 0.01, 8).rmse(
        v["user_index"].to_numpy(), v["movie_index"].to_numpy(), v["rating"].to_numpy()
    )
    assert score == pytest.approx(history["val_rmse"].iloc[best], rel=1e-5)


def test_no_validation_part_trains_every_epoch():
    settings = replace(SETTINGS, validation_size=0.0, epochs=3)
    _, history = fit_model(training_frame(), 20, 30, settings)
    assert list(history.columns) == ["epoch", "loss", "rmse"]
    assert len(history) == 3


def test_divergence_is_a_clear_error():
    settings = replace(SETTINGS, learning_rate=0.9, embeddings_l2=1e30)
    with pytest.raises(PipelineError, match=r"diverged.*learning_rate"):
        fit_model(training_frame(), 20, 30, settings)


@pytest.mark.parametrize(
    ("n_train", "validation_size", "fitted"),
    [(1000, 0.05, 950), (1000, 0.0, 1000), (999, 0.1, 899)],  # round(99.9) = 100 held out
)
def test_fitted_ratings_leave_out_the_validation_part(n_train, validation_size, fitted):
    assert fitted_ratings(n_train, validation_size) == fitted
    fit_rows, _ = carve_validation(n_train, validation_size, seed=0)
    assert len(fit_rows) == fitted


def test_gather_is_numpy_fancy_indexing():
    users, movies, ratings = batch(50, seed=5)
    order = np.random.default_rng(0).permutation(50)
    out = [np.empty_like(a) for a in (users, movies, ratings)]
    kernels.gather(order, users, movies, ratings, *out)
    for got, source in zip(out, (users, movies, ratings), strict=True):
        np.testing.assert_array_equal(got, source[order])


# One epoch of the kernels on fixed data; prints a digest of the weights and whether the code came
# from Numba's cache.
KERNEL_RUN = """
import hashlib, json
import numpy as np
from movielens.training.compiled import kernels
f = np.float32
rng = np.random.default_rng(0)
dim, n_users, n_movies, n = 12, 40, 70, 3000
sides = tuple(rng.normal(0, 0.1, (rows, dim + 1)).astype(f) for rows in (n_users, n_movies))
state = kernels.adam_state(sides)
act, l2 = np.full(dim + 1, 0.03), np.full(dim + 1, 5e-5)
hyper = kernels.hyperparameters(0.5, 4.5, act, act, l2, l2, 0.01, 0.9, 0.999, 1e-7)
users = rng.integers(0, n_users, n).astype(np.int32)
movies = rng.integers(0, n_movies, n).astype(np.int32)
ratings = rng.choice(np.arange(0.5, 5.01, 0.5), n).astype(f)
loss, sse, _ = kernels.adam_epoch(users, movies, ratings, 256, sides, *state, hyper, 0)
zero = np.zeros(dim + 1)
hyper = kernels.hyperparameters(0.5, 4.5, act, act, zero, zero, 0.01, 0.9, 0.999, 1e-7)
lazy = kernels.lazy_adam_epoch(users, movies, ratings, 256, sides, *state, hyper, 0)
digest = hashlib.sha256(b"".join(s.tobytes() for s in sides)).hexdigest()
hits = [sum(k.stats.cache_hits.values()) for k in (kernels.adam_epoch, kernels.lazy_adam_epoch)]
print(json.dumps({
    "digest": digest, "loss": float(loss), "sse": float(sse), "lazy": [float(x) for x in lazy],
    "cached": min(hits) > 0, "compiled": max(hits) == 0,
}))
"""


@pytest.mark.slow
def test_compiled_and_cached_kernels_compute_the_same_bits(tmp_path):
    """A run that compiles the kernels and a run that loads them from the cache agree exactly
    (the dense epoch, then a lazy one on its result).

    (An earlier version of the kernels did not, in the last bits.)
    """
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    root = Path(__file__).resolve().parents[1]

    def run() -> dict:
        done = subprocess.run(
            [sys.executable, "-c", KERNEL_RUN], cwd=root, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    compiled, cached = run(), run()
    assert (compiled["compiled"], cached["cached"]) == (True, True)
    flags = ("cached", "compiled")
    assert {k: v for k, v in compiled.items() if k not in flags} == {
        k: v for k, v in cached.items() if k not in flags
    }


@pytest.mark.parametrize(("declared", "spans"), [(None, (0.5, 5.0)), ((0.0, 10.0), (0.0, 10.0))])
def test_the_models_output_spans_a_declared_scale_else_the_training_ratings(declared, spans):
    """A custom table's rating_scale (data.custom) reaches the model's Rescaling even where no
    training rating reaches its ends; a release's model spans its training ratings (0.5 to 5)."""
    from movielens.model.layers import rating_scale
    from movielens.training.fit import train_model

    fit = train_model(training_frame(), 20, 30, replace(SETTINGS, epochs=1), rating_scale=declared)
    assert rating_scale(fit.model) == spans
