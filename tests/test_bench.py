"""The training benchmark and the grid search, on tiny synthetic data in a scratch project folder."""

import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from benchmarks import bench_train, engines, peers, search, seeds, splits
from benchmarks.names import COMPILED, KERAS, OURS, XLA
from benchmarks.rows import result_row
from movielens.data.fetch import MIRROR_ENV
from movielens.evaluation import crossvalidation as crossvalidate
from movielens.evaluation.accuracy import rmse
from movielens.evaluation.crossvalidation import fold_splits
from movielens.model.baseline import BiasSettings, fit_biases, predict_biases
from movielens.params import load_params
from movielens.plumbing import paths
from movielens.plumbing.errors import PipelineError
from movielens.training.settings import TrainSettings
from stages import download as download_stage
from stages import evaluate as evaluate_stage
from stages import preprocess as preprocess_stage
from stages import train as train_stage
from stages import train_watch as train_watch_stage

ROOT = Path(__file__).resolve().parents[1]
TINY_TRAIN = {"embedding_dim": 4, "epochs": 3, "patience": 2, "batch_size": 512}
ROW_KEYS = {"model", "rmse", "mae", "fit_seconds", "ratings_per_second", "epochs", "ratings"}
PROTOCOL_KEYS = {"dataset", "split", "top_users", "top_movies", "n_train", "n_test"}
MACHINE_KEYS = {"platform", "python", "cpu_count", "cpu_model", "tensorflow", "keras"}


@pytest.fixture(scope="module")
def project(tmp_path_factory, small_mirror) -> Path:
    """A project folder after the download and preprocess stages, with tiny training params."""
    root = tmp_path_factory.mktemp("bench-project")
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["train"].update(TINY_TRAIN)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv(MIRROR_ENV, str(small_mirror))
        download_stage.main()
        preprocess_stage.main()
    return root


@pytest.fixture
def in_project(project, monkeypatch) -> Path:
    monkeypatch.chdir(project)
    return project


def test_result_row_arithmetic():
    row = result_row("m", np.array([1.0, 2.0, 3.0]), np.array([1.0, 3.0, 5.0]), 2.0, 4, 500, {})
    assert row["rmse"] == pytest.approx(np.sqrt(5 / 3), abs=1e-6)  # errors 0, 1, 2
    assert row["mae"] == pytest.approx(1.0)
    assert row["ratings_per_second"] == 1000.0  # 500 ratings x 4 epochs / 2 s


def test_results_json_has_one_row_per_model_with_protocol_and_machine(in_project, tmp_path, capsys):
    out = tmp_path / "results.json"
    bench_train.main(
        [
            "--models",
            OURS,
            "BaselineOnly",
            "--out",
            str(out),
            "--seeds",
            "--no-train-stage",
            "--no-cv",
        ]
    )
    rows = json.loads(out.read_text(encoding="utf-8"))
    assert [r["model"] for r in rows] == [COMPILED, KERAS, XLA, "BaselineOnly"]
    n_train = len(splits.load_split().train)
    for row in rows:
        assert set(row) >= ROW_KEYS
        assert set(row["protocol"]) >= PROTOCOL_KEYS
        assert set(row["machine"]) >= MACHINE_KEYS
        assert row["protocol"]["n_train"] == n_train
        assert row["ratings_per_second"] == pytest.approx(
            row["ratings"] * row["epochs"] / row["fit_seconds"], rel=1e-3
        )
    for ours, engine in zip(rows[:3], ("compiled", "keras", "xla"), strict=True):
        assert ours["engine"] == engine
        # The selection run on all but the validation part, then the refit on every rating.
        fitted, best = n_train - round(n_train * 0.05), ours["best_epoch"]
        selection = ours["epochs"] - best
        assert ours["refit"] and 1 <= selection <= TINY_TRAIN["epochs"]
        assert ours["ratings"] * ours["epochs"] == pytest.approx(
            fitted * selection + n_train * best, abs=ours["epochs"]
        )
        assert "train_stage_seconds" not in ours
    printed = capsys.readouterr().out
    assert "test RMSE" in printed and "BaselineOnly" in printed
    assert not (tmp_path / "seeds.json").exists()
    assert not (tmp_path / "cv.json").exists()


