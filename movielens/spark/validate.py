"""Validate a ratings table on Spark with the pandas path's rules and messages
(movielens.data.preprocess.validate_ratings): one pass finds the first bad row of every rule."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from movielens.data.custom import ID_NOTE, CustomTable
from movielens.data.preprocess import ID_RANGE, TIMESTAMP_RANGE
from movielens.plumbing.errors import PipelineError
from movielens.spark.read import ROW_ID

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

# The texts pandas' read_csv reads as missing (its na_values' defaults, pandas.read_csv's docs):
# Spark reads them as text, and names them as the pandas engine does, missing.
PANDAS_NA_TEXTS = frozenset(
    ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
     "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null")
)  # fmt: skip

# The pandas path's dtypes: userId, movieId int32, rating float32, timestamp int64.
SPARK_TYPES = {"userId": "int", "movieId": "int", "rating": "float", "timestamp": "bigint"}


@dataclass(frozen=True)
class RatingRules:
    """The ratings validate_ratings accepts, as movielens.data.preprocess.validate_ratings' args.

    Attributes:
        rating_step: a release's grid: ratings rating_step..5 in its steps; None: no grid.
        rating_scale: (lo, hi), a custom table's scale: any value between; None: (rating_step, 5).
        id_note: the words that end an id's message (movielens.data.custom.ID_NOTE).
    """

    rating_step: float | None
    rating_scale: tuple[float, float] | None = None
    id_note: str = ""

    @classmethod
    def for_table(cls, table: CustomTable) -> RatingRules:
        """A custom table's: its scale, no grid, ids noted as validate_custom_ratings notes them."""
        return cls(None, table.rating_scale, ID_NOTE)


class Rule(NamedTuple):
    """One check: the column it names, where it fails, the message's words and its ending."""

    column: str
    bad: Column
    problem: str
    note: str = ""


def _number(name: str) -> Column:
    from pyspark.sql import functions as F

    return F.col(name).try_cast("double")


def _column_rules(name: str, integer_range: tuple[int, int] | None, note="") -> list[Rule]:
    """validate_ratings' _numbers as Spark columns: a number, then an integer, then in range."""
    from pyspark.sql import functions as F

    value = _number(name)
    nan = value.isNull() | F.isnan(value) | (F.abs(value) == float("inf"))
    rules = [Rule(name, nan, "", note)]
    if integer_range is not None:
        lo, hi = integer_range
        rules.append(Rule(name, value % 1 != 0, "is not an integer", note))
        # hi + 1 is a power of two, exact in a double where hi itself (2**63 - 1) is not.
        outside = (value < float(lo)) | (value >= float(hi + 1))
        rules.append(Rule(name, outside, f"is out of range {lo} to {hi}", note))
    return rules


def _rules(columns: list[str], rules: RatingRules) -> list[Rule]:
    """Every check, in the order the pandas path makes them (its first failure is reported)."""
    checks = _column_rules("userId", ID_RANGE, rules.id_note)
    checks += _column_rules("movieId", ID_RANGE, rules.id_note)
    checks += _column_rules("rating", None)
    if "timestamp" in columns:
        checks += _column_rules("timestamp", TIMESTAMP_RANGE)
    step, rating = rules.rating_step, _number("rating")
    lo, hi = rules.rating_scale or (step, 5.0)
    off = (rating < lo) | (rating > hi)
    scale = f"is not on the scale {lo:g} to {hi:g}"
    if step is not None:
        off |= (rating / step) % 1 != 0
        scale += f" in steps of {step:g}"
    return [*checks, Rule("rating", off, scale)]


def _show(text: object) -> str:
    """A value as validate_ratings shows it: a number as Python writes it, text quoted."""
    if not isinstance(text, str):
        return repr(text)
    for kind in (int, float):
        try:
            return repr(kind(text))
        except ValueError:
            continue
    return repr(text)


def _refuse(
    frame: DataFrame, rule: Rule, row_id: int, source: str, names: Mapping[str, str | None]
) -> PipelineError:
    """The pandas path's message for the row `row_id`: its 1-based number in the file, the column
    as the table spells it (`names`: ours -> the table's), its value."""
    from pyspark.sql import functions as F

    row = frame.where(F.col(ROW_ID) < row_id).count() + 1  # an extra pass, on the error path only
    value = frame.where(F.col(ROW_ID) == row_id).select(rule.column).first()[0]
    column, note = names.get(rule.column) or rule.column, rule.note
    if value is None or value in PANDAS_NA_TEXTS:
        return PipelineError(f"{source} row {row}: {column} is missing{note}")
    problem = rule.problem or "is not a number"
    return PipelineError(f"{source} row {row}: {column}={_show(value)} {problem}{note}")


def validate_ratings(
    frame: DataFrame,
    rules: RatingRules,
    source: str = "ratings",
    names: Mapping[str, str | None] | None = None,
) -> tuple[DataFrame, int]:
    """Check a table read by read_table and cast it to the pandas path's dtypes.

    Args:
        frame: userId, movieId, rating, optionally timestamp (any type: CSV text, Parquet numbers)
            and ROW_ID.
        rules: the scale and grid (a release's rating_step, a custom table's rating_scale).
        source: the table's name, for messages.
        names: the pipeline's column name -> the table's, for messages (TableSource.columns).

    Returns:
        userId, movieId (int), rating (float), timestamp (bigint; 0 where absent) and ROW_ID; and
        the number of rows read.

    Raises:
        PipelineError: the first failing rule's first bad row, as validate_ratings words it.
    """
    from pyspark.sql import functions as F

    checks = _rules(frame.columns, rules)
    firsts = [F.min(F.when(rule.bad, F.col(ROW_ID))) for rule in checks]
    found = frame.agg(F.count(F.lit(1)), *firsts).first()
    if found[0] == 0:
        raise PipelineError(f"{source} has no ratings")
    for rule, row_id in zip(checks, found[1:], strict=True):
        if row_id is not None:
            raise _refuse(frame, rule, row_id, source, names or {})
    typed = [_number(c).cast(SPARK_TYPES[c]).alias(c) for c in SPARK_TYPES if c in frame.columns]
    if "timestamp" not in frame.columns:
        typed.append(F.lit(0).cast("bigint").alias("timestamp"))
    return frame.select(*typed, ROW_ID), found[0]
