"""Authentication and role checks for endpoints, CSRF protection, and response headers."""

from __future__ import annotations

import functools
import hmac
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from helpdesk import auth, visibility
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


def scope(request: Request) -> visibility.Scope | None:
    """Whose eyes a `requires`-checked request is for: the cases it may show
    (helpdesk/visibility.py)."""
    return visibility.scope_for(request.state.user)


# frame-ancestors is filled in per response: 'none' for the desk's own pages.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors {ancestors}; base-uri 'self'; form-action 'self'"
)
HSTS = "max-age=31536000; includeSubDomains"
PERMISSIONS_POLICY = (
    "camera=(), microphone=(), geolocation=(), payment=(), usb=(), "
    "accelerometer=(), gyroscope=(), magnetometer=()"
)
# Pages meant to be shown inside another site's frame. None today: the chat widget is a
# script on the customer's page (it builds its panel in their DOM and talks to /ws/chat and
# the CORS endpoints below), and /demo/site is a top-level page. A page added here may be
# framed by HELPDESK_WIDGET_ORIGINS (any site when that is unset) and by the desk itself.
EMBEDDABLE_PATHS: tuple[str, ...] = ()
# What another site's page (the widget) calls cross-origin; HELPDESK_WIDGET_ORIGINS limits it.
WIDGET_CORS_PATHS = ("/api/kb/search", "/api/chat/uploads", "/chat/files/")


def is_https(scope: Scope) -> bool:
    """Did the request come over TLS? uvicorn's proxy-headers handling has already put a
    trusted proxy's `X-Forwarded-Proto` into the scheme (only for `--forwarded-allow-ips`,
    default 127.0.0.1), so an untrusted client cannot claim https with a header."""
    return scope.get("scheme") in ("https", "wss")


def own_origin(scope: Scope) -> str:
    """The desk's origin as the browser sees it (scheme and Host header)."""
    host = ""
    for key, value in scope.get("headers", []):
        if key == b"host":
            host = value.decode("latin-1").lower()
            break
    scheme = "https" if is_https(scope) else "http"
    for default in (":80",) if scheme == "http" else (":443",):
        host = host.removesuffix(default)
    return f"{scheme}://{host}"


def origin_allowed(scope: Scope, origin: str | None, allowed: tuple[str, ...]) -> bool:
    """May a page of `origin` use the widget's endpoints? Any site when no origins are
    configured; no Origin header is not a browser on another site (a browser always sends
    one on sockets and cross-origin fetches); the desk itself always may (/demo/site)."""
    if not allowed or origin is None:
        return True
    origin = origin.strip().lower().rstrip("/")
    return origin in allowed or origin == own_origin(scope)


def frame_ancestors(path: str, allowed: tuple[str, ...]) -> str:
    if any(path == p or path.startswith(p + "/") for p in EMBEDDABLE_PATHS):
        return " ".join(("'self'", *allowed)) if allowed else "*"
    return "'none'"


class SecurityHeaders:
    """Pure ASGI middleware: security headers on every response, a CSRF cookie for browsers
    that have none yet (exposed to templates as `request.state.csrf_token`), and the widget's
    origin check on its cross-origin endpoints."""

    def __init__(
        self, app: ASGIApp, *, secure_cookies: bool = False, widget_origins: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        self.secure = secure_cookies
        self.widget_origins = widget_origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        origin = _header(scope, b"origin")
        cors = self.widget_origins and path.startswith(WIDGET_CORS_PATHS)
        if cors and not origin_allowed(scope, origin, self.widget_origins):
            response = JSONResponse(
                {
                    "error": {
                        "code": "forbidden",
                        "message": "this site may not use the chat widget",
                    }
                },
                status_code=403,
            )
            await response(scope, receive, send)
            return
        https = is_https(scope)
        existing = _cookie(scope, CSRF_COOKIE)
        token = existing or secrets.token_urlsafe(24)
        scope.setdefault("state", {})["csrf_token"] = token
        ancestors = frame_ancestors(path, self.widget_origins)
        defaults = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"same-origin"),
            (b"permissions-policy", PERMISSIONS_POLICY.encode()),
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"content-security-policy", CSP.format(ancestors=ancestors).encode()),
        ]
        if ancestors == "'none'":
            defaults.append((b"x-frame-options", b"DENY"))
        if https:
            defaults.append((b"strict-transport-security", HSTS.encode()))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[tuple[bytes, bytes]] = list(message.get("headers", []))
                if cors and origin:
                    # Name the one allowed origin instead of "*", and tell caches it varies.
                    headers = [
                        (k, origin.encode() if k.lower() == b"access-control-allow-origin" else v)
                        for k, v in headers
                    ]
                    headers.append((b"vary", b"Origin"))
                names = {k.lower() for k, _ in headers}
                headers.extend((k, v) for k, v in defaults if k not in names)
                if not existing:
                    cookie = f"{CSRF_COOKIE}={token}; Path=/; SameSite=Lax"
                    if self.secure or https:
                        cookie += "; Secure"
                    headers.append((b"set-cookie", cookie.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def secure_cookies(request: Request) -> bool:
    """Cookies get the Secure flag when configured (HELPDESK_SECURE_COOKIES) or when this
    request came over https."""
    return bool(request.app.state.settings.secure_cookies) or is_https(request.scope)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


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
