"""Every route of the app, called as every role and anonymously, answers as
`helpdesk.permissions.RULES` says: 401 or a login redirect without a token, 403 for a role
that lacks the right, never a 500; and no route exists without an entry."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from starlette.routing import Mount, Route, WebSocketRoute

from helpdesk import auth, cases, customers, permissions
from helpdesk.models import CannedResponse, Team

ROOT = Path(__file__).resolve().parent.parent
SKIPPED_METHODS = {"HEAD", "OPTIONS"}


def _routes(app) -> list[tuple[str, str, object]]:  # type: ignore[no-untyped-def]
    found = []
    for route in app.routes:
        if isinstance(route, Route):
            for method in sorted((route.methods or set()) - SKIPPED_METHODS):
                found.append((method, route.path, route))
        elif isinstance(route, WebSocketRoute):
            found.append(("WS", route.path, route))
        elif isinstance(route, Mount):
            assert route.path in permissions.PUBLIC_MOUNTS, f"mount {route.path} has no rule"
        else:  # pragma: no cover - a new kind of route must be thought about
            raise AssertionError(f"unknown route type {route!r}")
    return found


def test_every_route_has_a_rule_and_every_rule_a_route(app):
    routes = {(method, path) for method, path, _ in _routes(app)}
    missing = sorted(routes - permissions.RULES.keys())
    stale = sorted(permissions.RULES.keys() - routes)
    assert not missing, f"routes without an entry in helpdesk/permissions.py: {missing}"
    assert not stale, f"entries for routes that no longer exist: {stale}"


def _declared_roles(endpoint: object) -> tuple[str, ...] | None:
    """The roles `security.requires` was given (read from its closure), or None."""
    code = getattr(endpoint, "__code__", None)
    if code is None or "roles" not in code.co_freevars:
        return None
    cell = endpoint.__closure__[code.co_freevars.index("roles")]  # type: ignore[attr-defined]
    return tuple(cell.cell_contents)


def test_the_roles_each_endpoint_requires_are_the_tables(app):
    for method, path, route in _routes(app):
        if method == "WS":
            continue
        rule = permissions.RULES[(method, path)]
        declared = _declared_roles(route.endpoint)  # type: ignore[attr-defined]
        if rule.kind == "staff":
            assert declared is not None, f"{method} {path} is staff-only but has no @requires"
            assert set(declared) == set(rule.roles), f"{method} {path}: {declared} != {rule}"
        else:
            assert declared is None, f"{method} {path} is {rule.kind} but has @requires"


def test_the_written_matrix_is_the_tables():
    written = (ROOT / "docs" / "PERMISSIONS.md").read_text(encoding="utf-8")
    assert written == permissions.markdown(), (
        "docs/PERMISSIONS.md is stale: python -m helpdesk.permissions > docs/PERMISSIONS.md"
    )


def _fill(path: str) -> str:
    """Path parameters filled with ids that exist (1 for every table after the fixture
    below) and a known article slug."""
    path = re.sub(r"\{token\}", "not-the-token", path)
    path = re.sub(r"\{lang\}", "en", path)
    path = re.sub(r"\{slug\}", "no-such-article", path)
    return re.sub(r"\{(\w+):int\}", "1", path)


@pytest.fixture
async def world(db, make_staff, app, settings):  # type: ignore[no-untyped-def]
    """User 1 (a target for agent admin), team 1, customer 1, case 1, canned response 1;
    then one user of each role. The CTI token is restored afterwards (rotation runs too)."""
    async with db.unit_of_work() as session:
        session.add(Team(name="Team one"))
        await session.flush()
    target = await make_staff("agent", team_name="Team one", extension="299")
    assert target.user.id == 1
    async with db.unit_of_work() as session:
        customer = await customers.create_customer(session, customers.CustomerInput(name="Ada"))
        await cases.create_case(
            session,
            cases.CaseInput(customer_id=customer.id, subject="Printer", channel="email"),
            author_user_id=None,
        )
        session.add(CannedResponse(title="Hi", body="Hello", shortcut="hi"))
    staff = {role: await make_staff(role) for role in permissions.ROLES}
    yield staff
    app.state.settings = settings


async def _call(client, method: str, path: str, token: str | None):  # type: ignore[no-untyped-def]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if method == "GET":
        return await client.get(path, headers=headers, follow_redirects=False)
    return await client.request(
        method, path, headers={**headers, "content-type": "application/json"}, content=b"{}"
    )


async def test_every_route_answers_every_role_as_the_matrix_says(app, client, world, settings):
    failures = []
    for method, path, _route in _routes(app):
        if method == "WS":
            continue
        rule = permissions.RULES[(method, path)]
        url = _fill(path)
        for role in (None, *permissions.ROLES):
            # A fresh token per call: logout routes revoke the one they are given.
            token = auth.issue_token(world[role].user, settings.secret_key, 600) if role else None
            r = await _call(client, method, url, token)
            status = r.status_code
            problem = None
            if status >= 500:
                problem = "server error"
            elif rule.kind == "staff" and role is None:
                redirected = status == 303 and r.headers["location"].startswith("/login")
                if status != 401 and not (method == "GET" and redirected):
                    problem = "anonymous not refused"
            elif rule.kind == "staff" and not rule.allows(role):
                if status != 403:
                    problem = "role not refused"
            elif rule.kind == "shared_token":
                if status != 401:
                    problem = "no shared token but not 401"
            elif rule.csrf_form and status == 403:
                pass  # a public form without its CSRF token or Origin: refused as it should be
            elif status in (401, 403) and rule.kind in ("staff", "public"):
                problem = "allowed but refused"
            if problem:
                failures.append(f"{method} {url} as {role or 'anonymous'}: {status} ({problem})")
    assert not failures, "\n".join(failures)
