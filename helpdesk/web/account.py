"""The signed-in user's own security settings: the optional TOTP second factor (admins)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from helpdesk import auth
from helpdesk.errors import Conflict, InvalidInput
from helpdesk.web.render import render
from helpdesk.web.security import requires


async def _page(request: Request, error: str | None = None, status: int = 200) -> Response:
    """The page, creating the unconfirmed secret on first view (kept until confirmed, so a
    reload shows the same one the app may already have)."""
    async with request.app.state.db.unit_of_work() as session:
        user = await session.get(auth.User, request.state.user.id)
        assert user is not None
        enabled = user.totp_enabled_at is not None
        secret = None if enabled else auth.start_totp(user)
        uri = auth.totp_uri(secret, user.email) if secret else None
    context = {"enabled": enabled, "secret": secret, "uri": uri, "error": error}
    return render(request, "account/totp.html", context, status=status)


@requires("admin")
async def totp_page(request: Request) -> Response:
    return await _page(request)


async def _change(request: Request, change) -> Response:  # type: ignore[no-untyped-def]
    form = await request.form()
    code = str(form.get("code", ""))
    try:
        async with request.app.state.db.unit_of_work() as session:
            user = await session.get(auth.User, request.state.user.id)
            assert user is not None
            await change(session, user, code)
    except (InvalidInput, Conflict) as exc:
        return await _page(request, exc.message, status=exc.status)
    return RedirectResponse("/account/totp", status_code=303)


@requires("admin")
async def totp_enable(request: Request) -> Response:
    return await _change(request, auth.enable_totp)


@requires("admin")
async def totp_disable(request: Request) -> Response:
    return await _change(request, auth.disable_totp)


routes = [
    Route("/account/totp", totp_page, methods=["GET"]),
    Route("/account/totp/enable", totp_enable, methods=["POST"]),
    Route("/account/totp/disable", totp_disable, methods=["POST"]),
]
