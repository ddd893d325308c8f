"""`movielens serve`: the HTTP service on uvicorn, in one process or several.

With --workers 1 (the default) the models are loaded before the port opens, so a missing artifact
is one `error:` line and exit 1, as `movielens recommend` says it. With more, uvicorn's supervisor
starts each worker process, which loads its own copy; SIGHUP to the supervisor is passed on to the
workers, each of which reloads in place (uvicorn's own SIGHUP would restart them instead, closing
their open connections).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal

from movielens.plumbing.errors import PipelineError, require
from movielens.plumbing.runtime import LOG_FORMAT
from movielens.serve.http.state import DATA_FILES, MODEL_FILES

log = logging.getLogger(__name__)

APP = "movielens.serve.http.app:create_app"
EXAMPLES = """examples:
  movielens serve                          http://127.0.0.1:8000/ (the page), /docs (the API)
  movielens serve --port 8080 --workers 2
  kill -HUP <pid>                          reload the models after dvc repro (also automatic)"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise PipelineError(f"{message} (see --help)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = _Parser(
        prog="movielens serve",
        description="Serve the pipeline's models over HTTP (JSON), with a page to try them.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"argument --port: {args.port} is not a port number")
    if args.workers < 1:
        parser.error(f"argument --workers: must be a positive integer, got {args.workers}")
    return args


def logging_config() -> dict:
    """uvicorn's logging in the house format, in every worker process (they start afresh)."""
    level = os.environ.get("LOGLEVEL", "INFO")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": LOG_FORMAT, "datefmt": "%H:%M:%S"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {"uvicorn": {"level": level}, "uvicorn.error": {"level": level}},
    }


def main(argv: list[str] | None = None) -> None:
    """Run the service until SIGINT or SIGTERM (in-flight requests finish first)."""
    import uvicorn

    from movielens.serve.http.app import load_app

    args = parse_args(argv)
    require(*MODEL_FILES, *DATA_FILES)
    options = {"host": args.host, "port": args.port, "access_log": False, "lifespan": "on"}
    options["log_config"] = logging_config()
    if args.workers == 1:
        uvicorn.Server(uvicorn.Config(load_app(), **options)).run()
        return
    from uvicorn.supervisors.multiprocess import Multiprocess

    class Supervisor(Multiprocess):
        """uvicorn's supervisor, but SIGHUP reloads the workers' models in place."""

        def handle_hup(self) -> None:
            log.info("SIGHUP: each worker reloads its models")
            for process in self.processes:
                if process.pid is not None:
                    os.kill(process.pid, signal.SIGHUP)

    config = uvicorn.Config(APP, factory=True, workers=args.workers, **options)
    Supervisor(config, sockets=[config.bind_socket()]).run()