def test_cross_validation_fits_every_model_on_the_crossvalidate_stages_folds(
    in_project, tmp_path, capsys
):
    out = tmp_path / "results.json"
    argv = ["--models", OURS, "BaselineOnly", "--out", str(out), "--seeds", "--no-train-stage"]
    bench_train.main(argv)
    result = json.loads((tmp_path / "cv.json").read_text(encoding="utf-8"))
    params = load_params()
    cv = params["crossvalidate"]
    ratings = pd.read_parquet(paths.RATINGS)
    assert result["protocol"] == {
        "dataset": "ml-latest-small", "split": "random", "folds": cv["folds"], "seed": cv["seed"],
        "ratings": len(ratings),
    }  # fmt: skip
    ours, peer = result["models"][OURS], result["models"]["BaselineOnly"]
    # ours is what the crossvalidate stage computes, fold by fold
    stage = crossvalidate.cross_validate(
        ratings, "random", cv["folds"], cv["seed"], cv["batch_size"],
        TrainSettings.from_params(params["train"]), BiasSettings.from_params(params["train"]),
        history_size=0.8,
    )  # fmt: skip
    assert [r["rmse"] for r in ours["per_fold"]] == [r["rmse"] for r in stage["per_fold"]]
    assert (ours["rmse_mean"], ours["rmse_std"]) == (stage["rmse_mean"], stage["rmse_std"])
    # the peer saw the same folds: its fold 2 is bench_peer on the stage's fold 2
    folds = fold_splits(ratings, cv["folds"], cv["seed"], "random", history_size=0.8)
    fold_2 = splits.Split(*list(folds)[1][:4])
    assert peer["per_fold"][1]["rmse"] == peers.bench_peer("BaselineOnly", fold_2, 0)["rmse"]
    rmses = np.array([r["rmse"] for r in peer["per_fold"]])
    assert peer["rmse_mean"] == round(rmses.mean(), 6)
    assert peer["rmse_std"] == round(rmses.std(ddof=1), 6)
    paired = result["ours_minus_peer"]["BaselineOnly"]
    differences = np.array([r["rmse"] for r in ours["per_fold"]]) - rmses
    assert paired["rmse_differences"] == pytest.approx(differences.tolist(), abs=1e-6)
    assert paired["folds_lower"] == int((differences < 0).sum())
    assert f"{cv['folds']}-fold cross-validation" in capsys.readouterr().out


def test_our_rmse_is_what_the_evaluate_stage_writes(in_project):
    row = engines.bench_ours(splits.load_split(), load_params())
    train_stage.main()
    train_watch_stage.main()
    evaluate_stage.main()
    written = json.loads(paths.SCORES.read_text(encoding="utf-8"))
    assert (row["rmse"], row["mae"]) == (written["rmse"], written["mae"])


def test_baseline_only_row_is_surprises_als_baseline(in_project):
    split = splits.load_split()
    row = peers.bench_peer("BaselineOnly", split, seed=0)
    tr, te = split.train, split.test
    ratings = tr["rating"].to_numpy(np.float64)
    # Surprise's ALS updates the item biases first: fit_biases with the roles swapped does that.
    mu, b_m, b_u = fit_biases(
        tr["movie_index"].to_numpy(),
        tr["user_index"].to_numpy(),
        ratings,
        split.n_movies,
        split.n_users,
        reg_users=10.0,
        reg_movies=15.0,
        iterations=10,
    )
    expected = predict_biases(
        mu, b_u, b_m, te["user_index"].to_numpy(), te["movie_index"].to_numpy()
    )
    expected = np.clip(expected, ratings.min(), ratings.max())
    assert row["rmse"] == pytest.approx(rmse(te["rating"].to_numpy(), expected), abs=1e-6)
    assert (row["epochs"], row["ratings"]) == (10, len(tr))
    assert row["ratings_per_second"] == pytest.approx(len(tr) * 10 / row["fit_seconds"], rel=1e-3)
    assert row["impossible_pairs"] == 0  # a cold side just contributes no bias


def test_resplit_with_the_pipeline_seed_is_data_processed(in_project):
    params = load_params()
    pipeline = splits.load_split()
    ratings, prep = splits.release_ratings(params), params["preprocess"]
    assert splits.same_split(splits.resplit(ratings, prep, prep["seed"]), pipeline)
    assert not splits.same_split(splits.resplit(ratings, prep, 1), pipeline)


def test_resplit_follows_the_split_protocol(in_project):
    params = load_params()
    prep = {**params["preprocess"], "split": "time"}
    split = splits.resplit(splits.release_ratings(params), prep, prep["seed"])
    assert split.test["timestamp"].min() >= split.train["timestamp"].max()


def test_seed_check_refuses_a_stale_split(in_project):
    params = load_params()
    params["preprocess"]["seed"] += 1
    with pytest.raises(PipelineError, match="dvc repro preprocess"):
        seeds.check_seeds(params, [1], reference_rmse=0.9)


