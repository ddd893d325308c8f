"""params.yaml: its schema (every key, its type and bounds) and loading it, checked."""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from movielens.plumbing import paths
from movielens.plumbing.choices import COMPUTE_ENGINES, DATASETS, SPLITS, WATCH_MODELS
from movielens.plumbing.errors import PipelineError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Spec:
    """What one params key accepts: a type, optional bounds, optional choices, optional null."""

    kind: type
    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True
    nullable: bool = False
    choices: tuple | None = None

    def describe(self) -> str:
        if self.kind is list:
            return "a non-empty list of increasing positive integers"
        if self.kind is tuple:
            return "a list of two numbers [low, high] with low < high"
        if self.choices is not None:
            allowed = "one of " + ", ".join(map(str, self.choices))
        else:
            allowed = {
                int: "an integer",
                float: "a number",
                str: "a string",
                bool: "true or false",
            }[self.kind]
            if self.low is not None:
                allowed += f" {'>=' if self.low_inclusive else '>'} {self.low}"
            if self.high is not None:
                allowed += f" and {'<=' if self.high_inclusive else '<'} {self.high}"
        return allowed + (" or null" if self.nullable else "")

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if self.kind is list:
            ints = isinstance(value, list) and all(type(v) is int and v > 0 for v in value)
            return ints and len(value) > 0 and all(a < b for a, b in itertools.pairwise(value))
        if self.kind is tuple:  # a range: data.custom.rating_scale
            pair = isinstance(value, list) and len(value) == 2
            return pair and all(map(Spec(float).accepts, value)) and value[0] < value[1]
        if self.kind is float:
            ok_type = isinstance(value, (int, float)) and not isinstance(value, bool)
            # YAML's .nan slips through every comparison below and .inf is no usable setting.
            ok_type = ok_type and math.isfinite(value)
        elif self.kind is int:
            ok_type = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok_type = isinstance(value, self.kind)
        if not ok_type:
            return False
        if self.choices is not None and value not in self.choices:
            return False
        if self.low is not None and (
            value < self.low or (value == self.low and not self.low_inclusive)
        ):
            return False
        return self.high is None or not (
            value > self.high or (value == self.high and not self.high_inclusive)
        )


@dataclass(frozen=True)
class Nested:
    """A mapping under one params key (data.custom): each of its keys checked by its own Spec or
    Nested, an error naming the whole dotted key (data.custom.columns.user)."""

    keys: dict[str, Spec | Nested]

    def describe(self) -> str:
        return f"a mapping of {', '.join(self.keys)}"

    def check(self, value: Any, name: str) -> None:
        if not isinstance(value, dict):
            raise PipelineError(
                f"params.yaml: {name}={_yaml_text(value)} is invalid; it must be {self.describe()}"
            )
        _check_keys(value, self.keys, name)


def _custom_data() -> Nested:
    """data.custom: your own ratings table, read when data.dataset is custom (movielens.data.custom)."""
    column = Spec(str)
    return Nested(
        {
            "ratings": Spec(str),
            "items": Spec(str, nullable=True),
            "columns": Nested(
                {
                    "user": column,
                    "item": column,
                    "rating": column,
                    "timestamp": Spec(str, nullable=True),
                }
            ),
            "rating_scale": Spec(tuple),
        }
    )


def _watch_section(positive_int: Spec, seed: Spec) -> dict[str, Spec]:
    """The watch section: fit_watch's keyword arguments (movielens.model.watch), every key."""
    return {
        "model": Spec(str, choices=WATCH_MODELS),
        "min_ratings": positive_int,
        "ease_l2": Spec(float, low=0.0, low_inclusive=False),
        "ease_max_movies": positive_int,
        "als_factors": positive_int,
        "als_regularization": Spec(float, low=0.0),
        "als_alpha": Spec(float, low=0.0),
        "als_iterations": positive_int,
        "seed": seed,
    }


def _train_section(positive_int: Spec, seed: Spec) -> dict[str, Spec]:
    """The train section: the rating model's fit (movielens.training.settings), every key."""
    return {
        "backend": Spec(str, choices=("tensorflow", "jax")),
        "engine": Spec(str, choices=("auto", "keras", "compiled", "xla")),
        "shard_tables": Spec(bool),
        "refit": Spec(bool),
        "embedding_dim": positive_int,
        "epochs": positive_int,
        "batch_size": positive_int,
        "learning_rate": Spec(float, low=0.0, high=1.0, low_inclusive=False),
        "optimizer": Spec(str, choices=("adam", "lazy_adam")),
        "embeddings_l2": Spec(float, low=0.0),
        "activity_l2": Spec(float, low=0.0),
        "validation_size": Spec(float, low=0.0, high=1.0, high_inclusive=False),
        "patience": Spec(int, low=0),
        "baseline_reg_users": Spec(float, low=0.0),
        "baseline_reg_movies": Spec(float, low=0.0),
        "baseline_iterations": positive_int,
        "seed": seed,
        "processes": positive_int,
    }


def _serve_section(positive_int: Spec) -> dict[str, Spec]:
    """The serve section: the service's limits (ServiceSettings' fields, every one); no stage reads it."""
    return {
        "max_n": positive_int,
        "max_history": positive_int,
        "max_body_bytes": Spec(int, low=1024),
        "max_query_chars": positive_int,
        "search_results": positive_int,
        "reload_poll_s": Spec(float, low=0.0),
        "reload_settle_s": Spec(float, low=0.0),
    }


