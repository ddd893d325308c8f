"""Fold-in benchmark (issue 29): one person's fold-in plus ranking, warm, and `recommend --ratings` start to exit.

Run `make bench` (or `python -m benchmarks.bench_foldin` from the project root after
`dvc repro train train_watch`). Part 1 loads the saved models once, as a running service would,
then times the work of one request, the ratings given to the top-10 list with its predicted
ratings (movielens.serve.folded: given_history and folded_top), for `--people` trained users
drawn at random, each user's training ratings given as a new person's history: one uncounted run
per person, then `--repeats` timed runs, the person's median kept; and the same for one history
of 5,000 movies (or every movie, when fewer). The same again with BLAS limited to one thread, a
diagnostic: one person's products are small, and on a busy machine OpenBLAS's threads wait for
cores more than they compute. Part 2 times the whole `movielens recommend
--ratings FILE -n 10` process, start to exit, for the person of median history size: one
uncounted run, then `--runs` runs. Figures go to stdout and benchmarks/foldin.json. Targets:
fold-in plus ranking <= 20 ms median warm, the command <= 2 s.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import ThreadpoolController

from benchmarks.bench_recommend import run_once
from movielens.plumbing import paths
from movielens.plumbing.errors import PipelineError, run_stage
from movielens.plumbing.files import write_json
from movielens.serve.command import serve_settings
from movielens.serve.folded import folded_top, given_history, load_fold_models
from movielens.serve.given import GivenRatings
from movielens.serve.load import load_catalogue

RESULTS = Path("benchmarks/foldin.json")
TARGET_FOLD_MS = 20.0  # issue 29: fold-in plus ranking for one person, median, warm
TARGET_COMMAND_S = 2.0  # issue 29: `movielens recommend --ratings`, start to exit
LARGE_HISTORY = 5000
LIST_LENGTH = 10
MOVIELENS = str(Path(sys.executable).with_name("movielens"))  # the console script users run
COMMAND: list[str] = []  # arguments before `recommend` (the tests run `python -m movielens.cli`)


def given_of(movie_ids: np.ndarray, ratings: np.ndarray) -> GivenRatings:
    """GivenRatings as movielens.serve.given.read_given returns them for distinct movies."""
    ids = np.asarray(movie_ids, np.int64)
    return GivenRatings(ids, np.asarray(ratings, np.float32), len(ids), np.zeros(0, np.int64))


def people_histories(people: int, seed: int) -> dict[int, GivenRatings]:
    """`people` trained users drawn at random: userId -> its training ratings as a given history."""
    train = pd.read_parquet(paths.TRAIN, columns=["userId", "movieId", "rating"])
    users = train["userId"].unique()
    chosen = np.random.default_rng(seed).choice(users, min(people, len(users)), replace=False)
    groups = train[train["userId"].isin(chosen)].groupby("userId", sort=True)
    return {int(user): given_of(rows["movieId"], rows["rating"]) for user, rows in groups}


def large_history(movie_ids: np.ndarray, seed: int) -> GivenRatings:
    """LARGE_HISTORY movies the models know (all of them when fewer), rated at random."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(movie_ids, min(LARGE_HISTORY, len(movie_ids)), replace=False)
    return given_of(chosen, rng.choice(np.arange(1, 11) / 2, len(chosen)))


def request_ms(given: GivenRatings, catalogue, models, like_weight: float, repeats: int) -> float:
    """The median milliseconds of one request's work, after one uncounted run."""

    def once() -> float:
        start = time.perf_counter()
        history = given_history(given, catalogue)
        folded_top(history, models, LIST_LENGTH, like_weight)
        return (time.perf_counter() - start) * 1000.0

    once()
    return statistics.median(once() for _ in range(repeats))


def request_figures(histories, catalogue, models, like_weight: float, repeats: int) -> dict:
    """Each person's median request time: their spread over people, and the large history's."""
    large = large_history(catalogue.movie_ids, seed=0)
    times = [request_ms(g, catalogue, models, like_weight, repeats) for g in histories]
    return {
        **spread(times, 2),
        "large_history_ms": round(request_ms(large, catalogue, models, like_weight, repeats), 2),
    }


def spread(values: list[float], digits: int) -> dict:
    ordered = np.sort(values)
    return {
        "median": round(float(np.median(ordered)), digits),
        "p90": round(float(np.quantile(ordered, 0.9)), digits),
        "min": round(float(ordered[0]), digits),
        "max": round(float(ordered[-1]), digits),
    }


