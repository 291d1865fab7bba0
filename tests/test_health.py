"""Health, readiness and metrics; and that every route answers 401/403 as it should."""

from __future__ import annotations

import httpx
import pytest
from starlette.routing import Route

from helpdesk.web.app import create_app
from tests.conftest import free_port


async def test_healthz_and_readyz(client):
    r = await client.get("/healthz")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})
    r = await client.get("/readyz")
    assert (r.status_code, r.json()) == (200, {"status": "ready", "database": "ok"})


async def test_readyz_is_503_when_the_database_is_unreachable(settings):
    url = f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/nowhere"
    app = create_app(settings, url, pool_size=1)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            assert (await c.get("/healthz")).status_code == 200
            r = await c.get("/readyz")
    assert r.status_code == 503
    assert r.json()["status"] == "unavailable"
    assert r.json()["database"].startswith("unreachable")


async def test_metrics_count_requests_by_route_template(client, agent):
    await client.get("/api/customers/12345", headers=agent.headers)
    await client.get("/api/customers/67890", headers=agent.headers)
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    line = next(
        ln for ln in text.splitlines()
        if ln.startswith("helpdesk_http_requests_total{") and 'route="/api/customers/{id:int}"' in ln and 'status="404"' in ln
    )  # fmt: skip
    assert float(line.rsplit(" ", 1)[1]) >= 2
    assert "helpdesk_http_request_seconds_bucket" in text
    assert "helpdesk_db_pool_checked_out" in text


PUBLIC = {
    "/healthz",
    "/readyz",
    "/metrics",
    "/login",
    "/api/auth/token",
    "/",
    # The help center and the chat widget's FAQ search are for customers: no login.
    "/help",
    "/help/search",
    "/help/{lang}/c/{slug}",
    "/help/{lang}/{slug}",
    "/help/{lang}/{slug}/vote",
    "/api/kb/search",
    "/api/kb/articles/{slug}",
    "/kb/{lang}/{slug}",  # staff see the agent view, anyone else is sent to /help
    # Chat visitors prove themselves with the chat's resume token (tests/test_chat.py), and
    # the demo company site is public.
    "/api/chat/uploads",
    "/chat/files/{id:int}",
    "/demo/site",
    # The JSON API's description (helpdesk/openapi.py), as a public API's usually is.
    "/api/openapi.json",
}


def _app_routes(app):
    for route in app.routes:
        if isinstance(route, Route) and route.path not in PUBLIC:
            for method in sorted(route.methods - {"HEAD"}):
                yield method, route.path.replace("{id:int}", "1").replace("{n:int}", "1")


async def test_every_api_route_needs_a_token_and_every_page_a_session(app, client):
    checked = 0
    for method, path in _app_routes(app):
        r = await client.request(method, path)
        if path.startswith("/api/"):
            assert r.status_code == 401, (method, path, r.status_code)
            assert r.json()["error"]["code"] == "unauthorized"
        elif method == "GET":
            assert r.status_code == 303 and r.headers["location"].startswith("/login"), (
                method,
                path,
            )
        else:
            # Form posts are refused before anything else: no session, no CSRF token.
            assert r.status_code in (303, 401, 403), (method, path, r.status_code)
        checked += 1
    assert checked >= 25


@pytest.mark.parametrize("path", ["/api/nope", "/api/customers/abc"])
async def test_unknown_api_paths_answer_json(client, agent, path):
    r = await client.get(path, headers=agent.headers)
    assert r.status_code in (400, 404)
    assert r.json()["error"]["message"]
