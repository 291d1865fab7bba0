"""Reading request bodies: JSON objects and form posts, with precise errors for bad input."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from helpdesk.errors import BadRequest, InvalidInput

MAX_JSON_BYTES = 1_000_000


async def json_object(request: Request, max_bytes: int = MAX_JSON_BYTES) -> dict[str, Any]:
    if not request.headers.get("content-type", "").startswith("application/json"):
        raise BadRequest("send a JSON body with Content-Type: application/json")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise BadRequest(f"body is larger than {max_bytes} bytes")
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadRequest("body is not valid UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc.msg} at line {exc.lineno}") from exc
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    return data


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
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise InvalidInput(f"{name} must be a whole number", field=name)


def path_id(request: Request, name: str = "id") -> int:
    raw = request.path_params.get(name)
    if isinstance(raw, int):
        return raw
    raise BadRequest(f"{name} must be a whole number")