def time_fold_in(people: int, repeats: int, seed: int) -> tuple[dict, int, str]:
    """Part 1: the warm figures, and the median-size person's userId and history as CSV text."""
    settings = serve_settings()
    catalogue = load_catalogue()
    models = load_fold_models(catalogue, settings)
    people = people_histories(people, seed)
    histories = list(people.values())
    timing = (histories, catalogue, models, settings.like_weight, repeats)
    default = request_figures(*timing)
    with ThreadpoolController().limit(limits=1, user_api="blas"):
        one_thread = request_figures(*timing)
    sizes = [len(g.movie_ids) for g in histories]
    user = list(people)[int(np.argsort(sizes)[len(sizes) // 2])]
    csv_text = pd.DataFrame(
        {"movieId": people[user].movie_ids, "rating": people[user].ratings}
    ).to_csv(index=False)
    figures = {
        "people": len(histories),
        "repeats": repeats,
        "history_sizes": spread(sizes, 0),
        "large_history_movies": min(LARGE_HISTORY, len(catalogue.movie_ids)),
        "fold_in_and_rank_ms": default,
        "one_blas_thread_ms": one_thread,
        "watch_model": models.watch.kind,
        "n_movies": len(catalogue.movie_ids),
        "target_ms": TARGET_FOLD_MS,
    }
    return figures, user, csv_text


def timed(command: list[str]) -> tuple[float, float]:
    """Wall seconds of one run of `command`, start to exit, and its CPU seconds (user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = run_once(command)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def command_figures(runs: list[tuple[float, float]]) -> dict:
    walls, cpus = [w for w, _ in runs], [c for _, c in runs]
    return {
        "wall_s": {k: v for k, v in spread(walls, 3).items() if k != "p90"},
        "cpu_s": {k: v for k, v in spread(cpus, 3).items() if k != "p90"},
        "seconds": [round(w, 3) for w in walls],
    }


def time_command(user: int, csv_text: str, runs: int) -> dict:
    """Part 2: the whole command on the history in csv_text, in turn with --user for its user."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ratings.csv"
        path.write_text(csv_text)
        recommend = [MOVIELENS, *COMMAND, "recommend", "-n", str(LIST_LENGTH)]
        given = [*recommend, "--ratings", str(path)]
        trained = [*recommend, "--user", str(user)]
        timed(given), timed(trained)  # uncounted: file caches
        pairs = [(timed(given), timed(trained)) for _ in range(runs)]
    return {
        "command": f"movielens recommend --ratings FILE -n {LIST_LENGTH}",
        "history_movies": csv_text.count("\n") - 1,
        "runs": runs,
        "ratings": command_figures([a for a, _ in pairs]),
        "user": {
            "command": f"movielens recommend --user {user} -n {LIST_LENGTH}",
            **command_figures([b for _, b in pairs]),
        },
        "target_s": TARGET_COMMAND_S,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=50, help="trained users folded in anew")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per person")
    parser.add_argument("--runs", type=int, default=7, help="counted runs of the command")
    parser.add_argument("--seed", type=int, default=0, help="draws the people")
    args = parser.parse_args(argv)
    if min(args.people, args.repeats, args.runs) < 1:
        raise PipelineError("--people, --repeats and --runs must be at least 1")
    fold_in, user, csv_text = time_fold_in(args.people, args.repeats, args.seed)
    command = time_command(user, csv_text, args.runs)
    machine = {"python": platform.python_version(), "cpus": os.cpu_count()}
    result = {"fold_in": fold_in, "command": command, "machine": machine}
    result["machine"]["platform"] = platform.platform()
    write_json(RESULTS, result)
    sizes = fold_in["history_sizes"]
    print(
        f"fold-in + top-{LIST_LENGTH}, warm, {fold_in['people']} people ({sizes['min']:.0f}-"
        f"{sizes['max']:.0f} ratings, watch model {fold_in['watch_model']}, "
        f"{fold_in['n_movies']} movies), target <= {TARGET_FOLD_MS:g} ms median:"
    )
    for name in ("fold_in_and_rank_ms", "one_blas_thread_ms"):
        ms = fold_in[name]
        print(
            f"  {name}: median {ms['median']:.2f}, p90 {ms['p90']:.2f}, max {ms['max']:.2f}; a "
            f"{fold_in['large_history_movies']}-movie history {ms['large_history_ms']:.2f}"
        )
    for name, figures in (
        (f"{command['command']} ({command['history_movies']} ratings)", command["ratings"]),
        (command["user"]["command"], command["user"]),
    ):
        wall, cpu = figures["wall_s"], figures["cpu_s"]
        print(
            f"{name}, start to exit: median {wall['median']:.3f} s (min {wall['min']:.3f}, max "
            f"{wall['max']:.3f}), CPU {cpu['median']:.3f} s"
        )
    print(f"target <= {TARGET_COMMAND_S:g} s for --ratings; written to {RESULTS}")


if __name__ == "__main__":
    run_stage(main)
