"""The HTTP service: FastAPI path functions over serve.http.replies, and the page at `/`.

GET  /health                           what is served (files, DVC hashes, params) and reloads
GET  /users/{userId}/recommendations   a known user's list (flagged when not personalised)
POST /recommendations                  a list for ratings given in the body, folded in
GET  /movies/{movieId}/similar         the movies most like one
GET  /movies?q=toy+story               title search, for the page
GET  /docs, /openapi.json              FastAPI's own OpenAPI docs

The models are loaded once per process (state.ModelStore) and swapped whole on SIGHUP or when
the files `dvc repro` writes change. Every refused request is a 4xx with one line of JSON,
{"error": "..."}; the next request is answered as usual.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException

from movielens.plumbing.errors import PipelineError
from movielens.serve.http import replies
from movielens.serve.http.models import (
    Error,
    FoldedRecommendations,
    Health,
    MovieSearch,
    RatingsRequest,
    SimilarMovies,
    UserRecommendations,
)
from movielens.serve.http.state import FileWatch, ModelStore, ServiceSettings, load_served

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
ERRORS = {status: {"model": Error} for status in (404, 413, 415, 422)}
BODY_METHODS = {"POST", "PUT", "PATCH"}
STARTUP_FAILURE = 3  # uvicorn.config.STARTUP_FAILURE: a worker that cannot start
ID = Annotated[int, PathParam(ge=-(2**53), le=2**53)]  # ids past float64's integers: no movie
N = Annotated[int, Query(description="how many movies (1 to the service's max_n)")]


def error_response(status: int, message: str, headers=None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class RequestGuard:
    """ASGI middleware: a body must be JSON and at most max_body_bytes, else 415 or 413, unread."""

    def __init__(self, app, max_body_bytes: int) -> None:
        self.app, self.limit = app, max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        length = headers.get("content-length", "0")
        if media != "application/json" and not media.endswith("+json"):
            refused = error_response(415, f"Content-Type must be application/json, not {media!r}")
        elif not length.isdigit() or int(length) > self.limit:
            refused = error_response(413, f"the body is over {self.limit} bytes")
        else:
            body = await read_body(receive, self.limit)
            if body is not None:
                await self.app(scope, replay(body, receive), send)
                return
            refused = error_response(413, f"the body is over {self.limit} bytes")
        await refused(scope, receive, send)


async def read_body(receive, limit: int) -> bytes | None:
    """The whole request body, or None once it passes `limit` bytes (a chunked body can)."""
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return b""  # the client went away: the app sees an empty body, nobody reads the reply
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def replay(body: bytes, receive):
    """A receive that gives `body` once, then the client's own messages (a disconnect)."""
    sent = False

    async def again():
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return again


