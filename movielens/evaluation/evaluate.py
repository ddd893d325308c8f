"""Scoring the test split: the rating model's RMSE and MAE beside two baselines, the served top-k
lists' ranking metrics beside the rating model alone, the watch model alone and popularity, and the
data for DVC plots."""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from movielens.data.ids import index_in, sorted_unique
from movielens.evaluation.accuracy import predict_folded, predict_test, rmse, scores
from movielens.evaluation.compare import Comparing
from movielens.evaluation.ranking_metrics import RankingMetrics
from movielens.evaluation.topn import rank_folded_people, rank_test_users, ranking_summary
from movielens.model.architecture import standard_problem
from movielens.model.baseline import BiasModel
from movielens.model.watch import WatchModel
from movielens.plumbing.errors import PipelineError
from movielens.ranking.foldin import FoldInSettings, Histories, folded_ranker
from movielens.ranking.lists import TopLists, sample_users
from movielens.ranking.scorers import Factors, factors_from_model
from movielens.ranking.served import ranked_by

log = logging.getLogger(__name__)


def activity_buckets(train_counts: np.ndarray, edges: list[int]) -> np.ndarray:
    """Label each count by its bucket: '<e0', 'e0-e1', ..., '>=eN' (lower bounds inclusive)."""
    labels = [f"<{edges[0]}"] + [f"{a}-{b - 1}" for a, b in itertools.pairwise(edges)]
    labels.append(f">={edges[-1]}")
    return np.asarray(labels, dtype=object)[np.searchsorted(edges, train_counts, side="right")]


def rmse_by_activity(
    actual: np.ndarray, predicted: np.ndarray, train_counts: np.ndarray, edges: list[int]
) -> pd.DataFrame:
    """RMSE of the test pairs grouped by how many training ratings their user has."""
    frame = pd.DataFrame(
        {
            "bucket": activity_buckets(train_counts, edges),
            "lower": np.asarray([0, *edges])[np.searchsorted(edges, train_counts, side="right")],
            "sq": (np.asarray(predicted, np.float64) - actual) ** 2,
        }
    )
    grouped = (
        frame.groupby(["lower", "bucket"], sort=True)["sq"].agg(["mean", "size"]).reset_index()
    )
    return pd.DataFrame(
        {
            "user_activity": grouped["bucket"],
            "rmse": np.sqrt(grouped["mean"]).round(6),
            "test_pairs": grouped["size"],
        }
    )


def sample_rows(n: int, limit: int) -> np.ndarray:
    """At most `limit` evenly spaced row positions out of n (deterministic; all rows when n <= limit)."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).astype(np.int64))


@dataclass(frozen=True)
class Evaluation:
    """What the evaluate stage writes: the scores, the data of two plots, the served lists and the
    per-user metrics.

    Attributes:
        rankings: each ranker's per-user metrics (per_user_frame), its lists among them.
        people: the userId of each person folded in (the lists' and rankings' user index), or None
            when the rankings index the trained users (data/processed/user_ids.parquet).
    """

    scores: dict
    predictions: pd.DataFrame  # actual and predicted ratings of at most plot_points test pairs
    rmse_by_activity: pd.DataFrame
    top_lists: TopLists  # the served top-k lists the ranking metrics were computed from
    rankings: dict[str, RankingMetrics]
    people: np.ndarray | None = None


@dataclass(frozen=True)
class Predicted:
    """The test targets and their predicted ratings.

    Attributes:
        users: int (n,), each target's user index (or person folded in); -1: a user the model
            does not know.
        actual: float64 (n,); predicted: float64 (n,), the rating model's with the bias model's
            fallback on cold pairs; baseline: float64 (n,), the bias model's alone.
        warm: bool (n,), the pairs the rating model predicted itself.
    """

    users: np.ndarray
    actual: np.ndarray
    predicted: np.ndarray
    baseline: np.ndarray
    warm: np.ndarray

    def table(self, mu: float) -> dict:
        """scores() of the model and the two baselines (the global mean mu, the bias model)."""
        return scores(
            self.actual,
            {
                "model": self.predicted,
                "global_mean": np.full(len(self.actual), mu),
                "user_movie_biases": self.baseline,
            },
        )


@dataclass(frozen=True)
class EvaluateSettings:
    """The evaluate stage's settings: the `evaluate` params and `ranking.like_weight`, by name."""

    like_weight: float
    batch_size: int
    plot_points: int
    activity_buckets: list[int]
    k: int
    relevance_threshold: float
    block_size: int
    ranking_users: int | None
    bootstrap_resamples: int
    seed: int


