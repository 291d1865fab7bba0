"""Log records: one JSON object per line, a request id on every line, no personal data in clear.

`configure()` is what `helpdesk serve` (and every other command) calls once at start.
`RequestContext` is the ASGI middleware that gives each HTTP request an id, answers it in
`X-Request-Id`, binds it (with method and path) to every record logged while the request is
handled, and writes one access line when the response has gone out.

Personal data: `PersonalDataFilter` masks email addresses and phone numbers in the rendered
message and in tracebacks, on every handler `configure()` installs. It is a safety net, not a
licence: log calls name records by id and never pass message bodies or subjects.
"""

from __future__ import annotations

import json
import logging
import logging.config
import re
import sys
import time
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "x-request-id"
FORMATS = ("json", "text")

# What a request is about, for every log line written while it is handled (tasks spawned
# during the request inherit a copy of the context, so their lines carry it too).
request_context: ContextVar[dict[str, Any] | None] = ContextVar("request_context", default=None)

# A client's id is reused only when it is a plain token: it goes into every log line and a
# response header, so no spaces, quotes or control characters, and a bounded length.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{8,128}")

_EMAIL = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)")
# A run of digits with the separators people write in numbers ("+81 3-1234-5678",
# "(03) 1234 5678", "09012345678"), not glued to letters, dots or colons: so IP addresses,
# times, versions, hex ids and dates (too few digits) are left alone.
_PHONE = re.compile(r"(?<![\w.:/#-])[+(]?\d[\d\- ()]{6,22}\d(?![\w.:])")
_PHONE_DIGITS = range(9, 16)
_URL_ENCODED_PHONE = re.compile(r"%2[Bb]\d{8,15}(?!\d)")  # "+8131..." in a query string
# Secrets in a query string: uvicorn logs a WebSocket's path with its `?token=<JWT>`, and a
# log must never be enough to act as someone.
_SECRET_PARAM = re.compile(r"(?i)\b(token|access_token|password|code)=[^&\s\"'\]]+")


def mask_personal_data(text: str) -> str:
    """`text` with email addresses (local part) and phone numbers replaced by placeholders,
    and secrets in query strings (`token=`, `password=`...) by `***`."""
    text = _SECRET_PARAM.sub(lambda m: m.group(1) + "=***", text)
    text = _EMAIL.sub(lambda m: "***@" + m.group(1), text)
    text = _URL_ENCODED_PHONE.sub("[phone]", text)

    def phone(match: re.Match[str]) -> str:
        digits = sum(c.isdigit() for c in match.group(0))
        return "[phone]" if digits in _PHONE_DIGITS else match.group(0)

    return _PHONE.sub(phone, text)


def new_request_id() -> str:
    return uuid.uuid4().hex


def request_id_from(header: str | None) -> str:
    """The client's (or proxy's) request id when it is a sane token, else a new one."""
    if header and _SANE_REQUEST_ID.fullmatch(header):
        return header
    return new_request_id()


def current_request_id() -> str | None:
    context = request_context.get()
    return context.get("request_id") if context else None


class PersonalDataFilter(logging.Filter):
    """Masks addresses and numbers in the message and the traceback of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep what there is, masked
            message = f"{record.msg} {record.args}"
        record.msg, record.args = mask_personal_data(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_personal_data(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_personal_data(record.stack_info)
        return True


class RequestContextFilter(logging.Filter):
    """Copies the current request's id, method and path onto the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = request_context.get() or {}
        for key in ("request_id", "method", "path"):
            if not hasattr(record, key):
                setattr(record, key, context.get(key))
        return True


# Fields of a record that are the logging machinery's own, not extra data to put in JSON.
_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}
_FIELDS = ("request_id", "method", "path", "status", "duration_ms")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the request's fields, and
    any `extra=` values; a traceback as `exc_info` text."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in _FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        for key, value in vars(record).items():
            if key in _RESERVED or key in _FIELDS or key.startswith("_") or value is None:
                continue
            if key not in line:
                line[key] = value if isinstance(value, (int, float, bool, str)) else str(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc_info"] = record.exc_text
        if record.stack_info:
            line["stack_info"] = record.stack_info
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The classic one-line format, with the request id when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(rid)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None)
        record.rid = f" [{rid}]" if rid else ""
        return super().format(record)


def handler(fmt: str, stream: Any = None) -> logging.Handler:
    """A stream handler in format `fmt` ("json" or "text") with both filters installed."""
    out = logging.StreamHandler(stream or sys.stderr)
    out.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    out.addFilter(RequestContextFilter())
    out.addFilter(PersonalDataFilter())
    return out


def dict_config(fmt: str, level: int | str = logging.INFO) -> dict[str, Any]:
    """A `logging.config.dictConfig` dict: one masked handler on root that every logger
    (ours, uvicorn's, alembic's) propagates to.

    Also what `helpdesk serve` hands uvicorn as `log_config`, so worker processes (which
    start from a fresh interpreter) log the same way. uvicorn's access log is turned off
    there: `RequestContext`'s line replaces it, with the request id and without the query
    string (which may hold a phone number or a search for a name).
    """
    if fmt not in FORMATS:
        raise SystemExit(f"HELPDESK_LOG_FORMAT must be one of {', '.join(FORMATS)}, not {fmt!r}")
    level_name = logging.getLevelName(level) if isinstance(level, int) else level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"desk": {"()": "helpdesk.logs.handler", "fmt": fmt}},
        "root": {"handlers": ["desk"], "level": level_name},
        "loggers": {
            name: {"handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }


def configure(fmt: str, level: int | str = logging.INFO) -> None:
    """Set up logging for this process (see `dict_config`)."""
    logging.config.dictConfig(dict_config(fmt, level))


access_log = logging.getLogger("helpdesk.access")


class RequestContext:
    """Pure ASGI middleware: request id in and out, bound to the request's log lines, and
    one access line per HTTP request (status and duration in milliseconds)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        sent = None
        for key, value in scope.get("headers", []):
            if key == REQUEST_ID_HEADER.encode():
                sent = value.decode("latin-1")
                break
        request_id = request_id_from(sent)
        method = scope.get("method", "WS")
        context = {"request_id": request_id, "method": method, "path": scope.get("path", "")}
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_context.set(context)
        if scope["type"] == "websocket":
            try:
                await self.app(scope, receive, send)
            finally:
                request_context.reset(token)
            return

        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"
                ]
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            duration_ms = round((time.perf_counter() - started) * 1000, 2)
            access_log.info(
                "%s %s %s",
                method,
                scope.get("path", ""),
                status,
                extra={"status": status, "duration_ms": duration_ms},
            )
            request_context.reset(token)
