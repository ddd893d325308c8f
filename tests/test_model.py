"""The model's arithmetic against a row-wise numpy reference, and its save/load round trip."""

import keras
import numpy as np
import pytest

from movielens.model.keras_model import build_model, load_model, model_inputs, predict_ratings

N_USERS, N_MOVIES, DIM = 7, 11, 4
SCALE = (0.5, 5.0)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@pytest.fixture(scope="module")
def model():
    """A tiny model whose tables hold random values (biases too, so every term matters)."""
    model = build_model(N_USERS, N_MOVIES, DIM, 0.0, 0.0, rating_scale=SCALE)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Embedding):
            shape = layer.embeddings.shape
            layer.embeddings.assign(rng.normal(0.0, 0.7, shape).astype(np.float32))
    return model


def tables(model):
    return {layer.name: layer.embeddings.numpy() for layer in model.layers if layer.weights}


def reference(model, users, movies):
    """lo + (hi - lo) * sigmoid(sum(u * m) + b_u + b_m), one row per pair."""
    t = tables(model)
    u, m = t["user_embedding"][users], t["movie_embedding"][movies]
    logit = (u * m).sum(axis=1) + t["user_bias"][users, 0] + t["movie_bias"][movies, 0]
    lo, hi = SCALE
    return lo + (hi - lo) * sigmoid(logit)


def test_each_pair_gets_its_own_dot_product(model):
    # Distinct pairs: a model that contracted the batch axis too (tensordot(u, m, 2)) would give
    # every row the same interaction term and fail here.
    users = np.array([0, 1, 2, 3, 4, 5, 6, 0, 3])
    movies = np.array([10, 9, 8, 7, 6, 5, 4, 3, 0])
    out = model(model_inputs(users, movies)).numpy()
    assert out.shape == (len(users), 1)
    np.testing.assert_allclose(out[:, 0], reference(model, users, movies), rtol=1e-5)


def test_prediction_does_not_depend_on_the_rest_of_the_batch(model):
    alone = model(model_inputs([2], [5])).numpy()[0, 0]
    in_batch = model(model_inputs([0, 2, 6], [1, 5, 9])).numpy()[1, 0]
    assert alone == pytest.approx(in_batch, rel=1e-6)


def test_output_stays_on_the_rating_scale():
    model = build_model(3, 3, 2, 0.0, 0.0, rating_scale=(1.0, 5.0))
    for layer in model.layers:
        if isinstance(layer, keras.layers.Embedding):
            layer.embeddings.assign(
                np.full(layer.embeddings.shape, 30.0 * (1 if "user" in layer.name else -1))
            )
    out = predict_ratings(model, np.array([0, 1, 2]), np.array([2, 1, 0]), batch_size=2)
    assert out.dtype == np.float32
    assert np.all(out >= 1.0) and np.all(out <= 5.0)
    np.testing.assert_allclose(
        out, 1.0, atol=1e-4
    )  # a huge negative logit saturates at the low end


def test_l2_terms_cover_the_whole_tables_and_the_looked_up_embedding_rows():
    model = build_model(N_USERS, N_MOVIES, DIM, 0.25, 0.5, rating_scale=SCALE)
    users, movies = np.array([1, 2]), np.array([3, 4])
    model(model_inputs(users, movies))
    t = tables(model)
    whole = 0.25 * ((t["user_embedding"] ** 2).sum() + (t["movie_embedding"] ** 2).sum())
    rows = 0.5 * (
        (t["user_embedding"][users] ** 2).sum() / len(users)
        + (t["movie_embedding"][movies] ** 2).sum() / len(movies)
    )
    # Biases carry no penalty.
    assert float(sum(model.losses)) == pytest.approx(whole + rows, rel=1e-5)


def test_saved_model_loads_in_safe_mode_with_the_same_predictions(model, tmp_path):
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = load_model(path)
    users, movies = np.arange(N_USERS), np.arange(N_USERS)
    np.testing.assert_array_equal(
        predict_ratings(loaded, users, movies, 4), predict_ratings(model, users, movies, 4)
    )


class Refuses:
    """A model that fails if it is asked for anything."""

    def predict(self, *args, **kwargs):
        raise AssertionError("the model was run on no pairs")


def test_predict_ratings_of_no_pairs_asks_the_model_nothing_and_joins_as_float32(model):
    """Every pair of a request may be cold: then the model is not run (Keras' predict fails on
    no rows), and the empty float32 answer joins the other pairs' predictions unchanged."""
    empty = predict_ratings(Refuses(), np.array([], int), np.array([], int), 8)
    pairs = predict_ratings(model, np.array([0, 3]), np.array([2, 5]), 8)
    joined = np.concatenate([empty, pairs])
    assert joined.dtype == np.float32
    np.testing.assert_array_equal(joined, pairs)