def evaluate_split(
    model,
    biases: BiasModel,
    watch: WatchModel,
    train: pd.DataFrame,
    test: pd.DataFrame,
    *,
    movie_genres: np.ndarray,
    settings: EvaluateSettings,
) -> Evaluation:
    """Score the model and the baselines on the test split, and rank for the sampled users.

    Args:
        model: the trained Keras model; biases: the saved user+movie bias model (cold pairs);
            watch: the saved watch model (its id spaces are the processed data's).
        train, test: user_index, movie_index and rating of the splits (-1: a cold id).
        movie_genres: str (n_movies,), each movie index's genres ("A|B", data/processed/movies).
        settings: the `ranking.like_weight` and `evaluate` params.
    """
    s = settings
    users, movies = test["user_index"].to_numpy(), test["movie_index"].to_numpy()
    predicted, baseline = predict_test(model, biases, test, s.batch_size)
    actual = test["rating"].to_numpy(np.float64)
    targets = Predicted(users, actual, predicted, baseline, (users >= 0) & (movies >= 0))
    ranked = sample_users(watch.n_users, s.ranking_users, s.seed)
    ranking = rank_test_users(
        model, watch, train, test, s.like_weight, s.batch_size, s.k, s.relevance_threshold, s.block_size,
        ranked,
    )  # fmt: skip
    comparing = Comparing.of(
        train["movie_index"], movie_genres, watch.n_movies, s.bootstrap_resamples, s.seed
    )
    return evaluation_of(
        targets, biases.mu, ranking, train["user_index"].to_numpy(), watch.n_users,
        ranked_by(watch.kind, s.like_weight), comparing, s.plot_points, s.activity_buckets,
    )  # fmt: skip


def evaluation_of(
    targets: Predicted,
    mu: float,
    ranking: dict[str, RankingMetrics],
    given_users: np.ndarray,
    n_users: int,
    served_by: str,
    comparing: Comparing,
    plot_points: int,
    activity_buckets: list[int],
    folded_in: dict | None = None,
    people: np.ndarray | None = None,
) -> Evaluation:
    """The Evaluation of predicted targets and rankings: scores.json (folded_in, when given, after
    the existing keys, then the comparisons), the plots' data, the lists, the per-user metrics.

    Args:
        given_users: int (n,), the user index of each rating the users gave (training, history):
            RMSE by activity counts them.
        n_users: the users ranked from; served_by: ranked_by's words.
    """
    table = targets.table(mu)
    rows = {name: ranking_summary(metrics) for name, metrics in ranking.items()}
    warm = targets.warm
    rmse_warm = rmse(targets.actual[warm], targets.predicted[warm])
    result = scores_json(table, rows, served_by, rmse_warm, n_users, warm)
    if folded_in is not None:
        result["folded_in"] = folded_in
    result |= comparing.figures(ranking)
    log_scores(table, rows, len(warm), int((~warm).sum()))
    predictions, by_activity = plot_data(
        targets.actual, targets.predicted, targets.users, given_users, plot_points,
        activity_buckets,
    )  # fmt: skip
    return Evaluation(result, predictions, by_activity, ranking["served"].lists, ranking, people)


def evaluate_people(
    model,
    biases: BiasModel,
    watch: WatchModel,
    train: pd.DataFrame,
    history: pd.DataFrame,
    test: pd.DataFrame,
    *,
    fold_in: FoldInSettings,
    reg_users: float,
    movie_genres: np.ndarray,
    settings: EvaluateSettings,
) -> Evaluation:
    """evaluate_split for people held out of training (preprocess.split: heldout_users): each one
    folded in from their history (movielens.ranking.foldin, the path `recommend --ratings` takes),
    their later ratings predicted and ranked for, beside the bias baseline folded in the same way.

    Args:
        history, test: userId, movie_index (-1: unseen in training) and rating of the ratings the
            people give and of those to predict.
        fold_in: fold_in_settings of the saved model; reg_users: train.baseline_reg_users.
        settings: as evaluate_split's (its batch_size unused: a folded-in person is scored in NumPy).
    """
    s = settings
    people, histories, given, skipped = folded_people(history, test)
    served = folded_ranker(histories, standard_factors(model), watch, s.like_weight, fold_in)
    predicted, baseline = predict_folded(served, biases, reg_users, histories, given)
    users, actual = given["user_index"].to_numpy(), given["rating"].to_numpy(np.float64)
    targets = Predicted(users, actual, predicted, baseline, given["movie_index"].to_numpy() >= 0)
    ranked = sample_users(histories.n_people, s.ranking_users, s.seed)
    train_movies = train["movie_index"].to_numpy()
    ranking = rank_folded_people(
        served, histories, train_movies, given, s.k, s.relevance_threshold, s.block_size, ranked
    )
    folded_in = {
        "people": len(people),
        "history_ratings": len(histories.users),
        "history_ratings_unknown_movies": skipped,  # movies the models have no row for
        "baseline": "user_movie_biases folded in with train.baseline_reg_users",
    }
    comparing = Comparing.of(
        train_movies, movie_genres, watch.n_movies, s.bootstrap_resamples, s.seed
    )
    return evaluation_of(
        targets, biases.mu, ranking, histories.users, len(people),
        ranked_by(watch.kind, s.like_weight), comparing, s.plot_points, s.activity_buckets, folded_in,
        people,
    )  # fmt: skip


