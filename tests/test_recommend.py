"""Tests for movielens.serve.answers (and the evaluate stage's scorer) on tiny saved models and hand-made files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import yaml

from movielens.data.releases import get_dataset
from movielens.evaluation import topn
from movielens.evaluation.ranking_metrics import ranking_metrics
from movielens.model.baseline import BiasModel, save_bias_model
from movielens.model.keras_model import build_model, model_inputs
from movielens.model.layers import MOVIE_INPUT, USER_INPUT
from movielens.model.watch import WatchModel, save_watch
from movielens.plumbing import paths
from movielens.plumbing.errors import PipelineError
from movielens.ranking.lists import top_n
from movielens.ranking.scorers import Factors, PairScorer, factors_from_model, scorer_of
from movielens.serve.answers import recommend
from movielens.serve.command import main
from movielens.serve.load import FILTERED, IN_TEST, load_scorer
from movielens.training.epochs import carve_validation
from stages import evaluate as evaluate_stage

ROOT = Path(__file__).resolve().parents[1]
DATASET = get_dataset("ml-latest-small")
USER_IDS = [10, 20, 30, 40]  # user index i has id USER_IDS[i]
MOVIE_IDS = [100, 200, 300, 400, 500, 600]
TRAIN = [(10, 100), (10, 300), (20, 200), *((30, m) for m in MOVIE_IDS[:5]), (40, 400)]
# User 50 has ratings only in the test split; movie 700 is unseen in training.
TEST = [(10, 200), (50, 100), (20, 700)]
FILTERED_OUT = 60  # in the raw ratings only, as if preprocess.top_users had dropped it
FILTERED_MOVIE = 800  # rated by FILTERED_OUT only
RAW_ONLY = [(FILTERED_OUT, 100), (FILTERED_OUT, FILTERED_MOVIE)]
# The saved bias model: an average user's rating is 3 + movie bias, so the cold list is
# 200 (3.5), 600 (3.4), 400 (3.3), 100 (3.1), 500 (3.0), 300 (2.8); user 20's bias is 0.2.
BIASES = BiasModel(3.0, np.array([0.0, 0.2, 0.0, 0.0]), np.array([0.1, 0.5, -0.2, 0.3, 0.0, 0.4]))


def randomised(model: keras.Model, seed: int = 3) -> keras.Model:
    """The model with every weight drawn at random (so no two movies score alike)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        layer.set_weights(
            [rng.normal(size=w.shape).astype(np.float32) for w in layer.get_weights()]
        )
    return model


def build_tiny_model() -> keras.Model:
    return randomised(build_model(len(USER_IDS), len(MOVIE_IDS), 3, 0.0, 0.0, (0.5, 5.0)))


def build_edited_model() -> keras.Model:
    """The standard model with a Dense layer on the dot product: the NumPy formula does not hold."""
    model = build_tiny_model()
    dot = model.get_layer("dot").output
    dense = keras.layers.Dense(1, name="dense")
    layers = {name: model.get_layer(name).output for name in ("user_bias", "movie_bias")}
    logit = keras.layers.Add(name="logit")([dense(dot), layers["user_bias"], layers["movie_bias"]])
    unit = keras.layers.Activation("sigmoid", name="sigmoid")(logit)
    rating = keras.layers.Rescaling(scale=4.5, offset=0.5, name="rating")(unit)
    edited = keras.Model(model.input, rating, name="edited")
    dense.set_weights([np.array([[-2.0]], np.float32), np.array([0.3], np.float32)])  # flips order
    return edited


def split_frame(pairs: list[tuple[int, int]], user_ids=USER_IDS, movie_ids=MOVIE_IDS):
    users, movies = np.array(pairs).T
    user_index = np.array([user_ids.index(u) if u in user_ids else -1 for u in users])
    movie_index = np.array([movie_ids.index(m) if m in movie_ids else -1 for m in movies])
    return pd.DataFrame(
        {
            "userId": users.astype(np.int32),
            "movieId": movies.astype(np.int32),
            "rating": np.float32(4.0),
            "timestamp": np.int64(0),
            "user_index": user_index.astype(np.int32),
            "movie_index": movie_index.astype(np.int32),
        }
    )