def validation_message(errors: list[dict]) -> tuple[int, str]:
    """400 for a body that is not JSON, else 422; one line naming the first problem."""
    first = errors[0]
    if first.get("type") == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "invalid")
        return 400, f"the body is not valid JSON ({reason} at character {first['loc'][-1]})"
    where = ".".join(str(part) for part in first["loc"] if part not in ("body", "query", "path"))
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return 422, f"{where or 'body'}: {first['msg']}{more}"


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(replies.ReplyError)
    async def reply_error(request: Request, err: replies.ReplyError) -> JSONResponse:
        return error_response(err.status, str(err))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        return error_response(*validation_message(list(err.errors())))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        return error_response(err.status_code, str(err.detail), getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def internal(request: Request, err: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error ({type(err).__name__}); see the service's log")


def checked_n(n: int, limits: ServiceSettings) -> int:
    if not 1 <= n <= limits.max_n:
        raise replies.ReplyError(422, f"n: must be from 1 to {limits.max_n}, got {n}")
    return n


def add_routes(app: FastAPI, limits: ServiceSettings) -> None:
    """The endpoints. They compute on the event loop's thread (async def, no await): a reply is a
    few milliseconds of NumPy, so a thread pool would only add switches and let BLAS threads
    fight over two cores; more cores are used with more worker processes (--workers). Only an id
    absent from the splits goes to a thread: telling why reads the raw ratings, once a process."""
    store: ModelStore = app.state.store

    @app.get("/health", response_model=Health)
    async def health() -> dict:
        return replies.health_reply(store)

    @app.get(
        "/users/{userId}/recommendations", response_model=UserRecommendations, responses=ERRORS
    )
    async def user_recommendations(userId: ID, n: N = 10) -> dict:
        served, n = store.current, checked_n(n, limits)
        if served.user_position(userId) is None:  # absent from the splits: the raw ratings tell why
            return await asyncio.to_thread(replies.user_reply, served, userId, n)
        return replies.user_reply(served, userId, n)

    @app.post("/recommendations", response_model=FoldedRecommendations, responses=ERRORS)
    async def ratings_recommendations(body: RatingsRequest) -> dict:
        if len(body.ratings) > limits.max_history:
            message = f"ratings: at most {limits.max_history}, got {len(body.ratings)}"
            raise replies.ReplyError(413, message)
        movie_ids = [r.movieId for r in body.ratings]
        ratings = [r.rating for r in body.ratings]
        return replies.ratings_reply(store.current, movie_ids, ratings, checked_n(body.n, limits))

    @app.get("/movies/{movieId}/similar", response_model=SimilarMovies, responses=ERRORS)
    async def similar(movieId: ID, n: N = 10) -> dict:
        served, n = store.current, checked_n(n, limits)
        if not replies.known_movie(served, movieId):  # the raw ratings may be read: off the loop
            return await asyncio.to_thread(replies.similar_reply, served, movieId, n)
        return replies.similar_reply(served, movieId, n)

    @app.get("/movies", response_model=MovieSearch, responses=ERRORS)
    async def search(q: Annotated[str, Query(description="words of a title")]) -> dict:
        return replies.search_reply(store.current, q, limits)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")


async def reload_in_thread(store: ModelStore) -> None:
    """Load the new models off the event loop, which keeps answering on the old ones meanwhile."""
    await asyncio.to_thread(store.reload)


async def watch_files(store: ModelStore, limits: ServiceSettings) -> None:
    """Poll the watched files; reload once a change has settled (FileWatch)."""
    watch = FileWatch(store, limits.reload_settle_s)
    while True:
        await asyncio.sleep(limits.reload_poll_s)
        if watch.due():
            await reload_in_thread(store)


@asynccontextmanager
async def lifespan(app: FastAPI):
    """SIGHUP reloads; the file watch runs beside the requests; both stop with the server."""
    store, limits = app.state.store, app.state.limits
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task] = set()  # the loop keeps only weak references to tasks

    def on_hangup() -> None:
        task = loop.create_task(reload_in_thread(store))
        pending.add(task)
        task.add_done_callback(pending.discard)

    hangup = False
    with suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
        loop.add_signal_handler(signal.SIGHUP, on_hangup)
        hangup = True
    watcher = loop.create_task(watch_files(store, limits)) if limits.reload_poll_s > 0 else None
    try:
        yield
    finally:
        if watcher is not None:
            watcher.cancel()
        if hangup:
            loop.remove_signal_handler(signal.SIGHUP)


def build_app(store: ModelStore, limits: ServiceSettings) -> FastAPI:
    """The app over a loaded ModelStore."""
    app = FastAPI(
        title="MovieLens recommender",
        summary="The pipeline's models, served: lists for users, for ratings given now, similar movies.",
        lifespan=lifespan,
    )
    app.state.store, app.state.limits = store, limits
    add_error_handlers(app)
    add_routes(app, limits)
    app.add_middleware(RequestGuard, max_body_bytes=limits.max_body_bytes)
    return app


def load_app() -> FastAPI:
    """The app with params.yaml's settings and its models loaded.

    Raises:
        PipelineError: a missing or inconsistent artifact.
    """
    from threadpoolctl import threadpool_limits

    from movielens.serve.command import serve_settings, service_settings  # the door to params

    threadpool_limits(1)  # one BLAS thread per process: requests are small, processes are many
    settings, limits = serve_settings(), service_settings()
    return build_app(ModelStore(lambda: load_served(settings)), limits)


def create_app() -> FastAPI:
    """uvicorn's factory in each worker process: load_app, or one log line and uvicorn's
    start-up failure status (its supervisor then stops instead of restarting the worker)."""
    try:
        return load_app()
    except PipelineError as err:
        log.error("%s", err)
        raise SystemExit(STARTUP_FAILURE) from None