def folded_people(
    history: pd.DataFrame, test: pd.DataFrame
) -> tuple[np.ndarray, Histories, pd.DataFrame, int]:
    """The held-out people, numbered 0..n-1 by userId: their histories and their targets.

    A history rating of a movie the models do not know (movie_index -1) cannot be folded in and is
    left out (counted); a target of such a movie is predicted by the bias baseline.

    Returns:
        int (n_people,) the people's userIds, ascending; their Histories; the targets as
        user_index (the person), movie_index, rating; the history ratings left out.

    Raises:
        PipelineError: when a target's user gives no history (the files are from different runs).
    """
    user_ids = history["userId"].to_numpy()
    people = sorted_unique(user_ids)
    known = history["movie_index"].to_numpy() >= 0
    histories = Histories.of(
        index_in(people, user_ids)[known],
        history["movie_index"].to_numpy()[known],
        history["rating"].to_numpy()[known],
        len(people),
    )
    person = index_in(people, test["userId"].to_numpy())
    if (person < 0).any():
        raise PipelineError(
            f"{int((person < 0).sum())} test ratings belong to users without a history in "
            "data/processed/history.parquet; rerun the pipeline (dvc repro)"
        )
    targets = pd.DataFrame(
        {
            "user_index": person.astype(np.int64),
            "movie_index": test["movie_index"].to_numpy(),
            "rating": test["rating"].to_numpy(),
        }
    )
    return people, histories, targets, int((~known).sum())


def standard_factors(model) -> Factors:
    """The model's tables as Factors: folding a person in needs the standard architecture.

    Raises:
        PipelineError: for a model of another architecture (no user row to fit).
    """
    problem = standard_problem(model.get_config())
    if problem is not None:
        raise PipelineError(
            f"folding held-out users in needs the standard rating model, and {problem}; use "
            "another preprocess.split or the standard model"
        )
    return factors_from_model(model)


def scores_json(
    table: dict, rows: dict, served_by: str, rmse_warm: float, n_users: int, warm: np.ndarray
) -> dict:
    """metrics/scores.json: RMSE and MAE first, the served lists' ranking metrics, then the rest.

    Args:
        table: scores() of the model and the baselines; rows: ranking_summary of each ranker.
        served_by: what the served lists are ranked by; n_users: the users ranked from (the
            users the model knows, or the people folded in).
        warm: bool (n_test,), the test pairs whose user and movie the model knows.
    """
    return {
        "rmse": table["model"]["rmse"],
        "mae": table["model"]["mae"],
        **{key: value for key, value in rows["served"].items() if "@" in key},
        "rmse_warm": round(rmse_warm, 6),
        "baselines": {key: value for key, value in table.items() if key != "model"},
        "ranked_by": served_by,
        "ranking": rows,
        "ranking_users": {"ranked": rows["served"]["users_ranked"], "of": n_users},
        "test_pairs": len(warm),
        "cold_pairs": int((~warm).sum()),
        "cold_fallback": "user_movie_biases",
    }


def per_user_frame(rankings: dict[str, RankingMetrics], user_ids: np.ndarray) -> pd.DataFrame:
    """data/evaluation/per_user.parquet: userId, ranker, precision, recall, ndcg of every user
    evaluated, ranker by ranker in scores.json's order, users ascending within a ranker.

    Args:
        user_ids: the userId of each user index the rankings use.
    """
    frames = [
        pd.DataFrame(
            {
                "userId": np.asarray(user_ids)[metrics.user_index],
                "ranker": name,
                "precision": metrics.precision,
                "recall": metrics.recall,
                "ndcg": metrics.ndcg,
            }
        )
        for name, metrics in rankings.items()
    ]
    return pd.concat(frames, ignore_index=True)


def plot_data(
    actual: np.ndarray,
    predicted: np.ndarray,
    test_users: np.ndarray,
    train_users: np.ndarray,
    plot_points: int,
    activity_buckets: list[int],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The two plots' data: at most plot_points (actual, predicted) pairs, RMSE by user activity."""
    points = sample_rows(len(actual), plot_points)
    predictions = pd.DataFrame({"actual": actual[points], "predicted": predicted[points].round(4)})
    # every warm test user has training ratings; a folded-in person may have none of known movies
    train_counts = np.bincount(train_users, minlength=int(test_users.max(initial=-1)) + 1)
    counts = np.where(test_users >= 0, train_counts[np.maximum(test_users, 0)], 0)
    return predictions, rmse_by_activity(actual, predicted, counts, activity_buckets)


def log_scores(table: dict, ranking: dict, n_test: int, n_cold: int) -> None:
    """The evaluate stage's summary in its log: RMSE and MAE, then each ranker's metrics."""
    log.info("%-18s %8s %8s", "model", "RMSE", "MAE")
    for name, row in table.items():
        log.info("%-18s %8.4f %8.4f", name, row["rmse"], row["mae"])
    log.info(
        "%d test pairs, %d cold (predicted by the saved user+movie bias model)", n_test, n_cold
    )
    for name, row in ranking.items():
        log.info("%-18s %s", name, "  ".join(f"{k}={v}" for k, v in row.items() if "@" in k))
