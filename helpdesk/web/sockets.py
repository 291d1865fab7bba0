"""`/ws/agent`: one socket per browser tab, fed by the hub, and the presence API.

Close codes (also in the README):

- 4400 a frame that is not a JSON object, or larger than 64 KiB (then 1009)
- 4401 authentication: "authentication required", "token expired", "token revoked",
  "account is not active", "invalid token: ..."
- 4403 the role may not use the socket, or a cookie-authenticated socket from another origin
- 4408 no frame from the browser for three heartbeat intervals
- 1012 the server is shutting down (reconnect)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from helpdesk import auth, presence, visibility
from helpdesk.errors import DeskError, Unauthorized
from helpdesk.events import STAFF_ROLES, encode
from helpdesk.hub import Close, Connection, Hub
from helpdesk.web import chat
from helpdesk.web.forms import json_object, text_field
from helpdesk.web.security import ANY_STAFF, SESSION_COOKIE, requires

log = logging.getLogger(__name__)
MAX_FRAME = 64 * 1024
TOPIC_PREFIXES = ("case:", "customer:", "queue", "presence", "chat:", "chats", "sla")


def _same_origin(ws: WebSocket) -> bool:
    """Browsers send cookies with cross-site socket requests: only trust our own origin."""
    origin = ws.headers.get("origin")
    if origin is None:
        return True  # not a browser
    host = ws.headers.get("host", "")
    return urlsplit(origin).netloc == host


async def _authenticate(ws: WebSocket) -> tuple[Any, auth.TokenClaims]:
    token = ws.query_params.get("token")
    if not token:
        token = ws.cookies.get(SESSION_COOKIE)
        if token and not _same_origin(ws):
            raise PermissionError("cross-origin socket refused")
    if not token:
        raise Unauthorized("authentication required")
    app = ws.app
    async with app.state.db.unit_of_work() as session:
        user, claims = await auth.user_for_token(session, token, app.state.settings.secret_key)
        session.expunge(user)
    if user.role not in STAFF_ROLES:
        raise PermissionError(f"role {user.role} may not use the agent socket")
    return user, claims


async def agent_socket(ws: WebSocket) -> None:
    # Accept first, then close with a code: a refusal during the handshake reaches the
    # browser only as an anonymous 1006, which tells the agent nothing.
    await ws.accept()
    try:
        user, claims = await _authenticate(ws)
    except Unauthorized as exc:
        await ws.close(4401, exc.message)
        return
    except PermissionError as exc:
        await ws.close(4403, str(exc))
        return

    app = ws.app
    settings = app.state.settings
    hub: Hub = app.state.hub
    conn = hub.register(user.id, user.role, claims.jti, team_id=visibility.limited_team(user))
    db = app.state.db
    try:
        async with db.unit_of_work() as session:
            me = await presence.socket_opened(
                session, user.id, conn.id, hub.process_id, role=user.role
            )
        await ws.send_text(
            encode(
                {
                    "type": "hello",
                    "user": {"id": user.id, "name": user.name, "role": user.role},
                    "presence": me.as_dict(),
                    "heartbeat": settings.ws_heartbeat_seconds,
                    "socket": conn.id,
                }
            )
        )
        await _serve(ws, conn, claims, app)
    except WebSocketDisconnect:
        pass
    except Exception:
        log.exception("agent socket of user %s failed", user.id)
        with contextlib.suppress(Exception):
            await ws.close(1011, "internal error")
    finally:
        last_here = hub.unregister(conn)
        try:
            async with db.unit_of_work() as session:
                await presence.socket_closed(session, conn.id)
        except Exception:
            log.exception("could not record the closing of socket %s", conn.id)
        if last_here:
            app.state.presence_sweeper.soon()


async def _serve(ws: WebSocket, conn: Connection, claims: auth.TokenClaims, app: Any) -> None:
    settings = app.state.settings
    await run_until_first_ends(
        send_loop(ws, conn, settings.ws_send_timeout_seconds),
        _receive_loop(ws, conn, app),
        _tick_loop(conn, claims, settings.ws_heartbeat_seconds),
    )


async def run_until_first_ends(*loops: Coroutine[Any, Any, None]) -> None:
    """Run a socket's loops until one ends (or fails), then stop the others: a socket is
    done when its sender, its receiver or its clock says so."""
    tasks = {asyncio.create_task(loop) for loop in loops}
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            exc = task.exception()
            if exc is not None and not isinstance(exc, WebSocketDisconnect):
                raise exc
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def send_loop(
    ws: WebSocket,
    conn: Connection,
    send_timeout: float,
    translate: Callable[[str | Close], str | Close] | None = None,
) -> None:
    """Write the connection's queued frames; `translate` may turn a frame into another (or
    into a close) for this kind of socket."""
    while True:
        frame = await conn.queue.get()
        if translate is not None:
            frame = translate(frame)
        if isinstance(frame, Close):
            if ws.application_state == WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(frame.code, frame.reason), send_timeout)
            return
        try:
            await asyncio.wait_for(ws.send_text(frame), send_timeout)
        except TimeoutError:
            # The browser has stopped reading: nothing more can be sent, not even a close.
            log.warning("closing stuck socket %s of user %s", conn.id, conn.user_id)
            return


async def _tick_loop(conn: Connection, claims: auth.TokenClaims, interval: float) -> None:
    """Heartbeats, the token's expiry and the browser's silence, on one clock."""
    conn.last_heard = asyncio.get_running_loop().time()
    loop = asyncio.get_running_loop()
    while True:
        remaining = (claims.expires_at - datetime.now(UTC)).total_seconds()
        if remaining <= 0:
            conn.offer(Close(4401, "token expired"))
            return
        await asyncio.sleep(min(interval, remaining + 0.05))
        if datetime.now(UTC) >= claims.expires_at:
            conn.offer(Close(4401, "token expired"))
            return
        if loop.time() - conn.last_heard > 3 * interval:
            conn.offer(Close(4408, f"no frame from the browser for {3 * interval:g} s"))
            return
        conn.offer(encode({"type": "ping", "at": datetime.now(UTC).isoformat()}))


def _error(message: str, **extra: object) -> str:
    return encode({"type": "error", "message": message, **extra})


async def _receive_loop(ws: WebSocket, conn: Connection, app: Any) -> None:
    loop = asyncio.get_running_loop()
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        conn.last_heard = loop.time()
        raw = message.get("text")
        if raw is None:
            raw_bytes = message.get("bytes") or b""
            try:
                raw = raw_bytes.decode("utf-8")
            except UnicodeDecodeError:
                conn.offer(_error("frames must be UTF-8 JSON text"))
                continue
        if len(raw) > MAX_FRAME:
            conn.offer(Close(1009, f"frame larger than {MAX_FRAME} bytes"))
            return
        try:
            frame = json.loads(raw)
        except json.JSONDecodeError as exc:
            conn.offer(_error(f"not valid JSON: {exc.msg}"))
            continue
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            conn.offer(_error('a frame is a JSON object with a "type"'))
            continue
        await _handle(frame, conn, app)


async def _handle(frame: dict[str, Any], conn: Connection, app: Any) -> None:
    kind = frame["type"]
    hub: Hub = app.state.hub
    if kind == "pong" or kind == "ping":
        if kind == "ping":
            conn.offer(encode({"type": "pong", "ref": frame.get("ref")}))
        return
    if kind == "presence":
        status = frame.get("status")
        if status not in presence.CHOOSABLE:
            conn.offer(_error(f"status must be one of {', '.join(presence.CHOOSABLE)}", ref=kind))
            return
        async with app.state.db.unit_of_work() as session:
            await presence.set_status(session, conn.user_id, str(status))
        return
    if kind in ("watch", "unwatch"):
        topics = frame.get("topics")
        if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
            conn.offer(_error("topics must be a list of text", ref=kind))
            return
        bad = [t for t in topics if not t.startswith(TOPIC_PREFIXES) or len(t) > 100]
        if bad:
            conn.offer(_error(f"unknown topic {bad[0]!r}", ref=kind))
            return
        if "presence" in topics and conn.role not in presence.WATCHERS:
            conn.offer(_error("only supervisors and admins watch presence", ref=kind))
            return
        if kind == "watch":
            if len(conn.topics | set(topics)) > 50:
                conn.offer(_error("at most 50 topics per socket", ref=kind))
                return
            hub.watch(conn, set(topics))
        else:
            hub.unwatch(conn, set(topics))
        conn.offer(encode({"type": "watching", "topics": sorted(conn.topics)}))
        return
    if kind in chat.AGENT_FRAMES:
        try:
            reply = await chat.agent_frame(frame, conn.user_id, app)
        except DeskError as exc:
            conn.offer(_error(exc.message, ref=kind, code=exc.as_dict().get("code")))
            return
        if reply is not None:
            conn.offer(encode(reply))
        return
    conn.offer(_error(f"unknown message type {kind!r}", ref=kind))


# -- presence over HTTP ------------------------------------------------------------------------


@requires(*ANY_STAFF)
async def list_presence(request: Request) -> JSONResponse:
    async with request.app.state.db.unit_of_work() as session:
        items = await presence.list_presence(session)
    return JSONResponse({"items": [p.as_dict() for p in items]})


@requires(*ANY_STAFF)
async def set_my_presence(request: Request) -> JSONResponse:
    data = await json_object(request, max_bytes=1000)
    status = text_field(data, "status", required=True, max_len=16) or ""
    async with request.app.state.db.unit_of_work() as session:
        me = await presence.set_status(session, request.state.user.id, status)
    return JSONResponse(me.as_dict())


@requires("supervisor", "admin")
async def hub_stats(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.hub.stats())


routes = [
    WebSocketRoute("/ws/agent", agent_socket),
    Route("/api/presence", list_presence, methods=["GET"]),
    Route("/api/presence", set_my_presence, methods=["PUT"]),
    Route("/api/hub", hub_stats, methods=["GET"]),
]
