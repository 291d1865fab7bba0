"""Live chat over the web: the visitor socket `/ws/chat`, uploads, and the agents' chat API.

The protocol is in docs/CHAT.md. The socket is a thin adapter: it parses frames, calls
`helpdesk.chat`, and relays the hub's events for the conversation (topic `chat:ID`) to the
visitor. Close codes: 1009 frame too large, 1012 reconnect and resume (server restarting or
events were missed), 4400 the first frame was not `hello`/`resume`, 4404 resume token
unknown or expired, 4408 silent for three heartbeats, 4429 flooding.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from helpdesk import auth, chat, visibility
from helpdesk.config import Settings
from helpdesk.db import Database
from helpdesk.errors import (
    BadRequest,
    DeskError,
    Forbidden,
    InvalidInput,
    NotFound,
    Unauthorized,
)
from helpdesk.events import encode
from helpdesk.hub import Close, Connection, Hub
from helpdesk.interactions import attachment_path
from helpdesk.models import Team, User
from helpdesk.opening_hours import OpeningHours
from helpdesk.web import sockets
from helpdesk.web.forms import int_field, json_object, path_id
from helpdesk.web.kb import SlidingWindowLimiter
from helpdesk.web.security import ANY_STAFF, bearer_token, origin_allowed, requires, scope

log = logging.getLogger(__name__)
MAX_FRAME = 64 * 1024
HELLO_TIMEOUT = 15.0
VISITOR_HEARTBEAT = 10.0  # seconds between refreshes of this process's visitors' rows
ACK_FLUSH_SECONDS = 1.0
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": "X-Chat-Token",
    "Access-Control-Allow-Methods": "POST, GET, OPTIONS",
    "Access-Control-Max-Age": "600",
}


class ChatRuntime:
    """The chat's lifespan resources in one process: which visitors it holds, the per-chat
    message limiter, and the router loop (one pass a second, and at once when kicked)."""

    def __init__(self, db: Database, hub: Hub, settings: Settings) -> None:
        self.db = db
        self.hub = hub
        self.settings = settings
        self.hours = (
            OpeningHours.parse(
                settings.chat_hours,
                timezone=settings.timezone,
                holiday_region=settings.default_region,
            )
            if settings.chat_hours
            else None
        )
        self.visitors: Counter[int] = Counter()  # conversation id -> open sockets here
        self.messages = SlidingWindowLimiter(limit=chat.MESSAGES_PER_10S, window=10.0)
        self.hellos = SlidingWindowLimiter(limit=20, window=60.0)  # new chats per address
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._staff: dict[int, tuple[float, User]] = {}

    def start(self) -> None:
        if self.settings.chat_router:
            self._task = asyncio.create_task(self._loop(), name="chat-router")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def kick(self) -> None:
        self._kick.set()

    async def staff(self, user_id: int) -> User:
        """The agent behind a socket, cached for a minute: a chat message should not cost a
        user lookup. (Deactivating an account closes its sockets.)"""
        now = asyncio.get_running_loop().time()
        cached = self._staff.get(user_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        async with self.db.unit_of_work() as session:
            user = await session.get(User, user_id)
            if user is None or not user.is_active:
                raise Forbidden("account is not active")
            session.expunge(user)
        if len(self._staff) > 10_000:
            self._staff.clear()
        self._staff[user_id] = (now + 60.0, user)
        return user

    async def route_once(self) -> chat.Routed:
        async with self.db.unit_of_work() as session:
            return await chat.route(
                session,
                offer_seconds=self.settings.chat_offer_seconds,
                abandon_seconds=self.settings.chat_abandon_seconds,
            )

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        last_seen = loop.time()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), 1.0)
            self._kick.clear()
            try:
                if loop.time() - last_seen >= VISITOR_HEARTBEAT and self.visitors:
                    last_seen = loop.time()
                    async with self.db.unit_of_work() as session:
                        await chat.visitors_seen(session, list(self.visitors))
                await self.route_once()
            except Exception:
                log.exception("chat router pass failed")
                await asyncio.sleep(1.0)


class VisitorAcks:
    """A visitor socket's acks, written at most once a second: only the highest counts, so
    the ones in between need no transaction of their own."""

    def __init__(self, db: Database, conversation_id: int, conn: Connection) -> None:
        self.db = db
        self.conversation_id = conversation_id
        self.conn = conn
        self.pending: int | None = None
        self._task: asyncio.Task[None] | None = None

    def add(self, seq: object) -> None:
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise InvalidInput("seq must be a whole number", field="seq")
        self.pending = seq if self.pending is None else max(self.pending, seq)
        if self._task is None:
            self._task = asyncio.create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(ACK_FLUSH_SECONDS)
        self._task = None
        await self.flush()

    async def flush(self) -> None:
        seq, self.pending = self.pending, None
        if seq is None:
            return
        try:
            async with self.db.unit_of_work() as session:
                _acked, last_seq = await chat.visitor_ack(session, self.conversation_id, seq)
        except DeskError as exc:
            self.conn.offer(_desk_error(exc, "ack"))
            return
        if seq > last_seq:
            self.conn.offer(_error("invalid", f"seq {seq} has not been sent yet", ref="ack"))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.flush()


async def post_message(db: Database, conversation_id: int, **fields: Any) -> chat.Posted:
    """`chat.post` in its own transaction, retried once when a concurrent resend of the same
    `client_id` won the race (the retry then answers with that message's seq)."""
    for attempt in (1, 2):
        try:
            async with db.unit_of_work() as session:
                return await chat.post(session, conversation_id, **fields)
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


# -- the visitor socket ---------------------------------------------------------------------


def _error(code: str, message: str, **extra: object) -> str:
    return encode({"type": "error", "code": code, "message": message, **extra})


def _desk_error(exc: DeskError, ref: str) -> str:
    code = exc.as_dict().get("code", "invalid")
    if code in ("conflict",):
        code = "invalid"
    return _error(str(code), exc.message, ref=ref)


class FrameError(Exception):
    def __init__(self, message: str, *, close: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.close = close


async def _read_frame(ws: WebSocket) -> dict[str, Any]:
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    raw = message.get("text")
    if raw is None:
        try:
            raw = (message.get("bytes") or b"").decode("utf-8")
        except UnicodeDecodeError:
            raise FrameError("frames must be UTF-8 JSON text") from None
    if len(raw) > MAX_FRAME:
        raise FrameError(f"frame larger than {MAX_FRAME} bytes", close=1009)
    try:
        frame = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise FrameError(f"not valid JSON: {exc.msg}") from None
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise FrameError('a frame is a JSON object with a "type"')
    return frame


def _visitor_input(frame: dict[str, Any]) -> chat.VisitorInput:
    visitor = frame.get("visitor")
    if not isinstance(visitor, dict):
        raise InvalidInput("hello needs a visitor object with a name", field="visitor")

    def opt(source: dict[str, Any], key: str, limit: int) -> str | None:
        value = source.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str) or len(value) > limit:
            raise InvalidInput(f"{key} must be text of at most {limit} characters", field=key)
        return value

    return chat.VisitorInput(
        name=visitor.get("name") if isinstance(visitor.get("name"), str) else "",
        email=opt(visitor, "email", 320),
        language=opt(visitor, "language", 16),
        visitor_id=opt(visitor, "id", 64),
        page_url=opt(frame, "page", 2000),
        team=opt(frame, "team", 120),
    )


def _client_address(ws: WebSocket) -> str:
    return ws.client.host if ws.client else "unknown"


async def chat_socket(ws: WebSocket) -> None:
    # HELPDESK_WIDGET_ORIGINS: only the configured sites' pages (and the desk's own) may
    # open a chat; refused before the handshake completes (the browser sees a 403).
    if not origin_allowed(ws.scope, ws.headers.get("origin"), ws.app.state.settings.widget_origins):
        await ws.close(4403, "this site may not use the chat widget")
        return
    await ws.accept()
    app = ws.app
    runtime: ChatRuntime = app.state.chat
    try:
        try:
            first = await asyncio.wait_for(_read_frame(ws), HELLO_TIMEOUT)
        except TimeoutError:
            await ws.close(4400, "say hello or resume first")
            return
        except FrameError as exc:
            await ws.close(exc.close or 4400, exc.message)
            return
        kind = first["type"]
        if kind == "hello":
            await _hello(ws, first, runtime)
        elif kind == "resume":
            await _resume(ws, first, runtime)
        else:
            await ws.close(4400, "the first frame must be hello or resume")
    except WebSocketDisconnect:
        pass
    except Exception:
        log.exception("chat socket failed")
        with contextlib.suppress(Exception):
            await ws.close(1011, "internal error")


async def _hello(ws: WebSocket, frame: dict[str, Any], runtime: ChatRuntime) -> None:
    settings = runtime.settings
    wait = runtime.hellos.hit(_client_address(ws))
    if wait is not None:
        await ws.send_text(_error("rate_limited", "too many new chats", retry_after=round(wait)))
        await ws.close(4429, "too many new chats")
        return
    try:
        visitor = _visitor_input(frame)
        async with runtime.db.unit_of_work() as session:
            conv, token = await chat.start(
                session, visitor, region=settings.default_region, hours=runtime.hours
            )
    except chat.ChatOffline as exc:
        await ws.send_text(encode({"type": "offline", "reason": exc.reason}))
        await _offline(ws, runtime, frame)
        return
    except DeskError as exc:
        await ws.send_text(_desk_error(exc, "hello"))
        await ws.close(4400, exc.message[:120])
        return
    await _serve(ws, runtime, conv.id, token, after=None)


async def _resume(ws: WebSocket, frame: dict[str, Any], runtime: ChatRuntime) -> None:
    after = frame.get("after", 0)
    if not isinstance(after, int) or isinstance(after, bool) or after < 0:
        await ws.close(4400, "after must be a whole number")
        return
    token = frame.get("token")
    try:
        async with runtime.db.unit_of_work() as session:
            conv = await chat.for_token(session, token)
    except NotFound as exc:
        await ws.close(4404, exc.message)
        return
    assert isinstance(token, str)
    await _serve(ws, runtime, conv.id, token, after=after)


async def _offline(ws: WebSocket, runtime: ChatRuntime, hello: dict[str, Any]) -> None:
    """Nobody can chat: the socket stays open for one `leave_message`."""
    while True:
        try:
            frame = await _read_frame(ws)
        except FrameError as exc:
            if exc.close:
                await ws.close(exc.close, exc.message)
                return
            await ws.send_text(_error("bad_frame", exc.message))
            continue
        kind = frame["type"]
        if kind == "ping":
            await ws.send_text(encode({"type": "pong"}))
            continue
        if kind != "leave_message":
            await ws.send_text(_error("not_ready", "chat is offline; leave a message", ref=kind))
            continue
        base = hello.get("visitor") if isinstance(hello.get("visitor"), dict) else {}
        merged = {**hello, "visitor": {**base, **{k: frame.get(k) for k in ("name", "email")}}}
        try:
            visitor = _visitor_input(merged)
            async with runtime.db.unit_of_work() as session:
                case = await chat.leave_message(
                    session, visitor, frame.get("body"), region=runtime.settings.default_region
                )
        except DeskError as exc:
            await ws.send_text(_desk_error(exc, kind))
            continue
        await ws.send_text(encode({"type": "message_left", "case_number": case.number}))


async def _serve(
    ws: WebSocket, runtime: ChatRuntime, conv_id: int, token: str, *, after: int | None
) -> None:
    hub = runtime.hub
    conn = hub.register_guest({f"chat:{conv_id}"})
    runtime.visitors[conv_id] += 1
    try:
        async with runtime.db.unit_of_work() as session:
            await chat.visitors_seen(session, [conv_id])
            conv = await chat.get(session, conv_id)
            position, wait = await chat.queue_position(session, conv)
            agent = await session.get(User, conv.agent_id) if conv.agent_id else None
            replay = await chat.messages(session, conv_id, after=after) if after is not None else []
        state = "queued" if conv.state == "offered" else conv.state
        await ws.send_text(
            encode(
                {
                    "type": "welcome",
                    "conversation": conv.id,
                    "token": token,
                    "state": state,
                    "seq": conv.last_seq,
                    "agent": {"name": agent.name} if agent and state == "active" else None,
                    "position": position,
                    "wait_seconds": wait,
                    "limits": {
                        "max_chars": chat.MAX_CHARS,
                        "max_upload_bytes": runtime.settings.chat_upload_bytes,
                        "messages_per_10s": chat.MESSAGES_PER_10S,
                    },
                    "visitor": {"name": conv.visitor_name, "email": conv.visitor_email},
                    "csat": conv.csat_score,
                }
            )
        )
        for message in replay:
            await ws.send_text(encode({"type": "chat_message", **message}))
        if after is not None:
            await ws.send_text(encode({"type": "synced", "seq": conv.last_seq}))
        acks = VisitorAcks(runtime.db, conv_id, conn)
        try:
            await _run(ws, conn, runtime, conv_id, token, acks)
        finally:
            await acks.close()
    finally:
        hub.unregister(conn)
        runtime.visitors[conv_id] -= 1
        if runtime.visitors[conv_id] <= 0:
            del runtime.visitors[conv_id]
            with contextlib.suppress(Exception):
                async with runtime.db.unit_of_work() as session:
                    await chat.visitors_seen(session, [conv_id])


async def _run(
    ws: WebSocket,
    conn: Connection,
    runtime: ChatRuntime,
    conv_id: int,
    token: str,
    acks: VisitorAcks,
) -> None:
    settings = runtime.settings
    await sockets.run_until_first_ends(
        sockets.send_loop(ws, conn, settings.ws_send_timeout_seconds, _resume_on_resync),
        _receive_loop(ws, conn, runtime, conv_id, token, acks),
        _tick_loop(conn, settings.ws_heartbeat_seconds),
    )


def _resume_on_resync(frame: str | Close) -> str | Close:
    """Events may have been missed: the widget reconnects and resumes from its seq."""
    if isinstance(frame, str) and frame.startswith('{"type":"resync"'):
        return Close(1012, "reconnect and resume")
    return frame


async def _tick_loop(conn: Connection, interval: float) -> None:
    loop = asyncio.get_running_loop()
    conn.last_heard = loop.time()
    while True:
        await asyncio.sleep(interval)
        if loop.time() - conn.last_heard > 3 * interval:
            conn.offer(Close(4408, f"no frame for {3 * interval:g} s"))
            return
        conn.offer(encode({"type": "ping"}))


async def _receive_loop(
    ws: WebSocket,
    conn: Connection,
    runtime: ChatRuntime,
    conv_id: int,
    token: str,
    acks: VisitorAcks,
) -> None:
    loop = asyncio.get_running_loop()
    refused: list[float] = []  # times of messages refused by the rate limit
    while True:
        try:
            frame = await _read_frame(ws)
        except FrameError as exc:
            if exc.close:
                conn.offer(Close(exc.close, exc.message))
                return
            conn.offer(_error("bad_frame", exc.message))
            continue
        conn.last_heard = loop.time()
        kind = frame["type"]
        if kind == "message":
            # Keyed by the token: every tab of the conversation shares one allowance.
            wait = runtime.messages.hit(chat.hash_token(token))
            if wait is not None:
                now = loop.time()
                refused[:] = [t for t in refused if t > now - 10] + [now]
                if len(refused) >= 2 * chat.MESSAGES_PER_10S:
                    conn.offer(Close(4429, "too many messages"))
                    return
                conn.offer(
                    _error(
                        "rate_limited",
                        f"at most {chat.MESSAGES_PER_10S} messages in 10 seconds",
                        retry_after=max(1, round(wait)),
                        ref=frame.get("client_id"),
                    )
                )
                continue
        try:
            reply = await _visitor_frame(frame, runtime, conv_id, acks)
        except DeskError as exc:
            conn.offer(_desk_error(exc, str(frame.get("client_id") or kind)))
            continue
        if reply is not None:
            conn.offer(encode(reply))


async def _visitor_frame(
    frame: dict[str, Any], runtime: ChatRuntime, conv_id: int, acks: VisitorAcks
) -> dict[str, Any] | None:
    kind = frame["type"]
    db = runtime.db
    if kind == "pong":
        return None
    if kind == "ping":
        return {"type": "pong"}
    if kind == "message":
        client_id = chat.check_client_id(frame.get("client_id"))
        file_id = frame.get("attachment")
        if file_id is not None and (not isinstance(file_id, int) or isinstance(file_id, bool)):
            raise InvalidInput("attachment must be an upload id", field="attachment")
        body = chat.check_body(frame.get("body", ""), allow_empty=file_id is not None)
        posted = await post_message(
            db, conv_id, sender="visitor", body=body, client_id=client_id, file_id=file_id
        )
        if posted.queued:
            runtime.kick()  # the first message queued the chat: offer it now
        return {
            "type": "ack",
            "client_id": client_id,
            "seq": posted.seq,
            "duplicate": posted.duplicate,
        }
    if kind == "ack":
        acks.add(frame.get("seq"))
        return None
    if kind == "typing":
        async with db.unit_of_work() as session:
            conv = await chat.get(session, conv_id)
            await chat.typing(session, conv, sender="visitor", on=bool(frame.get("on")))
        return None
    if kind == "close":
        async with db.unit_of_work() as session:
            await chat.close(session, conv_id, by="visitor")
        runtime.kick()
        return None
    if kind == "rate":
        async with db.unit_of_work() as session:
            conv = await chat.rate(session, conv_id, frame.get("score"), frame.get("comment"))
        return {"type": "rated", "score": conv.csat_score}
    if kind == "transcript":
        async with db.unit_of_work() as session:
            address = await chat.send_transcript(
                session, runtime.settings, conv_id, frame.get("email")
            )
        return {"type": "transcript_queued", "email": address}
    if kind in ("hello", "resume"):
        raise InvalidInput(f"{kind} is only the first frame of a socket", code="invalid")
    raise InvalidInput(f"unknown message type {kind!r}", code="unknown_type")


# -- agent frames on /ws/agent (called from helpdesk.web.sockets) ----------------------------


async def agent_frame(frame: dict[str, Any], user_id: int, app: Any) -> dict[str, Any] | None:
    """`chat_send`, `chat_typing`, `chat_read`, `chat_accept` from an agent's socket."""
    kind = frame["type"]
    conv_id = frame.get("conversation")
    if not isinstance(conv_id, int) or isinstance(conv_id, bool):
        raise InvalidInput("conversation must be a chat id", field="conversation")
    runtime: ChatRuntime = app.state.chat
    user = await runtime.staff(user_id)
    if kind == "chat_send":
        client_id = chat.check_client_id(frame.get("client_id"))
        body = chat.check_body(frame.get("body"))
        posted = await post_message(
            runtime.db, conv_id, sender="agent", body=body, client_id=client_id, author=user
        )
        return {
            "type": "chat_ack",
            "conversation": conv_id,
            "client_id": client_id,
            "seq": posted.seq,
            "duplicate": posted.duplicate,
        }
    async with runtime.db.unit_of_work() as session:
        if kind == "chat_typing":
            conv = await chat.get(session, conv_id)
            if conv.agent_id != user.id:
                raise Forbidden("this chat is not yours")
            await chat.typing(session, conv, sender="agent", on=bool(frame.get("on")))
            return None
        if kind == "chat_read":
            await chat.mark_read(session, conv_id, user, frame.get("seq"))
            return None
        await chat.accept(session, conv_id, user)
        summary = await chat.summary(session, conv_id)
    runtime.kick()
    return {"type": "chat_accepted", "conversation": summary}


AGENT_FRAMES = ("chat_send", "chat_typing", "chat_read", "chat_accept")


# -- uploads and files ------------------------------------------------------------------------


async def upload(request: Request) -> Response:
    if request.method == "OPTIONS":
        return Response(status_code=204, headers=CORS)
    try:
        token = request.headers.get("x-chat-token") or request.query_params.get("token")
        if not token:
            raise Unauthorized("send the chat's token in the X-Chat-Token header")
        settings = request.app.state.settings
        limit = settings.chat_upload_bytes
        declared = request.headers.get("content-length", "")
        if not declared.isdigit():
            # The multipart parser spools a file whole before we could count it: only a body
            # of known size is read at all (browsers always send one with FormData).
            raise BadRequest("send the upload with a Content-Length")
        if int(declared) > limit + 64 * 1024:
            raise InvalidInput(f"the file is larger than {limit} bytes", field="file")
        async with request.app.state.db.unit_of_work() as session:
            conv = await chat.for_token(session, token)
        try:
            form = await request.form(max_files=1, max_fields=5)
        except Exception as exc:
            raise BadRequest(f"send the file as multipart/form-data field 'file' ({exc})") from exc
        item = form.get("file")
        if item is None or isinstance(item, str):
            raise InvalidInput("the multipart field 'file' is missing", field="file")
        data = await item.read(limit + 1)
        async with request.app.state.db.unit_of_work() as session:
            file = await chat.store_file(
                session,
                attachments_dir=settings.attachments_dir,
                conversation_id=conv.id,
                filename=item.filename or "file",
                content_type=item.content_type,
                data=data,
                max_bytes=limit,
            )
            body = chat.file_json(file)
    except DeskError as exc:
        return JSONResponse({"error": exc.as_dict()}, status_code=exc.status, headers=CORS)
    body["url"] = f"{body['url']}?token={token}"
    return JSONResponse(body, status_code=201, headers=CORS)


async def file_download(request: Request) -> Response:
    """The visitor with the chat's token, or any staff member with a session."""
    file_id = path_id(request)
    db = request.app.state.db
    async with db.unit_of_work() as session:
        file = await chat.get_file(session, file_id)
        token = request.query_params.get("token")
        if token:
            conv = await chat.for_token(session, token)
            if conv.id != file.conversation_id:
                raise NotFound(f"file {file_id} not found")
        else:
            bearer, _source = bearer_token(request)
            if not bearer:
                raise NotFound(f"file {file_id} not found")
            user, _claims = await auth.user_for_token(
                session, bearer, request.app.state.settings.secret_key
            )
            if user.role not in ANY_STAFF:
                raise Forbidden("staff only")
    path = attachment_path(request.app.state.settings.attachments_dir, file.sha256)
    if not path.exists():
        raise NotFound("the file's bytes are missing")
    inline = file.content_type.startswith("image/") and file.content_type != "image/svg+xml"
    return FileResponse(
        path,
        media_type=file.content_type,
        filename=file.filename,
        content_disposition_type="inline" if inline else "attachment",
        headers={"Cache-Control": "private, max-age=3600", "Access-Control-Allow-Origin": "*"},
    )


# -- the agents' JSON API -------------------------------------------------------------------


@requires(*ANY_STAFF)
async def api_list(request: Request) -> JSONResponse:
    async with request.app.state.db.unit_of_work() as session:
        lists = await chat.lists_for(session, request.state.user)
    return JSONResponse(lists)


@requires(*ANY_STAFF)
async def api_get(request: Request) -> JSONResponse:
    conv_id = path_id(request)
    raw_after = request.query_params.get("after", "0")
    if not raw_after.isdigit():
        raise InvalidInput("after must be a whole number", field="after")
    async with request.app.state.db.unit_of_work() as session:
        body = await chat.view(session, conv_id, request.state.user)
        body["messages"] = await chat.messages(session, conv_id, after=int(raw_after))
    return JSONResponse(body)


@requires(*ANY_STAFF)
async def api_accept(request: Request) -> JSONResponse:
    conv_id = path_id(request)
    async with request.app.state.db.unit_of_work() as session:
        await chat.accept(session, conv_id, request.state.user)
        body = await chat.summary(session, conv_id)
    request.app.state.chat.kick()
    return JSONResponse(body)


@requires(*ANY_STAFF)
async def api_send(request: Request) -> JSONResponse:
    conv_id = path_id(request)
    data = await json_object(request, max_bytes=64 * 1024)
    body = chat.check_body(data.get("body"))
    client_id = data.get("client_id")
    if client_id is not None:
        client_id = chat.check_client_id(client_id)
    posted = await post_message(
        request.app.state.db,
        conv_id,
        sender="agent",
        body=body,
        client_id=client_id,
        author=request.state.user,
    )
    return JSONResponse(
        {"seq": posted.seq, "duplicate": posted.duplicate},
        status_code=200 if posted.duplicate else 201,
    )


@requires(*ANY_STAFF)
async def api_read(request: Request) -> JSONResponse:
    conv_id = path_id(request)
    data = await json_object(request, max_bytes=1000)
    async with request.app.state.db.unit_of_work() as session:
        seq = await chat.mark_read(session, conv_id, request.state.user, data.get("seq"))
    return JSONResponse({"agent_read_seq": seq})


@requires(*ANY_STAFF)
async def api_transfer(request: Request) -> JSONResponse:
    conv_id = path_id(request)
    data = await json_object(request, max_bytes=1000)
    async with request.app.state.db.unit_of_work() as session:
        await chat.transfer(
            session,
            conv_id,
            request.state.user,
            agent_id=int_field(data, "agent_id"),
            team_id=int_field(data, "team_id"),
        )
        body = await chat.summary(session, conv_id)
    request.app.state.chat.kick()
    return JSONResponse(body)


@requires(*ANY_STAFF)
async def api_close(request: Request) -> JSONResponse:
    conv_id = path_id(request)
    async with request.app.state.db.unit_of_work() as session:
        await chat.close(session, conv_id, by="agent", actor=request.state.user)
        body = await chat.summary(session, conv_id)
    request.app.state.chat.kick()
    return JSONResponse(body)


@requires(*ANY_STAFF)
async def api_canned(request: Request) -> JSONResponse:
    lang = request.query_params.get("lang") or None
    q = request.query_params.get("q") or None
    if lang is not None and len(lang) > 8:
        raise InvalidInput("lang is a language code such as ja", field="lang")
    if q is not None and len(q) > 100:
        raise InvalidInput("q is longer than 100 characters", field="q")
    async with request.app.state.db.unit_of_work() as session:
        items = await chat.canned_responses(session, lang=lang, q=q)
    return JSONResponse(
        {
            "items": [
                {
                    "id": c.id,
                    "title": c.title,
                    "body": c.body,
                    "language": c.language,
                    "shortcut": c.shortcut,
                }
                for c in items
            ]
        }
    )


@requires(*ANY_STAFF)
async def api_teams(request: Request) -> JSONResponse:
    """Teams, for transferring a chat back to a team's queue."""
    async with request.app.state.db.unit_of_work() as session:
        teams = (await session.scalars(select(Team).order_by(Team.name))).all()
    return JSONResponse({"items": [{"id": t.id, "name": t.name} for t in teams]})


async def reply_in_chat(request: Request, case_id: int, body: str) -> dict[str, Any]:
    """`POST /api/cases/{id}/replies` with `channel: chat`: into the case's live chat."""
    text = chat.check_body(body)
    user = request.state.user
    async with request.app.state.db.unit_of_work() as session:
        await visibility.check_case_id(session, scope(request), case_id)
        conv = await chat.active_for_case(session, case_id)
        if conv is None or conv.state != "active":
            raise InvalidInput("this case has no chat in progress", field="channel")
    posted = await post_message(
        request.app.state.db, conv.id, sender="agent", body=text, client_id=None, author=user
    )
    return {
        "channel": "chat",
        "conversation": conv.id,
        "seq": posted.seq,
        "at": datetime.now(UTC).isoformat(),
    }


routes = [
    WebSocketRoute("/ws/chat", chat_socket),
    Route("/api/chat/uploads", upload, methods=["POST", "OPTIONS"]),
    Route("/chat/files/{id:int}", file_download, methods=["GET"]),
    Route("/api/chats", api_list, methods=["GET"]),
    Route("/api/chats/{id:int}", api_get, methods=["GET"]),
    Route("/api/chats/{id:int}/accept", api_accept, methods=["POST"]),
    Route("/api/chats/{id:int}/messages", api_send, methods=["POST"]),
    Route("/api/chats/{id:int}/read", api_read, methods=["POST"]),
    Route("/api/chats/{id:int}/transfer", api_transfer, methods=["POST"]),
    Route("/api/chats/{id:int}/close", api_close, methods=["POST"]),
    Route("/api/canned-responses", api_canned, methods=["GET"]),
    Route("/api/teams", api_teams, methods=["GET"]),
]
