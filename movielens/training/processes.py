"""The train stage across processes (train.processes > 1): the shards, and launching the workers.

No framework is imported here: the stage that launches the workers trains nothing itself. What
each worker runs is in movielens.training.distributed (docs/distributed.md).
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pandas as pd

from movielens.plumbing.errors import PipelineError

LOOPBACK = "127.0.0.1"  # every worker runs on this machine; nothing listens beyond loopback
POLL_S = 0.2  # how soon a failed worker is noticed and the others stopped


def check_processes(
    processes: int, backend: str, engine: str, shard_tables: bool, batch_size: int
) -> None:
    """Refuse, in one line, settings the processes cannot train: more than one process needs
    Keras on JAX, the keras engine, copied tables and a batch that divides by the processes.

    Raises:
        PipelineError: naming the key to change.
    """
    if processes == 1:
        return
    if backend != "jax":
        raise PipelineError(
            f"train.processes={processes} trains on JAX (jax.distributed), not {backend}; "
            "set train.backend=jax or train.processes=1"
        )
    if engine != "keras":
        raise PipelineError(
            f"train.processes={processes} trains with the keras engine, not train.engine={engine}; "
            "set train.engine=keras or train.processes=1"
        )
    if shard_tables:
        raise PipelineError(
            f"train.processes={processes} copies the tables to every process (DataParallel); "
            "set train.shard_tables=false or train.processes=1"
        )
    if batch_size % processes:
        raise PipelineError(
            f"train.batch_size={batch_size} does not divide by train.processes={processes}: "
            "each process takes an equal part of every batch; change either"
        )


def split_shards(train: pd.DataFrame, processes: int) -> list[pd.DataFrame]:
    """The training ratings dealt in turn to `processes` shards of equal size, in file order.

    Row i goes to shard i mod processes; the last len(train) mod processes rows (fewer than
    `processes`) are left out, so that every process has as many ratings, hence as many steps in
    every epoch of the selection fit and the refit (a collective step waits for every process).

    Raises:
        PipelineError: when there are fewer ratings than processes.
    """
    usable = len(train) - len(train) % processes
    if usable == 0:
        raise PipelineError(
            f"{len(train)} training ratings cannot be shared by train.processes={processes}"
        )
    return [train.iloc[p:usable:processes].reset_index(drop=True) for p in range(processes)]


def shard_path(folder: Path, process_id: int) -> Path:
    """Where process `process_id` reads its shard."""
    return Path(folder) / f"shard-{process_id}.parquet"


def write_shards(shards: list[pd.DataFrame], folder: Path) -> None:
    """Each shard to its shard_path in `folder`."""
    for process_id, shard in enumerate(shards):
        shard.to_parquet(shard_path(folder, process_id), index=False)


def free_port() -> int:
    """A TCP port free on the loopback now, for the coordinator.

    The port is closed again before the coordinator binds it, so another program could take it
    in between; process 0 then fails to start and the stage stops with its message.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def last_line(log: Path) -> str:
    """A worker's last non-empty output line, without run_stage's "error: " (its reason)."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip().removeprefix("error: ") if lines else "no output"


def run_workers(commands: list[list[str]], logs: Path, timeout_s: float) -> list[Path]:
    """Run one process per command at once and wait for all of them.

    Each writes its output to `logs`/process-<i>.log. The first to exit with a non-zero status
    stops the others at once (a process blocked in a collective would otherwise wait for its
    peer forever), as does the end of `timeout_s`.

    Returns:
        The log files, one per command, in order.

    Raises:
        PipelineError: one line naming the failed process and its last output line, or the
            timeout.
    """
    n = len(commands)
    started: list[subprocess.Popen] = []
    paths = [Path(logs) / f"process-{i}.log" for i in range(n)]
    try:
        for command, path in zip(commands, paths, strict=True):
            with path.open("wb") as out:  # the child keeps its own copy of the descriptor
                started.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + timeout_s
        while True:
            codes = [process.poll() for process in started]
            failed = next((i for i, code in enumerate(codes) if code not in (None, 0)), None)
            if failed is not None:
                raise PipelineError(
                    f"training process {failed} of {n} failed (exit {codes[failed]}): "
                    f"{last_line(paths[failed])}; the other processes were stopped"
                )
            if all(code == 0 for code in codes):
                return paths
            if time.monotonic() > deadline:
                raise PipelineError(
                    f"the {n} training processes did not finish within {timeout_s:.0f} s; "
                    "they were stopped"
                )
            time.sleep(POLL_S)
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
            process.wait()
