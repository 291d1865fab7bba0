"""Liveness, readiness and Prometheus metrics: the endpoints a load balancer and a scraper use."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


async def healthz(request: Request) -> JSONResponse:
    """The process is up; says nothing about its dependencies."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """Ready for traffic: the database answers a query."""
    try:
        async with request.app.state.db.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure to reach the database means "not ready"
        return JSONResponse(
            {"status": "unavailable", "database": f"unreachable: {type(exc).__name__}"},
            status_code=503,
        )
    return JSONResponse({"status": "ready", "database": "ok"})


async def metrics(request: Request) -> Response:
    state = request.app.state
    pool = state.db.engine.pool
    body = generate_latest(state.metrics.registry)
    # Pool figures are read at scrape time rather than kept in gauges.
    extra = (
        "# HELP helpdesk_db_pool_checked_out Database connections in use\n"
        "# TYPE helpdesk_db_pool_checked_out gauge\n"
        f"helpdesk_db_pool_checked_out {pool.checkedout()}\n"
    ).encode()
    return Response(body + extra, media_type=CONTENT_TYPE_LATEST)


routes = [
    Route("/healthz", healthz),
    Route("/readyz", readyz),
    Route("/metrics", metrics),
]
