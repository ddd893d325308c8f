"""Lazy Adam (train.optimizer=lazy_adam): the compiled kernel and the Keras optimizer against a
hand-computed numpy LazyAdam, the engines against each other, the refusal of a whole-table L2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import keras
import numba
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import yaml

from movielens.model.baseline import BiasSettings, fit_bias_model
from movielens.model.keras_model import build_model, model_inputs, predict_ratings
from movielens.params import params_schema
from movielens.training.compiled import kernels
from movielens.training.compiled.fit import EPOCHS, AdamTrainer
from movielens.training.fit import fit_model
from movielens.training.optimizers import LazyAdam
from movielens.training.settings import TrainSettings

ROOT = Path(__file__).resolve().parents[1]
LR, BETA_1, BETA_2, EPSILON = 0.05, 0.9, 0.999, 1e-7
LAZY = {"optimizer": "lazy_adam", "embeddings_l2": 0.0}


def lazy_adam_step(w, m, v, rows, g, t):
    """numpy LazyAdam, float64: rows (distinct) with summed gradients g get Adam; others nothing."""
    alpha = LR * np.sqrt(1 - BETA_2**t) / (1 - BETA_1**t)
    m[rows] = BETA_1 * m[rows] + (1 - BETA_1) * g
    v[rows] = BETA_2 * v[rows] + (1 - BETA_2) * g * g
    w[rows] -= alpha * m[rows] / (np.sqrt(v[rows]) + EPSILON)


def summed_by_row(indices, values):
    """The distinct rows of `indices` and, per row, the sum of its occurrences' values."""
    rows, position = np.unique(indices, return_inverse=True)
    g = np.zeros((len(rows), values.shape[1]))
    np.add.at(g, position, values)
    return rows, g


# ---------------------------------------------------------------- the kernel, by hand

DIM, N_USERS, N_MOVIES = 3, 7, 9
LO, SPAN = 0.5, 4.5
ACT_U = np.array([0.02, 0.05, 0.03, 0.0])  # per column; the bias column unregularised
ACT_M = np.array([0.04, 0.01, 0.06, 0.0])


def mf_row_gradients(U, M, users, movies, ratings):
    """The objective's gradient per looked-up row, by hand: MSE plus activity L2 over the batch."""
    count = len(ratings)
    u, m = U[users], M[movies]
    unit = 1 / (1 + np.exp(-(np.sum(u[:, :DIM] * m[:, :DIM], axis=1) + u[:, DIM] + m[:, DIM])))
    d_logit = 2 * SPAN * (LO + SPAN * unit - ratings) * unit * (1 - unit) / count
    gu = np.column_stack([d_logit[:, None] * m[:, :DIM], d_logit]) + 2 * ACT_U * u / count
    gm = np.column_stack([d_logit[:, None] * u[:, :DIM], d_logit]) + 2 * ACT_M * m / count
    return summed_by_row(users, gu), summed_by_row(movies, gm)


# Three batches of 6: users 0..3 and movies 0..4 only, with repeats (rows 4..6 and 5..8 never
# looked up, and movie 4 only in the last batch).
USERS = np.array([0, 0, 1, 2, 0, 1, 3, 3, 3, 1, 0, 2, 2, 0, 1, 1, 3, 0], np.int32)
MOVIES = np.array([1, 2, 1, 1, 0, 3, 2, 2, 0, 1, 3, 3, 4, 4, 1, 0, 2, 2], np.int32)
RATINGS = np.array([4, 3.5, 5, 1, 2, 4.5, 3, 3, 0.5, 4, 2.5, 5, 1.5, 4, 3, 2, 5, 1], np.float32)


def start_tables(seed=0):
    rng = np.random.default_rng(seed)
    return tuple(rng.normal(0, 0.5, (n, DIM + 1)).astype(np.float32) for n in (N_USERS, N_MOVIES))


