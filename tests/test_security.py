"""Web security: response headers over http and https, the widget's origins, password policy,
the optional TOTP second factor, and secure cookies."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pyotp
import pytest
from sqlalchemy import select
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from helpdesk import auth
from helpdesk.config import Settings
from helpdesk.errors import InvalidInput
from helpdesk.models import AuditRecord, User
from helpdesk.web.app import create_app
from tests.conftest import PASSWORD

SHOP = "https://shop.example.com"


def _client(app, base_url: str = "http://testserver", client=("203.0.113.7", 50000)):  # type: ignore[no-untyped-def]
    transport = httpx.ASGITransport(app=app, client=client)
    return httpx.AsyncClient(transport=transport, base_url=base_url)


@pytest.fixture(scope="module")
async def widget_app(settings: Settings, database_url: str) -> AsyncIterator[object]:
    """The desk with HELPDESK_WIDGET_ORIGINS set to one shop."""
    limited = dataclasses.replace(settings, widget_origins=(SHOP,))
    application = create_app(limited, database_url, pool_size=2)
    async with application.router.lifespan_context(application):
        yield application


# -- headers --------------------------------------------------------------------------------


async def test_pages_carry_the_security_headers_and_no_hsts_over_plain_http(client):
    r = await client.get("/login")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "same-origin"
    assert "camera=()" in r.headers["permissions-policy"]
    assert r.headers["cross-origin-opener-policy"] == "same-origin"
    assert r.headers["x-frame-options"] == "DENY"
    csp = r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self';" in csp
    assert "unsafe-inline" not in csp
    assert "strict-transport-security" not in r.headers
    assert "Secure" not in r.headers["set-cookie"]


async def test_https_requests_get_hsts_and_secure_cookies(app, db):
    async with _client(app, "https://desk.example.com") as c:
        r = await c.get("/login")
    assert r.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"
    assert "; Secure" in r.headers["set-cookie"]


async def test_x_forwarded_proto_counts_only_from_a_trusted_proxy(app, db):
    """uvicorn's proxy-headers middleware (on by default in `helpdesk serve`) sets the scheme
    from X-Forwarded-Proto for --forwarded-allow-ips only (default 127.0.0.1)."""
    proxied = ProxyHeadersMiddleware(app, trusted_hosts="127.0.0.1")  # type: ignore[arg-type]
    headers = {"x-forwarded-proto": "https"}
    async with _client(proxied, client=("127.0.0.1", 40000)) as c:
        r = await c.get("/login", headers=headers)
    assert "strict-transport-security" in r.headers and "; Secure" in r.headers["set-cookie"]
    async with _client(proxied, client=("198.51.100.9", 40000)) as c:
        r = await c.get("/login", headers=headers)
    assert "strict-transport-security" not in r.headers and "Secure" not in r.headers["set-cookie"]


async def test_the_session_cookie_is_secure_when_logged_in_over_https(app, agent):
    async with _client(app, "https://desk.example.com") as c:
        csrf = (await c.get("/login")).cookies["helpdesk_csrf"]
        r = await c.post(
            "/login", data={"email": agent.user.email, "password": PASSWORD, "csrf_token": csrf}
        )
    assert r.status_code == 303
    session_cookie = next(
        v for k, v in r.headers.multi_items() if k == "set-cookie" and "helpdesk_session" in v
    )
    assert "Secure" in session_cookie and "HttpOnly" in session_cookie


def test_widget_origins_are_normalized_and_checked():
    s = Settings.from_env(
        {"HELPDESK_DATA_DIR": "/tmp/unused", "HELPDESK_SECRET_KEY": "k", "HELPDESK_CTI_TOKEN": "t",
         "HELPDESK_MAIL_TOKEN": "m", "HELPDESK_WIDGET_ORIGINS": "https://Shop.example.com/, http://a.example:8080,https://b.example:443"}
    )  # fmt: skip
    assert s.widget_origins == (
        "https://shop.example.com",
        "http://a.example:8080",
        "https://b.example",
    )
    with pytest.raises(SystemExit):
        Settings.from_env({"HELPDESK_DATA_DIR": "/tmp/unused", "HELPDESK_SECRET_KEY": "k",
                           "HELPDESK_CTI_TOKEN": "t", "HELPDESK_MAIL_TOKEN": "m",
                           "HELPDESK_WIDGET_ORIGINS": "shop.example.com"})  # fmt: skip


# -- the widget's origins ---------------------------------------------------------------------


async def test_any_site_may_use_the_widget_endpoints_when_no_origins_are_configured(client):
    r = await client.get("/api/kb/search?q=x", headers={"origin": "https://anyone.example"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"


async def test_configured_widget_origins_limit_the_cors_endpoints(widget_app, db):
    async with _client(widget_app) as c:
        r = await c.get("/api/kb/search?q=x", headers={"origin": SHOP})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == SHOP and "Origin" in r.headers["vary"]
        r = await c.get("/api/kb/search?q=x", headers={"origin": "https://evil.example"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        r = await c.options(
            "/api/chat/uploads",
            headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
        )
        assert r.status_code == 403
        r = await c.options("/api/chat/uploads", headers={"origin": SHOP})
        assert r.status_code == 204 and r.headers["access-control-allow-origin"] == SHOP
        # The desk's own pages (/demo/site) and non-browser clients (no Origin) still may.
        r = await c.get("/api/kb/search?q=x", headers={"origin": "http://testserver"})
        assert r.status_code == 200
        assert (await c.get("/api/kb/search?q=x")).status_code == 200


def test_configured_widget_origins_limit_who_may_open_a_chat_socket(settings, database_url):
    limited = dataclasses.replace(settings, widget_origins=(SHOP,))
    with TestClient(create_app(limited, database_url, pool_size=2)) as c:
        with pytest.raises(WebSocketDisconnect) as refused:
            c.websocket_connect("/ws/chat", headers={"origin": "https://evil.example"}).__enter__()
        assert refused.value.code == 4403
        with c.websocket_connect("/ws/chat", headers={"origin": SHOP}) as ws:
            ws.send_json({"type": "nonsense"})
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
            assert closed.value.code == 4400  # accepted: refused by the chat, not the origin


# -- password policy ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short-pw-1", "at least 12 characters"),
        ("password1234", "too common"),
        ("aaaaaaaaaaaaaaa", "too common"),
        ("taro.yamada-2026!", "must not contain your email"),
    ],
)
def test_password_policy_refuses_weak_passwords(password, message):
    with pytest.raises(InvalidInput) as refused:
        auth.check_password_policy(password, "Taro.Yamada@example.com")
    assert message in refused.value.message and refused.value.field == "password"


def test_test_and_demo_passwords_pass_the_policy():
    from helpdesk.demo import DEMO_PASSWORD, STAFF

    auth.check_password_policy(PASSWORD, "agent1@example.com")
    for email, *_ in STAFF:
        auth.check_password_policy(DEMO_PASSWORD, email)


async def test_create_user_enforces_the_policy(db):
    async with db.unit_of_work() as session:
        with pytest.raises(InvalidInput, match="must not contain your email"):
            await auth.create_user(
                session, "kobayashi@example.com", "K", "agent", "kobayashi-2026-x"
            )


# -- TOTP -------------------------------------------------------------------------------------


@pytest.fixture
async def admin(make_staff):  # type: ignore[no-untyped-def]
    return await make_staff("admin")


async def _admin_browser(app, admin) -> tuple[httpx.AsyncClient, str]:  # type: ignore[no-untyped-def]
    c = _client(app)
    csrf = (await c.get("/login")).cookies["helpdesk_csrf"]
    r = await c.post(
        "/login", data={"email": admin.user.email, "password": PASSWORD, "csrf_token": csrf}
    )
    assert r.status_code == 303
    return c, csrf


async def _enable_totp(app, admin) -> str:  # type: ignore[no-untyped-def]
    c, csrf = await _admin_browser(app, admin)
    try:
        page = await c.get("/account/totp")
        assert page.status_code == 200
        async with app.state.db.unit_of_work() as session:  # type: ignore[attr-defined]
            secret = (await session.get(User, admin.user.id)).totp_secret
        assert secret in page.text and "otpauth://totp/" in page.text
        r = await c.post("/account/totp/enable", data={"code": "000000", "csrf_token": csrf})
        assert r.status_code == 422
        code = pyotp.TOTP(secret).at(datetime.now(UTC) - timedelta(seconds=30))
        r = await c.post("/account/totp/enable", data={"code": code, "csrf_token": csrf})
        assert r.status_code == 303
    finally:
        await c.aclose()
    return secret


async def test_admin_enables_totp_with_a_code_and_it_is_audited(app, db, admin):
    await _enable_totp(app, admin)
    async with db.unit_of_work() as session:
        user = await session.get(User, admin.user.id)
        assert user.totp_enabled_at is not None
        actions = (await session.scalars(select(AuditRecord.action))).all()
    assert "totp_enabled" in actions


async def test_api_token_needs_the_totp_code_once_enabled(app, client, db, admin):
    secret = await _enable_totp(app, admin)
    creds = {"email": admin.user.email, "password": PASSWORD}
    r = await client.post("/api/auth/token", json=creds)
    assert r.status_code == 401
    assert r.json()["error"]["field"] == "totp" and "TOTP code" in r.json()["error"]["message"]
    r = await client.post("/api/auth/token", json={**creds, "totp": "123456"})
    assert r.status_code == 401 and "wrong or expired TOTP code" in r.json()["error"]["message"]
    r = await client.post("/api/auth/token", json={**creds, "totp": pyotp.TOTP(secret).now()})
    assert r.status_code == 200 and r.json()["access_token"]


async def test_a_totp_code_works_only_once(app, client, db, admin):
    secret = await _enable_totp(app, admin)
    code = pyotp.TOTP(secret).now()
    creds = {"email": admin.user.email, "password": PASSWORD, "totp": code}
    assert (await client.post("/api/auth/token", json=creds)).status_code == 200
    assert (await client.post("/api/auth/token", json=creds)).status_code == 401


async def test_wrong_totp_codes_are_throttled_like_passwords(app, client, db, admin):
    secret = await _enable_totp(app, admin)
    creds = {"email": admin.user.email, "password": PASSWORD}
    for _ in range(5):
        r = await client.post("/api/auth/token", json={**creds, "totp": "999999"})
        assert r.status_code == 401
    r = await client.post("/api/auth/token", json={**creds, "totp": pyotp.TOTP(secret).now()})
    assert r.status_code == 429


async def test_browser_login_asks_for_the_code_after_the_password(app, db, admin):
    secret = await _enable_totp(app, admin)
    async with _client(app) as c:
        csrf = (await c.get("/login")).cookies["helpdesk_csrf"]
        r = await c.post(
            "/login", data={"email": admin.user.email, "password": PASSWORD, "csrf_token": csrf}
        )
        assert (
            r.status_code == 200 and 'name="totp"' in r.text and "helpdesk_session" not in c.cookies
        )
        pending = r.text.split('name="pending" value="', 1)[1].split('"', 1)[0]
        r = await c.post("/login", data={"pending": pending, "totp": "111111", "csrf_token": csrf})
        assert r.status_code == 401 and 'name="totp"' in r.text
        # The step's proof is not an access token.
        assert (
            await c.get("/api/me", headers={"Authorization": f"Bearer {pending}"})
        ).status_code == 401
        code = pyotp.TOTP(secret).now()
        r = await c.post(
            "/login", data={"pending": pending, "totp": code, "csrf_token": csrf, "next": "/agent"}
        )
        assert r.status_code == 303 and r.headers["location"] == "/agent"
        assert "helpdesk_session" in c.cookies


async def test_totp_is_turned_off_only_with_a_valid_code(app, db, admin):
    secret = await _enable_totp(app, admin)
    c, csrf = await _admin_browser_with_totp(app, admin, secret)
    try:
        r = await c.post("/account/totp/disable", data={"code": "000000", "csrf_token": csrf})
        assert r.status_code == 422
        code = pyotp.TOTP(secret).at(datetime.now(UTC) + timedelta(seconds=30))
        r = await c.post("/account/totp/disable", data={"code": code, "csrf_token": csrf})
        assert r.status_code == 303
    finally:
        await c.aclose()
    async with db.unit_of_work() as session:
        user = await session.get(User, admin.user.id)
        assert user.totp_enabled_at is None and user.totp_secret is None
        actions = (await session.scalars(select(AuditRecord.action))).all()
    assert "totp_disabled" in actions


async def _admin_browser_with_totp(app, admin, secret):  # type: ignore[no-untyped-def]
    c = _client(app)
    csrf = (await c.get("/login")).cookies["helpdesk_csrf"]
    r = await c.post(
        "/login", data={"email": admin.user.email, "password": PASSWORD, "csrf_token": csrf}
    )
    pending = r.text.split('name="pending" value="', 1)[1].split('"', 1)[0]
    r = await c.post(
        "/login", data={"pending": pending, "totp": pyotp.TOTP(secret).now(), "csrf_token": csrf}
    )
    assert r.status_code == 303
    return c, csrf


async def test_only_admins_have_the_totp_page(client, agent):
    r = await client.get("/account/totp", headers=agent.headers)
    assert r.status_code == 403
