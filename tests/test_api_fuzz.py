"""The JSON API under schemathesis: every operation of helpdesk/openapi.py, fuzzed.

The app runs under uvicorn in a thread of its own (its own event loop, its own database
pool) on the test database, so schemathesis sends real HTTP; each operation starts from
empty tables with a customer and a case in them and a fresh admin token, so a fuzzed
logout or erase harms only its own operation. Checks: no 5xx, the status is documented,
the body matches the documented schema (every 4xx in the shared error shape).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import text
from starlette.routing import Route

from helpdesk import auth
from helpdesk.config import Settings
from helpdesk.db import Database
from helpdesk.models import User
from helpdesk.openapi import openapi_document
from helpdesk.web.app import create_app
from tests.conftest import PASSWORD, TABLES, free_port

SCHEMA = schemathesis.openapi.from_dict(openapi_document())
SCHEMA.transport.serializer("message/rfc822")(
    lambda _ctx, value: {"data": value if isinstance(value, bytes) else str(value).encode()}
)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def server(settings: Settings, database_url: str) -> Iterator[str]:
    """The desk under uvicorn in a background thread; its base URL."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings, database_url, pool_size=3),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
    )
    app_server = uvicorn.Server(config)
    thread = threading.Thread(target=app_server.run, name="fuzz-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not app_server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the fuzz server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        app_server.should_exit = True
        thread.join(timeout=30)


@dataclass
class Admin:
    user: User
    secret: str

    def headers(self) -> dict[str, str]:
        """A token of its own for each request: a fuzzed logout revokes only that one."""
        return {"Authorization": f"Bearer {auth.issue_token(self.user, self.secret, 3600)}"}


@pytest.fixture(scope="module")
async def admin(session_db: Database, settings: Settings) -> Admin:
    """Empty tables (once for the module: the fuzzer's writes stay for the next operation)
    and an admin."""
    async with session_db.engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
    async with session_db.unit_of_work() as session:
        user = await auth.create_user(
            session, "fuzz-admin@example.com", "Fuzz Admin", "admin", PASSWORD, extension="201"
        )
    return Admin(user, settings.secret_key)


@pytest.fixture(scope="module")
def seeded(server: str, admin: Admin) -> None:
    """Customer 1 and case 1, so that fuzzed ids reach past the 404."""
    r = requests.post(
        f"{server}/api/customers",
        json={"name": "Fuzz Customer", "phones": ["+81312345678"], "emails": ["f@example.com"]},
        headers=admin.headers(),
        timeout=10,
    )
    assert r.status_code == 201, r.text
    r = requests.post(
        f"{server}/api/cases",
        json={"customer_id": r.json()["id"], "subject": "fuzz", "channel": "phone"},
        headers=admin.headers(),
        timeout=10,
    )
    assert r.status_code == 201, r.text


def credentials(case: schemathesis.Case, admin: Admin) -> dict[str, str]:
    """What the operation's security scheme asks for: the admin's JWT, or a shared token."""
    schemes = [
        name for item in case.operation.definition.raw.get("security", [{}]) for name in item
    ]
    if "ctiToken" in schemes:
        return {"Authorization": "Bearer test-cti-token"}
    if "mailToken" in schemes:
        return {"Authorization": "Bearer test-mail-token"}
    if "chatToken" in schemes:
        return {"X-Chat-Token": "no-such-chat"}
    if "bearer" in schemes:
        return admin.headers()
    return {}


@SCHEMA.parametrize()
@settings(
    max_examples=8,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_operation_never_fails_and_keeps_to_its_description(
    case: schemathesis.Case, server: str, admin: Admin, seeded: None
) -> None:
    case.call_and_validate(
        base_url=server, headers=credentials(case, admin), checks=CHECKS, timeout=30
    )


def test_every_api_route_is_described(settings: Settings, database_url: str) -> None:
    app = create_app(settings, database_url)
    described = openapi_document()["paths"]
    templates = {path.replace("{id}", "{}").replace("{n}", "{}") for path in described}
    missing = []
    for route in app.routes:
        if isinstance(route, Route) and route.path.startswith("/api/"):
            path = route.path.replace("{id:int}", "{}").replace("{n:int}", "{}")
            path = path.replace("{slug}", "{}").replace("{token}", "{token}")
            if path not in templates:
                missing.append(route.path)
    assert missing == []


def test_oversized_json_body_is_413_in_the_error_shape(server: str, admin: Admin) -> None:
    r = requests.post(
        f"{server}/api/customers",
        data=b'{"name": "' + b"x" * 1_100_000 + b'"}',
        headers={**admin.headers(), "Content-Type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "too_large"
