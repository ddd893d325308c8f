"""One Spark session for the stages that run on Spark (`compute.engine: spark`), and the one-line
refusal when pyspark is not installed."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from movielens.plumbing.errors import PipelineError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

MISSING_PYSPARK = (
    "compute.engine=spark needs pyspark, which is not installed: run `make spark` "
    "(pip install -r requirements-spark.txt), or set compute.engine: pandas"
)


@dataclass(frozen=True)
class SparkSettings:
    """Where Spark runs: `master` (local[2], local-cluster[2,1,1024], spark://host:7077, yarn, ...)
    and the driver's memory (`memory`, as Spark writes it: 2g, 512m)."""

    master: str = "local[2]"
    memory: str = "2g"


def _builder(settings: SparkSettings, app_name: str):
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise PipelineError(MISSING_PYSPARK) from None
    builder = SparkSession.builder.master(settings.master).appName(app_name)
    conf = {
        "spark.driver.memory": settings.memory,
        # Loopback only on one machine: the driver neither binds nor advertises another address.
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",  # progress bars would bury the stage's log
        # Few, large partitions on a small machine; adaptive execution coalesces them further.
        "spark.sql.shuffle.partitions": "8",
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.session.timeZone": "UTC",
        # id tables go to and from the driver through Arrow, not row by row
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }
    if settings.master.startswith("local-cluster"):
        # Each executor JVM's heap, the third figure of local-cluster[workers,cores,memory MB].
        conf["spark.executor.memory"] = f"{settings.master.rstrip(']').split(',')[-1]}m"
    for key, value in conf.items():
        builder = builder.config(key, value)
    return builder


@contextmanager
def spark_session(settings: SparkSettings, app_name: str = "movielens") -> Iterator[SparkSession]:
    """A Spark session for the duration of the block, stopped after it; or, when this process
    already runs one (a test module's, a notebook's), that one, left running.

    Raises:
        PipelineError: when pyspark is not installed, or Spark cannot start (Java missing).
    """
    builder = _builder(settings, app_name)
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        log.info("Spark %s already running on %s", active.version, active.sparkContext.master)
        yield active
        return
    # Spark's Python workers run the project's NumPy code (the split's hash, the lists, the
    # metrics) in PYSPARK_PYTHON, else `python3` from PATH (pyspark/core/context.py:341), which
    # may lack the project's packages: this interpreter unless the user chose another.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # The JVMs (a local-cluster's workers too) bind loopback, not the host name's address.
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # pyspark warns at every Arrow conversion that it was not tested on pandas 3; the tables it
    # converts are checked against the pandas engine by the tests.
    warnings.filterwarnings(
        "ignore", message="PySpark does not yet fully support pandas", category=FutureWarning
    )
    with tempfile.TemporaryDirectory(prefix="movielens-spark-") as scratch:
        if settings.master.startswith("local"):
            # ALS checkpoints its factors only where a checkpoint folder is set; without one its
            # lineage grows with every iteration until serialising a task overflows the stack.
            # On one machine a temporary folder serves (a cluster sets a shared one, docs/spark.md).
            builder = builder.config("spark.checkpoint.dir", scratch)
        session = _started(builder, settings)
        try:
            yield session
        finally:
            session.stop()


def _started(builder, settings: SparkSettings):
    try:
        session = builder.getOrCreate()
    except Exception as err:  # py4j's JavaGateway failures carry no narrower type
        raise PipelineError(
            f"Spark could not start on compute.spark_master={settings.master!r} "
            f"({str(err).splitlines()[0] if str(err) else type(err).__name__}); "
            "is Java 17 installed (make spark)?"
        ) from None
    session.sparkContext.setLogLevel("ERROR")
    log.info("Spark %s on %s", session.version, settings.master)
    return session