def write_project(
    root: Path, model, user_ids, movie_ids, train, test, raw_only, biases, params=None, frames=None
) -> Path:
    """A project root: params.yaml, raw ratings, data/processed, models/{model.keras,baseline.npz,watch.npz}.

    Args:
        params: params.yaml's content (default: the project's own).
        frames: (train, test, user_ids, movie_ids) already encoded, instead of the pairs.
    """
    if params is None:
        params = yaml.safe_load((ROOT / paths.PARAMS).read_text(encoding="utf-8"))
    params["data"]["dataset"] = DATASET.name
    (root / paths.PARAMS).write_text(yaml.safe_dump(params), encoding="utf-8")
    raw = root / paths.raw_dir(DATASET.name)
    raw.mkdir(parents=True)
    rows = [*train, *test, *raw_only]
    if frames is not None:
        user_ids, movie_ids = frames[2], frames[3]
        rows += list(zip(frames[1]["userId"], frames[1]["movieId"], strict=True))
    all_movies = sorted({m for _, m in rows} | set(movie_ids))
    pd.DataFrame(
        {"userId": [u for u, _ in rows], "movieId": [m for _, m in rows], "rating": 4.0}
    ).assign(timestamp=0).to_csv(raw / DATASET.ratings, index=False)
    titles = [f"Movie {m} ({1990 + i})" for i, m in enumerate(all_movies)]
    movies = pd.DataFrame({"movieId": np.int32(all_movies), "title": titles, "genres": "Drama"})
    movies.to_csv(raw / DATASET.movies, index=False)
    (root / paths.PROCESSED_DIR).mkdir(parents=True)
    if frames is None:
        test_frame = split_frame(test, user_ids, movie_ids)
        test_frame = test_frame.assign(
            cold=(test_frame["user_index"] < 0) | (test_frame["movie_index"] < 0)
        )
        frames = (split_frame(train, user_ids, movie_ids), test_frame, user_ids, movie_ids)
    train_frame, test_frame, user_ids, movie_ids = frames
    train_frame.to_parquet(root / paths.TRAIN, index=False)
    test_frame.to_parquet(root / paths.TEST, index=False)
    test_frame.iloc[:0].to_parquet(root / paths.HISTORY, index=False)  # no held-out users
    pd.DataFrame({"userId": np.int32(user_ids)}).to_parquet(root / paths.USER_IDS, index=False)
    pd.DataFrame({"movieId": np.int32(movie_ids)}).to_parquet(root / paths.MOVIE_IDS, index=False)
    movies.to_parquet(root / paths.MOVIES, index=False)
    (root / paths.MODELS_DIR).mkdir()
    model.save(root / paths.MODEL)
    save_bias_model(biases, root / paths.BASELINE)
    save_watch(flat_watch(len(user_ids), len(movie_ids)), root / paths.WATCH_MODEL)
    (root / paths.TRAIN_METRICS).parent.mkdir(parents=True, exist_ok=True)
    (root / paths.TRAIN_METRICS).write_text(json.dumps({"fitted_ratings": len(train_frame)}))
    return root


def flat_watch(n_users: int, n_movies: int) -> WatchModel:
    """A watch model that expects every movie equally (score 1): lists follow the predicted rating."""
    ones = np.ones((n_users, 1), np.float32), np.ones((n_movies, 1), np.float32)
    return WatchModel("als", np.arange(n_movies), n_users, n_movies, ones[1], ones[0])


@pytest.fixture(scope="module")
def model():
    return build_tiny_model()


@pytest.fixture(scope="module")
def edited_model():
    return build_edited_model()


@pytest.fixture(scope="module")
def project(tmp_path_factory, model) -> Path:
    root = tmp_path_factory.mktemp("project")
    return write_project(root, model, USER_IDS, MOVIE_IDS, TRAIN, TEST, RAW_ONLY, BIASES)


@pytest.fixture
def workdir(project, tmp_path, monkeypatch) -> Path:
    """A private copy of the project as the current directory (tests may delete files)."""
    root = tmp_path / "project"
    shutil.copytree(project, root)
    monkeypatch.chdir(root)
    return root


@pytest.fixture
def edited_workdir(workdir, edited_model) -> Path:
    """The project with the edited model (an extra Dense layer) as models/model.keras."""
    edited_model.save(workdir / paths.MODEL)
    return workdir


