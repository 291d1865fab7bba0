"""The SLA escalation worker: each clock's warning and breach announced exactly once, also
with two workers at the same time and after a restart. Instants are injected."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import asyncpg
from sqlalchemy import func, select

from helpdesk import sla
from helpdesk.events import CHANNEL
from helpdesk.hub import asyncpg_dsn
from helpdesk.models import Interaction, SlaClock, Team
from helpdesk.sla_worker import SlaWorker
from tests.test_sla import calendar_id, jst, new_case


async def _desk_with_cases(db, make_staff, n: int):
    """n cases on the Tokyo desk, first response due in 60 business minutes from Monday
    2027-05-10 09:00, assigned to an agent of team Billing, which has a supervisor."""
    agent = await make_staff("agent")
    boss = await make_staff("supervisor")
    async with db.unit_of_work() as session:
        team = Team(name="Billing")
        session.add(team)
        await session.flush()
        for staff in (agent, boss):
            user = await session.get(type(staff.user), staff.user.id)
            user.team_id = team.id
        await sla.create_policy(
            session,
            name="standard",
            calendar_id=await calendar_id(session),
            first_response_minutes=60,
            resolution_minutes=480,
        )
        case_ids = []
        for _ in range(n):
            case = await new_case(session, team_id=team.id)
            case.assignee_id = agent.user.id
            await sla.start_clocks(session, case, jst(5, 10, 9))
            case_ids.append(case.id)
    return agent.user.id, boss.user.id, case_ids


async def _listen(database_url: str) -> tuple[asyncpg.Connection, list[dict]]:
    got: list[dict] = []
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    await conn.add_listener(CHANNEL, lambda *args: got.append(json.loads(args[-1])))
    return conn, got


async def test_a_warning_then_a_breach_each_announced_once_to_the_assignee_and_supervisors(
    db, make_staff, database_url
):
    agent, boss, [case_id] = await _desk_with_cases(db, make_staff, 1)
    listener, got = await _listen(database_url)
    try:
        at = jst(5, 10, 9, 50)  # past 80 % of the 60 minutes (09:48): the warning
        worker = SlaWorker(db, clock=lambda: at)
        assert await worker.tick() == 1
        assert await worker.tick() == 0  # once
        at = jst(5, 10, 10, 0)  # the deadline
        assert await worker.tick() == 1
        assert await worker.tick() == 0
        await asyncio.sleep(0.2)  # let the notifications arrive (bounded below)
        for _ in range(50):
            if len([e for e in got if e["type"].startswith("sla_")]) >= 2:
                break
            await asyncio.sleep(0.05)
    finally:
        await listener.close()
    kinds = [(e["type"], e["data"]["clock"]) for e in got if e["type"].startswith("sla_")]
    assert kinds == [("sla_warning", "first_response"), ("sla_breach", "first_response")]
    for event in got:
        assert sorted(event["users"]) == sorted([agent, boss])
        assert event["topics"] == [f"case:{case_id}", "sla"]
    async with db.unit_of_work() as session:
        clock = await session.scalar(
            select(SlaClock).where(SlaClock.case_id == case_id, SlaClock.kind == "first_response")
        )
        assert clock.state == "breached" and clock.breached_at == clock.deadline_at
        notes = (
            await session.scalars(
                select(Interaction.text)
                .where(Interaction.case_id == case_id, Interaction.kind == "system")
                .order_by(Interaction.id)
            )
        ).all()
        assert notes == ["SLA warning: first response", "SLA breached: first response"]


async def test_two_workers_at_once_announce_every_due_clock_exactly_once(db, make_staff):
    _agent, _boss, case_ids = await _desk_with_cases(db, make_staff, 30)
    at = jst(5, 10, 10, 0) + timedelta(seconds=1)  # every first response just breached
    one, two = SlaWorker(db, clock=lambda: at), SlaWorker(db, clock=lambda: at)
    counts = await asyncio.gather(*(w.tick() for w in (one, two, one, two)))
    assert sum(counts) == len(case_ids)
    # a restart: a new worker finds nothing left to announce
    assert await SlaWorker(db, clock=lambda: at).tick() == 0
    async with db.unit_of_work() as session:
        breaches = await session.scalar(
            select(func.count())
            .select_from(Interaction)
            .where(Interaction.kind == "system", Interaction.text == "SLA breached: first response")
        )
        assert breaches == len(case_ids)
        states = set(
            await session.scalars(select(SlaClock.state).where(SlaClock.kind == "first_response"))
        )
        assert states == {"breached"}


async def test_the_run_loop_stops_when_asked(db):
    stop = asyncio.Event()
    task = asyncio.create_task(SlaWorker(db, interval=0.05).run(stop))
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert task.done() and task.exception() is None
