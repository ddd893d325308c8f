"""The scale work of issue #6: fast paths that must equal the plain ones, and the scale benchmark
itself run end to end at 200k ratings (the same code as `make bench-scale` at 25M)."""

from __future__ import annotations

import json
import os
import re
import resource
import shlex
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks import bench_scale
from benchmarks.cgroup import can_make_groups
from movielens.data.ids import index_in, sorted_unique
from movielens.data.preprocess import drop_duplicates
from movielens.evaluation.ranking_metrics import ranking_metrics
from movielens.ranking.lists import sample_users
from movielens.ranking.scorers import Factors


def drop_duplicates_reference(ratings: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The plain pandas version: sort by (timestamp, position), keep each pair's last row."""
    order = np.lexsort((np.arange(len(ratings)), ratings["timestamp"].to_numpy()))
    latest = ratings.iloc[order].drop_duplicates(["userId", "movieId"], keep="last")
    kept = ratings.loc[np.sort(latest.index.to_numpy())].reset_index(drop=True)
    return kept, len(ratings) - len(kept)


def random_ratings(n: int, n_ids: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "userId": rng.integers(0, n_ids, n).astype(np.int32),
            "movieId": rng.integers(0, n_ids, n).astype(np.int32),
            "rating": rng.integers(1, 11, n).astype(np.float32) / 2,
            "timestamp": rng.integers(0, 4, n),  # few values: many ties in time
        }
    )


@pytest.mark.parametrize(("n", "n_ids", "seed"), [(0, 3, 0), (1, 3, 0), (50, 4, 1), (2000, 30, 2)])
def test_drop_duplicates_matches_the_plain_version(n, n_ids, seed):
    ratings = random_ratings(n, n_ids, seed)
    kept, dropped = drop_duplicates(ratings)
    expected, expected_dropped = drop_duplicates_reference(ratings)
    assert dropped == expected_dropped
    pd.testing.assert_frame_equal(kept, expected)


def test_drop_duplicates_returns_sorted_unique_ratings_without_a_copy():
    ratings = random_ratings(500, 1000, 3).drop_duplicates(["userId", "movieId"])
    ratings = ratings.sort_values(["userId", "movieId"], ignore_index=True)
    kept, dropped = drop_duplicates(ratings)
    assert kept is ratings and dropped == 0
    shuffled = ratings.sample(frac=1.0, random_state=0).reset_index(drop=True)
    kept, dropped = drop_duplicates(shuffled)  # unsorted but unique: the sort path finds none
    assert kept is shuffled and dropped == 0


@pytest.mark.parametrize(
    "values",
    [
        np.array([30, 10, 30, 20], np.int32),
        np.array([], np.int32),
        np.array([2_000_000_000, 5, 5], np.int32),  # too sparse for a table: sorted instead
        np.array([-3, 7, -3, 0], np.int64),
    ],
)
def test_sorted_unique_and_index_in_match_numpy(values):
    vocabulary = sorted_unique(values)
    np.testing.assert_array_equal(vocabulary, np.unique(values))
    assert vocabulary.dtype == values.dtype
    others = np.array([-5, -1, 0, 5, 7, 10, 20, 31, 2_000_000_000, 2_100_000_000], np.int64)
    for probe in (values, others.astype(values.dtype) if len(values) else others):
        expected = [
            int(np.flatnonzero(vocabulary == v)[0]) if v in vocabulary else -1 for v in probe
        ]
        got = index_in(vocabulary, probe)
        assert got.dtype == np.int32
        assert got.tolist() == expected


def test_sample_users_is_seeded_sorted_and_only_when_smaller():
    first = sample_users(1000, 50, seed=4)
    assert first.tolist() == sorted(set(first.tolist())) and len(first) == 50
    np.testing.assert_array_equal(first, sample_users(1000, 50, seed=4))
    assert not np.array_equal(first, sample_users(1000, 50, seed=5))
    assert sample_users(1000, None, seed=4) is None
    assert sample_users(1000, 1000, seed=4) is None


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(11)
    n_users, n_movies, dim = 60, 80, 5
    factors = Factors(
        *(rng.normal(size=shape).astype(np.float32) for shape in ((n_users, dim), (n_movies, dim))),
        rng.normal(size=n_users).astype(np.float32),
        rng.normal(size=n_movies).astype(np.float32),
        (0.5, 5.0),
    )
    pairs = rng.permutation(n_users * n_movies)[:2400]
    users, movies = pairs // n_movies, pairs % n_movies
    ratings = rng.choice([1.0, 3.0, 4.0, 5.0], size=len(pairs))
    return factors, (users[:2000], movies[:2000]), (users[2000:], movies[2000:], ratings[2000:])


