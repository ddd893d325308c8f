"""The Spark engine's session: a real local Spark, and one line when pyspark is missing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from movielens.plumbing.errors import PipelineError
from movielens.spark.session import MISSING_PYSPARK, SparkSettings, spark_session


def test_a_local_session_runs_a_job_and_stops():
    with spark_session(SparkSettings(master="local[2]", memory="512m")) as spark:
        assert spark.range(100).selectExpr("sum(id) AS s").first()["s"] == 4950
        assert spark.conf.get("spark.driver.host") == "127.0.0.1"
        context = spark.sparkContext
    assert context._jsc is None  # stopped after the block


def test_without_pyspark_the_engine_is_refused_in_one_line():
    code = (
        "import sys; sys.modules['pyspark'] = None\n"  # an import of pyspark now fails
        "from movielens.spark.session import spark_session, SparkSettings\n"
        "with spark_session(SparkSettings()): pass\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "PipelineError" in done.stderr and MISSING_PYSPARK in done.stderr


def test_a_master_spark_cannot_use_is_refused_in_one_line():
    with (
        pytest.raises(PipelineError, match=r"could not start on compute\.spark_master='nonsense'"),
        spark_session(SparkSettings(master="nonsense", memory="512m")),
    ):
        pass
