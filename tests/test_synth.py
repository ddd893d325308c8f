"""The synthetic MovieLens generator: each release's layout reads back through movielens.data.releases."""

import dataclasses
import hashlib
import json
import logging
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from movielens import synth
from movielens.data.releases import (
    DATASETS,
    MOVIE_COLUMNS,
    RATING_COLUMNS,
    read_movies,
    read_ratings,
)
from movielens.synth import choices, latent, sampling, shapes, streams
from movielens.synth.generate import RatingsOptions, generate_with_oracle

TINY = {"n_ratings": 300, "n_users": 20, "n_movies": 40}
LATIN1_DATASETS = [name for name, d in DATASETS.items() if d.encoding == "latin-1"]


def tiny_release(
    name: str, out_dir: Path, seed: int = 0
) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    movies = synth.generate_movies(TINY["n_movies"], seed)
    ratings = synth.generate_ratings(
        **TINY, seed=seed, half_stars=DATASETS[name].rating_step == 0.5
    )
    return synth.write_release(name, ratings, movies, out_dir), ratings, movies


def extract(zip_path: Path, name: str, dest: Path) -> tuple[Path, Path]:
    with zipfile.ZipFile(zip_path) as archive:
        for member in DATASETS[name].members:
            archive.extract(member, dest)
    return tuple(dest / member for member in DATASETS[name].members)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_release_reads_back_through_stages_datasets(name, tmp_path):
    dataset = DATASETS[name]
    zip_path, ratings, movies = tiny_release(name, tmp_path / "mirror")
    ratings_file, movies_file = extract(zip_path, name, tmp_path / "raw")

    got = read_ratings(ratings_file, dataset)
    assert tuple(got.columns) == RATING_COLUMNS
    assert len(got) == TINY["n_ratings"]
    np.testing.assert_array_equal(got.to_numpy(dtype=float), ratings.to_numpy(dtype=float))
    assert not got.duplicated(["userId", "movieId"]).any()
    step = DATASETS[name].rating_step
    grid = np.arange(step, 5.0 + step / 2, step)
    assert set(got["rating"]) <= set(grid)

    got_movies = read_movies(movies_file, dataset)
    assert tuple(got_movies.columns) == MOVIE_COLUMNS
    assert got_movies["movieId"].tolist() == movies["movieId"].tolist()
    assert got_movies["title"].tolist() == movies["title"].tolist()
    assert got_movies["genres"].tolist() == movies["genres"].tolist()
    assert set(got["movieId"]) <= set(got_movies["movieId"])


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_zip_has_readme_and_official_md5_line(name, tmp_path):
    zip_path, _, _ = tiny_release(name, tmp_path)
    folder = DATASETS[name].folder
    with zipfile.ZipFile(zip_path) as archive:
        readme = archive.read(f"{folder}/README.txt").decode("utf-8")
        assert archive.testzip() is None
    assert "SYNTHETIC" in readme
    digest = hashlib.md5(zip_path.read_bytes()).hexdigest()
    md5_text = (tmp_path / f"{name}.zip.md5").read_text(encoding="utf-8")
    assert md5_text == f"MD5 ({name}.zip) = {digest}\n"
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("name", LATIN1_DATASETS)
def test_latin1_titles_survive_and_are_latin1_bytes(name, tmp_path):
    zip_path, _, movies = tiny_release(name, tmp_path / "mirror")
    _, movies_file = extract(zip_path, name, tmp_path / "raw")
    accented = [t for t in movies["title"] if any(ord(c) > 127 for c in t)]
    assert accented
    raw = movies_file.read_bytes()
    assert accented[0].encode("latin-1") in raw
    assert accented[0].encode("utf-8") not in raw
    titles = read_movies(movies_file, DATASETS[name])["title"].tolist()
    assert set(accented) <= set(titles)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ml-25m", "userId,movieId,rating,timestamp\n{u},{m},{r:.1f},{t}\n"),
        ("ml-1m", "{u}::{m}::{r:g}::{t}\n"),
        ("ml-10m", "{u}::{m}::{r:g}::{t}\n"),
        ("ml-100k", "{u}\t{m}\t{r:g}\t{t}\n"),
    ],
)
def test_ratings_text_matches_plain_formatting(name, expected, tmp_path):
    zip_path, ratings, _ = tiny_release(name, tmp_path)
    with zipfile.ZipFile(zip_path) as archive:
        text = archive.read(DATASETS[name].members[0]).decode("ascii")
    first = ratings.iloc[0]
    u, m, r, t = int(first.userId), int(first.movieId), float(first.rating), int(first.timestamp)
    assert text.startswith(expected.format(u=u, m=m, r=r, t=t))
    assert text.count("\n") == len(ratings) + (name == "ml-25m")


