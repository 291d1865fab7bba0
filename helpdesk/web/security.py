"""Authentication and role checks for endpoints, CSRF protection, and response headers."""

from __future__ import annotations

import functools
import hmac
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from helpdesk import auth
from helpdesk.errors import DeskError, Forbidden, Unauthorized

SESSION_COOKIE = "helpdesk_session"
CSRF_COOKIE = "helpdesk_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Endpoint = Callable[[Request], Awaitable[Response]]


def check_shared_token(
    request: Request, expected: str, what: str, path_token: str | None = None
) -> None:
    """Machines (a PBX, an MTA) present a shared secret, never a user's JWT: as
    `Authorization: Bearer`, a `token` query parameter, or (Zammad's CTI) in the path."""
    header = request.headers.get("authorization", "")
    sent = (
        path_token
        or (header[7:].strip() if header.lower().startswith("bearer ") else "")
        or request.query_params.get("token", "")
    )
    if not sent:
        raise Unauthorized(f"{what} token required (Authorization: Bearer <token> or ?token=)")
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise Unauthorized(f"wrong {what} token")


def bearer_token(request: Request) -> tuple[str | None, str]:
    """The presented token and where it came from ("header", "cookie" or "query")."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip(), "header"
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        return cookie, "cookie"
    return None, ""


def is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


async def check_csrf(request: Request) -> None:
    """Double-submit check: the token in a header or form field must equal the CSRF cookie.

    Only browser sessions (cookie auth) are exposed to CSRF; a Bearer header cannot be sent
    by another site's form, so API clients need no token.
    """
    cookie = request.cookies.get(CSRF_COOKIE, "")
    sent = request.headers.get(CSRF_HEADER, "")
    if not sent and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else ""
    if not cookie or not sent or not hmac.compare_digest(cookie, sent):
        raise Forbidden("missing or wrong CSRF token; reload the page and try again")


def requires(*roles: str) -> Callable[[Endpoint], Endpoint]:
    """Decorate an endpoint: a valid, unrevoked token of one of `roles`, and CSRF on writes.

    Sets `request.state.user` and `request.state.claims`. Pages redirect to the login form
    where an API answers 401.
    """

    def decorate(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def wrapper(request: Request) -> Response:
            token, source = bearer_token(request)
            try:
                if not token:
                    raise Unauthorized("authentication required")
                settings = request.app.state.settings
                async with request.app.state.db.unit_of_work() as session:
                    user, claims = await auth.user_for_token(session, token, settings.secret_key)
                    session.expunge(user)
            except Unauthorized:
                if is_api(request) or request.method not in SAFE_METHODS:
                    raise
                target = quote(
                    request.url.path + ("?" + request.url.query if request.url.query else "")
                )
                response = RedirectResponse(f"/login?next={target}", status_code=303)
                if source == "cookie":
                    response.delete_cookie(SESSION_COOKIE)
                return response
            if roles and user.role not in roles:
                raise Forbidden(f"this needs the role {' or '.join(roles)}")
            if source == "cookie" and request.method not in SAFE_METHODS:
                await check_csrf(request)
            request.state.user = user
            request.state.claims = claims
            return await endpoint(request)

        return wrapper

    return decorate


ANY_STAFF = ("agent", "supervisor", "admin")

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)


class SecurityHeaders:
    """Pure ASGI middleware: security headers on every response, and a CSRF cookie for
    browsers that have none yet (exposed to templates as `request.state.csrf_token`)."""

    def __init__(self, app: ASGIApp, *, secure_cookies: bool = False) -> None:
        self.app = app
        self.secure = secure_cookies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        existing = _cookie(scope, CSRF_COOKIE)
        token = existing or secrets.token_urlsafe(24)
        scope.setdefault("state", {})["csrf_token"] = token

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[tuple[bytes, bytes]] = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                for name, value in (
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                    (b"x-frame-options", b"DENY"),
                    (b"content-security-policy", CSP.encode()),
                ):
                    if name not in names:
                        headers.append((name, value))
                if not existing:
                    cookie = f"{CSRF_COOKIE}={token}; Path=/; SameSite=Lax"
                    if self.secure:
                        cookie += "; Secure"
                    headers.append((b"set-cookie", cookie.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _cookie(scope: Scope, name: str) -> str | None:
    for key, value in scope.get("headers", []):
        if key == b"cookie":
            for part in value.decode("latin-1").split(";"):
                k, _, v = part.strip().partition("=")
                if k == name and v:
                    return v
    return None


def error_body(exc: DeskError) -> dict[str, Any]:
    return {"error": exc.as_dict()}
