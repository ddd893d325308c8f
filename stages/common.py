"""Shared plumbing for the stages: params schema, atomic writes and the error surface."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stages import paths

log = logging.getLogger(__name__)


class PipelineError(Exception):
    """An expected failure: bad params, bad data or a failed download. Its message is one line for the user."""


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
            return ints and len(value) > 0 and all(a < b for a, b in zip(value, value[1:], strict=False))
        if self.kind is float:
            ok_type = isinstance(value, (int, float)) and not isinstance(value, bool)
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


def _known_datasets() -> tuple[str, ...]:
    from stages.datasets import DATASETS

    return tuple(DATASETS)


def params_schema() -> dict[str, dict[str, Spec]]:
    """The one schema of params.yaml: section -> key -> Spec."""
    positive_int = Spec(int, low=1)
    seed = Spec(int, low=0, high=2**32 - 1)
    fraction = Spec(float, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
    return {
        "data": {"dataset": Spec(str, choices=_known_datasets())},
        "preprocess": {
            "top_users": Spec(int, low=1, nullable=True),
            "top_movies": Spec(int, low=1, nullable=True),
            "test_size": fraction,
            "seed": seed,
        },
        "train": {
            "embedding_dim": positive_int,
            "epochs": positive_int,
            "batch_size": positive_int,
            "learning_rate": Spec(float, low=0.0, high=1.0, low_inclusive=False),
            "l2": Spec(float, low=0.0),
            "validation_size": Spec(float, low=0.0, high=1.0, high_inclusive=False),
            "patience": Spec(int, low=0),
            "seed": seed,
        },
        "evaluate": {
            "batch_size": positive_int,
            "baseline_reg_users": Spec(float, low=0.0),
            "baseline_reg_movies": Spec(float, low=0.0),
            "baseline_iterations": positive_int,
            "plot_points": positive_int,
            "activity_buckets": Spec(list),
        },
    }


def validate_params(params: Any) -> dict[str, dict[str, Any]]:
    """Check a parsed params.yaml against the schema.

    Raises:
        PipelineError: naming the first key that is missing, unknown or out of range.
    """
    schema = params_schema()
    if not isinstance(params, dict):
        raise PipelineError(
            "params.yaml must be a mapping of sections (data, preprocess, train, evaluate)"
        )
    for section in params:
        if section not in schema:
            raise PipelineError(
                f"params.yaml: unknown section '{section}'; allowed: {', '.join(schema)}"
            )
    for section, keys in schema.items():
        values = params.get(section)
        if not isinstance(values, dict):
            raise PipelineError(f"params.yaml: section '{section}' is missing or not a mapping")
        for key in values:
            if key not in keys:
                raise PipelineError(
                    f"params.yaml: unknown key '{section}.{key}'; allowed: {', '.join(keys)}"
                )
        for key, spec in keys.items():
            if key not in values:
                raise PipelineError(
                    f"params.yaml: missing key '{section}.{key}' ({spec.describe()})"
                )
            if not spec.accepts(values[key]):
                raise PipelineError(
                    f"params.yaml: {section}.{key}={values[key]!r} is invalid; "
                    f"it must be {spec.describe()}"
                )
    return params


def load_params(path: Path = paths.PARAMS) -> dict[str, dict[str, Any]]:
    """Read params.yaml with the safe loader and validate it against the schema."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PipelineError(f"{path} not found; run from the project root") from None
    try:
        params = yaml.safe_load(text)
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0] if str(err) else "syntax error"
        raise PipelineError(f"{path} is not valid YAML ({first}); fix the file") from None
    return validate_params(params)


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Keep the suffix: some writers (Keras) choose the format from it.
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(target: Path, data: Any) -> None:
    """Write `data` as indented, key-sorted JSON, atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_parquet(target: Path, frame) -> None:
    """Write a DataFrame to parquet atomically, without its index."""
    with atomic_path(target) as tmp:
        frame.to_parquet(tmp, index=False)


def write_csv(target: Path, frame) -> None:
    """Write a DataFrame to CSV atomically, without its index."""
    with atomic_path(target) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")


def remove_stale(*targets: Path) -> None:
    """Delete earlier outputs so that a failed run cannot leave an old file beside new ones."""
    for target in targets:
        Path(target).unlink(missing_ok=True)


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main(): a PipelineError becomes one line on stderr and exit status 1."""
    logging.basicConfig(
        level=os.environ.get("LOGLEVEL", "INFO"),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        main()
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
