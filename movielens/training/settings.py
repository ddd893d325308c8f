"""The train section of params.yaml as typed settings: what the fit reads, and the engines' part.

The doors (stages, the CLI, benchmarks) load params.yaml and build `TrainSettings` from its
`train` section; the library takes the settings, never the file or the dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any


@dataclass(frozen=True)
class FitSettings:
    """How an engine fits: the part of TrainSettings the engines and the epoch loop read.

    Attributes:
        epochs: at most this many epochs (exactly this many without a validation part).
        batch_size: ratings per step; learning_rate: Adam's.
        optimizer: "adam" or "lazy_adam" (movielens.training.optimizers).
        patience: epochs without a better validation RMSE before stopping.
        seed: draws each epoch's order.
    """

    epochs: int
    batch_size: int
    learning_rate: float
    optimizer: str
    patience: int
    seed: int

    def for_epochs(self, epochs: int | None) -> FitSettings:
        """The same settings for `epochs` epochs (None: unchanged), as the refit runs."""
        return self if epochs is None else replace(self, epochs=epochs)


@dataclass(frozen=True)
class TrainSettings:
    """The rating model's fit: the `train` params it reads, one field per key, of the same name.

    Attributes:
        backend: the Keras backend the fit must run on ("tensorflow" or "jax").
        engine: "auto", "keras", "compiled" or "xla" (movielens.training.engines).
        shard_tables: on several JAX devices, cut the tables by rows instead of copying them.
        refit: retrain on every training rating for the epochs early stopping chose.
        embedding_dim, embeddings_l2, activity_l2: the model's (movielens.model.keras_model).
        validation_size: the part of the training ratings held out for early stopping.
        epochs, batch_size, learning_rate, optimizer, patience, seed: as FitSettings; seed also
            draws the initial weights and the validation part.
    """

    backend: str
    engine: str
    shard_tables: bool
    refit: bool
    embedding_dim: int
    epochs: int
    batch_size: int
    learning_rate: float
    optimizer: str
    embeddings_l2: float
    activity_l2: float
    validation_size: float
    patience: int
    seed: int

    @classmethod
    def from_params(cls, section: Mapping[str, Any]) -> TrainSettings:
        """The settings from an already loaded `train` params section; keys that are not fields
        (the bias model's baseline_*, movielens.model.baseline.BiasSettings) are left out."""
        return cls(**{f.name: section[f.name] for f in fields(cls)})

    def fitting(self) -> FitSettings:
        """The engines' part."""
        return FitSettings(**{f.name: getattr(self, f.name) for f in fields(FitSettings)})
