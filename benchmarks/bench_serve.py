"""Load benchmark of `movielens serve` (issue 30): requests/s and p50/p99 latency per endpoint.

Run `make bench-serve` (or `python -m benchmarks.bench_serve` from the project root after
`dvc repro`). It starts `movielens serve` on 127.0.0.1 (a free port; loopback only) over the
pipeline's models, then drives it with its own asyncio load generator (HTTP/1.1 keep-alive, one
connection per client, each client sending its next request when the last answer has arrived):

- each endpoint at 1, 8, 16 and 32 concurrent clients, at most --requests requests or --seconds
  seconds a cell;
- --total requests (20,000) for a known user's list at 16 clients: errors must be 0;
- the user list and fold-in mixed at 16 clients while the models are reloaded --reloads times
  (SIGHUP, and once by rewriting the model files as `dvc repro` does): failures must be 0.

An error is a transport failure or any status other than 200. Everything is bounded in requests
and time and stops by itself; the figures go to benchmarks/serve.json and a table to stdout.
Targets (issue 30, this 2-core machine): user list >= 300 requests/s with p99 <= 100 ms at 16
clients; fold-in >= 150 requests/s with p99 <= 150 ms; 0 errors; 0 failures across a reload.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd

from benchmarks.machine import machine_info
from movielens.plumbing import paths
from movielens.plumbing.errors import PipelineError, run_stage
from movielens.plumbing.files import write_json

log = logging.getLogger(__name__)

RESULTS = Path("benchmarks/serve.json")
HOST = "127.0.0.1"  # loopback only: the load never leaves this machine
CONCURRENCY = (1, 8, 16, 32)
ENDPOINTS = ("user", "foldin", "similar", "search", "health")
TARGETS = {"user": (300.0, 100.0), "foldin": (150.0, 150.0)}  # requests/s, p99 ms at 16 clients
TARGET_CLIENTS = 16
START_TIMEOUT_S = 180
HISTORY_SIZES = (5, 30)  # fold-in bodies: a person's first ratings, this many at least / at most


@dataclass(frozen=True)
class Call:
    """One prepared request: its bytes on the wire."""

    raw: bytes


@dataclass
class Tally:
    """What the clients of one run saw."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    issued: int = 0


def request(method: str, path: str, body: dict | None = None) -> Call:
    data = b"" if body is None else json.dumps(body).encode()
    head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: keep-alive\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
    return Call(head.encode() + b"\r\n" + data)


async def exchange(reader, writer, call: Call) -> int:
    """Send one request, read its whole response; its status (the body is read and dropped)."""
    writer.write(call.raw)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = next(
        (
            int(line.split(":", 1)[1])
            for line in lines
            if line.lower().startswith("content-length:")
        ),
        None,
    )
    if length is None:
        raise ConnectionError("a response without Content-Length")
    await reader.readexactly(length)
    return status


async def client(port: int, calls: list[Call], start: int, tally: Tally, limit) -> None:
    """Send calls[start], calls[start + 1], ... one after another until the run's limit says stop."""
    reader = writer = None
    position = start
    while limit(tally):
        tally.issued += 1
        call = calls[position % len(calls)]
        position += 1
        began = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(HOST, port)
            status = await exchange(reader, writer, call)
        except (OSError, asyncio.IncompleteReadError, ConnectionError, ValueError):
            tally.errors += 1
            writer = None  # the connection is gone: the next request opens another
            continue
        tally.latencies.append(time.perf_counter() - began)
        tally.statuses[status] = tally.statuses.get(status, 0) + 1
        if status != 200:
            tally.errors += 1
    if writer is not None:
        writer.close()