def test_seed_check_writes_each_seed_beside_the_results(in_project, tmp_path, capsys):
    out = tmp_path / "results.json"
    argv = [
        "--models",
        "BaselineOnly",
        "--out",
        str(out),
        "--seeds",
        "1",
        "--spread",
        "2",
        "--no-cv",
    ]
    bench_train.main(argv)
    check = json.loads((tmp_path / "seeds.json").read_text(encoding="utf-8"))
    reference_seed = load_params()["preprocess"]["seed"]
    assert check["reference_seed"] == reference_seed
    [run] = check["runs"]
    assert run["seed"] == 1
    assert run["delta"] == pytest.approx(run["rmse"] - check["reference_rmse"], abs=1e-6)
    assert run["within_tolerance"] == (abs(run["delta"]) <= seeds.SEED_TOLERANCE)
    params = load_params()
    pipeline = splits.load_split()
    other = splits.resplit(splits.release_ratings(params), params["preprocess"], 1)
    assert check["reference_test_rating_std"] == pytest.approx(pipeline.test["rating"].std(ddof=0))
    assert run["test_rating_std"] == pytest.approx(other.test["rating"].std(ddof=0))
    spread = check["spread"]
    assert spread["seeds"] == [reference_seed, 1, 2]
    assert spread["rmse_min"] <= check["reference_rmse"] <= spread["rmse_max"]
    assert spread["rmse_min"] <= run["rmse"] <= spread["rmse_max"]
    printed = capsys.readouterr().out
    assert "seed   1:" in printed
    assert (
        f"split spread over 3 random splits (preprocess seeds 1..2 and {reference_seed})" in printed
    )


def test_split_spread_ranks_the_reference_split_among_the_others():
    reference = {"seed": 42, "rmse": 0.85, "baseline_only_rmse": 0.88}
    runs = [
        {"seed": 1, "rmse": 0.842, "baseline_only_rmse": 0.87},
        {"seed": 2, "rmse": 0.858, "baseline_only_rmse": 0.89},
        {"seed": 3, "rmse": 0.83, "baseline_only_rmse": 0.86},
    ]
    spread = seeds.split_spread(reference, runs, tolerance=0.01)
    ours = np.array([0.85, 0.842, 0.858, 0.83])
    baseline = np.array([0.88, 0.87, 0.89, 0.86])
    assert spread["seeds"] == [42, 1, 2, 3]
    assert spread["rmse_mean"] == pytest.approx(ours.mean(), abs=1e-6)
    assert spread["rmse_std"] == pytest.approx(ours.std(ddof=1), abs=1e-6)
    assert (spread["rmse_min"], spread["rmse_max"]) == (0.83, 0.858)
    assert spread["baseline_only_rmse_std"] == pytest.approx(baseline.std(ddof=1), abs=1e-6)
    assert spread["correlation_with_baseline_only"] == pytest.approx(
        np.corrcoef(ours, baseline)[0, 1], abs=1e-4
    )
    assert spread["reference_rank"] == 2  # only seed 2's split is harder
    assert spread["within_tolerance"] == 2  # 0.842 and 0.858; 0.83 is 0.02 away


def test_split_spread_of_two_splits_has_no_correlation():
    reference = {"seed": 42, "rmse": 0.85, "baseline_only_rmse": 0.88}
    spread = seeds.split_spread(
        reference, [{"seed": 1, "rmse": 0.87, "baseline_only_rmse": 0.9}], tolerance=0.01
    )
    assert spread["correlation_with_baseline_only"] is None
    assert (spread["reference_rank"], spread["within_tolerance"]) == (2, 0)


def test_a_negative_spread_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_train.parse_args(["--spread", "-1"])
    assert exit_info.value.code != 0
    assert "--spread must be 0 or more, got -1" in capsys.readouterr().err


def stand_in_python(script: str, folder: Path, monkeypatch) -> None:
    """Make the shell `script` the interpreter the benchmark runs (sys.executable)."""
    python = folder / "python"
    python.write_text(f"#!/bin/sh\n{script}", encoding="utf-8")
    python.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(python))


def test_a_failing_train_stage_is_one_line(in_project, tmp_path, monkeypatch):
    stand_in_python("echo 'error: boom' >&2\nexit 3\n", tmp_path, monkeypatch)
    with pytest.raises(PipelineError, match=r"failed \(3\): error: boom"):
        engines.time_train_stage()