def test_csv_titles_with_commas_are_quoted(tmp_path):
    zip_path, _, movies = tiny_release("ml-latest-small", tmp_path)
    with zipfile.ZipFile(zip_path) as archive:
        text = archive.read("ml-latest-small/movies.csv").decode("utf-8")
    comma_title = next(t for t in movies["title"] if "," in t)
    assert text.startswith("movieId,title,genres\n")
    assert f'"{comma_title}"' in text


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    first, _, _ = tiny_release("ml-25m", tmp_path / "a", seed=3)
    again, _, _ = tiny_release("ml-25m", tmp_path / "b", seed=3)
    other, _, _ = tiny_release("ml-25m", tmp_path / "c", seed=4)
    assert first.read_bytes() == again.read_bytes()
    assert first.read_bytes() != other.read_bytes()


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    return synth.generate_ratings(20_000, 200, 2000, seed=1)


def test_sample_shape(sample):
    assert len(sample) == 20_000
    assert not sample.duplicated(["userId", "movieId"]).any()
    per_user = sample.groupby("userId").size()
    assert len(per_user) == 200
    assert per_user.min() >= 20
    assert per_user.max() <= 1000
    assert per_user.max() > 3 * per_user.median()  # long-tailed activity
    per_movie = sample.groupby("movieId").size()
    assert per_movie.max() > 10 * per_movie.median()  # long-tailed popularity
    assert set(sample["movieId"]) <= set(synth.movie_ids(2000, seed=1))
    assert sample["movieId"].max() > 2000  # sparse ids, like the real ones
    assert sample[["userId", "movieId"]].apply(tuple, axis=1).is_monotonic_increasing


def fit_biases(train: pd.DataFrame, l2: float = 5.0, sweeps: int = 10) -> tuple:
    """Ridge user + movie biases by alternating closed-form updates."""
    mean = train["rating"].mean()
    users, movies = train["userId"].to_numpy(), train["movieId"].to_numpy()
    residual = train["rating"].to_numpy() - mean
    b_user, b_movie = pd.Series(0.0, index=np.unique(users)), pd.Series(0.0, np.unique(movies))
    for _ in range(sweeps):
        r = pd.Series(residual - b_movie[movies].to_numpy()).groupby(users)
        b_user = r.sum() / (r.count() + l2)
        r = pd.Series(residual - b_user[users].to_numpy()).groupby(movies)
        b_movie = r.sum() / (r.count() + l2)
    return mean, b_user, b_movie


def test_latent_structure_is_learnable(sample):
    shuffled = sample.sample(frac=1.0, random_state=0)
    cut = int(0.8 * len(shuffled))
    train, test = shuffled.iloc[:cut], shuffled.iloc[cut:]
    mean, b_user, b_movie = fit_biases(train)
    predicted = (
        mean
        + b_user.reindex(test["userId"]).fillna(0.0).to_numpy()
        + b_movie.reindex(test["movieId"]).fillna(0.0).to_numpy()
    )
    truth = test["rating"].to_numpy()
    rmse_bias = np.sqrt(np.mean((truth - predicted) ** 2))
    rmse_mean = np.sqrt(np.mean((truth - mean) ** 2))
    assert rmse_bias < 0.9 * rmse_mean


def test_heavy_users_are_filled_up_to_their_share():
    # 120 users x at most 200 of 400 movies = 24k slots for 20k ratings: the uniform top-up runs.
    ratings = synth.generate_ratings(20_000, 120, 400, seed=2, half_stars=False)
    per_user = ratings.groupby("userId").size()
    assert len(ratings) == 20_000
    assert per_user.max() == 200
    assert not ratings.duplicated(["userId", "movieId"]).any()
    assert set(ratings["rating"]) <= {1.0, 2.0, 3.0, 4.0, 5.0}


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ({"n_ratings": 50, "n_users": 20, "n_movies": 40}, "too few"),
        ({"n_ratings": 1000, "n_users": 20, "n_movies": 40}, "use more users or movies"),
        ({"n_ratings": 0, "n_users": 20, "n_movies": 40}, "n_ratings=0"),
    ],
)
def test_impossible_counts_are_refused(counts, message):
    with pytest.raises(ValueError, match=message):
        synth.generate_ratings(**counts, seed=0)


