"""Events for browsers, published inside the transaction whose work they announce.

An event is a PostgreSQL NOTIFY issued in the caller's transaction. PostgreSQL delivers
notifications only when that transaction commits, and drops them when it rolls back, so
"an event for work that rolls back is never delivered; an event for work that commits
always is" holds by construction, whichever process or connection did the work. Every
app process LISTENs (see `helpdesk.hub`) and hands each event to its own sockets.

NOTIFY payloads are limited to 8000 bytes. A larger event is stored in `hub_events` in
the same transaction and only its id is notified; listeners load it by id.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, text
from sqlalchemy.ext.asyncio import AsyncSession

from helpdesk.models import HubEvent

CHANNEL = "helpdesk_events"
# PostgreSQL's limit is 8000 bytes including the channel name; leave room for it.
NOTIFY_LIMIT = 7900
STAFF_ROLES = ("agent", "supervisor", "admin")
_NOTIFY = text("SELECT pg_notify(:channel, :body)")


@dataclass(frozen=True)
class Event:
    """What happened, and who should hear of it.

    Recipients are the union of `users` (their every socket), `roles` (every socket of a
    user with that role) and `topics` (sockets that asked to watch, such as `case:42` for
    an open case page or `queue` for the agent home).

    `team` marks an event about a case of that team: sockets of users limited to another
    team (helpdesk/visibility.py) do not get it through a role or a topic, only when they
    are named in `users` (the case's assignee).
    """

    type: str
    data: dict[str, Any] = field(default_factory=dict)
    users: tuple[int, ...] = ()
    roles: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()
    team: int | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def envelope(self) -> dict[str, Any]:
        envelope = {
            "id": self.id,
            "type": self.type,
            "data": self.data,
            "users": list(self.users),
            "roles": list(self.roles),
            "topics": list(self.topics),
            "at": datetime.now(UTC).isoformat(),
        }
        if self.team is not None:
            envelope["team"] = self.team
        return envelope


def encode(envelope: dict[str, Any]) -> str:
    return json.dumps(envelope, ensure_ascii=False, separators=(",", ":"), default=str)


async def publish(session: AsyncSession, event: Event) -> None:
    """Queue `event` for delivery when the caller's transaction commits."""
    body = encode(event.envelope())
    if len(body.encode()) > NOTIFY_LIMIT:
        stored_id = await session.scalar(
            insert(HubEvent).values(payload=json.loads(body)).returning(HubEvent.id)
        )
        body = encode({"ref": stored_id})
    await session.execute(_NOTIFY, {"channel": CHANNEL, "body": body})


async def publish_all(session: AsyncSession, events: Iterable[Event]) -> None:
    for event in events:
        await publish(session, event)


async def purge_stored(session: AsyncSession, older_than: timedelta = timedelta(hours=1)) -> int:
    """Delete stored large events every listener has long since loaded."""
    result = await session.execute(
        delete(HubEvent).where(HubEvent.created_at < func.now() - older_than)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
