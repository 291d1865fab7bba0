"""The SLA escalation worker: each clock's warning and breach announced exactly once.

Every app process runs one (or `helpdesk serve` processes can leave it to others with
`HELPDESK_SLA_WORKER=0`). A pass takes the due clocks with `FOR UPDATE SKIP LOCKED`, so two
workers never take the same clock, and in the same transaction records that it fired,
publishes the event and writes a `system` entry on the case: the three commit together or
not at all, so a crash between them neither loses nor repeats an announcement, and a restart
simply finds what is still due. Passes run every half second, so an event follows its
deadline within a second; the stored deadlines are found through partial indexes, never by
looking at every case.

A breach may also act on the case, as its policy says (`breach_raise_priority`,
`breach_reassign_team_id`): through `cases.update_case` with no actor, in the same
transaction, so the change is on the timeline as a system entry and announced like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from itertools import pairwise

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from helpdesk import cases, events, sla
from helpdesk.db import Database
from helpdesk.errors import DeskError
from helpdesk.interactions import add_interaction
from helpdesk.models import PRIORITIES, Case, SlaPolicy, Team, User

log = logging.getLogger(__name__)
# Clocks per transaction. Events go out when it commits, so a smaller batch gets the first
# of a burst out sooner; a full batch is followed at once by the next.
BATCH = 25
WORDS = {
    "sla_warning": "SLA warning",
    "sla_breach": "SLA breached",
}
KINDS = {
    "first_response": "first response",
    "next_response": "next response",
    "resolution": "resolution",
}
# One step up: low → normal → high → urgent; urgent has nowhere to go.
PRIORITY_STEP = dict(pairwise(PRIORITIES))


class SlaWorker:
    def __init__(
        self,
        db: Database,
        *,
        interval: float = 0.25,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.interval = interval
        self.clock = clock

    async def tick(self) -> int:
        """One pass: announce up to BATCH due clocks; returns how many."""
        now = self.clock()
        async with self.db.unit_of_work() as session:
            due = await sla.due(session, now, limit=BATCH)
            locked = await _lock_cases(session, {item.clock.case_id for item in due})
            fired = [item for item in due if item.clock.case_id in locked]
            # Recorded before anything is announced or acted on: a breach action changes the
            # case, and the SLA recompute that follows must find this clock breached already,
            # not running and overdue (it would retarget it, and the breach would be lost).
            await sla.record_fired(session, fired, now)
            # Read once for the whole pass (held here, so the session keeps them): the teams'
            # supervisors and, for breaches, the policies.
            supervisors = await _supervisors_of(session, {c.team_id for c in locked.values()})
            breaches = {i.clock.policy_id for i in fired if i.event == "sla_breach"}
            policies = {
                p.id: p
                for p in await session.scalars(select(SlaPolicy).where(SlaPolicy.id.in_(breaches)))
            }
            for item in fired:
                case = locked[item.clock.case_id]
                await _announce(session, case, item, now, supervisors, policies)
        return len(fired)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                busy = await self.tick() > 0
            except Exception:
                log.exception("SLA worker pass failed")
                busy = False
            if not busy:  # after a pass that fired, look again at once: a burst may go on
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval)


def breach_changes(policy: SlaPolicy, case: Case) -> dict[str, object]:
    """What a breach under `policy` changes on `case`, as `cases.update_case` changes.

    Priority goes one step up, never past urgent. Reassigning moves the case to the policy's
    team and leaves it unassigned, for that team to pick up; a case already in that team is
    where the policy wants it, and stays with whoever has it.
    """
    changes: dict[str, object] = {}
    if policy.breach_raise_priority and case.priority in PRIORITY_STEP:
        changes["priority"] = PRIORITY_STEP[case.priority]
    team_id = policy.breach_reassign_team_id
    if team_id is not None and case.team_id != team_id:
        changes["team_id"] = team_id
        changes["assignee_id"] = None
    return changes


async def _lock_cases(session: AsyncSession, case_ids: Iterable[int]) -> dict[int, Case]:
    """The cases of the due clocks, locked; a case someone is changing right now is left out,
    and its clocks come back on the next pass.

    A request changing a case locks the case and then its clocks (the SLA recompute); the
    worker holds clocks, so it must never wait for a case, or the two could deadlock.
    """
    ids = sorted(set(case_ids))
    if not ids:
        return {}
    rows = await session.scalars(
        select(Case)
        .where(Case.id.in_(ids))
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    return {case.id: case for case in rows}


async def _supervisors_of(
    session: AsyncSession, team_ids: Iterable[int | None]
) -> dict[int, list[int]]:
    """The active supervisors of each team, in one query."""
    wanted = sorted({t for t in team_ids if t is not None})
    found: dict[int, list[int]] = {t: [] for t in wanted}
    if wanted:
        rows = await session.execute(
            select(User.team_id, User.id).where(
                User.is_active, User.role == "supervisor", User.team_id.in_(wanted)
            )
        )
        for team_id, user_id in rows.all():
            found[team_id].append(user_id)
    return found


async def _supervisors(session: AsyncSession, team_id: int | None) -> list[int]:
    if team_id is None:
        return []
    return list(
        await session.scalars(
            select(User.id).where(
                User.is_active, User.role == "supervisor", User.team_id == team_id
            )
        )
    )


async def _announce(
    session: AsyncSession,
    case: Case,
    item: sla.DueClock,
    now: datetime,
    supervisors: dict[int, list[int]],
    policies: dict[int, SlaPolicy],
) -> None:
    clock = item.clock
    team_supervisors = supervisors.get(case.team_id) if case.team_id is not None else []
    if team_supervisors is None:  # a team this pass moved the case to
        team_supervisors = await _supervisors(session, case.team_id)
    recipients = {case.assignee_id, *team_supervisors}
    data: dict[str, object] = {
        "case_id": case.id,
        "number": case.number,
        "subject": case.subject,
        "assignee_id": case.assignee_id,
        "team_id": case.team_id,
        "clock": clock.kind,
        "deadline_at": clock.deadline_at.isoformat() if clock.deadline_at else None,
    }
    meta: dict[str, object] = {
        "sla": item.event,
        "clock": clock.kind,
        "deadline_at": data["deadline_at"],
    }
    # The breach entry first, then the changes it causes: the timeline reads cause, effect.
    entry = await add_interaction(
        session,
        customer_id=case.customer_id,
        case_id=case.id,
        kind="system",
        direction="internal",
        text=f"{WORDS[item.event]}: {KINDS.get(clock.kind, clock.kind)}",
        meta=meta,
        occurred_at=now,
    )
    if item.event == "sla_breach":
        done = await _act_on_breach(session, case, policies.get(clock.policy_id))
        if done:
            entry.text += "; " + await _describe(session, done)
            entry.meta = {**meta, "actions": done}
            data["actions"] = done
            if "team_id" in done:  # the team that now has the case hears of it too
                recipients.update(await _supervisors(session, case.team_id))
    await events.publish(
        session,
        events.Event(
            item.event,
            data,
            users=tuple(sorted(u for u in recipients if u is not None)),
            topics=(f"case:{case.id}", "sla"),
            team=case.team_id,
        ),
    )


async def _act_on_breach(
    session: AsyncSession, case: Case, policy: SlaPolicy | None
) -> dict[str, object]:
    """Apply the policy's breach actions to the case; returns the changes made.

    In a savepoint: a change the case refuses (a team deleted meanwhile) is logged and
    skipped, so one bad policy cannot hold back every other announcement of the pass.
    """
    changes = breach_changes(policy, case) if policy is not None else {}
    if not changes:
        return {}
    try:
        async with session.begin_nested():
            await cases.update_case(session, case.id, changes, actor_user_id=None)
    except DeskError:
        log.exception("SLA breach actions %r on case %s failed", changes, case.id)
        await session.refresh(case)
        return {}
    return changes


async def _describe(session: AsyncSession, changes: dict[str, object]) -> str:
    words = []
    if "priority" in changes:
        words.append(f"priority raised to {changes['priority']}")
    if "team_id" in changes:
        team = await session.get(Team, changes["team_id"])
        words.append(f"moved to team {team.name if team else changes['team_id']}, unassigned")
    return "; ".join(words)
