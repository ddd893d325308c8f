"""The NumPy prediction formula (movielens.ranking.formula) against the Keras model it mirrors."""

import keras
import numpy as np
import pytest

from movielens.model.keras_model import build_model, model_inputs
from movielens.model.layers import MOVIE_BIAS, MOVIE_EMBEDDING, USER_BIAS, USER_EMBEDDING
from movielens.ranking.formula import predict_logits, rating_of_logit

SCALE = (0.5, 5.0)


@pytest.fixture(scope="module")
def model():
    """The standard model with random tables (biases too), so every term of the formula counts."""
    keras.utils.set_random_seed(4)
    built = build_model(7, 11, 5, 0.0, 0.0, SCALE)
    rng = np.random.default_rng(4)
    for name in (USER_EMBEDDING, MOVIE_EMBEDDING, USER_BIAS, MOVIE_BIAS):
        table = built.get_layer(name).embeddings
        table.assign(rng.normal(0, 0.7, table.shape).astype(np.float32))
    return built


def tables(model):
    return [model.get_layer(n).embeddings.numpy() for n in (USER_EMBEDDING, MOVIE_EMBEDDING)], [
        model.get_layer(n).embeddings.numpy()[:, 0] for n in (USER_BIAS, MOVIE_BIAS)
    ]


def block_and_pairs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A block of users (one twice) and its (user, movie) pairs, user-major."""
    block = np.array([0, 3, 6, 3])
    return block, np.repeat(block, 11), np.tile(np.arange(11), len(block))


def test_every_movie_for_a_block_of_users_is_the_models_own_prediction(model):
    (users_t, movies_t), (user_bias, movie_bias) = tables(model)
    block, pairs_user, pairs_movie = block_and_pairs()
    logits = predict_logits(users_t[block], user_bias[block], movies_t, movie_bias)
    got = rating_of_logit(logits, SCALE)
    want = np.asarray(model(model_inputs(pairs_user, pairs_movie))).reshape(len(block), 11)
    assert logits.shape == (4, 11) and logits.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)


def test_the_ranking_score_is_the_models_logit(model):
    """Lists are ranked by the logit (movielens.ranking.scorers.Factors): the Keras model's own."""
    (users_t, movies_t), (user_bias, movie_bias) = tables(model)
    block, pairs_user, pairs_movie = block_and_pairs()
    got = predict_logits(users_t[block], user_bias[block], movies_t, movie_bias)
    logit_layer = keras.Model(model.input, model.get_layer("logit").output)
    want = np.asarray(logit_layer(model_inputs(pairs_user, pairs_movie))).reshape(len(block), 11)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_the_rescaled_sigmoid_spans_the_rating_scale_without_overflow():
    with np.errstate(over="raise"):
        got = rating_of_logit(np.array([-1000.0, 0.0, 1000.0]), SCALE)
    np.testing.assert_allclose(got, [0.5, 2.75, 5.0])
