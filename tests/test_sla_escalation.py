"""Breach actions: a policy may raise the case's priority or move it to another team when one
of its clocks breaches. Applied once per breach, by the worker, in the breach's transaction,
as a system change on the timeline. Instants are injected; nothing sleeps."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from helpdesk import cases, sla
from helpdesk.errors import InvalidInput
from helpdesk.models import Case, Interaction, SlaClock, Team, User
from helpdesk.sla_worker import SlaWorker
from tests.test_sla import calendar_id, jst, new_case
from tests.test_sla_worker import _listen

MONDAY_9 = jst(5, 10, 9)  # Monday 2027-05-10, 09:00 in Tokyo: the desk has just opened


async def _team(session, name: str) -> Team:
    team = Team(name=name)
    session.add(team)
    await session.flush()
    return team


async def _join(session, staff, team: Team) -> None:
    user = await session.get(User, staff.user.id)
    user.team_id = team.id


async def _system_entries(db, case_id: int) -> list[Interaction]:
    async with db.unit_of_work() as session:
        return list(
            await session.scalars(
                select(Interaction)
                .where(Interaction.case_id == case_id, Interaction.kind == "system")
                .order_by(Interaction.id)
            )
        )


async def _case(db, case_id: int) -> Case:
    async with db.unit_of_work() as session:
        return await session.get(Case, case_id, populate_existing=True)


async def _clock(db, case_id: int, kind: str) -> SlaClock:
    async with db.unit_of_work() as session:
        return await session.scalar(
            select(SlaClock)
            .where(SlaClock.case_id == case_id, SlaClock.kind == kind)
            .execution_options(populate_existing=True)
        )


async def test_a_breach_raises_the_priority_one_step_once_and_the_new_policy_does_not_refire_it(
    db, make_staff
):
    """First response (60 min) breaches at 10:00 and raises normal → high. High cases have a
    stricter policy (first response 30, resolution 120), so the case is re-chosen onto it: the
    breached first response stays breached and is not announced again, while resolution is
    retargeted to 11:00 (warning at 10:36) and, when it breaches there, raises the case once
    more, to urgent."""
    agent = await make_staff("agent")
    async with db.unit_of_work() as session:
        cal = await calendar_id(session)
        await sla.create_policy(
            session,
            name="High",
            calendar_id=cal,
            conditions={"priority": ["high", "urgent"]},
            first_response_minutes=30,
            resolution_minutes=120,
            breach_raise_priority=True,
        )
        await sla.create_policy(
            session,
            name="Standard",
            calendar_id=cal,
            first_response_minutes=60,
            resolution_minutes=480,
            breach_raise_priority=True,
        )
        case = await new_case(session)
        case.assignee_id = agent.user.id
        await sla.start_clocks(session, case, MONDAY_9)
        case_id = case.id

    at = jst(5, 10, 10, 0)
    worker = SlaWorker(db, clock=lambda: at)
    assert await worker.tick() == 1
    assert (await _case(db, case_id)).priority == "high"
    first = await _clock(db, case_id, "first_response")
    assert first.state == "breached" and first.breached_at == jst(5, 10, 10, 0)
    resolution = await _clock(db, case_id, "resolution")
    assert resolution.state == "active" and resolution.deadline_at == jst(5, 10, 11, 0)

    # Whatever else recomputes the case's clocks later, the breach stays judged and told once.
    async with db.unit_of_work() as session:
        await sla.recompute(session, await session.get(Case, case_id), at)
    for minute in (1, 30):
        at = jst(5, 10, 10, minute)
        assert await worker.tick() == 0
    at = jst(5, 10, 10, 40)  # resolution's warning, at 80 % of the High policy's 120 minutes
    assert await worker.tick() == 1
    assert (await _case(db, case_id)).priority == "high"

    at = jst(5, 10, 11, 0)
    assert await worker.tick() == 1  # the resolution breach, under the High policy
    assert await worker.tick() == 0
    case = await _case(db, case_id)
    assert case.priority == "urgent"
    assert case.assignee_id == agent.user.id  # raising the priority leaves the assignee be

    entries = await _system_entries(db, case_id)
    assert [e.text for e in entries] == [
        "SLA breached: first response; priority raised to high",
        "priority normal → high",
        "SLA warning: resolution",
        "SLA breached: resolution; priority raised to urgent",
        "priority high → urgent",
    ]
    assert all(e.author_user_id is None for e in entries)  # the system did it, not a person
    assert entries[0].meta["actions"] == {"priority": "high"}
    assert entries[0].meta["sla"] == "sla_breach" and entries[0].meta["clock"] == "first_response"


async def test_an_urgent_case_is_never_raised_further(db):
    async with db.unit_of_work() as session:
        await sla.create_policy(
            session,
            name="Standard",
            calendar_id=await calendar_id(session),
            first_response_minutes=60,
            breach_raise_priority=True,
        )
        case = await new_case(session, priority="urgent")
        await sla.start_clocks(session, case, MONDAY_9)
        case_id = case.id

    assert await SlaWorker(db, clock=lambda: jst(5, 10, 10)).tick() == 1
    assert (await _case(db, case_id)).priority == "urgent"
    entries = await _system_entries(db, case_id)
    assert [e.text for e in entries] == ["SLA breached: first response"]
    assert "actions" not in entries[0].meta


async def test_a_breach_moves_the_case_unassigned_to_the_escalation_team_and_tells_both_teams(
    db, make_staff, database_url
):
    agent = await make_staff("agent")
    billing_boss = await make_staff("supervisor")
    escalation_boss = await make_staff("supervisor")
    async with db.unit_of_work() as session:
        billing = await _team(session, "Billing")
        escalations = await _team(session, "Escalations")
        await _join(session, agent, billing)
        await _join(session, billing_boss, billing)
        await _join(session, escalation_boss, escalations)
        await sla.create_policy(
            session,
            name="Standard",
            calendar_id=await calendar_id(session),
            first_response_minutes=60,
            resolution_minutes=480,
            breach_reassign_team_id=escalations.id,
        )
        case = await new_case(session, team_id=billing.id)
        case.assignee_id = agent.user.id
        case.status = "open"
        await sla.start_clocks(session, case, MONDAY_9)
        case_id, billing_id, escalations_id = case.id, billing.id, escalations.id

    listener, got = await _listen(database_url)
    try:
        assert await SlaWorker(db, clock=lambda: jst(5, 10, 10)).tick() == 1
        for _ in range(100):  # notifications arrive after the commit; bounded wait
            if {"sla_breach", "case_updated"} <= {e["type"] for e in got}:
                break
            await asyncio.sleep(0.02)
    finally:
        await listener.close()

    case = await _case(db, case_id)
    assert case.team_id == escalations_id and case.assignee_id is None
    breach = next(e for e in got if e["type"] == "sla_breach")
    assert breach["data"]["actions"] == {"team_id": escalations_id, "assignee_id": None}
    assert breach["data"]["team_id"] == billing_id  # who had it when it breached
    assert sorted(breach["users"]) == sorted(
        [agent.user.id, billing_boss.user.id, escalation_boss.user.id]
    )
    updated = next(e for e in got if e["type"] == "case_updated")
    assert updated["data"]["actor_id"] is None
    assert updated["data"]["previous_assignee_id"] == agent.user.id  # "taken off you"

    entries = await _system_entries(db, case_id)
    assert entries[0].text == "SLA breached: first response; moved to team Escalations, unassigned"
    assert entries[1].text == f"assignee {agent.user.id} → -; team {billing_id} → {escalations_id}"

    # The resolution breach later finds the case already with Escalations: it stays with
    # whoever there has picked it up.
    async with db.unit_of_work() as session:
        await cases.update_case(session, case_id, {"assignee_id": escalation_boss.user.id},
                                actor_user_id=escalation_boss.user.id)  # fmt: skip
    assert await SlaWorker(db, clock=lambda: jst(5, 10, 18, 0)).tick() == 1  # 480 min: 18:00
    case = await _case(db, case_id)
    assert case.team_id == escalations_id and case.assignee_id == escalation_boss.user.id
    entries = await _system_entries(db, case_id)
    assert entries[-1].text == "SLA breached: resolution"


async def test_a_case_someone_is_changing_is_left_for_the_next_pass(db):
    """The worker holds the due clocks; it never waits for the case (a request changing the
    case locks it, then its clocks), so it leaves that case's clocks for the next pass."""
    async with db.unit_of_work() as session:
        await sla.create_policy(
            session,
            name="Standard",
            calendar_id=await calendar_id(session),
            first_response_minutes=60,
            breach_raise_priority=True,
        )
        case = await new_case(session)
        await sla.start_clocks(session, case, MONDAY_9)
        case_id = case.id

    worker = SlaWorker(db, clock=lambda: jst(5, 10, 10))
    async with db.unit_of_work() as other:
        await other.get(Case, case_id, with_for_update=True)
        assert await asyncio.wait_for(worker.tick(), 10) == 0
    assert await worker.tick() == 1
    assert await worker.tick() == 0
    assert (await _case(db, case_id)).priority == "high"


async def test_policies_refuse_an_unknown_team_to_reassign_to(db):
    async with db.unit_of_work() as session:
        cal = await calendar_id(session)
        with pytest.raises(InvalidInput) as refused:
            await sla.create_policy(
                session, name="Lost", calendar_id=cal, breach_reassign_team_id=999
            )
        assert refused.value.field == "breach_reassign_team_id"
        team = await _team(session, "Tier 2")
        policy = await sla.create_policy(
            session,
            name="Found",
            calendar_id=cal,
            breach_reassign_team_id=team.id,
            breach_raise_priority=True,
        )
        assert policy.breach_reassign_team_id == team.id and policy.breach_raise_priority
