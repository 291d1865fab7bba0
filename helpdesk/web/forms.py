"""Reading request bodies: JSON objects and form posts, with precise errors for bad input."""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from helpdesk.errors import (
    BadRequest,
    DeskError,
    InvalidInput,
    LengthRequired,
    NotFound,
    PayloadTooLarge,
)

MAX_JSON_BYTES = 1_000_000
# Ids, counts and sequence numbers are PostgreSQL `integer` columns: a bigger number can
# match nothing, and asyncpg refuses to even send it.
MAX_INT = 2**31 - 1
# ASCII digits only: str.isdigit() also says yes to "²", which int() refuses.
WHOLE_NUMBER = re.compile(r"\s*-?[0-9]{1,18}\s*")


async def json_object(request: Request, max_bytes: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """The body as a JSON object; 413 (`PayloadTooLarge`) past `max_bytes`, refused from its
    Content-Length before a byte is read, and counted while streaming when there is none."""
    if not request.headers.get("content-type", "").startswith("application/json"):
        raise BadRequest("send a JSON body with Content-Type: application/json")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"body is larger than {max_bytes} bytes ({declared} sent)")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise PayloadTooLarge(f"body is larger than {max_bytes} bytes")
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadRequest("body is not valid UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc.msg} at line {exc.lineno}") from exc
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    if _has_nul(data):
        # PostgreSQL text cannot hold U+0000; refused here, not as a 500 from the driver.
        raise InvalidInput("text may not contain the NUL character (\\u0000)")
    return data


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def text_field(
    data: dict[str, Any], name: str, *, required: bool = False, max_len: int = 500
) -> str | None:
    value = data.get(name)
    if value is None or value == "":
        if required:
            raise InvalidInput(f"{name} is required", field=name)
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be text", field=name)
    if len(value) > max_len:
        raise InvalidInput(f"{name} is longer than {max_len} characters", field=name)
    return value


def int_field(data: dict[str, Any], name: str, *, required: bool = False) -> int | None:
    value = data.get(name)
    if value is None or value == "":
        if required:
            raise InvalidInput(f"{name} is required", field=name)
        return None
    if isinstance(value, bool):
        raise InvalidInput(f"{name} must be a whole number", field=name)
    if isinstance(value, str) and WHOLE_NUMBER.fullmatch(value):
        value = int(value)
    if not isinstance(value, int):
        raise InvalidInput(f"{name} must be a whole number", field=name)
    if not -MAX_INT <= value <= MAX_INT:
        raise InvalidInput(f"{name} must be between {-MAX_INT} and {MAX_INT}", field=name)
    return value


def path_id(request: Request, name: str = "id") -> int:
    raw = request.path_params.get(name)
    if isinstance(raw, int):
        if raw > MAX_INT:
            raise NotFound(f"no {name} {raw}: ids go up to {MAX_INT}")
        return raw
    raise BadRequest(f"{name} must be a whole number")


class FormBodyLimit:
    """Pure ASGI middleware: a ceiling on every form post's body, before anything reads it.

    Starlette's `request.form()` bounds multipart parts one by one but not the whole body, and
    url-encoded bodies not at all. Browsers always send a Content-Length with a form, so one
    without it is refused (411), and one over the ceiling answers 413 in the error shape, the
    body unread. JSON bodies have their own limits (`json_object`), raw mail its own.
    """

    def __init__(self, app: ASGIApp, *, urlencoded_bytes: int, multipart_bytes: int) -> None:
        self.app = app
        self.limits = {
            b"application/x-www-form-urlencoded": urlencoded_bytes,
            b"multipart/form-data": multipart_bytes,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        limit = self.limits.get(kind)
        if limit is None:
            await self.app(scope, receive, send)
            return
        length = headers.get(b"content-length")
        if length is None or not length.isdigit():
            error: DeskError = LengthRequired("a form must be sent with a Content-Length")
        elif int(length) > limit:
            error = PayloadTooLarge(f"the form is larger than {limit} bytes")
        else:
            await self.app(scope, receive, send)
            return
        response = JSONResponse({"error": error.as_dict()}, status_code=error.status)
        await response(scope, receive, send)
