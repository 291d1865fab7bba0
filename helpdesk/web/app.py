"""The Starlette application: factory, lifespan resources, error handling, routes."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Histogram
from sqlalchemy.exc import DBAPIError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from helpdesk.background import BackgroundWork
from helpdesk.config import Settings
from helpdesk.db import Database, unreachable
from helpdesk.errors import DeskError, Unavailable
from helpdesk.hub import Hub, PresenceSweeper
from helpdesk.i18n import load_catalogs
from helpdesk.logs import RequestContext
from helpdesk.web import (
    account,
    admin,
    api,
    board,
    chat,
    cti,
    demo,
    health,
    kb,
    mail,
    openapi,
    pages,
    privacy,
    sessions,
    sla_admin,
    sockets,
)
from helpdesk.web.forms import FormBodyLimit
from helpdesk.web.render import is_htmx, make_environment, render
from helpdesk.web.security import SecurityHeaders, error_body, is_api
from knowledge_base.search import make_search

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).resolve().parent.parent.parent / "static"
# The largest url-encoded form a page posts: a KB article or a reply of 200,000 characters of
# Japanese is 1.8 MB percent-encoded (9 bytes a character).
FORM_BYTES = 4 * 1024 * 1024


class Metrics:
    """Prometheus collectors in the app's own registry (no process-global state)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "helpdesk_http_requests",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "helpdesk_http_request_seconds",
            "Time to answer an HTTP request",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )


class RequestMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            metrics: Metrics | None = getattr(scope["app"].state, "metrics", None)
            route = scope.get("route")
            name = getattr(route, "path", "unmatched")
            if metrics is not None:
                metrics.requests.labels(scope["method"], name, str(status)).inc()
                metrics.latency.labels(name).observe(time.perf_counter() - started)


async def desk_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DeskError)
    headers = {}
    if getattr(exc, "retry_after", None):
        headers["Retry-After"] = str(exc.retry_after)  # type: ignore[attr-defined]
    if is_api(request):
        return JSONResponse(error_body(exc), status_code=exc.status, headers=headers)
    template = "_error_fragment.html" if is_htmx(request) else "error.html"
    response = render(request, template, {"error": exc}, status=exc.status)
    response.headers.update(headers)
    return response


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
    err = DeskError(exc.detail or "error")
    err.status, err.code = exc.status_code, codes.get(exc.status_code, "error")
    if is_api(request) or not hasattr(request.app.state, "jinja"):
        return JSONResponse(error_body(err), status_code=exc.status_code)
    return render(request, "error.html", {"error": err}, status=exc.status_code)


async def database_error(request: Request, exc: Exception) -> Response:
    """A request the database could not serve. When it is down or restarting, the answer is
    a clean 503 (documented error shape, Retry-After) rather than a 500 and a dropped
    connection; anything else is a server error like any other."""
    if not unreachable(exc):
        return await server_error(request, exc)
    log.warning(
        "database unreachable on %s %s: %s", request.method, request.url.path, _first_line(exc)
    )
    error = Unavailable(
        "the database cannot be reached right now; this request was not completed, "
        "try again in a moment"
    )
    error.retry_after = 1  # type: ignore[attr-defined]
    return await desk_error(request, error)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


async def server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(
        {"error": {"code": "internal", "message": "internal error; it has been logged"}},
        status_code=500,
    )


def create_app(settings: Settings, database_url: str, *, pool_size: int = 10) -> Starlette:
    """The desk as an ASGI app, on a database that already exists and is migrated."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.db = Database.from_url(database_url, pool_size=pool_size)
        app.state.search = make_search(settings, app.state.db)
        # The public article search (the chat widget's) per client address; in memory, so
        # per process (see SlidingWindowLimiter).
        app.state.kb_search_limit = kb.SlidingWindowLimiter(limit=20, window=10.0)
        app.state.hub = Hub(database_url, queue_size=settings.ws_queue_size)
        await app.state.hub.start()
        app.state.presence_sweeper = PresenceSweeper(
            app.state.db,
            app.state.hub,
            grace_seconds=settings.presence_grace_seconds,
            interval=min(10.0, settings.presence_grace_seconds),
        )
        app.state.presence_sweeper.start()
        app.state.chat = chat.ChatRuntime(app.state.db, app.state.hub, settings)
        app.state.chat.start()
        # The outbox and SLA workers: here unless HELPDESK_BACKGROUND=0 leaves them to
        # `helpdesk worker`; the sockets' own work above stays in every app process.
        background = BackgroundWork(app.state.db, settings)
        if settings.background:
            background.start()
        else:
            log.info("background work left to `helpdesk worker` (HELPDESK_BACKGROUND=0)")
        try:
            yield
        finally:
            await background.stop()
            await app.state.chat.stop()
            await app.state.presence_sweeper.stop()
            await app.state.hub.stop()
            await app.state.search.close()
            await app.state.db.dispose()

    routes = [
        *health.routes,
        *openapi.routes,
        *sessions.routes,
        *account.routes,
        *api.routes,
        *sockets.routes,
        *cti.routes,
        *mail.routes,
        *chat.routes,
        *demo.routes,
        *kb.routes,
        *sla_admin.routes,
        *admin.routes,
        *board.routes,
        *privacy.routes,
        *pages.routes,
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(RequestContext),
            Middleware(RequestMetrics),
            Middleware(
                FormBodyLimit,
                urlencoded_bytes=FORM_BYTES,
                # the notes form: up to MAX_UPLOAD_FILES attachments and the text
                multipart_bytes=settings.max_attachment_bytes * api.MAX_UPLOAD_FILES + FORM_BYTES,
            ),
            Middleware(
                SecurityHeaders,
                secure_cookies=settings.secure_cookies,
                widget_origins=settings.widget_origins,
            ),
        ],
        exception_handlers={
            DeskError: desk_error,
            HTTPException: http_error,
            # Handled here, not by the catch-all (which answers and then re-raises, so the
            # server drops the connection): an outage is an answer, not a crash.
            DBAPIError: database_error,
            OSError: database_error,
            asyncpg.InterfaceError: database_error,
            asyncpg.InternalClientError: database_error,
            Exception: server_error,
        },
    )
    app.state.settings = settings
    app.state.jinja = make_environment()
    app.state.catalogs = load_catalogs()
    app.state.metrics = Metrics()
    return app


def create_app_from_env() -> Starlette:
    """The app as a worker process of `helpdesk serve --workers N` builds it: the parent
    has migrated (and started the embedded database) and put its URL in the environment."""
    settings = Settings.from_env()
    if not settings.database_url:
        raise RuntimeError("HELPDESK_DATABASE_URL must be set for a worker process")
    return create_app(settings, settings.database_url)