def test_logits_carry_the_biases_in_the_product(case):
    factors = case[0]
    users = np.array([3, 0, 59])
    expected = (
        factors.user_vectors[users].astype(np.float64) @ factors.movie_vectors.T.astype(np.float64)
        + factors.user_bias[users, None]
        + factors.movie_bias[None, :]
    )
    got = factors.logits(users)
    assert got.dtype == np.float32 and got.shape == (3, factors.n_movies)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_a_sample_of_users_scores_exactly_those_users(case):
    factors, train, test = case
    everyone = ranking_metrics(factors, *train, *test, k=5, relevance_threshold=4.0, block_size=7)
    users = sample_users(factors.n_users, 25, seed=1)
    sampled = ranking_metrics(
        factors, *train, *test, k=5, relevance_threshold=4.0, block_size=4, users=users
    )
    assert set(sampled.user_index) <= set(users)
    rows = np.searchsorted(everyone.user_index, sampled.user_index)
    np.testing.assert_array_equal(everyone.user_index[rows], sampled.user_index)
    for name in ("precision", "recall", "ndcg"):
        np.testing.assert_allclose(getattr(sampled, name), getattr(everyone, name)[rows])
    summary = sampled.summary()
    assert summary["users_ranked"] == 25
    assert summary["users_evaluated"] + summary["users_without_relevant"] == 25
    assert summary["relevant_cold_pairs"] == everyone.summary()["relevant_cold_pairs"]
    assert 0 < sampled.coverage <= everyone.coverage


# ---------------------------------------------------------------------------- the benchmark


def test_measure_times_the_command_and_takes_the_peak_of_the_largest_process(tmp_path):
    """A shell whose two children each hold 300 MB for 0.5 s, one after the other: the time of
    the whole, the peak of the largest process in MB (not a sum)."""
    child = [sys.executable, "-c", "import time; b = b'x' * (300 << 20); time.sleep(0.5)"]
    command = ["sh", "-c", f"{shlex.join(child)}; {shlex.join(child)}; echo done"]
    wall, peak = bench_scale.measure(command, tmp_path, dict(os.environ), tmp_path / "out.log")
    assert 1.0 <= wall < 20
    # A forked child counts the pages it shares with this process until it execs: this
    # process's own peak bounds the figure too.
    this_process = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert 300 <= peak < max(550, this_process + 100)
    assert (tmp_path / "out.log").read_text(encoding="utf-8") == "done\n"
    with pytest.raises(RuntimeError, match=r"failed \(3\):\nboom"):
        bench_scale.measure(["sh", "-c", "echo boom; exit 3"], tmp_path, {}, tmp_path / "x.log")


def logged_span(log: Path) -> int:
    """Seconds from the first to the last line the stage's process logged (its %H:%M:%S times)."""
    times = re.findall(r"^(\d\d):(\d\d):(\d\d) ", log.read_text(encoding="utf-8"), re.MULTILINE)
    seconds = [int(h) * 3600 + int(m) * 60 + int(s) for h, m, s in times]
    return (seconds[-1] - seconds[0]) % 86400 if seconds else 0


