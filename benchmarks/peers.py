"""Surprise's algorithms, the peers of our model: how each is made, fitted and counted.

Each fits the raw ids of the training rows and predicts every test pair; test pairs with an
unseen user or movie get Surprise's own fallback (`was_impossible`).

This module imports neither Keras nor TensorFlow (the one call into movielens.training is made
inside bench_peer), so that the benchmark's command line reads the peers' names before
TensorFlow loads, after the process's runtime set-up, whose environment TensorFlow reads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from surprise import SVD, BaselineOnly, Dataset, KNNBaseline, Reader, SVDpp
from surprise.prediction_algorithms.algo_base import AlgoBase

from benchmarks.rows import result_row
from benchmarks.splits import Split

log = logging.getLogger(__name__)

# "Epochs" below means full passes over the training ratings that fit() makes:
#   BaselineOnly: ALS sweeps, bsl_options n_epochs (10 unless set: surprise's optimize_baselines.pyx);
#   SVD, SVDpp: SGD epochs, n_epochs (20 by default); an SVD++ epoch also walks each user's
#       implicit-feedback items, so it costs more per rating than an SVD epoch;
#   KNNBaseline: 1, the pass that accumulates the item-item pearson_baseline similarities (the ALS
#       baseline it fits first, 10 sweeps, is not counted).
# Our model: Adam epochs actually run (early stopping), over the rows left after the validation part.
ALS_DEFAULT_EPOCHS = 10


@dataclass(frozen=True)
class Peer:
    """A Surprise algorithm: how to make it, its "epochs", and the settings a row records."""

    make: Callable[[int], AlgoBase]  # seed -> a fresh, unfitted algorithm
    epochs: Callable[[AlgoBase], int]
    settings: tuple[str, ...]


PEERS = {
    "BaselineOnly": Peer(
        lambda seed: BaselineOnly(verbose=False),
        lambda algo: algo.bsl_options.get("n_epochs", ALS_DEFAULT_EPOCHS),
        ("bsl_options",),
    ),
    # random_state fixes only the factor initialisation; every hyperparameter stays the default.
    "SVD": Peer(
        lambda seed: SVD(random_state=seed),
        lambda algo: algo.n_epochs,
        ("n_factors", "n_epochs", "random_state"),
    ),
    "SVDpp": Peer(
        lambda seed: SVDpp(random_state=seed),
        lambda algo: algo.n_epochs,
        ("n_factors", "n_epochs", "random_state"),
    ),
    "KNNBaseline": Peer(
        lambda seed: KNNBaseline(
            sim_options={"name": "pearson_baseline", "user_based": False}, verbose=False
        ),
        lambda algo: 1,
        ("k", "min_k", "sim_options", "bsl_options"),
    ),
}


def bench_peer(name: str, split: Split, seed: int) -> dict:
    """Fit one Surprise algorithm on the raw ids of the training rows (timed) and predict the test.

    Test pairs with an unseen user or movie get Surprise's own fallback (`was_impossible`).
    """
    from movielens.training.fit import rating_scale_of  # it imports Keras: see the docstring

    peer = PEERS[name]
    algo = peer.make(seed)
    train, test = split.train, split.test
    reader = Reader(rating_scale=rating_scale_of(train["rating"].to_numpy()))
    frame = train[["userId", "movieId", "rating"]].astype({"rating": np.float64})
    trainset = Dataset.load_from_df(frame, reader).build_full_trainset()
    pairs = zip(
        test["userId"].tolist(), test["movieId"].tolist(), test["rating"].tolist(), strict=True
    )
    log.info("%s: fitting on %d ratings", name, len(train))
    start = time.perf_counter()
    algo.fit(trainset)
    seconds = time.perf_counter() - start
    predictions = algo.test(list(pairs))
    row = result_row(
        name,
        test["rating"].to_numpy(),
        np.array([p.est for p in predictions]),
        seconds,
        peer.epochs(algo),
        len(train),
        {key: getattr(algo, key) for key in peer.settings},
    )
    row["impossible_pairs"] = sum(p.details["was_impossible"] for p in predictions)
    log.info("%s: %.1f s, test RMSE %.4f", name, seconds, row["rmse"])
    return row
