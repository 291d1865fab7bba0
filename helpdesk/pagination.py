"""Opaque keyset cursors: stable pages however many rows arrive while someone scrolls."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from helpdesk.errors import InvalidInput

T = TypeVar("T")
MAX_LIMIT = 200


def encode_cursor(*values: object) -> str:
    raw = json.dumps([v.isoformat() if isinstance(v, datetime) else v for v in values])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, n: int) -> list[object]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("malformed cursor", field="cursor") from exc
    if not isinstance(values, list) or len(values) != n:
        raise InvalidInput("malformed cursor", field="cursor")
    return values


def parse_limit(raw: str | None, default: int = 50) -> int:
    if raw in (None, ""):
        return default
    try:
        limit = int(raw)
    except ValueError as exc:
        raise InvalidInput("limit must be a whole number", field="limit") from exc
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}", field="limit")
    return limit


@dataclass
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None