def test_kernel_is_lazy_adam_by_hand_over_several_steps():
    sides = start_tables()
    expected = [s.astype(np.float64) for s in sides]
    moments = [[np.zeros_like(s) for s in expected] for _ in range(2)]
    for step, start in enumerate(range(0, len(RATINGS), 6), start=1):
        part = slice(start, start + 6)
        grads = mf_row_gradients(*expected, USERS[part], MOVIES[part], RATINGS[part])
        for side, (rows, g) in enumerate(grads):
            lazy_adam_step(expected[side], moments[0][side], moments[1][side], rows, g, step)

    momentums, velocities, gradients = kernels.adam_state(sides)
    zero = np.zeros(DIM + 1)
    hyper = kernels.hyperparameters(
        LO, SPAN, ACT_U, ACT_M, zero, zero, LR, BETA_1, BETA_2, EPSILON
    )  # fmt: skip
    _, _, iterations = kernels.lazy_adam_epoch(
        USERS, MOVIES, RATINGS, 6, sides, momentums, velocities, gradients, hyper, 0
    )
    assert iterations == 3
    for side in range(2):
        np.testing.assert_allclose(sides[side], expected[side], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(momentums[side], moments[0][side], rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(velocities[side], moments[1][side], rtol=1e-4, atol=1e-9)
        assert not gradients[side].any()  # the buffers are left zero for the next epoch
    untouched_users, untouched_movies = slice(4, None), slice(5, None)
    start = start_tables()
    np.testing.assert_array_equal(sides[0][untouched_users], start[0][untouched_users])
    np.testing.assert_array_equal(sides[1][untouched_movies], start[1][untouched_movies])
    for state in (momentums, velocities):
        assert not state[0][untouched_users].any() and not state[1][untouched_movies].any()
        assert state[1][4].any()  # movie 4, looked up in the last step only, has moments


def test_kernel_refuses_a_whole_table_term():
    sides = start_tables()
    l2 = np.full(DIM + 1, 1e-4)
    hyper = kernels.hyperparameters(LO, SPAN, ACT_U, ACT_M, l2, l2, LR, BETA_1, BETA_2, EPSILON)
    with pytest.raises(ValueError, match="whole-table L2"):
        kernels.lazy_adam_epoch(
            USERS, MOVIES, RATINGS, 6, sides, *kernels.adam_state(sides), hyper, 0
        )


def test_lazy_epoch_does_not_depend_on_the_number_of_threads():
    rng = np.random.default_rng(4)
    users = rng.integers(0, N_USERS, 500).astype(np.int32)
    movies = rng.integers(0, N_MOVIES, 500).astype(np.int32)
    ratings = rng.choice(np.arange(0.5, 5.01, 0.5), 500).astype(np.float32)
    zero = np.zeros(DIM + 1)
    hyper = kernels.hyperparameters(LO, SPAN, ACT_U, ACT_M, zero, zero, LR, BETA_1, BETA_2, 1e-7)
    results = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(threads)
        sides = start_tables(1)
        try:
            out = kernels.lazy_adam_epoch(
                users, movies, ratings, 64, sides, *kernels.adam_state(sides), hyper, 0
            )
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        results.append((out, sides))
    (out_a, sides_a), (out_b, sides_b) = results
    assert out_a == out_b
    for a, b in zip(sides_a, sides_b, strict=True):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- the Keras optimizer, by hand


def test_keras_lazy_adam_is_lazy_adam_by_hand_on_an_embeddings_gradient():
    rng = np.random.default_rng(2)
    start = rng.normal(0, 0.5, (8, 3)).astype(np.float32)
    layer = keras.layers.Embedding(8, 3)
    layer.build((None,))
    layer.embeddings.assign(start)
    optimizer = LazyAdam(learning_rate=LR, beta_1=BETA_1, beta_2=BETA_2, epsilon=EPSILON)
    optimizer.build([layer.embeddings])
    target = rng.normal(size=(5, 3)).astype(np.float32)
    batches = [[0, 2, 2, 5, 0], [2, 3, 3, 3, 1], [5, 0, 1, 2, 2]]  # rows 4, 6, 7 never looked up
    w, m, v = start.astype(np.float64), np.zeros((8, 3)), np.zeros((8, 3))
    for step, ids in enumerate(batches, start=1):
        ids = np.array(ids, np.int32)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(layer(ids) - target))
        (gradient,) = tape.gradient(loss, [layer.embeddings])
        assert isinstance(gradient, tf.IndexedSlices)  # the real sparse gradient, repeats and all
        optimizer.apply([gradient], [layer.embeddings])
        rows, g = summed_by_row(ids, 2 * (w[ids] - target))
        lazy_adam_step(w, m, v, rows, g, step)
    np.testing.assert_allclose(layer.embeddings.numpy(), w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(optimizer.momentums[0].numpy(), m, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(optimizer.velocities[0].numpy(), v, rtol=1e-4, atol=1e-9)
    never = [4, 6, 7]
    np.testing.assert_array_equal(layer.embeddings.numpy()[never], start[never])
    assert not optimizer.momentums[0].numpy()[never].any()
    assert not optimizer.velocities[0].numpy()[never].any()


def test_keras_lazy_adam_on_a_dense_gradient_is_adam():
    start = np.array([[1.0, -2.0], [0.5, 3.0]], np.float32)
    grads = [np.array([[0.3, -0.1], [0.0, 2.0]], np.float32), np.array([[1.0, 1.0], [-1, 0.5]])]
    variables = [keras.Variable(start), keras.Variable(start)]
    for optimizer, variable in zip(
        (LazyAdam(LR), keras.optimizers.Adam(LR)), variables, strict=True
    ):
        for g in grads:
            optimizer.apply([tf.constant(g, tf.float32)], [variable])
    np.testing.assert_array_equal(variables[0].numpy(), variables[1].numpy())


def test_keras_lazy_adam_refuses_what_acts_on_every_row():
    with pytest.raises(ValueError, match="amsgrad"):
        LazyAdam(amsgrad=True)
    with pytest.raises(ValueError, match="weight_decay"):
        LazyAdam(weight_decay=0.01)


# ---------------------------------------------------------------- the engines against each other


def test_compiled_lazy_trainer_matches_keras_lazy_adam_on_the_models_own_loss():
    """Same start, same batches: AdamTrainer(lazy_adam) and Keras with LazyAdam on the model's
    own loss (MSE + activity L2), its embedding gradients kept sparse, reach the same weights."""
    rng = np.random.default_rng(3)
    n, batch_size = 40, 8
    users = rng.integers(0, 12, n).astype(np.int32)  # of 15 users and 20 movies: some never seen
    movies = rng.integers(0, 14, n).astype(np.int32)
    ratings = rng.choice(np.arange(0.5, 5.01, 0.5), n).astype(np.float32)
    models = []
    for _ in range(2):
        keras.utils.set_random_seed(5)
        models.append(build_model(15, 20, 4, 0.0, 0.05, (0.5, 5.0)))
    ours, reference = models
    initial = ours.get_layer("user_embedding").embeddings.numpy()
    trainer = AdamTrainer(ours, learning_rate=LR, batch_size=batch_size, optimizer="lazy_adam")
    trainer.run_epoch(users, movies, ratings)
    trainer.to_model()
    optimizer = LazyAdam(learning_rate=LR)
    variables = reference.trainable_variables
    for start in range(0, n, batch_size):
        part = slice(start, start + batch_size)
        with tf.GradientTape() as tape:
            predicted = reference(model_inputs(users[part], movies[part]), training=True)[:, 0]
            loss = tf.reduce_mean(tf.square(predicted - ratings[part])) + sum(reference.losses)
        grads = tape.gradient(loss, variables)
        assert all(isinstance(g, tf.IndexedSlices) for g in grads)
        optimizer.apply(grads, variables)
    for got, want in zip(ours.trainable_variables, variables, strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-6)
    never = ours.get_layer("user_embedding").embeddings.numpy()[12:]  # users 12..14: not looked up
    np.testing.assert_array_equal(never, initial[12:])


def test_trainer_refuses_lazy_adam_with_a_whole_table_term():
    model = build_model(3, 3, 2, 1e-4, 0.0, (0.5, 5.0))
    with pytest.raises(ValueError, match="whole-table"):
        AdamTrainer(model, 0.01, 4, optimizer="lazy_adam")
    with pytest.raises(ValueError, match="choose one of adam, lazy_adam"):
        AdamTrainer(model, 0.01, 4, optimizer="sgd")


def test_every_optimizer_the_schema_allows_has_an_epoch():
    assert set(EPOCHS) == set(params_schema()["train"]["optimizer"].choices)


# ---------------------------------------------------------------- the train stage's refusal


def test_train_stage_refuses_lazy_adam_with_embeddings_l2_in_one_line(tmp_path):
    """Through the real CLI, before any work: no data exists in tmp_path, yet the message is
    the optimizer's, not the missing file's."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"]["optimizer"] = "lazy_adam"
    params["train"]["embeddings_l2"] = 0.0001
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    done = subprocess.run(
        [sys.executable, "-m", "stages.train"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: train.optimizer=lazy_adam cannot apply train.embeddings_l2")
    assert "every row" in lines[-1]
    assert not any(line.startswith("error:") for line in lines[:-1])
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "models").exists()


# ---------------------------------------------------------------- learning a planted interaction


def generated_split(n_ratings: int, seed: int):
    """Generated ml-25m-shaped ratings (latent dim 8 interaction) as index frames: train, test."""
    from movielens import synth

    n_users, n_movies = synth.default_counts("ml-25m", n_ratings)
    ratings = synth.generate_ratings(n_ratings, n_users, n_movies, seed)
    frame = pd.DataFrame({
        "user_index": np.unique(ratings["userId"], return_inverse=True)[1].astype(np.int32),
        "movie_index": np.unique(ratings["movieId"], return_inverse=True)[1].astype(np.int32),
        "rating": ratings["rating"].to_numpy(np.float32),
    })  # fmt: skip
    test = np.random.default_rng(seed).random(len(frame)) < 0.1
    sizes = int(frame["user_index"].max()) + 1, int(frame["movie_index"].max()) + 1
    return frame[~test], frame[test], sizes


@pytest.mark.slow
def test_lazy_adam_learns_a_planted_interaction_far_below_the_bias_baseline():
    """300k generated ratings: the lazy optimizer ends well below the user+movie bias baseline
    on held-out ratings (the dense one, with its whole-table L2, is reported beside it)."""
    train, test, (n_users, n_movies) = generated_split(300_000, seed=5)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())["train"]
    params |= {"epochs": 30, "patience": 2, "batch_size": 4096, "embedding_dim": 16}
    baseline = fit_bias_model(train, n_users, n_movies, BiasSettings.from_params(params))
    users, movies = test["user_index"].to_numpy(), test["movie_index"].to_numpy()
    actual = test["rating"].to_numpy()

    def held_out_rmse(predicted: np.ndarray) -> float:
        return float(np.sqrt(np.mean((predicted - actual) ** 2)))

    lazy, _ = fit_model(train, n_users, n_movies, TrainSettings.from_params(params | LAZY))
    dense_settings = TrainSettings.from_params(params | {"optimizer": "adam"})
    dense, _ = fit_model(train, n_users, n_movies, dense_settings)
    scores = {
        name: held_out_rmse(predict_ratings(model, users, movies, 65536))
        for name, model in (("lazy_adam", lazy), ("adam", dense))
    }
    scores["biases"] = held_out_rmse(baseline.predict(users, movies))
    assert scores["lazy_adam"] < scores["biases"] - 0.05, scores
    print(f"test RMSE on 300k generated ratings: {scores}")
