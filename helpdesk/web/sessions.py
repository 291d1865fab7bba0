"""Logging in and out: the browser's cookie session and the API's bearer tokens."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from helpdesk import auth
from helpdesk.errors import InvalidInput, Unauthorized
from helpdesk.i18n import SUPPORTED
from helpdesk.web.forms import json_object, text_field
from helpdesk.web.render import render, user_json
from helpdesk.web.security import ANY_STAFF, SESSION_COOKIE, check_csrf, requires


def _client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def _login(request: Request, email: str, password: str) -> tuple[str, int]:
    settings = request.app.state.settings
    async with request.app.state.db.unit_of_work() as session:
        user = await auth.authenticate(
            session,
            email,
            password,
            _client_address(request),
            max_failures=settings.login_max_failures,
            window_seconds=settings.login_window_seconds,
        )
        token = (
            auth.issue_token(user, settings.secret_key, settings.token_ttl_seconds)
            if user
            else None
        )
    if token is None:  # the failure row is committed above before we answer
        raise Unauthorized("wrong email or password")
    return token, settings.token_ttl_seconds


def _safe_next(target: str | None) -> str:
    # Only same-site paths: an open redirect after login is a phishing tool.
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/agent"


async def login_page(request: Request) -> Response:
    return render(request, "login.html", {"next": _safe_next(request.query_params.get("next"))})


async def login_submit(request: Request) -> Response:
    await check_csrf(request)
    form = await request.form()
    email, password = str(form.get("email", "")), str(form.get("password", ""))
    target = _safe_next(str(form.get("next", "")))
    try:
        token, ttl = await _login(request, email, password)
    except Unauthorized as exc:
        return render(
            request,
            "login.html",
            {"next": target, "email": email, "error": exc.message},
            status=401,
        )
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=ttl,
        httponly=True,
        samesite="lax",
        secure=request.app.state.settings.secure_cookies,
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
    token, ttl = await _login(request, email, password)
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