def test_half_stars_refused_for_a_whole_star_release(tmp_path):
    ratings = synth.generate_ratings(**TINY, seed=0, half_stars=True)
    movies = synth.generate_movies(TINY["n_movies"], seed=0)
    with pytest.raises(ValueError, match="off the ml-1m grid"):
        synth.write_release("ml-1m", ratings, movies, tmp_path)


def test_unknown_genre_refused_for_ml100k(tmp_path):
    ratings = synth.generate_ratings(**TINY, seed=0, half_stars=False)
    movies = synth.generate_movies(TINY["n_movies"], seed=0).assign(genres="IMAX")
    with pytest.raises(ValueError, match="IMAX"):
        synth.write_release("ml-100k", ratings, movies, tmp_path)


def test_unknown_dataset_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        synth.write_release("ml-7m", pd.DataFrame(), pd.DataFrame(), tmp_path)


def test_default_counts_match_the_real_release_at_full_size():
    shape = synth.RELEASE_SHAPES["ml-25m"]
    assert synth.default_counts("ml-25m", shape.ratings) == (shape.users, shape.movies)


def test_cli_records_the_taste(tmp_path):
    argv = ["--dataset", "ml-1m", "--ratings", "3000", "--out", str(tmp_path), "--taste", "1.5"]
    assert synth.main(argv) == 0
    assert json.loads((tmp_path / "ml-1m.floor.json").read_text())["taste"] == 1.5


