"""Opaque keyset cursors: stable pages however many rows arrive while someone scrolls."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, or_
from sqlalchemy.ext.asyncio import AsyncSession

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


async def newest_first(
    session: AsyncSession,
    stmt: Select[tuple[T]],
    time_column: Any,
    id_column: Any,
    *,
    limit: int,
    cursor: str | None,
) -> Page[T]:
    """One page of `stmt` ordered by (time, id) descending, continued from `cursor`.

    Keyset paging on the pair, so rows added or changed meanwhile never shift a page.
    """
    if cursor:
        at_raw, last_id = decode_cursor(cursor, 2)
        try:
            at = datetime.fromisoformat(str(at_raw))
        except ValueError as exc:
            raise InvalidInput("malformed cursor", field="cursor") from exc
        if not isinstance(last_id, int):
            raise InvalidInput("malformed cursor", field="cursor")
        stmt = stmt.where(or_(time_column < at, (time_column == at) & (id_column < last_id)))
    stmt = stmt.order_by(time_column.desc(), id_column.desc()).limit(limit + 1)
    rows = list((await session.scalars(stmt)).all())
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor(getattr(last, time_column.key), getattr(last, id_column.key))
    return Page(rows[:limit], next_cursor)