async def drive(port: int, calls: list[Call], clients: int, requests: int, seconds: float):
    """`clients` clients sharing at most `requests` requests and `seconds` seconds."""
    tally = Tally()
    deadline = time.perf_counter() + seconds

    def limit(t: Tally) -> bool:
        return t.issued < requests and time.perf_counter() < deadline

    began = time.perf_counter()
    spread = max(1, len(calls) // clients)
    await asyncio.gather(*(client(port, calls, i * spread, tally, limit) for i in range(clients)))
    return tally, time.perf_counter() - began


def summary(tally: Tally, seconds: float, clients: int) -> dict:
    done = np.array(tally.latencies) * 1000.0
    return {
        "clients": clients,
        "requests": tally.issued,
        "errors": tally.errors,
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "seconds": round(seconds, 2),
        "requests_per_s": round(len(done) / seconds, 1) if seconds > 0 else 0.0,
        "p50_ms": round(float(np.percentile(done, 50)), 2) if len(done) else None,
        "p99_ms": round(float(np.percentile(done, 99)), 2) if len(done) else None,
        "max_ms": round(float(done.max()), 2) if len(done) else None,
    }


def workload(rng: np.random.Generator) -> dict[str, list[Call]]:
    """The requests of each endpoint, from the processed data: known users, real people's first
    ratings as fold-in histories, popular movies, words of their titles."""
    train = pd.read_parquet(paths.TRAIN, columns=["userId", "movieId", "rating", "timestamp"])
    users = rng.permutation(train["userId"].unique())[:500]
    histories = []
    for user in users[:200]:
        rows = train[train["userId"] == user].sort_values("timestamp")
        size = int(rng.integers(*HISTORY_SIZES, endpoint=True))
        histories.append(
            [
                {"movieId": int(m), "rating": float(r)}
                for m, r in zip(rows["movieId"][:size], rows["rating"][:size], strict=True)
            ]
        )
    popular = train["movieId"].value_counts().index.to_numpy()[:300]
    titles = pd.read_parquet(paths.MOVIES).set_index("movieId")["title"]
    words = [str(titles[m]).split(" (")[0].split()[0] for m in popular[:200] if m in titles.index]
    return {
        "user": [request("GET", f"/users/{int(u)}/recommendations?n=10") for u in users],
        "foldin": [request("POST", "/recommendations", {"ratings": h, "n": 10}) for h in histories],
        "similar": [
            request("GET", f"/movies/{int(m)}/similar?n=10") for m in rng.permutation(popular)
        ],
        "search": [request("GET", f"/movies?q={quote(w)}") for w in words],
        "health": [request("GET", "/health")],
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def get(port: int, path: str) -> dict:
    """One GET answered with JSON (urllib: the checks, not the load)."""
    import urllib.request

    with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=10) as answer:
        return json.loads(answer.read())


def start_server(port: int, workers: int) -> subprocess.Popen:
    """`movielens serve` in this directory, once /health answers.

    Raises:
        PipelineError: when it exits or does not answer within START_TIMEOUT_S.
    """
    command = [sys.executable, "-m", "movielens.cli", "serve", "--host", HOST, "--port", str(port)]
    env = {**os.environ, "LOGLEVEL": "WARNING"}
    server = subprocess.Popen([*command, "--workers", str(workers)], env=env)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise PipelineError(f"movielens serve exited with status {server.returncode}")
        try:
            get(port, "/health")
            return server
        except OSError:
            time.sleep(0.5)
    stop_server(server)
    raise PipelineError(f"movielens serve did not answer within {START_TIMEOUT_S} s")


def stop_server(server: subprocess.Popen) -> None:
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def rewrite_models() -> None:
    """Rewrite the model files with their own bytes, as `dvc repro` or `dvc checkout` writes
    them (a new file renamed over the old): the service's file watch sees new models."""
    for path in (paths.MODEL, paths.BASELINE, paths.WATCH_MODEL):
        copy = path.with_name(path.name + ".bench-serve")
        shutil.copy2(path, copy)
        os.replace(copy, path)


async def reload_under_load(port: int, server, calls, reloads: int, seconds: float) -> dict:
    """The user list and fold-in at TARGET_CLIENTS clients while the models are reloaded."""
    before = get(port, "/health")["reloads"]

    async def reload_now() -> None:
        gap = seconds / (reloads + 2)
        for i in range(reloads):
            await asyncio.sleep(gap)
            if i == reloads - 1:
                await asyncio.to_thread(rewrite_models)  # the file watch's turn
            else:
                server.send_signal(signal.SIGHUP)

    mixed = [c for pair in zip(calls["user"], calls["foldin"], strict=False) for c in pair]
    reloading = asyncio.create_task(reload_now())
    tally, took = await drive(port, mixed, TARGET_CLIENTS, 10**9, seconds)
    await reloading
    await asyncio.sleep(5)  # the file watch settles, then reloads
    result = summary(tally, took, TARGET_CLIENTS)
    result["reloads_asked"] = reloads
    result["reloads_seen_by_one_worker"] = get(port, "/health")["reloads"] - before
    return result


def cells(port: int, calls: dict, args: argparse.Namespace) -> list[dict]:
    found = []
    requests, seconds = args.requests, args.seconds
    for endpoint in args.endpoints.split(","):
        for clients in (int(c) for c in args.clients.split(",")):
            tally, took = asyncio.run(drive(port, calls[endpoint], clients, requests, seconds))
            found.append({"endpoint": endpoint, **summary(tally, took, clients)})
            log.info("%s", found[-1])
    return found


def verdicts(rows: list[dict], total: dict, reload: dict) -> dict:
    """Each target of issue 30: met or not, beside the measured figure."""
    checks = {}
    for endpoint, (rate, p99) in TARGETS.items():
        row = next(
            (r for r in rows if r["endpoint"] == endpoint and r["clients"] == TARGET_CLIENTS), None
        )
        if row is None:
            continue
        checks[f"{endpoint}_at_{TARGET_CLIENTS}"] = {
            "requests_per_s": row["requests_per_s"],
            "p99_ms": row["p99_ms"],
            "target": f">= {rate:g} requests/s, p99 <= {p99:g} ms",
            "met": row["requests_per_s"] >= rate and row["p99_ms"] <= p99 and not row["errors"],
        }
    checks["errors_in_total_run"] = {"errors": total["errors"], "met": total["errors"] == 0}
    checks["failures_across_reloads"] = {"errors": reload["errors"], "met": reload["errors"] == 0}
    return checks


def table(rows: list[dict]) -> str:
    header = f"{'endpoint':<9} {'clients':>7} {'requests':>8} {'errors':>6} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}"
    lines = [header]
    for r in rows:
        lines.append(
            f"{r.get('endpoint', ''):<9} {r['clients']:>7} {r['requests']:>8} {r['errors']:>6} "
            f"{r['requests_per_s']:>8.1f} {r['p50_ms'] or 0:>8.2f} {r['p99_ms'] or 0:>8.2f}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="movielens serve --workers")
    parser.add_argument("--requests", type=int, default=3000, help="most requests per cell")
    parser.add_argument("--seconds", type=float, default=8.0, help="most seconds per cell")
    parser.add_argument("--total", type=int, default=20_000, help="requests of the error run")
    parser.add_argument("--reloads", type=int, default=4, help="reloads under load")
    parser.add_argument("--reload-seconds", type=float, default=20.0)
    parser.add_argument("--endpoints", default=",".join(ENDPOINTS), help="comma-separated")
    parser.add_argument(
        "--clients", default=",".join(map(str, CONCURRENCY)), help="comma-separated"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    calls = workload(np.random.default_rng(0))
    port = free_port()
    server = start_server(port, args.workers)
    try:
        rows = cells(port, calls, args)
        tally, took = asyncio.run(drive(port, calls["user"], TARGET_CLIENTS, args.total, 600.0))
        total = {"endpoint": "user", **summary(tally, took, TARGET_CLIENTS)}
        reload = asyncio.run(
            reload_under_load(port, server, calls, args.reloads, args.reload_seconds)
        )
    finally:
        stop_server(server)
    results = {
        "workers": args.workers,
        "cells": rows,
        "total_run": total,
        "reload_run": {"endpoint": "user+foldin", **reload},
        "targets": verdicts(rows, total, reload),
        "machine": machine_info(),
    }
    write_json(args.out, results)
    print(table([*rows, total, results["reload_run"]]))
    print(json.dumps(results["targets"], indent=2))


if __name__ == "__main__":
    run_stage(main)
