"""Agent presence: what an agent chose, what their work makes them, and when they are gone.

An agent's shown status is derived, not stored: `away` and `offline` are what they chose;
otherwise they are `busy` while on a call or at their chat capacity, else what they chose
(`available` or `busy`). Open sockets are rows in `agent_sockets`, so every process sees
every agent's sockets; an agent goes `offline` once no socket of theirs has been seen for
the grace period, whichever process held the last one, and a crashed process's sockets
age out because its heartbeat stops refreshing them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from helpdesk import events
from helpdesk.errors import InvalidInput, NotFound
from helpdesk.models import PRESENCE_STATUSES, AgentPresence, AgentSocket, User

CHOOSABLE = ("available", "busy", "away", "offline")
WATCHERS = ("supervisor", "admin")


@dataclass(frozen=True)
class Presence:
    user_id: int
    name: str
    role: str
    extension: str | None
    status: str  # the shown (effective) status
    chosen: str
    on_call: bool
    active_chats: int
    chat_capacity: int
    changed_at: datetime | None

    def as_dict(self) -> dict[str, object]:
        return {
            "user_id": self.user_id,
            "name": self.name,
            "role": self.role,
            "extension": self.extension,
            "status": self.status,
            "chosen": self.chosen,
            "on_call": self.on_call,
            "active_chats": self.active_chats,
            "chat_capacity": self.chat_capacity,
            "changed_at": self.changed_at.isoformat() if self.changed_at else None,
        }


def effective_status(row: AgentPresence | None) -> str:
    if row is None or row.status in ("offline", "away"):
        return row.status if row is not None else "offline"
    if row.on_call or row.active_chats >= row.chat_capacity:
        return "busy"
    return row.status


async def _row(session: AsyncSession, user_id: int) -> AgentPresence:
    """The presence row, created on first use and locked for this transaction."""
    await session.execute(insert(AgentPresence).values(user_id=user_id).on_conflict_do_nothing())
    row = await session.get(AgentPresence, user_id, with_for_update=True, populate_existing=True)
    assert row is not None
    return row


async def _announce(session: AsyncSession, user_id: int) -> Presence:
    current = await get_presence(session, user_id)
    await events.publish(
        session,
        events.Event("presence", current.as_dict(), users=(user_id,), roles=WATCHERS),
    )
    return current


async def _change(session: AsyncSession, user_id: int, **values: object) -> Presence:
    row = await _row(session, user_id)
    before = (effective_status(row), row.status)
    for key, value in values.items():
        setattr(row, key, value)
    after = (effective_status(row), row.status)
    if after != before:
        row.changed_at = datetime.now(UTC)
    await session.flush()
    if after != before:
        return await _announce(session, user_id)
    return await get_presence(session, user_id)


async def set_status(session: AsyncSession, user_id: int, status: str) -> Presence:
    """The agent's own choice; `busy` from calls or chats still overrides `available`."""
    if status not in CHOOSABLE:
        raise InvalidInput(f"status must be one of {', '.join(CHOOSABLE)}", field="status")
    return await _change(session, user_id, status=status)


async def set_on_call(session: AsyncSession, user_id: int, on_call: bool) -> Presence:
    """Called by the CTI side when an agent answers or ends a call."""
    return await _change(session, user_id, on_call=on_call)


async def set_active_chats(session: AsyncSession, user_id: int, count: int) -> Presence:
    if count < 0:
        raise InvalidInput("active chats cannot be negative", field="active_chats")
    return await _change(session, user_id, active_chats=count)


async def socket_opened(
    session: AsyncSession, user_id: int, socket_id: str, process: str, *, role: str = "agent"
) -> Presence:
    """Record an open socket; an agent coming back from offline becomes available.

    A supervisor or admin comes back `away`: present, but offered no chats until they choose
    `available`. A wall board left signed in as a supervisor would otherwise take chat offers
    nobody sees, each waiting out its offer before it goes to an agent.
    """
    session.add(AgentSocket(id=socket_id, user_id=user_id, process=process))
    row = await _row(session, user_id)
    row.last_seen_at = datetime.now(UTC)
    if row.status == "offline":
        back = "available" if role == "agent" else "away"
        return await _change(session, user_id, status=back)
    await session.flush()
    return await get_presence(session, user_id)


async def socket_closed(session: AsyncSession, socket_id: str) -> None:
    """Forget a socket; going offline waits for the grace period (see `sweep`)."""
    user_id = await session.scalar(
        delete(AgentSocket).where(AgentSocket.id == socket_id).returning(AgentSocket.user_id)
    )
    if user_id is not None:
        await session.execute(
            update(AgentPresence)
            .where(AgentPresence.user_id == user_id)
            .values(last_seen_at=func.now())
        )


async def heartbeat(session: AsyncSession, process: str) -> None:
    """Refresh every socket this process holds, so that they do not age out."""
    await session.execute(
        update(AgentSocket).where(AgentSocket.process == process).values(seen_at=func.now())
    )


async def sweep(session: AsyncSession, *, grace_seconds: float, stale_seconds: float) -> list[int]:
    """Take offline every agent with no live socket for `grace_seconds`; returns their ids.

    Sockets not refreshed for `stale_seconds` belong to a process that died; they are
    deleted first, and their agents' grace period counts from that socket's last sighting.
    """
    stale = await session.execute(
        delete(AgentSocket)
        .where(AgentSocket.seen_at < func.now() - text("make_interval(secs => :stale)"))
        .returning(AgentSocket.user_id, AgentSocket.seen_at),
        {"stale": stale_seconds},
    )
    for user_id, seen_at in stale.all():
        await session.execute(
            update(AgentPresence)
            .where(AgentPresence.user_id == user_id, AgentPresence.last_seen_at < seen_at)
            .values(last_seen_at=seen_at)
        )
    gone = (
        await session.scalars(
            select(AgentPresence.user_id)
            .where(
                AgentPresence.status != "offline",
                AgentPresence.last_seen_at < func.now() - text("make_interval(secs => :grace)"),
                ~select(AgentSocket.id)
                .where(AgentSocket.user_id == AgentPresence.user_id)
                .exists(),
            )
            .with_for_update(skip_locked=True),
            {"grace": grace_seconds},
        )
    ).all()
    for user_id in gone:
        await _change(session, user_id, status="offline")
    return list(gone)


async def get_presence(session: AsyncSession, user_id: int) -> Presence:
    found = await list_presence(session, user_ids=[user_id])
    if not found:
        raise NotFound(f"user {user_id} not found")
    return found[0]


async def list_presence(
    session: AsyncSession, *, user_ids: list[int] | None = None
) -> list[Presence]:
    """Every active staff member with their shown status, by name."""
    stmt = (
        select(User, AgentPresence)
        .outerjoin(AgentPresence, AgentPresence.user_id == User.id)
        .where(User.is_active)
        .order_by(User.name)
    )
    if user_ids is not None:
        stmt = stmt.where(User.id.in_(user_ids))
    out = []
    for user, row in (await session.execute(stmt)).all():
        out.append(
            Presence(
                user_id=user.id,
                name=user.name,
                role=user.role,
                extension=user.extension,
                status=effective_status(row),
                chosen=row.status if row else "offline",
                on_call=bool(row and row.on_call),
                active_chats=row.active_chats if row else 0,
                chat_capacity=row.chat_capacity if row else 3,
                changed_at=row.changed_at if row else None,
            )
        )
    return out


assert set(CHOOSABLE) <= set(PRESENCE_STATUSES)
