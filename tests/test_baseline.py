"""The saved user+movie bias model: byte-reproducible file, checked loading, the predictions."""

import numpy as np
import pandas as pd
import pytest

from movielens.model.baseline import (
    BiasModel,
    BiasSettings,
    fit_bias_model,
    fit_biases,
    load_bias_model,
    save_bias_model,
)
from movielens.plumbing.errors import PipelineError

SETTINGS = BiasSettings(baseline_reg_users=2.0, baseline_reg_movies=3.0, baseline_iterations=7)


def frame():
    return pd.DataFrame(
        {
            "user_index": np.array([0, 0, 1, 2, 2, 2], np.int32),
            "movie_index": np.array([0, 1, 1, 0, 1, 2], np.int32),
            "rating": np.array([4.0, 3.0, 5.0, 2.0, 1.5, 4.5], np.float32),
        }
    )


def test_fit_bias_model_uses_its_settings():
    model = fit_bias_model(frame(), 3, 3, SETTINGS)
    f = frame()
    mu, b_u, b_m = fit_biases(
        f["user_index"].to_numpy(), f["movie_index"].to_numpy(), f["rating"].to_numpy(),
        3, 3, 2.0, 3.0, 7,
    )  # fmt: skip
    assert model.mu == pytest.approx(mu)
    np.testing.assert_array_equal(model.user_bias, b_u)
    np.testing.assert_array_equal(model.movie_bias, b_m)


def test_the_settings_are_read_from_the_train_section_by_key():
    section = {"baseline_reg_users": 2.0, "baseline_reg_movies": 3.0, "baseline_iterations": 7}
    assert BiasSettings.from_params({**section, "epochs": 60, "seed": 42}) == SETTINGS


def test_predict_drops_the_cold_side():
    model = BiasModel(3.0, np.array([0.5, -0.5]), np.array([1.0, 0.25]))
    got = model.predict(np.array([0, -1, 1, -1]), np.array([1, 0, -1, -1]))
    np.testing.assert_allclose(got, [3.75, 4.0, 2.5, 3.0])


def test_saved_model_round_trips_and_the_file_is_byte_reproducible(tmp_path):
    model = fit_bias_model(frame(), 3, 3, SETTINGS)
    first, second = tmp_path / "a.npz", tmp_path / "b.npz"
    save_bias_model(model, first)
    save_bias_model(model, second)
    assert first.read_bytes() == second.read_bytes()
    loaded = load_bias_model(first, 3, 3)
    assert loaded.mu == model.mu
    np.testing.assert_array_equal(loaded.user_bias, model.user_bias)
    np.testing.assert_array_equal(loaded.movie_bias, model.movie_bias)


def test_a_bias_model_of_other_data_is_refused(tmp_path):
    path = tmp_path / "baseline.npz"
    save_bias_model(fit_bias_model(frame(), 3, 3, SETTINGS), path)
    with pytest.raises(PipelineError, match="has 3 users and 3 movies but data/processed has 4"):
        load_bias_model(path, 4, 3)


def test_an_unreadable_bias_model_is_refused(tmp_path):
    path = tmp_path / "baseline.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(PipelineError, match=r"cannot be read .*dvc repro train"):
        load_bias_model(path, 3, 3)