def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LOGLEVEL": "ERROR"}
    return subprocess.run(
        [sys.executable, "-m", "movielens.cli", "recommend", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def answer(*args: str, capsys) -> dict:
    main([*args, "--json"])
    return json.loads(capsys.readouterr().out)


def predicted_matrix(model, n_users: int, n_movies: int) -> np.ndarray:
    """float32 (n_users, n_movies): Keras predict over every (user, movie) pair."""
    users, movies = np.divmod(np.arange(n_users * n_movies), n_movies)
    out = model.predict(model_inputs(users, movies), verbose=0)
    return out.reshape(n_users, n_movies)


def test_numpy_scores_equal_model_predict(model):
    factors = factors_from_model(model)
    got = factors.ratings(factors.logits(np.arange(len(USER_IDS))))
    np.testing.assert_allclose(got, predicted_matrix(model, 4, 6), atol=1e-5)


def test_weights_read_with_h5py_equal_the_keras_model(workdir, model):
    factors = load_scorer(paths.MODEL, len(USER_IDS), len(MOVIE_IDS), batch_size=5)
    expected = factors_from_model(model)
    assert isinstance(factors, Factors)
    for name in ("user_vectors", "movie_vectors", "user_bias", "movie_bias"):
        np.testing.assert_array_equal(getattr(factors, name), getattr(expected, name))
    assert factors.rating_scale == expected.rating_scale == (0.5, 5.0)


def test_top_n_skips_seen_and_breaks_ties_by_lower_index():
    scores = np.array([1.0, 2.0, 2.0, 0.0, 2.0])
    np.testing.assert_array_equal(top_n(scores, np.array([1]), 2), [2, 4])
    np.testing.assert_array_equal(top_n(scores, np.array([0, 1, 2]), 5), [4, 3])


@pytest.mark.parametrize("user_index", range(len(USER_IDS)))
def test_recommend_leaves_out_the_seen_movies_and_sorts(model, user_index):
    factors = factors_from_model(model)
    seen = [MOVIE_IDS.index(m) for u, m in TRAIN if u == USER_IDS[user_index]]
    best, scores = recommend(factors, user_index, np.array(seen), len(MOVIE_IDS))
    assert sorted([*best, *seen]) == list(range(len(MOVIE_IDS)))  # every unseen movie, once
    assert np.all(np.diff(scores) <= 0)
    np.testing.assert_array_equal(scores, factors.logits(np.array([user_index]))[0][best])


def test_a_user_with_ratings_in_all_three_parts_is_offered_none_of_them(workdir, capsys):
    # User 10: movie 100 in the validation part (train.validation_size=0.3, seed 3 carve row 0),
    # movie 300 in the part the model fits, movie 200 in the test split.
    fit_rows, val_rows = carve_validation(len(TRAIN), 0.3, 3)
    assert 0 in val_rows and 1 in fit_rows and TRAIN[0] == (10, 100) and TRAIN[1] == (10, 300)
    found = answer("--user", "10", "-n", "6", capsys=capsys)
    assert [r["movieId"] for r in found["recommendations"]] != []
    assert {r["movieId"] for r in found["recommendations"]} == {400, 500, 600}
    assert found["rated"] == 3


def test_json_output_is_an_object_with_the_recommendations(workdir, capsys):
    found = answer("--user", "20", "-n", "3", capsys=capsys)
    keys = {"userId", "personalised", "reason", "ranked_by", "rated", "recommendations"}
    assert set(found) == keys
    assert (found["userId"], found["personalised"], found["reason"]) == (20, True, None)
    assert found["ranked_by"].startswith("will-watch (als) x predicted rating")
    recommendations = found["recommendations"]
    assert len(recommendations) == 3
    fields = {"movieId", "title", "genres", "score", "predicted"}
    assert all(set(r) == fields for r in recommendations)
    assert not {r["movieId"] for r in recommendations} & {200}  # rated in training
    scores = [r["score"] for r in recommendations]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
    # The flat watch model scores every movie 1: the served score is like ** like_weight.
    weight = yaml.safe_load(Path(paths.PARAMS).read_text())["ranking"]["like_weight"]
    predicted = np.array([r["predicted"] for r in recommendations])
    np.testing.assert_allclose(scores, ((predicted - 0.5) / 4.5) ** weight, atol=2e-4)
    first = recommendations[0]["movieId"]
    assert recommendations[0]["title"] == f"Movie {first} ({1990 + MOVIE_IDS.index(first)})"


def test_table_output_is_aligned(workdir, capsys):
    main(["--user", "20", "-n", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(
        "Top 2 movies for user 20 among those it has not rated (2 rated), ranked by will-watch"
    )
    header, *rows = lines[2:]
    assert header.split() == ["#", "movieId", "score", "predicted", "title", "genres"]
    assert len(rows) == 2
    title_column = header.index("title")
    assert all(row[title_column:].startswith("Movie ") for row in rows)


def test_user_with_few_unseen_movies_gets_what_is_left(workdir, capsys):
    found = answer("--user", "30", "-n", "3", capsys=capsys)  # user 30 rated all but movie 600
    assert [r["movieId"] for r in found["recommendations"]] == [600]


@pytest.mark.parametrize(("user", "reason"), [(50, IN_TEST), (FILTERED_OUT, FILTERED)])
def test_a_user_unknown_to_the_model_gets_the_flagged_bias_list(workdir, capsys, user, reason):
    found = answer("--user", str(user), "-n", "9", capsys=capsys)
    assert (found["personalised"], found["reason"]) == (False, reason)
    # Movie 100 is left out: both users rated it (in the test split, in the raw ratings).
    # Watch: training ratings / the most (2): 200, 300, 400 1; 500 0.5; 600 0 (never rated).
    # Like: (mu + b_m - 0.5) / 4.5 with mu + b_m 3.5, 2.8, 3.3, 3.0, 3.4 (BIASES).
    weight = yaml.safe_load(Path(paths.PARAMS).read_text())["ranking"]["like_weight"]
    watch = {200: 1.0, 300: 1.0, 400: 1.0, 500: 0.5, 600: 0.0}
    average = {200: 3.5, 300: 2.8, 400: 3.3, 500: 3.0, 600: 3.4}
    score = {m: watch[m] * ((average[m] - 0.5) / 4.5) ** weight for m in watch}
    assert weight > 0 and score[300] > score[500]  # the formula, not popularity alone, orders them
    order = sorted(score, key=lambda m: (-score[m], m))
    found_rows = found["recommendations"]
    assert [r["movieId"] for r in found_rows] == order == [200, 400, 300, 500, 600]
    np.testing.assert_allclose(
        [r["score"] for r in found_rows], [score[m] for m in order], atol=1e-6
    )
    assert [r["predicted"] for r in found_rows] == [average[m] for m in order]


def test_the_cold_table_says_it_is_not_personalised_and_why(workdir, capsys):
    main(["--user", "50", "-n", "2"])
    first = capsys.readouterr().out.splitlines()[0]
    assert "NOT PERSONALISED: the models do not know this user" in first
    assert f"({IN_TEST})" in first and "mu + b_m" in first


def test_an_absent_user_is_an_error(workdir):
    with pytest.raises(PipelineError, match=r"^unknown user 999: ml-latest-small has no ratings"):
        main(["--user", "999"])


def test_without_raw_data_an_absent_user_is_reported_as_either(workdir):
    shutil.rmtree(workdir / paths.RAW_DIR)
    with pytest.raises(
        PipelineError, match=r"either no such userId exists or preprocess\.top_users"
    ):
        main(["--user", str(FILTERED_OUT)])


def test_unreadable_model_is_reported(workdir):
    (workdir / paths.MODEL).write_bytes(b"not a zip")
    with pytest.raises(PipelineError, match=r"cannot be loaded .*dvc repro"):
        load_scorer(paths.MODEL, len(USER_IDS), len(MOVIE_IDS), batch_size=5)


def test_model_and_data_of_different_runs_are_reported(workdir):
    with pytest.raises(PipelineError, match="has 4 users and 6 movies but data/processed has 5"):
        load_scorer(paths.MODEL, 5, len(MOVIE_IDS), batch_size=5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["-n", "3"],
            "one of the arguments --user --all-users --similar-to --ratings is required (see --help)",
        ),
        (["--user", "x"], "argument --user: invalid int value: 'x' (see --help)"),
        (["--user", "10", "-n", "x"], "argument -n: 'x' is not an integer (see --help)"),
        (
            ["--user", "10", "-n", "-2"],
            "argument -n: must be a positive integer, got -2 (see --help)",
        ),
        (
            ["--similar-to", "100", "-n", "0"],
            "argument -n: must be a positive integer, got 0 (see --help)",
        ),
        (
            ["--user", "10", "--similar-to", "100"],
            "argument --similar-to: not allowed with argument --user (see --help)",
        ),
        (["--user", "10", "--top"], "unrecognized arguments: --top (see --help)"),
    ],
)
def test_bad_arguments_raise_pipeline_errors(workdir, args, message):
    with pytest.raises(PipelineError) as err:
        main(args)
    assert str(err.value) == message


def test_missing_artifact_is_reported_before_loading_anything(workdir):
    (workdir / paths.TRAIN).unlink()
    with pytest.raises(
        PipelineError, match=r"data/processed/train\.parquet not found; run the pipeline"
    ):
        main(["--user", "10"])


# One subprocess per failure mode the brief names: the exit status and the stderr line are the API.
@pytest.mark.parametrize(
    ("args", "remove", "message"),
    [
        (["--user", "999"], None, "error: unknown user 999"),
        (
            ["--user", "10", "-n", "0"],
            None,
            "error: argument -n: must be a positive integer, got 0",
        ),
        (["--user", "10"], paths.MODEL, "error: models/model.keras not found; run the pipeline"),
        (["--user", "50"], paths.BASELINE, "error: models/baseline.npz not found"),
        (["--similar-to", "700"], None, f"error: movie 700 is unknown to the model: {IN_TEST}"),
    ],
)
def test_cli_errors_are_one_line_and_exit_1(workdir, args, remove, message):
    if remove is not None:
        (workdir / remove).unlink()
    result = run_cli(workdir, *args)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(message)
    assert result.stdout == ""


# --- quick start: no TensorFlow for the standard model ---------------------------------------

NO_TENSORFLOW = textwrap.dedent(
    """
    import sys
    from movielens.serve.command import main
    for args in (["--user", "10"], ["--user", "50"], ["--similar-to", "100"], ["--user", "20", "--json"]):
        main(args)
    main(["--all-users", "-n", "2", "--out", "lists.csv"])
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
    print("IMPORTED", heavy)
    """
)


def test_recommend_never_imports_tensorflow_for_the_standard_model(workdir):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LOGLEVEL": "ERROR"}
    result = subprocess.run(
        [sys.executable, "-c", NO_TENSORFLOW],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "IMPORTED []"


# --- similar movies -----------------------------------------------------------------------------

CLUSTER = 10  # movies 1..10 form cluster A, 11..20 cluster B


@pytest.fixture(scope="module")
def cluster_project(tmp_path_factory) -> Path:
    """A model trained (Keras fit) on generated ratings with two planted movie clusters.

    Users 1..20 alternate between two tastes: even users rate cluster A 5 and cluster B 1, odd
    users the opposite. Every movie's mean is 3, so only the embeddings can tell the clusters.
    """
    user_ids, movie_ids = list(range(1, 21)), list(range(1, 2 * CLUSTER + 1))
    pairs = [(u, m) for u in user_ids for m in movie_ids]
    likes = np.array([(u % 2 == 0) == (m <= CLUSTER) for u, m in pairs])
    keras.utils.set_random_seed(0)
    model = build_model(len(user_ids), len(movie_ids), 4, 0.0, 0.0, (1.0, 5.0))
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    users, movies = np.array(pairs).T
    model.fit(
        {USER_INPUT: users - 1, MOVIE_INPUT: movies - 1},
        np.where(likes, 5.0, 1.0),
        batch_size=40, epochs=60, shuffle=True, verbose=0,
    )  # fmt: skip
    root = tmp_path_factory.mktemp("clusters")
    biases = BiasModel(3.0, np.zeros(len(user_ids)), np.zeros(len(movie_ids)))
    test = [(1, 21)]  # movie 21 is only in the test split
    root = write_project(root, model, user_ids, movie_ids, pairs, test, [(99, 22)], biases)
    # Every user rated every movie: watching says nothing, so the watch model scores no movie
    # and similar falls back on the rating model's embeddings.
    n_users, n_movies = len(user_ids), len(movie_ids)
    empty = np.zeros((0, 1), np.float32)
    save_watch(
        WatchModel(
            "als",
            np.zeros(0, np.int64),
            n_users,
            n_movies,
            empty,
            np.ones((n_users, 1), np.float32),
        ),
        root / paths.WATCH_MODEL,
    )
    return root


@pytest.mark.parametrize("movie", [1, 7, 12, 20])
def test_similar_movies_come_from_the_movies_own_cluster(
    cluster_project, monkeypatch, capsys, movie
):
    monkeypatch.chdir(cluster_project)
    found = answer("--similar-to", str(movie), "-n", str(2 * CLUSTER), capsys=capsys)
    assert (found["movieId"], found["title"]) == (movie, f"Movie {movie} ({1990 + movie - 1})")
    similar = found["similar"]
    assert all(set(r) == {"movieId", "title", "genres", "similarity"} for r in similar)
    ids = [r["movieId"] for r in similar]
    assert movie not in ids and len(ids) == 2 * CLUSTER - 1  # every other movie, once
    own = set(range(1, CLUSTER + 1)) if movie <= CLUSTER else set(range(CLUSTER + 1, 21))
    assert set(ids[: CLUSTER - 1]) == own - {movie}  # the own cluster first
    values = [r["similarity"] for r in similar]
    assert values == sorted(values, reverse=True)
    assert values[CLUSTER - 2] > 0.5 > values[CLUSTER - 1]  # a clear gap between the clusters


def test_similar_table_names_the_movie_and_the_similarity(cluster_project, monkeypatch, capsys):
    monkeypatch.chdir(cluster_project)
    main(["--similar-to", "3", "-n", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(
        "2 movies most similar to 3 Movie 3 (1992) (Drama), by cosine similarity of the rating model's"
    )
    assert lines[2].split() == ["#", "movieId", "similarity", "title", "genres"]
    assert len(lines) == 5


@pytest.mark.parametrize(
    ("movie", "message"),
    [
        (21, f"movie 21 is unknown to the model: {IN_TEST}"),
        (22, f"movie 22 is unknown to the model: {FILTERED}"),
        (999, "unknown movie 999: ml-latest-small has no ratings by that movieId"),
    ],
)
def test_a_movie_unknown_to_the_model_is_refused_with_the_reason(
    cluster_project, monkeypatch, movie, message
):
    monkeypatch.chdir(cluster_project)
    with pytest.raises(PipelineError) as err:
        main(["--similar-to", str(movie)])
    assert str(err.value) == message


# --- any other architecture: scored by the model itself ---------------------------------------


def lookup(matrix: np.ndarray) -> PairScorer:
    """A scorer that reads a precomputed (n_users, n_movies) score matrix."""
    return PairScorer(lambda u, m: matrix[u, m], *matrix.shape, (0.5, 5.0))


def train_pairs() -> tuple[np.ndarray, np.ndarray]:
    frame = split_frame(TRAIN)
    return frame["user_index"].to_numpy(), frame["movie_index"].to_numpy()


def test_an_edited_model_is_scored_by_keras_itself(edited_model):
    scorer = scorer_of(edited_model, len(USER_IDS), len(MOVIE_IDS), batch_size=5)
    assert isinstance(scorer, PairScorer)
    expected = predicted_matrix(edited_model, len(USER_IDS), len(MOVIE_IDS))
    np.testing.assert_allclose(scorer.scores(np.array([3, 0])), expected[[3, 0]], rtol=1e-6)
    # The NumPy formula ranks otherwise (it ignores the Dense layer), so the test can fail.
    numpy_scores = factors_from_model(edited_model).logits(np.arange(len(USER_IDS)))
    assert (np.argsort(-numpy_scores, axis=1) != np.argsort(-expected, axis=1)).any()


def test_ranking_metrics_of_an_edited_model_are_those_of_keras_predict(edited_model):
    test = split_frame([*TEST, (40, 100), (40, 600), (20, 300)])
    args = (*train_pairs(), test["user_index"].to_numpy(), test["movie_index"].to_numpy())
    kwargs = dict(test_ratings=test["rating"].to_numpy(), k=2, relevance_threshold=4.0)
    expected = predicted_matrix(edited_model, len(USER_IDS), len(MOVIE_IDS))
    scorer = scorer_of(edited_model, len(USER_IDS), len(MOVIE_IDS), batch_size=7)
    got = ranking_metrics(scorer, *args, **kwargs, block_size=3).summary()
    want = ranking_metrics(lookup(expected), *args, **kwargs, block_size=4).summary()
    assert got == want
    numpy_ranked = ranking_metrics(factors_from_model(edited_model), *args, **kwargs, block_size=4)
    assert numpy_ranked.summary() != want  # the NumPy formula would measure another model


def test_recommendations_of_an_edited_model_are_those_of_keras_predict(
    edited_workdir, edited_model, capsys
):
    row = predicted_matrix(edited_model, len(USER_IDS), len(MOVIE_IDS))[0]  # user 10
    rated = [MOVIE_IDS.index(m) for m in (100, 300, 200)]
    order = [m for m in np.lexsort((np.arange(len(row)), -row)) if m not in rated]
    found = answer("--user", "10", "-n", "3", capsys=capsys)["recommendations"]
    assert [r["movieId"] for r in found] == [MOVIE_IDS[m] for m in order]
    np.testing.assert_allclose([r["predicted"] for r in found], row[order], atol=1e-4)


def test_evaluate_ranks_an_edited_model_with_keras_predict(edited_workdir, edited_model):
    evaluate_stage.main()
    p = yaml.safe_load(Path(paths.PARAMS).read_text())["evaluate"]
    train = pd.read_parquet(paths.TRAIN)
    test = pd.read_parquet(paths.TEST)
    expected = predicted_matrix(edited_model, len(USER_IDS), len(MOVIE_IDS))
    ranking = topn.ranking_table(
        {"model": lookup(expected)}, train, test, p["k"], p["relevance_threshold"], p["block_size"]
    )
    want = topn.ranking_summary(ranking["model"])
    scores = json.loads(Path(paths.SCORES).read_text())
    assert scores["ranking"]["model"] == want


def test_evaluate_predicts_cold_pairs_with_the_saved_bias_model_and_fits_nothing(
    workdir, monkeypatch
):
    def no_fitting(*args, **kwargs):
        raise AssertionError("evaluate fitted a bias model")

    for name in ("fit_biases", "fit_bias_model"):
        monkeypatch.setattr(f"movielens.model.baseline.{name}", no_fitting)
    evaluate_stage.main()
    test = pd.read_parquet(paths.TEST)
    cold = test["cold"].to_numpy()
    assert cold.sum() == 2
    predicted = pd.read_csv(paths.PREDICTIONS)["predicted"].to_numpy()  # every row: 3 pairs
    saved = BIASES.predict(test["user_index"].to_numpy(), test["movie_index"].to_numpy())
    np.testing.assert_allclose(predicted[cold], saved[cold].round(4))
    # (50, 100): unknown user, mu + b_m = 3.1; (20, 700): unknown movie, mu + b_u = 3.2. A bias
    # model fitted on the training split (every rating 4.0) would predict 4.0 for both.
    np.testing.assert_allclose(saved[cold], [3.1, 3.2])


# --- every user's list in one call ---------------------------------------------------------------


@pytest.mark.parametrize("extension", [".csv", ".parquet"])
def test_all_users_writes_one_list_per_user_never_a_rated_movie(workdir, capsys, extension):
    out = workdir / f"lists{extension}"
    main(["--all-users", "-n", "3", "--out", str(out)])
    assert f"to {out}, ranked by will-watch" in capsys.readouterr().out
    lists = pd.read_parquet(out) if extension == ".parquet" else pd.read_csv(out)
    assert list(lists.columns) == ["userId", "movieId", "rank", "score", "title"]
    # Every user of the splits: the four the models know, and user 50 (test split only).
    assert sorted(lists["userId"].unique()) == [10, 20, 30, 40, 50]
    rated = {(u, m) for u, m in TRAIN + TEST}
    assert not rated & set(zip(lists["userId"], lists["movieId"], strict=True))
    for user, rows in lists.groupby("userId"):
        assert list(rows["rank"]) == list(range(1, len(rows) + 1))
        assert list(rows["score"]) == sorted(rows["score"], reverse=True)
        one = answer("--user", str(user), "-n", "3", capsys=capsys)["recommendations"]
        assert list(rows["movieId"]) == [r["movieId"] for r in one]  # the same lists as --user
        assert list(rows["title"]) == [r["title"] for r in one]
        np.testing.assert_allclose(rows["score"], [r["score"] for r in one], atol=1e-5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-n", "0", "--out", "lists.csv"], "argument -n: must be a positive integer, got 0"),
        (["--out", "missing/lists.csv"], "the folder missing does not exist"),
        (["--out", "lists.txt"], "use a .csv or .parquet file name"),
    ],
)
def test_all_users_bad_input_is_one_line_and_writes_nothing(workdir, args, message):
    result = run_cli(workdir, "--all-users", *args)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not list(workdir.rglob("lists*"))


def test_all_users_without_out_is_refused(workdir):
    with pytest.raises(PipelineError, match="--all-users and --out go together"):
        main(["--all-users"])


# --- evaluate scores the served lists it writes ---------------------------------------------------


def hand_metrics(lists: pd.DataFrame, relevant: set[tuple[int, int]], k: int) -> dict[str, float]:
    """precision@k, recall@k and NDCG@k of written lists, in plain Python, over users with a relevant movie."""
    precision, recall, ndcg = [], [], []
    for user, rows in lists.groupby("userId"):
        wanted = {m for u, m in relevant if u == user}
        if not wanted:
            continue
        hits = [m in wanted for m in rows.sort_values("rank")["movieId"]]
        precision.append(sum(hits) / k)
        recall.append(sum(hits) / len(wanted))
        dcg = sum(h / np.log2(r + 2) for r, h in enumerate(hits))
        ndcg.append(dcg / sum(1 / np.log2(r + 2) for r in range(min(k, len(wanted)))))
    return {
        f"precision@{k}": np.mean(precision),
        f"recall@{k}": np.mean(recall),
        f"ndcg@{k}": np.mean(ndcg),
    }


def test_the_written_top_lists_are_the_ones_the_metrics_were_computed_from(tmp_path, monkeypatch):
    from movielens.data.preprocess import encode_splits, split_ratings
    from movielens.model.watch import fit_watch, history_matrix
    from movielens.synth.generate import generate_ratings

    ratings = generate_ratings(3000, 60, 150, seed=1)
    train, test, user_ids, movie_ids = encode_splits(*split_ratings(ratings, 0.2, seed=1))
    params = yaml.safe_load((ROOT / paths.PARAMS).read_text(encoding="utf-8"))
    params["watch"] = {**params["watch"], "min_ratings": 2, "ease_l2": 10.0}
    model = randomised(build_model(len(user_ids), len(movie_ids), 3, 0.0, 0.0, (0.5, 5.0)))
    biases = BiasModel(3.5, np.zeros(len(user_ids)), np.zeros(len(movie_ids)))
    frames = (train, test, user_ids, movie_ids)
    monkeypatch.chdir(write_project(tmp_path, model, [], [], [], [], [], biases, params, frames))
    history = history_matrix(
        train["user_index"], train["movie_index"], len(user_ids), len(movie_ids)
    )
    save_watch(fit_watch(history, **params["watch"]), paths.WATCH_MODEL)
    evaluate_stage.main()
    scores = json.loads(Path(paths.SCORES).read_text())
    lists = pd.read_parquet(paths.TOPN)
    assert list(lists.columns) == ["userId", "movieId", "rank", "score"]
    assert lists.groupby("userId").size().max() == params["evaluate"]["k"]
    assert not set(zip(lists["userId"], lists["movieId"], strict=True)) & set(
        zip(train["userId"], train["movieId"], strict=True)
    )
    threshold = params["evaluate"]["relevance_threshold"]
    liked = test[(test["rating"] >= threshold) & ~test["cold"]]
    relevant = set(zip(liked["userId"], liked["movieId"], strict=True))
    served = scores["ranking"]["served"]
    assert served["users_evaluated"] > 20
    for metric, value in hand_metrics(lists, relevant, params["evaluate"]["k"]).items():
        assert served[metric] == pytest.approx(value, abs=1e-6), metric
        assert scores[metric] == served[metric]  # the top-level figures are the served lists'
