"""Logging in, tokens, revocation, throttling, roles and CSRF."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime, timedelta

import jwt

from helpdesk import auth
from tests.conftest import PASSWORD, helpdesk_bin


async def test_token_endpoint_issues_hs256_jwt_with_the_documented_claims(client, agent, settings):
    r = await client.post("/api/auth/token", json={"email": agent.user.email, "password": PASSWORD})
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == settings.token_ttl_seconds
    claims = jwt.decode(body["access_token"], settings.secret_key, algorithms=["HS256"])
    assert claims["sub"] == str(agent.user.id) and claims["role"] == "agent"
    assert {"exp", "iat", "jti"} <= claims.keys()
    me = await client.get("/api/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.json()["email"] == agent.user.email


async def test_email_is_case_insensitive_at_login(client, agent):
    r = await client.post(
        "/api/auth/token", json={"email": agent.user.email.upper(), "password": PASSWORD}
    )
    assert r.status_code == 200


async def test_wrong_password_is_401_with_the_json_error_shape(client, agent):
    r = await client.post("/api/auth/token", json={"email": agent.user.email, "password": "nope"})
    assert r.status_code == 401
    assert r.json() == {"error": {"code": "unauthorized", "message": "wrong email or password"}}


async def test_token_request_validation(client):
    r = await client.post("/api/auth/token", json={"email": "a@example.com"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "password"
    r = await client.post(
        "/api/auth/token", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = await client.post(
        "/api/auth/token", content=b"\xff\xfe", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and "UTF-8" in r.json()["error"]["message"]
    r = await client.post(
        "/api/auth/token", content=b"[1]", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400


async def test_repeated_failures_for_one_account_answer_429_even_with_the_right_password(
    client, agent
):
    for _ in range(5):
        r = await client.post("/api/auth/token", json={"email": agent.user.email, "password": "x"})
        assert r.status_code == 401
    r = await client.post("/api/auth/token", json={"email": agent.user.email, "password": PASSWORD})
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "too_many_requests"
    assert int(r.headers["retry-after"]) > 0


async def test_password_spraying_from_one_address_is_throttled(client, make_staff):
    for n in range(20):
        r = await client.post(
            "/api/auth/token", json={"email": f"ghost{n}@example.com", "password": "x"}
        )
        assert r.status_code == 401
    r = await client.post("/api/auth/token", json={"email": "ghost99@example.com", "password": "x"})
    assert r.status_code == 429


async def test_missing_expired_tampered_and_revoked_tokens_are_401(client, agent, settings):
    assert (await client.get("/api/me")).status_code == 401
    past = datetime.now(UTC) - timedelta(hours=2)
    expired = auth.issue_token(agent.user, settings.secret_key, 60, now=past)
    r = await client.get("/api/me", headers={"Authorization": f"Bearer {expired}"})
    assert r.status_code == 401 and r.json()["error"]["message"] == "token expired"
    forged = auth.issue_token(agent.user, "some-other-secret-key-of-enough-length!!", 600)
    r = await client.get("/api/me", headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401
    r = await client.post("/api/auth/logout", headers=agent.headers)
    assert r.status_code == 200
    r = await client.get("/api/me", headers=agent.headers)
    assert r.status_code == 401 and r.json()["error"]["message"] == "token revoked"


async def test_deactivated_user_token_stops_working(client, agent, db):
    async with db.unit_of_work() as session:
        user = await session.get(auth.User, agent.user.id)
        user.is_active = False
    r = await client.get("/api/me", headers=agent.headers)
    assert r.status_code == 401


async def test_merge_needs_a_supervisor_or_admin(client, agent):
    r = await client.post("/api/customers/1/merge", json={"other_id": 2}, headers=agent.headers)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "forbidden"


async def test_browser_login_sets_httponly_samesite_cookie_and_redirects(client, agent):
    page = await client.get("/login")
    csrf = page.cookies["helpdesk_csrf"]
    assert f'value="{csrf}"' in page.text
    r = await client.post(
        "/login",
        data={
            "email": agent.user.email,
            "password": PASSWORD,
            "csrf_token": csrf,
            "next": "/customers",
        },
    )
    assert r.status_code == 303 and r.headers["location"] == "/customers"
    cookie = next(
        v for k, v in r.headers.multi_items() if k == "set-cookie" and "helpdesk_session" in v
    )
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie
    home = await client.get("/agent")
    assert home.status_code == 200 and agent.user.name in home.text


async def test_login_refuses_offsite_redirects(client, agent):
    page = await client.get("/login")
    r = await client.post(
        "/login",
        data={
            "email": agent.user.email,
            "password": PASSWORD,
            "csrf_token": page.cookies["helpdesk_csrf"],
            "next": "//evil.example/",
        },
    )
    assert r.headers["location"] == "/agent"


async def test_form_posts_without_the_csrf_token_are_refused(client, agent):
    await client.get("/login")
    r = await client.post("/login", data={"email": agent.user.email, "password": PASSWORD})
    assert r.status_code == 403
    client.cookies.set("helpdesk_session", agent.token)
    r = await client.post("/logout")
    assert r.status_code == 403
    assert (await client.get("/api/me", headers=agent.headers)).status_code == 200


async def test_logout_revokes_the_browser_session(client, agent):
    page = await client.get("/login")
    csrf = page.cookies["helpdesk_csrf"]
    await client.post(
        "/login", data={"email": agent.user.email, "password": PASSWORD, "csrf_token": csrf}
    )
    token = client.cookies["helpdesk_session"]
    r = await client.post("/logout", data={"csrf_token": csrf})
    assert r.status_code == 303
    r = await client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401


async def test_pages_redirect_to_login_when_not_signed_in(client, db):
    r = await client.get("/customers/1?x=1")
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=/customers/1%3Fx%3D1"


def test_cli_user_add_creates_a_user_who_can_log_in(database_url, db, tmp_path):
    env = {**os.environ, "HELPDESK_DATABASE_URL": database_url, "HELPDESK_DATA_DIR": str(tmp_path)}
    out = subprocess.run(
        [helpdesk_bin(), "user", "add", "new.agent@example.com", "--role", "agent", "--extension", "305", "--password", "long-enough-pw"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "created agent new.agent@example.com" in out.stdout
    again = subprocess.run(
        [helpdesk_bin(), "user", "add", "new.agent@example.com", "--role", "agent", "--password", "long-enough-pw"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert again.returncode == 2 and "already exists" in again.stderr
    short = subprocess.run(
        [helpdesk_bin(), "user", "add", "x@example.com", "--role", "agent", "--password", "short"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert short.returncode == 2 and "at least 12 characters" in short.stderr
