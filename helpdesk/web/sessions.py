"""Logging in and out: the browser's cookie session and the API's bearer tokens."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from helpdesk import auth
from helpdesk.config import Settings
from helpdesk.errors import InvalidInput, Unauthorized
from helpdesk.i18n import SUPPORTED
from helpdesk.identities import normalize_email
from helpdesk.web.forms import json_object, text_field
from helpdesk.web.render import render, user_json
from helpdesk.web.security import (
    ANY_STAFF,
    SESSION_COOKIE,
    check_csrf,
    requires,
    secure_cookies,
)


def _client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


class SecondFactorNeeded(Exception):
    """The password was right and the account has TOTP on: ask for the code next."""

    def __init__(self, pending: str) -> None:
        self.pending = pending


async def _login(
    request: Request, email: str, password: str, totp: str | None = None
) -> tuple[str, int]:
    settings = request.app.state.settings
    async with request.app.state.db.unit_of_work() as session:
        result = await auth.authenticate(
            session,
            email,
            password,
            _client_address(request),
            max_failures=settings.login_max_failures,
            window_seconds=settings.login_window_seconds,
            totp=totp,
        )
        token = _token_for(result, settings)
        pending = (
            auth.issue_pending_login(await _user_by_email(session, email), settings.secret_key)
            if result is auth.TOTP_REQUIRED
            else None
        )
    # Failure rows are committed above, before we answer.
    if pending is not None:
        raise SecondFactorNeeded(pending)
    return _answer(result, token, settings)


async def _login_second_step(request: Request, pending: str, code: str) -> tuple[str, int]:
    settings = request.app.state.settings
    async with request.app.state.db.unit_of_work() as session:
        result = await auth.authenticate_second_factor(
            session,
            pending,
            code,
            _client_address(request),
            settings.secret_key,
            max_failures=settings.login_max_failures,
            window_seconds=settings.login_window_seconds,
        )
        token = _token_for(result, settings)
    return _answer(result, token, settings)


def _token_for(result: auth.User | auth.Refusal | None, settings: Settings) -> str | None:
    if not isinstance(result, auth.User):
        return None
    return auth.issue_token(result, settings.secret_key, settings.token_ttl_seconds)


def _answer(
    result: auth.User | auth.Refusal | None, token: str | None, settings: Settings
) -> tuple[str, int]:
    if token is None:
        if isinstance(result, auth.Refusal):
            raise Unauthorized(result.message, field="totp")
        raise Unauthorized("wrong email or password")
    return token, settings.token_ttl_seconds


async def _user_by_email(session: AsyncSession, email: str) -> auth.User:
    user = await session.scalar(select(auth.User).where(auth.User.email == normalize_email(email)))
    assert user is not None  # it has just authenticated
    return user


def _safe_next(target: str | None) -> str:
    # Only same-site paths: an open redirect after login is a phishing tool.
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/agent"


async def login_page(request: Request) -> Response:
    return render(request, "login.html", {"next": _safe_next(request.query_params.get("next"))})


async def login_submit(request: Request) -> Response:
    """Step one: email and password. Step two, for accounts with TOTP on: the code, with the
    signed proof of step one (`pending`) instead of the password."""
    await check_csrf(request)
    form = await request.form()
    email, password = str(form.get("email", "")), str(form.get("password", ""))
    pending, code = str(form.get("pending", "")), str(form.get("totp", ""))
    target = _safe_next(str(form.get("next", "")))
    try:
        if pending:
            token, ttl = await _login_second_step(request, pending, code)
        else:
            token, ttl = await _login(request, email, password)
    except SecondFactorNeeded as step:
        return render(request, "login.html", {"next": target, "pending": step.pending})
    except Unauthorized as exc:
        context = {"next": target, "email": email, "error": exc.message}
        if pending and exc.field == "totp":  # a wrong code: ask again, same step
            context["pending"] = pending
        return render(request, "login.html", context, status=401)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=ttl,
        httponly=True,
        samesite="lax",
        secure=secure_cookies(request),
    )
    return response


@requires(*ANY_STAFF)
async def logout(request: Request) -> Response:
    async with request.app.state.db.unit_of_work() as session:
        await auth.revoke_token(session, request.state.claims)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


@requires(*ANY_STAFF)
async def preferences(request: Request) -> Response:
    """Language and timezone of the signed-in user (the header's switchers post here)."""
    form = await request.form()
    language = str(form.get("language") or "") or None
    timezone = str(form.get("timezone") or "") or None
    if language and language not in SUPPORTED:
        raise InvalidInput(f"language must be one of {', '.join(SUPPORTED)}", field="language")
    async with request.app.state.db.unit_of_work() as session:
        user = await session.get(auth.User, request.state.user.id)
        assert user is not None
        if language:
            user.language = language
        if timezone:
            from helpdesk.i18n import zone

            if zone(timezone, "UTC").key != timezone:
                raise InvalidInput(f"unknown timezone {timezone!r}", field="timezone")
            user.timezone = timezone
    return RedirectResponse(_safe_next(str(form.get("next", ""))), status_code=303)


async def api_token(request: Request) -> JSONResponse:
    data = await json_object(request, max_bytes=10_000)
    email = text_field(data, "email", required=True, max_len=320) or ""
    password = text_field(data, "password", required=True, max_len=1000) or ""
    totp = text_field(data, "totp", max_len=16)
    try:
        token, ttl = await _login(request, email, password, totp)
    except SecondFactorNeeded:
        raise Unauthorized(auth.TOTP_REQUIRED.message, field="totp") from None
    return JSONResponse({"access_token": token, "token_type": "bearer", "expires_in": ttl})


@requires(*ANY_STAFF)
async def api_logout(request: Request) -> JSONResponse:
    async with request.app.state.db.unit_of_work() as session:
        await auth.revoke_token(session, request.state.claims)
    return JSONResponse({"revoked": True})


@requires(*ANY_STAFF)
async def api_me(request: Request) -> JSONResponse:
    return JSONResponse(user_json(request.state.user))


routes = [
    Route("/login", login_page, methods=["GET"]),
    Route("/login", login_submit, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/preferences", preferences, methods=["POST"]),
    Route("/api/auth/token", api_token, methods=["POST"]),
    Route("/api/auth/logout", api_logout, methods=["POST"]),
    Route("/api/me", api_me, methods=["GET"]),
]