def params_schema() -> dict[str, dict[str, Spec | Nested]]:
    """The one schema of params.yaml: section -> key -> Spec."""
    positive_int = Spec(int, low=1)
    seed = Spec(int, low=0, high=2**32 - 1)
    fraction = Spec(float, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
    return {
        "data": {"dataset": Spec(str, choices=DATASETS), "custom": _custom_data()},
        "compute": {
            "engine": Spec(str, choices=COMPUTE_ENGINES),
            "spark_master": Spec(str),
            "spark_memory": Spec(str),
        },
        "preprocess": {
            "top_users": Spec(int, low=1, nullable=True),
            "top_movies": Spec(int, low=1, nullable=True),
            "test_size": fraction,
            "seed": seed,
            "split": Spec(str, choices=SPLITS),
            "history_size": Spec(float, low=0.0, high=1.0, low_inclusive=False),
        },
        "train": _train_section(positive_int, seed),
        "watch": _watch_section(positive_int, seed),
        # The served formula's weight, apart from the watch fit: evaluate and recommend read it.
        "ranking": {"like_weight": Spec(float, low=0.0)},
        "evaluate": {
            "batch_size": positive_int,
            "plot_points": positive_int,
            "activity_buckets": Spec(list),
            "k": positive_int,
            "relevance_threshold": Spec(float, low=0.0),
            "block_size": positive_int,
            "ranking_users": Spec(int, low=1, nullable=True),
            "bootstrap_resamples": positive_int,
            "seed": seed,
        },
        "serve": _serve_section(positive_int),
        "crossvalidate": {
            "folds": Spec(int, low=2),
            "seed": seed,
            "batch_size": positive_int,
        },
    }


def _yaml_text(value: Any) -> str:
    """How `value` reads in YAML (true, null, .nan, [1, 2]); strings quoted so '0.2' shows it is one."""
    if isinstance(value, str):
        return repr(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def validate_params(params: Any) -> dict[str, dict[str, Any]]:
    """Check a parsed params.yaml against the schema.

    Raises:
        PipelineError: naming the first key that is missing, unknown or out of range.
    """
    schema = params_schema()
    if not isinstance(params, dict):
        found = "empty" if params is None else f"a {type(params).__name__}: {_yaml_text(params)}"
        raise PipelineError(
            f"params.yaml must be a mapping of sections ({', '.join(schema)}); it is {found}"
        )
    for section in params:
        if section not in schema:
            raise PipelineError(
                f"params.yaml: unknown section '{section}'; allowed: {', '.join(schema)}"
            )
    for section, keys in schema.items():
        values = params.get(section)
        if not isinstance(values, dict):
            found = "missing" if section not in params else _yaml_text(values)
            raise PipelineError(
                f"params.yaml: section '{section}' must be a mapping of its keys "
                f"({', '.join(keys)}); it is {found}"
            )
        _check_keys(values, keys, section)
    return params


def _check_keys(values: dict, keys: dict[str, Spec | Nested], prefix: str) -> None:
    """Check one mapping's keys (a section's, or a Nested key's) against their specs.

    Raises:
        PipelineError: naming the first key (prefix.key) that is unknown, missing or invalid.
    """
    for key in values:
        if key not in keys:
            raise PipelineError(
                f"params.yaml: unknown key '{prefix}.{key}'; allowed: {', '.join(keys)}"
            )
    for key, spec in keys.items():
        if key not in values:
            raise PipelineError(f"params.yaml: missing key '{prefix}.{key}' ({spec.describe()})")
        if isinstance(spec, Nested):
            spec.check(values[key], f"{prefix}.{key}")
        elif not spec.accepts(values[key]):
            raise PipelineError(
                f"params.yaml: {prefix}.{key}={_yaml_text(values[key])} is invalid; "
                f"it must be {spec.describe()}"
            )


class _UniqueKeyLoader(yaml.SafeLoader):
    """The safe loader, refusing a key given twice in one mapping (plain YAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            with contextlib.suppress(TypeError):  # an unhashable key: the base class says so
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_params(path: Path = paths.PARAMS) -> dict[str, dict[str, Any]]:
    """Read params.yaml with the safe loader and validate it against the schema.

    Raises:
        PipelineError: when the file is missing, unreadable, not UTF-8, not YAML, repeats a
            key, or fails validate_params.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PipelineError(f"{path} not found; run from the project root") from None
    except UnicodeDecodeError as err:
        raise PipelineError(f"{path} is not UTF-8 text (byte {err.start}); fix the file") from None
    except OSError as err:
        raise PipelineError(f"{path} cannot be read ({err.strerror})") from None
    try:
        params = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        raise PipelineError(
            f"{path} is not valid YAML: {_yaml_problem(err)}; fix the file"
        ) from None
    return validate_params(params)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """The parser's complaint and where, e.g. "mapping values are not allowed here (line 3, column 8)"."""
    problem = getattr(err, "problem", None) or (str(err).splitlines() or ["syntax error"])[0]
    mark = getattr(err, "problem_mark", None)
    return (
        problem if mark is None else f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    )
