"""The one epoch loop (movielens.training.epochs.run_epochs) with a scripted epoch step: what it
trains, in which order, validates, records, keeps, stops on and puts back, whichever engine plugs
in."""

import math

import numpy as np
import pytest

from movielens.plumbing.errors import PipelineError
from movielens.training.epochs import TrainingData, epoch_orders, run_epochs
from movielens.training.settings import FitSettings

ROWS = 10


def data(validating: bool) -> TrainingData:
    """Ten ratings; rows 7-9 are the validation part when validating."""
    every = np.arange(ROWS)
    val_rows = every[7:] if validating else every[:0]
    fit_rows = every[:7] if validating else every
    return TrainingData(every, every, np.ones(ROWS, np.float32), fit_rows, val_rows)


def settings(epochs: int, patience: int = 2) -> FitSettings:
    return FitSettings(
        epochs, batch_size=4, learning_rate=0.1, optimizer="adam", patience=patience, seed=5
    )


class Scripted:
    """An epoch step whose weights are the number of the epoch that made them, whose validation
    RMSE after epoch e is val_rmses[e - 1], and which notes every call the loop makes."""

    host_order = True

    def __init__(self, val_rmses=(), losses=None):
        self.val_rmses = val_rmses
        self.losses = losses
        self.weights = 0
        self.calls = []
        self.orders = []

    def run(self, epoch: int, order) -> dict:
        self.calls.append(("run", epoch))
        self.orders.append(order)
        self.weights = epoch
        loss = self.losses[epoch - 1] if self.losses else 1.0 / epoch
        return {"loss": loss, "rmse": 2.0 / epoch}

    def validation_rmse(self) -> float:
        self.calls.append(("validate", self.weights))
        return self.val_rmses[self.weights - 1]

    def snapshot(self) -> int:
        self.calls.append(("snapshot", self.weights))
        return self.weights

    def restore(self, snapshot: int) -> None:
        self.calls.append(("restore", snapshot))
        self.weights = snapshot


def test_it_stops_patience_epochs_after_the_best_and_puts_the_best_back():
    step = Scripted(val_rmses=[0.9, 0.8, 0.85, 0.84, 0.5])
    history = run_epochs(step, data(validating=True), settings(epochs=5, patience=2))
    assert list(history["epoch"]) == [1, 2, 3, 4]  # epochs 3 and 4 did not beat epoch 2
    assert list(history["val_rmse"]) == [0.9, 0.8, 0.85, 0.84]
    assert step.weights == 2
    assert [call for call in step.calls if call[0] in ("snapshot", "restore")] == [
        ("snapshot", 1),
        ("snapshot", 2),
        ("restore", 2),
    ]
    assert step.calls[-1] == ("restore", 2)  # nothing trains after the best is put back


def test_each_epoch_is_validated_after_it_is_trained():
    step = Scripted(val_rmses=[0.9, 0.8])
    run_epochs(step, data(validating=True), settings(epochs=2, patience=5))
    assert step.calls[:3] == [("run", 1), ("validate", 1), ("snapshot", 1)]
    assert step.calls[3:6] == [("run", 2), ("validate", 2), ("snapshot", 2)]


def test_each_epoch_gets_the_next_order_of_the_fitting_rows_drawn_from_the_seed():
    step = Scripted(val_rmses=[0.9, 0.8, 0.7])
    run_epochs(step, data(validating=True), settings(epochs=3))
    expected = epoch_orders(np.arange(7), 5)
    for order in step.orders:
        np.testing.assert_array_equal(order, next(expected))
    assert not np.array_equal(step.orders[0], step.orders[1])


def test_a_step_that_draws_its_own_order_is_handed_none():
    step = Scripted(val_rmses=[0.9, 0.8])
    step.host_order = False
    run_epochs(step, data(validating=True), settings(epochs=2))
    assert step.orders == [None, None]


def test_an_improving_run_ends_at_the_epoch_limit_on_its_last_epoch():
    step = Scripted(val_rmses=[0.9, 0.8, 0.7])
    history = run_epochs(step, data(validating=True), settings(epochs=3, patience=1))
    assert len(history) == 3 and step.weights == 3


def test_without_a_validation_part_every_epoch_runs_and_nothing_is_kept():
    step = Scripted()
    history = run_epochs(step, data(validating=False), settings(epochs=3, patience=1))
    assert list(history.columns) == ["epoch", "loss", "rmse"]
    assert history.to_dict("list") == {
        "epoch": [1, 2, 3],
        "loss": [1.0, 0.5, 1.0 / 3],
        "rmse": [2.0, 1.0, 2.0 / 3],
    }
    assert step.calls == [("run", 1), ("run", 2), ("run", 3)]
    assert all(len(order) == ROWS for order in step.orders)


def test_every_row_reaches_the_hook_in_order_and_a_diverged_loss_stops_the_fit():
    rows = []
    step = Scripted(val_rmses=[0.9, 0.8, 0.7], losses=[1.0, math.nan, 0.5])
    with pytest.raises(PipelineError, match="training diverged at epoch 2"):
        run_epochs(step, data(validating=True), settings(epochs=3, patience=5), rows.append)
    assert [row["epoch"] for row in rows] == [1, 2]  # the diverged row is handed on, then raised
    assert rows[0] == {"epoch": 1, "loss": 1.0, "rmse": 2.0, "val_rmse": 0.9}
    assert ("run", 3) not in step.calls