def test_the_train_stage_is_timed_from_start_to_exit_in_a_scratch_folder(
    in_project, tmp_path, monkeypatch
):
    """A stand-in interpreter that sleeps says what it was run as, where, and on which files."""
    record = tmp_path / "record"
    stand_in_python(
        f'{{ echo "$@"; pwd; echo "$PYTHONPATH"; find . -type f | sort; }} > "{record}"\n'
        f'cp params.yaml "{tmp_path}/params.copy"\nsleep 0.5\n',
        tmp_path,
        monkeypatch,
    )
    seconds = engines.time_train_stage()
    assert 0.5 <= seconds < 10  # the process from start to exit: its sleep, and some noise
    arguments, folder, pythonpath, *files = record.read_text(encoding="utf-8").splitlines()
    assert arguments == "-m stages.train"
    assert pythonpath.split(os.pathsep)[0] == str(ROOT)  # this checkout's stages, from anywhere
    assert Path(folder) != in_project and not Path(folder).exists()  # a scratch folder, removed
    assert files == sorted(
        f"./{p}" for p in (paths.PARAMS, paths.TRAIN, paths.USER_IDS, paths.MOVIE_IDS)
    )
    assert (tmp_path / "params.copy").read_bytes() == paths.PARAMS.read_bytes()


@pytest.mark.slow
def test_train_stage_is_timed_in_a_scratch_folder(in_project, tmp_path, monkeypatch):
    stage_log = tmp_path / "stage.log"
    stand_in_python(  # the real interpreter, its stderr kept for the test too
        f'"{sys.executable}" "$@" 2>"{stage_log}"\nstatus=$?\n'
        f'cat "{stage_log}" >&2\nexit $status\n',
        tmp_path,
        monkeypatch,
    )
    monkeypatch.setenv("LOGLEVEL", "INFO")
    before = sorted(p for p in in_project.rglob("*") if "__pycache__" not in p.parts)
    seconds = engines.time_train_stage()
    after = sorted(p for p in in_project.rglob("*") if "__pycache__" not in p.parts)
    assert after == before  # the stage wrote its model elsewhere
    logged = stage_log.read_text(encoding="utf-8")
    assert f"training on {len(splits.load_split().train)} ratings" in logged  # the project's split
    fit_seconds = float(re.search(r"fit took ([\d.]+) s", logged)[1])
    assert fit_seconds <= seconds  # the process's time holds the fit it timed itself


def pinned_grid(**values) -> list[str]:
    """--grid items that pin every default key to one value, then set `values`."""
    items = [f"{key}={options[0]}" for key, options in search.DEFAULT_GRID.items()]
    return items + [f"train.{key}={value}" for key, value in values.items()]


def test_search_never_reads_the_test_split(project, tmp_path, monkeypatch):
    shutil.copy2(project / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(project / paths.PROCESSED_DIR, tmp_path / paths.PROCESSED_DIR)
    (tmp_path / paths.TEST).unlink()
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "search.json"
    search.main(["--grid", *pinned_grid(embedding_dim="2,4"), "--out", str(out)])
    written = json.loads(out.read_text(encoding="utf-8"))
    rows = written["results"]
    assert sorted(r["params"]["train.embedding_dim"] for r in rows) == [2, 4]
    assert [r["val_rmse"] for r in rows] == sorted(r["val_rmse"] for r in rows)
    assert all(1 <= r["best_epoch"] <= r["epochs_run"] <= TINY_TRAIN["epochs"] for r in rows)
    assert all(r["hit_epoch_cap"] == (r["best_epoch"] == TINY_TRAIN["epochs"]) for r in rows)
    assert not os.path.exists(paths.TEST)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("train.l2=0.1", "unknown key 'train.l2'"),
        ("preprocess.seed=1", "unknown key 'preprocess.seed'"),
        ("train.epochs", "write train.KEY=VALUE"),
        ("train.epochs=", "write train.KEY=VALUE"),
        ("train.epochs=2,,3", "write train.KEY=VALUE"),
    ],
)
def test_bad_grid_items_are_refused(item, message):
    with pytest.raises(PipelineError, match=message):
        search.parse_grid_item(item)


def test_grid_values_parse_as_numbers():
    assert search.parse_grid_item("train.embeddings_l2=1e-4,0.001") == (
        "train.embeddings_l2",
        [1e-4, 0.001],
    )
    assert search.parse_grid_item("train.epochs=2,3")[1] == [2, 3]


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({"train.batch_size": [0]}, "train.batch_size=0 is invalid"),
        ({"train.validation_size": [0.0]}, "validation part"),
    ],
)
def test_combinations_are_checked_like_params_yaml(grid, message):
    with pytest.raises(PipelineError, match=message):
        search.combinations(grid, load_params(ROOT / "params.yaml"))
