"""The SLA escalation worker: each clock's warning and breach announced exactly once.

Every app process runs one (or `helpdesk serve` processes can leave it to others with
`HELPDESK_SLA_WORKER=0`). A pass takes the due clocks with `FOR UPDATE SKIP LOCKED`, so two
workers never take the same clock, and in the same transaction records that it fired,
publishes the event and writes a `system` entry on the case: the three commit together or
not at all, so a crash between them neither loses nor repeats an announcement, and a restart
simply finds what is still due. Passes run every half second, so an event follows its
deadline within a second; the stored deadlines are found through partial indexes, never by
looking at every case.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import select

from helpdesk import events, sla
from helpdesk.db import Database
from helpdesk.interactions import add_interaction
from helpdesk.models import Case, User

log = logging.getLogger(__name__)
BATCH = 100
WORDS = {
    "sla_warning": "SLA warning",
    "sla_breach": "SLA breached",
}
KINDS = {
    "first_response": "first response",
    "next_response": "next response",
    "resolution": "resolution",
}


class SlaWorker:
    def __init__(
        self,
        db: Database,
        *,
        interval: float = 0.5,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.interval = interval
        self.clock = clock

    async def tick(self) -> int:
        """One pass: announce up to BATCH due clocks; returns how many."""
        now = self.clock()
        async with self.db.unit_of_work() as session:
            fired = await sla.due(session, now, limit=BATCH)
            for item in fired:
                await _announce(session, item, now)
            await sla.record_fired(session, fired, now)
        return len(fired)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                full = await self.tick() == BATCH
            except Exception:
                log.exception("SLA worker pass failed")
                full = False
            if not full:  # a full batch means more are due: go on at once
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval)


async def _announce(session, item: sla.DueClock, now: datetime) -> None:  # type: ignore[no-untyped-def]
    clock = item.clock
    case = await session.get(Case, clock.case_id)
    if case is None:
        return
    supervisors = []
    if case.team_id is not None:
        supervisors = list(
            await session.scalars(
                select(User.id).where(
                    User.is_active, User.role == "supervisor", User.team_id == case.team_id
                )
            )
        )
    recipients = {case.assignee_id, *supervisors} - {None}
    data = {
        "case_id": case.id,
        "number": case.number,
        "subject": case.subject,
        "assignee_id": case.assignee_id,
        "team_id": case.team_id,
        "clock": clock.kind,
        "deadline_at": clock.deadline_at.isoformat() if clock.deadline_at else None,
    }
    await events.publish(
        session,
        events.Event(
            item.event,
            data,
            users=tuple(sorted(u for u in recipients if u is not None)),
            topics=(f"case:{case.id}", "sla"),
        ),
    )
    await add_interaction(
        session,
        customer_id=case.customer_id,
        case_id=case.id,
        kind="system",
        direction="internal",
        text=f"{WORDS[item.event]}: {KINDS.get(clock.kind, clock.kind)}",
        meta={"sla": item.event, "clock": clock.kind, "deadline_at": data["deadline_at"]},
        occurred_at=now,
    )