@pytest.mark.slow
def test_bench_scale_runs_the_whole_pipeline_at_200k(tmp_path):
    runs = bench_scale.run_benchmark(200_000, tmp_path / "cache", tmp_path / "work")

    assert [run.stage for run in runs] == [*bench_scale.STAGES, "pipeline", "total"]
    logs = tmp_path / "work" / "logs"
    for run in runs[:-2]:  # each stage's time holds what its process logged, to the second
        assert run.wall_seconds >= logged_span(logs / f"{run.stage}.log") - 1
        assert run.peak_rss_mb > 50
    fit = re.search(
        r"fit took ([\d.]+) s \((\d+) ratings/s\)", (logs / "train.log").read_text(encoding="utf-8")
    )
    assert runs[2].wall_seconds >= float(fit[1]) > 0  # the train stage's time holds its fit
    rates = {run.stage: run.ratings_per_second for run in runs}
    assert rates.pop("train") == int(fit[2])  # the rate the stage logged
    assert set(rates.values()) == {None}
    stages, (pipeline, total) = runs[:-2], runs[-2:]
    assert total.wall_seconds == pytest.approx(sum(run.wall_seconds for run in stages), abs=0.2)
    assert total.peak_rss_mb == max(run.peak_rss_mb for run in stages)
    assert pipeline.wall_seconds == pytest.approx(
        sum(run.wall_seconds for run in stages if run.stage != "crossvalidate"), abs=0.2
    )

    out = tmp_path / "scale.json"
    bench_scale.write_results(runs, out)
    rows = json.loads(out.read_text())
    # With memory cgroups (root), each stage's whole tree and its group are measured too.
    grouped = {"tree_peak_mb", "cgroup_peak_mb", "oom_kills"} if can_make_groups() else set()
    measured = {key: rows[2].pop(key) for key in grouped}
    assert rows[2] == {
        "stage": "train",
        "wall_seconds": runs[2].wall_seconds,
        "peak_rss_mb": runs[2].peak_rss_mb,
        "ratings_per_second": runs[2].ratings_per_second,
    }
    if grouped:  # the group's peak holds every sample of its tree; nothing was killed. (Library
        # pages another group read first are charged there: no bound by the process's RSS.)
        assert measured["cgroup_peak_mb"] >= measured["tree_peak_mb"] > 0
        assert measured["oom_kills"] == 0
    assert set(rows[0]) == {"stage", "wall_seconds", "peak_rss_mb", *grouped}
    project = tmp_path / "work" / "project"
    scores = json.loads((project / "metrics" / "scores.json").read_text())
    mirror = bench_scale.mirror_dir(tmp_path / "cache", 200_000, bench_scale.DEFAULT_SEED)
    floor = json.loads((mirror / "ml-25m.floor.json").read_text())
    evaluate = bench_scale.STAGES.index("evaluate")
    ranking = scores["ranking"]
    assert {k: v for k, v in rows[evaluate].items() if k not in grouped} == {
        "stage": "evaluate",
        "wall_seconds": runs[evaluate].wall_seconds,
        "peak_rss_mb": runs[evaluate].peak_rss_mb,
        "rmse": scores["rmse"],
        "baseline_rmse": scores["baselines"]["user_movie_biases"]["rmse"],
        "floor_rmse": round(floor["floor_rmse"], 6),
        **{k: scores[k] for k in ("precision@10", "recall@10", "ndcg@10", "coverage@10")},
        "popularity_ndcg@10": ranking["most_popular"]["ndcg@10"],
        "watch_ndcg@10": ranking["watch"]["ndcg@10"],
        "rating_model_ndcg@10": ranking["model"]["ndcg@10"],
        "oracle_ndcg@10": floor["oracle_ndcg@10"],
        "generator_popularity_ndcg@10": floor["popularity_ndcg@10"],
    }
    assert 0.4 < floor["floor_rmse"] < scores["rmse"]
    # Users choose by taste (DEFAULT_TASTE): the served lists beat popularity, below the oracle.
    assert ranking["most_popular"]["ndcg@10"] < scores["ndcg@10"] < floor["oracle_ndcg@10"]
    assert scores["ranked_by"].startswith("will-watch (als)")
    table = bench_scale.format_table(runs, 200_000)
    assert all(f"| {stage} |" in table for stage in [*bench_scale.STAGES, "pipeline", "total"])
    assert f"| the model | {scores['rmse']:.4f} |" in table
    assert scores["ranking_users"]["ranked"] == scores["ranking_users"]["of"]  # 1300 users < 10000
    summary = json.loads((project / "data" / "processed" / "summary.json").read_text())
    assert summary["dataset"] == "ml-25m" and summary["ratings_read"] == 200_000
    log = (tmp_path / "work" / "logs" / "download.log").read_text()
    assert "NOT the official ml-25m data" in log  # the checksum opt-in is never silent
    made = (mirror / "ml-25m.zip").stat().st_mtime_ns
    assert bench_scale.ensure_mirror(tmp_path / "cache", 200_000) == mirror
    assert (mirror / "ml-25m.zip").stat().st_mtime_ns == made  # reused, not remade


@pytest.mark.slow
def test_bench_scale_reads_generated_parts_as_a_custom_table(tmp_path):
    """--parts: synth.write_parts' folder, linked into the copy's data/custom, is what preprocess
    reads (data.dataset: custom), every rating of it."""
    stages = ("download", "preprocess")
    runs = bench_scale.run_benchmark(
        300_000, tmp_path / "cache", tmp_path / "work", taste=0.0, stages=stages, parts=True
    )
    assert [run.stage for run in runs] == [*stages, "pipeline", "total"]
    project = tmp_path / "work" / "project"
    summary = json.loads((project / "data" / "processed" / "summary.json").read_text())
    assert summary["dataset"] == "custom" and summary["ratings_read"] == 300_000
    parts = tmp_path / "cache" / "parts-300000-seed0-taste0" / "ratings"
    linked = project / "data" / "custom" / "generated" / "ratings"
    assert sorted(p.name for p in linked.iterdir()) == sorted(p.name for p in parts.iterdir())
    assert all((linked / p.name).samefile(p) for p in parts.iterdir())  # linked, not copied