def test_cli_writes_a_mirror(tmp_path):
    assert synth.main(["--dataset", "ml-1m", "--ratings", "3000", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ml-1m.floor.json",
        "ml-1m.zip",
        "ml-1m.zip.md5",
    ]
    ratings_file, _ = extract(tmp_path / "ml-1m.zip", "ml-1m", tmp_path / "raw")
    assert len(read_ratings(ratings_file, DATASETS["ml-1m"])) == 3000


# ---------------------------------------------------------------- the floor


def latent_model(n_users: int, n_movies: int, seed: int) -> latent.LatentModel:
    """The generator's own latent model for these counts and seed."""
    return latent.latent_model(n_users, n_movies, streams.rng(seed, streams.MODEL))


def monte_carlo_rating(mean: np.ndarray, step: np.ndarray, draws: int, seed: int) -> np.ndarray:
    """The mean of `draws` generated ratings per (mean, step), as the generator rounds and clips."""
    rng = np.random.default_rng(seed)
    noisy = mean[:, None] + rng.standard_normal((len(mean), draws)) * latent.NOISE_STD
    grid = step[:, None]
    return np.clip(np.round(noisy / grid) * grid, grid, latent.MAX_RATING).mean(axis=1)


def test_expected_rating_is_the_mean_of_the_generated_ratings():
    mean = np.array([-3.0, 0.6, 1.3, 2.77, 3.5, 4.4, 4.9, 8.0] * 2)
    step = np.repeat([0.5, 1.0], 8)
    draws = 200_000
    got = synth.expected_rating(mean, step)
    # The Monte-Carlo mean's standard error is at most 1.1 / sqrt(draws) ~ 0.0025 here.
    np.testing.assert_allclose(got, monte_carlo_rating(mean, step, draws, 0), atol=0.012)
    assert got[[0, 8]] == pytest.approx([0.5, 1.0], abs=1e-9)  # far below: the lowest rating
    assert got[7] == pytest.approx(5.0, abs=1e-3)


def test_release_writes_the_floor_a_perfect_model_scores(tmp_path):
    counts = {"n_ratings": 20_000, "n_users": 200, "n_movies": 400}
    zip_path = synth.generate_release("ml-25m", **counts, seed=3, out_dir=tmp_path)
    truth = json.loads(synth.floor_path(zip_path).read_text())
    assert synth.floor_path(zip_path) == tmp_path / "ml-25m.floor.json"
    assert {k: truth[k] for k in counts} == counts
    assert truth["seed"] == 3 and truth["latent_dim"] == latent.LATENT_DIM
    assert truth["noise_std"] == latent.NOISE_STD and truth["half_stars"] is True
    assert truth["taste"] == 0.0
    assert truth["oracle_ndcg@10"] > truth["popularity_ndcg@10"] > 0
    assert 0 < truth["popularity_precision@10"] < truth["oracle_precision@10"] < 1

    # Rebuild each rating's noiseless mean from the generator's own latent model.
    ratings = synth.generate_ratings(**counts, seed=3)
    model = latent_model(200, 400, seed=3)
    users = np.searchsorted(synth.user_ids(200, 3), ratings["userId"])
    movies = np.searchsorted(synth.movie_ids(400, 3), ratings["movieId"])
    mean = latent.GLOBAL_MEAN + model.user_bias[users] + model.movie_bias[movies]
    mean = mean + np.sum(model.user_factors[users] * model.movie_factors[movies], axis=1)
    step = np.where(model.whole_stars_only[users], 1.0, 0.5)
    rating = ratings["rating"].to_numpy(np.float64)

    noiseless = np.sqrt(np.mean((rating - np.clip(mean, step, 5.0)) ** 2))
    assert truth["noiseless_rmse"] == pytest.approx(noiseless, rel=1e-5)
    best = monte_carlo_rating(mean.astype(np.float64), step, 2_000, 1)
    assert truth["floor_rmse"] == pytest.approx(np.sqrt(np.mean((rating - best) ** 2)), abs=0.005)
    assert 0.4 < truth["floor_rmse"] < truth["noiseless_rmse"]


# ---------------------------------------------------------------- taste


def column_md5(ratings: pd.DataFrame) -> str:
    columns = (np.ascontiguousarray(ratings[c].to_numpy()).tobytes() for c in ratings.columns)
    return hashlib.md5(b"".join(columns)).hexdigest()


@pytest.mark.parametrize(
    ("args", "digest"),
    [
        # The tables of the generator before the taste param existed (commit 4a37823).
        ({**TINY, "seed": 0}, "d05fbd637e7cab81c9ddf417b490ef97"),
        ({"n_ratings": 20_000, "n_users": 120, "n_movies": 400, "seed": 2, "half_stars": False},
         "7222c770d9045818f2f4faa23e124ec8"),
    ],
)  # fmt: skip
def test_taste_zero_gives_the_table_of_before(args, digest):
    assert column_md5(synth.generate_ratings(**args)) == digest
    assert column_md5(synth.generate_ratings(**args, taste=0.0)) == digest


def pair_affinities(ratings: pd.DataFrame, n_users: int, n_movies: int, seed: int) -> tuple:
    """p_u . q_m (the rating's) and p_u . c_m (the choice's) of each rated pair, from the model."""
    model = latent_model(n_users, n_movies, seed)
    choice = latent.choice_factors(model, streams.rng(seed, streams.CHOICE))
    users = np.searchsorted(synth.user_ids(n_users, seed), ratings["userId"])
    movies = np.searchsorted(synth.movie_ids(n_movies, seed), ratings["movieId"])
    p_u = model.user_factors[users]
    return np.sum(p_u * model.movie_factors[movies], axis=1), np.sum(p_u * choice[movies], axis=1)


def test_choice_vectors_correlate_with_rating_vectors_as_set():
    model = latent_model(2000, 2000, seed=0)
    choice = latent.choice_factors(model, streams.rng(0, streams.CHOICE))
    rating_affinity = (model.user_factors @ model.movie_factors.T).ravel()
    choice_affinity = (model.user_factors @ choice.T).ravel()
    correlation = np.corrcoef(rating_affinity, choice_affinity)[0, 1]
    assert correlation == pytest.approx(latent.TASTE_RATING_CORRELATION, abs=0.03)
    assert choice_affinity.std() == pytest.approx(rating_affinity.std(), rel=0.05)


def test_taste_makes_users_rate_what_they_like():
    counts = {"n_ratings": 20_000, "n_users": 200, "n_movies": 2000, "seed": 1}
    plain = pair_affinities(synth.generate_ratings(**counts), 200, 2000, 1)
    tasteful = pair_affinities(synth.generate_ratings(**counts, taste=3.0), 200, 2000, 1)
    # Both affinities have std ~0.6 over all pairs; the means' standard errors are ~0.004.
    assert abs(plain[0].mean()) < 0.02 and abs(plain[1].mean()) < 0.02
    assert tasteful[1].mean() > plain[1].mean() + 0.3  # chosen by taste
    assert tasteful[0].mean() > plain[0].mean() + 0.08  # and so liked more: ~0.3 of it


@pytest.mark.parametrize(
    "counts",
    [
        {"n_ratings": 20_000, "n_users": 200, "n_movies": 2000, "seed": 1},
        # At most 200 of 400 movies each: heavy users are topped up after their taste draws.
        {"n_ratings": 20_000, "n_users": 120, "n_movies": 400, "seed": 2},
    ],
)
def test_taste_keeps_the_counts_and_distinct_pairs(counts):
    ratings = synth.generate_ratings(**counts, taste=2.0)
    model = latent_model(counts["n_users"], counts["n_movies"], counts["seed"])
    least = shapes.default_min_user_ratings(counts["n_ratings"], counts["n_users"])
    wanted = sampling.user_counts(counts["n_ratings"], model.activity, least, counts["n_movies"])
    assert len(ratings) == counts["n_ratings"]
    assert not ratings.duplicated(["userId", "movieId"]).any()
    np.testing.assert_array_equal(ratings.groupby("userId").size().to_numpy(), wanted)
    assert ratings[["userId", "movieId"]].apply(tuple, axis=1).is_monotonic_increasing


def ranking_of(taste: float) -> dict:
    return synth.generate_ratings_and_floor(100_000, 1000, 2000, seed=0, taste=taste)[1].ranking


def test_the_oracle_beats_popularity_by_more_as_taste_grows():
    plain, tasteful = ranking_of(0.0), ranking_of(3.0)
    for ranking in (plain, tasteful):
        assert 800 < ranking["ranking_users"] <= choices.RANKING_USERS
        assert ranking["oracle_precision@10"] > ranking["popularity_precision@10"]
    # Without taste the oracle's edge is only its knowledge of the ratings (P(rating >= 4)).
    assert plain["popularity_ndcg@10"] < plain["oracle_ndcg@10"] < 1.6 * plain["popularity_ndcg@10"]
    assert tasteful["oracle_ndcg@10"] > 2.5 * tasteful["popularity_ndcg@10"]


def test_the_oracle_that_knows_the_taste_ranks_best():
    _, _, oracle, pairs = generate_with_oracle(100_000, 1000, 2000, 0, RatingsOptions(taste=3.0))

    def ndcg(taste: float) -> float:
        scorer = dataclasses.replace(oracle, taste=taste)
        return choices.estimate_ranking(scorer, *pairs, np.random.default_rng(5))["oracle_ndcg@10"]

    best = ndcg(3.0)
    assert best > 1.2 * ndcg(0.0)  # blind to taste, it still sees it through P(rating >= 4)
    assert best >= max(ndcg(1.5), ndcg(6.0))


def test_inclusion_matches_the_draws_it_approximates():
    """log_inclusion against 4,000 runs of keep_by_taste on 60 movies, 6 picks of 24 draws."""
    rng = np.random.default_rng(0)
    popularity, log_taste = rng.lognormal(0, 1, 60), rng.normal(0, 1, 60)
    wanted, runs = 6, 4000
    users = np.repeat(np.arange(runs), 4 * wanted)
    picked = rng.choice(60, size=len(users), p=popularity / popularity.sum())
    keys = np.sort(users * 60 + picked)
    kept = choices.keep_by_taste(keys, np.full(runs, wanted), 60, lambda u, m: log_taste[m], rng)
    frequency = np.bincount(kept % 60, minlength=60) / runs
    got = np.exp(choices.log_inclusion(popularity, [wanted], log_taste[None], [4 * wanted]))
    assert got.sum() == pytest.approx(wanted, rel=1e-3)
    np.testing.assert_allclose(got[0], frequency, atol=0.05)
    assert np.corrcoef(got[0], frequency)[0, 1] > 0.98


@pytest.mark.parametrize("value", ["-1", "abc", "nan", "inf"])
def test_cli_refuses_a_bad_taste_in_one_line(value, tmp_path, capsys):
    argv = ["--dataset", "ml-1m", "--ratings", "3000", "--out", str(tmp_path), "--taste", value]
    assert synth.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: taste=")
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- entry points and logging


def test_python_m_synth_runs_the_cli_and_sets_up_logging(tmp_path):
    """`python -m movielens.synth` is an entry point: it writes the release and logs its progress."""
    argv = ["--dataset", "ml-100k", "--ratings", "2000", "--out", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-m", "movielens.synth", *argv], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ml-100k.floor.json",
        "ml-100k.zip",
        "ml-100k.zip.md5",
    ]
    assert "INFO" in done.stderr and "floor RMSE" in done.stderr  # runtime.set_up's format


def test_the_library_leaves_logging_to_the_entry_point(tmp_path):
    """synth.main called from a program configures no logging of its own."""
    code = (
        "import logging, sys; from movielens import synth; "
        f"code = synth.main(['--dataset', 'ml-1m', '--ratings', '3000', '--out', {str(tmp_path)!r}]); "
        "print(code, logging.getLogger().handlers, logging.getLogger().level)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "[]", str(logging.WARNING)]
    assert "floor RMSE" not in done.stderr  # INFO lines stay unshown without a handler
