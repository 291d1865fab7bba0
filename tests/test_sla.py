"""SLA policies and clocks, on a Tokyo desk (mon-fri 09:00-12:00 13:00-18:00, JP holidays),
with every instant injected: nothing here sleeps or reads the wall clock."""

from __future__ import annotations

import asyncio
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, text

from helpdesk import sla
from helpdesk.business_time import BusinessCalendar, parse_weekly
from helpdesk.errors import InvalidInput
from helpdesk.models import Case, Customer, SlaClock, Team

TOKYO = ZoneInfo("Asia/Tokyo")
DESK = BusinessCalendar(
    timezone="Asia/Tokyo",
    weekly=parse_weekly("mon-fri 09:00-12:00 13:00-18:00"),
    holiday_region="JP",
)


def jst(month: int, day: int, hour: int, minute: int = 0, year: int = 2027) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=TOKYO)


async def calendar_id(session) -> int:
    return (await sla.create_calendar(session, "Tokyo desk", DESK)).id


async def new_case(session, *, priority="normal", channel="email", tier="standard", team_id=None):
    customer = Customer(name="山田 太郎", tier=tier)
    session.add(customer)
    await session.flush()
    case = Case(
        customer_id=customer.id,
        subject="請求書が届かない",
        channel=channel,
        priority=priority,
        team_id=team_id,
        status="new",
    )
    session.add(case)
    await session.flush()
    return case


def by_kind(clocks) -> dict[str, SlaClock]:
    return {c.kind: c for c in clocks}


async def clocks_of(session, case) -> dict[str, SlaClock]:
    rows = await session.scalars(
        select(SlaClock)
        .where(SlaClock.case_id == case.id)
        .execution_options(populate_existing=True)
    )
    return by_kind(rows)


# -- policies --------------------------------------------------------------------------------


async def test_the_first_active_policy_by_position_whose_conditions_all_match_wins(db):
    async with db.unit_of_work() as s:
        cal = await calendar_id(s)
        support, billing = Team(name="Support"), Team(name="Billing")
        s.add_all([support, billing])
        await s.flush()
        targets = {"calendar_id": cal, "resolution_minutes": 480}
        catch_all = await sla.create_policy(s, name="Everyone", position=90, **targets)
        gold_urgent = await sla.create_policy(
            s,
            name="Gold urgent",
            position=10,
            conditions={"priority": ["urgent", "high"], "tier": ["gold", "platinum"]},
            **targets,
        )
        billing_team = await sla.create_policy(
            s, name="Billing", position=20, conditions={"team_id": [billing.id]}, **targets
        )
        phone_high = await sla.create_policy(
            s,
            name="Phone high",
            position=30,
            conditions={"channel": ["phone"], "priority": ["high"]},
            **targets,
        )
        await sla.create_policy(s, name="Switched off", position=0, active=False, **targets)

        cases = {
            "urgent gold → every condition of the first": (
                await new_case(s, priority="urgent", tier="gold", team_id=billing.id),
                "gold",
                gold_urgent,
            ),
            "urgent but standard → next by position": (
                await new_case(s, priority="urgent", team_id=billing.id),
                "standard",
                billing_team,
            ),
            "high on the phone, no team": (
                await new_case(s, priority="high", channel="phone"),
                "standard",
                phone_high,
            ),
            "high by email → only the catch-all": (
                await new_case(s, priority="high", channel="email", team_id=support.id),
                "standard",
                catch_all,
            ),
        }
        for label, (case, tier, expected) in cases.items():
            assert await sla.choose_policy(s, case, tier) is expected, label

        catch_all.active = False
        lonely = await new_case(s, priority="low")
        assert await sla.choose_policy(s, lonely, "standard") is None
        assert await sla.start_clocks(s, lonely, jst(5, 10, 9)) == []


def test_conditions_are_structured_and_checked_against_known_values():
    assert sla.validate_conditions({}) == {}
    assert sla.validate_conditions(
        {"priority": ["high", "urgent", "high"], "team_id": [3], "channel": ["chat"]}
    ) == {"priority": ["high", "urgent"], "team_id": [3], "channel": ["chat"]}
    bad = [
        "priority == 'high'",
        {"priority": "high"},
        {"priority": []},
        {"priority": ["asap"]},
        {"channel": ["fax"]},
        {"tier": ["diamond"]},
        {"team_id": ["1"]},
        {"team_id": [True]},
        {"language": ["ja"]},
    ]
    for conditions in bad:
        with pytest.raises(InvalidInput) as error:
            sla.validate_conditions(conditions)
        assert error.value.field == "conditions", conditions


async def test_policies_refuse_unknown_teams_calendars_and_bad_targets(db):
    async with db.unit_of_work() as s:
        cal = await calendar_id(s)
        attempts = [
            ({"conditions": {"team_id": [999]}}, "conditions"),
            ({"calendar_id": 999}, "calendar_id"),
            ({"first_response_minutes": 0}, "first_response_minutes"),
            ({"resolution_minutes": 1.5}, "resolution_minutes"),
            ({"warning_percent": 0}, "warning_percent"),
            ({"name": " "}, "name"),
        ]
        for extra, field in attempts:
            with pytest.raises(InvalidInput) as error:
                await sla.create_policy(s, **{"name": "P", "calendar_id": cal, **extra})
            assert error.value.field == field, extra


# -- deadlines -------------------------------------------------------------------------------


async def test_deadlines_skip_golden_week_and_the_lunch_break(db):
    async with db.unit_of_work() as s:
        cal = await calendar_id(s)
        await sla.create_policy(
            s, name="Std", calendar_id=cal, first_response_minutes=120, resolution_minutes=960
        )
        case = await new_case(s)
        # Wednesday 28 April 2027, one working hour before closing. Then: 29th Shōwa Day,
        # 30th a working Friday, the weekend, 3-5 May holidays, work again on Thursday 6th.
        clocks = by_kind(await sla.start_clocks(s, case, jst(4, 28, 17)))

    assert set(clocks) == {"first_response", "resolution"}
    first, resolution = clocks["first_response"], clocks["resolution"]
    assert first.state == resolution.state == "active"
    assert first.started_at == jst(4, 28, 17)
    # 60 minutes on the 28th, then 60 on Friday the 30th; warning at 80 % = 96 minutes.
    assert first.deadline_at == jst(4, 30, 10)
    assert first.warning_at == jst(4, 30, 9, 36)
    # 60 + 480 (Friday) + 420 on Thursday 6 May: 09-12, lunch, 13:00-17:00.
    assert resolution.deadline_at == jst(5, 6, 17)
    assert resolution.warning_at == jst(5, 6, 13, 48)  # 768 minutes

    async with db.unit_of_work() as s:
        record = (await s.scalars(select(sla.BusinessCalendarRecord))).one()
        assert sla.calendar_of(record) == DESK
        # start_clocks is idempotent
        assert await sla.start_clocks(s, case, jst(5, 6, 9)) == []


# -- first and next response -----------------------------------------------------------------


async def test_first_response_is_met_by_an_agent_public_reply_never_by_a_status_change(db):
    async with db.unit_of_work() as s:
        cal = await calendar_id(s)
        await sla.create_policy(s, name="Std", calendar_id=cal, first_response_minutes=240)
        case = await new_case(s)
        late = await new_case(s)
        later = await new_case(s)
        for c in (case, late, later):
            await sla.start_clocks(s, c, jst(5, 10, 9))  # deadline Monday 14:00

    async with db.unit_of_work() as s:
        for old, new, at in [("new", "open", 9), ("open", "on_hold", 10), ("on_hold", "open", 10)]:
            await sla.on_status_change(s, case.id, old, new, jst(5, 10, at))
        first = (await clocks_of(s, case))["first_response"]
        assert (first.state, first.met_at, first.deadline_at) == ("active", None, jst(5, 10, 14))
        await sla.on_status_change(s, case.id, "open", "solved", jst(5, 10, 11))
        assert (await clocks_of(s, case))["first_response"].state == "paused"  # not met
        await sla.on_status_change(s, case.id, "solved", "open", jst(5, 10, 11))

        changed = await sla.on_agent_public_reply(s, case.id, jst(5, 10, 11, 30))
        assert [(c.kind, c.state, c.met_at) for c in changed] == [
            ("first_response", "met", jst(5, 10, 11, 30))
        ]
        assert await sla.on_agent_public_reply(s, case.id, jst(5, 10, 15)) == []

        # Answered after the deadline, before the worker noticed: breached at the deadline.
        (clock,) = await sla.on_agent_public_reply(s, late.id, jst(5, 10, 15))
        assert (clock.state, clock.breached_at, clock.met_at) == (
            "breached",
            jst(5, 10, 14),
            jst(5, 10, 15),
        )

        # Breached and announced by the worker, answered later: stays breached, answer noted.
        fired = [d for d in await sla.due(s, jst(5, 10, 14, 1)) if d.clock.case_id == later.id]
        assert [d.event for d in fired] == ["sla_breach"]
        await sla.record_fired(s, fired, jst(5, 10, 14, 1))
        (clock,) = await sla.on_agent_public_reply(s, later.id, jst(5, 10, 16))
        assert (clock.state, clock.breached_at, clock.breach_fired_at, clock.met_at) == (
            "breached",
            jst(5, 10, 14),
            jst(5, 10, 14, 1),
            jst(5, 10, 16),
        )


async def test_next_response_runs_from_the_oldest_unanswered_customer_message(db):
    async with db.unit_of_work() as s:
        cal = await calendar_id(s)
        await sla.create_policy(
            s, name="Std", calendar_id=cal, first_response_minutes=240, next_response_minutes=60
        )
        case = await new_case(s)
        await sla.start_clocks(s, case, jst(5, 10, 9))

        # Before the first answer, first response is the clock that runs.
        assert await sla.on_customer_message(s, case.id, jst(5, 10, 9, 10)) == []
        await sla.on_agent_public_reply(s, case.id, jst(5, 10, 9, 30))

        (nxt,) = await sla.on_customer_message(s, case.id, jst(5, 10, 10))
        assert (nxt.kind, nxt.state, nxt.deadline_at) == ("next_response", "active", jst(5, 10, 11))
        # A second message before any answer does not push the deadline out.
        assert await sla.on_customer_message(s, case.id, jst(5, 10, 10, 20)) == []
        assert (await clocks_of(s, case))["next_response"].deadline_at == jst(5, 10, 11)

        (met,) = await sla.on_agent_public_reply(s, case.id, jst(5, 10, 10, 40))
        assert (met.kind, met.state, met.met_at) == ("next_response", "met", jst(5, 10, 10, 40))

        # The next message restarts it: 30 minutes before lunch, 30 after.
        (again,) = await sla.on_customer_message(s, case.id, jst(5, 10, 11, 30))
        assert again.id == nxt.id
        assert (again.state, again.started_at, again.deadline_at, again.met_at) == (
            "active",
            jst(5, 10, 11, 30),
            jst(5, 10, 13, 30),
            None,
        )
        assert again.warning_at == jst(5, 10, 13, 18)  # 48 minutes
        first = (await clocks_of(s, case))["first_response"]
        assert (first.state, first.met_at) == ("met", jst(5, 10, 9, 30))


# -- pauses, solving, reopening ---------------------------------------------------------------


async def test_pending_pauses_the_clocks_and_a_customer_reply_resumes_them(db):
    async with db.unit_of_work() as s:
        cal = await calendar_id(s)
        await sla.create_policy(
            s, name="Std", calendar_id=cal, first_response_minutes=240, resolution_minutes=960
        )
        case = await new_case(s)
        started = by_kind(await sla.start_clocks(s, case, jst(5, 10, 9)))
        assert started["first_response"].deadline_at == jst(5, 10, 14)
        assert started["resolution"].deadline_at == jst(5, 11, 18)

        paused = by_kind(await sla.on_status_change(s, case.id, "new", "pending", jst(5, 10, 10)))
        for kind, left in [("first_response", 180), ("resolution", 900)]:
            clock = paused[kind]
            assert (clock.state, clock.paused_at, clock.remaining_minutes) == (
                "paused",
                jst(5, 10, 10),
                left,
            )
            assert clock.deadline_at is clock.warning_at is None
        assert await sla.due(s, jst(5, 20, 9)) == []  # paused clocks never come due

        # Tuesday 14:00: 660 business minutes later (Mon 10-12, 13-18; Tue 9-12, 13-14).
        resumed = by_kind(await sla.on_customer_message(s, case.id, jst(5, 11, 14)))
        first, resolution = resumed["first_response"], resumed["resolution"]
        assert first.state == resolution.state == "active"
        assert first.paused_minutes == resolution.paused_minutes == 660
        assert first.deadline_at == jst(5, 11, 17)  # the 180 minutes it had left
        assert DESK.between(jst(5, 10, 14), first.deadline_at) == 660
        assert resolution.deadline_at == jst(5, 13, 12)
        assert DESK.between(jst(5, 11, 18), resolution.deadline_at) == 660

        # The status catching up afterwards changes nothing.
        assert await sla.on_status_change(s, case.id, "pending", "open", jst(5, 11, 14, 5)) == []

        # And a pending spell ended by the agent works the same way.
        await sla.on_status_change(s, case.id, "open", "pending", jst(5, 11, 15))
        (resumed_first, resumed_res) = await sla.on_status_change(
            s, case.id, "pending", "open", jst(5, 11, 16)
        )
        assert resumed_first.deadline_at == jst(5, 11, 18)
        assert resumed_first.paused_minutes == 720
        assert resumed_res.deadline_at == jst(5, 13, 14)  # an hour later than before


async def test_resolution_is_met_when_solved_and_resumes_with_its_time_left_on_reopen(db):
    async with db.unit_of_work() as s:
        cal = await calendar_id(s)
        await sla.create_policy(
            s, name="Std", calendar_id=cal, first_response_minutes=240, resolution_minutes=480
        )
        case = await new_case(s)
        await sla.start_clocks(s, case, jst(5, 10, 9))  # resolution due Monday 18:00

        solved = by_kind(await sla.on_status_change(s, case.id, "new", "solved", jst(5, 10, 11)))
        resolution = solved["resolution"]
        assert (resolution.state, resolution.met_at, resolution.remaining_minutes) == (
            "met",
            jst(5, 10, 11),
            360,
        )
        assert solved["first_response"].state == "paused"
        case.status = "solved"
        assert await sla.on_customer_message(s, case.id, jst(5, 10, 12)) == []  # still solved
        case.status = "open"
        assert await sla.on_status_change(s, case.id, "solved", "solved", jst(5, 10, 12)) == []

        # Reopened on Tuesday 09:00: the 360 minutes it had left run from now.
        reopened = by_kind(await sla.on_status_change(s, case.id, "solved", "open", jst(5, 11, 9)))
        resolution = reopened["resolution"]
        assert (resolution.state, resolution.met_at, resolution.deadline_at) == (
            "active",
            None,
            jst(5, 11, 16),
        )
        assert reopened["first_response"].state == "active"
        assert reopened["first_response"].deadline_at == jst(5, 11, 11)

        # Solved while pending: the pending spell ends at solving and is not counted.
        await sla.on_status_change(s, case.id, "open", "pending", jst(5, 11, 10))
        solved = by_kind(
            await sla.on_status_change(s, case.id, "pending", "solved", jst(5, 11, 15))
        )
        assert solved["resolution"].state == "met"
        assert solved["resolution"].remaining_minutes == 300
        reopened = by_kind(await sla.on_status_change(s, case.id, "solved", "open", jst(5, 12, 9)))
        assert reopened["resolution"].deadline_at == jst(5, 12, 15)

        closed = await sla.on_status_change(s, case.id, "open", "solved", jst(5, 12, 9, 30))
        closed += await sla.on_status_change(s, case.id, "solved", "closed", jst(5, 12, 10))
        assert {c.kind: c.state for c in closed} == {
            "first_response": "paused",
            "resolution": "met",
        }


# -- a change of policy ----------------------------------------------------------------------


async def test_recompute_after_a_priority_change_counts_the_time_already_spent(db):
    async with db.unit_of_work() as s:
        cal = await calendar_id(s)
        urgent = await sla.create_policy(
            s,
            name="Urgent",
            calendar_id=cal,
            conditions={"priority": ["urgent"]},
            first_response_minutes=60,
            resolution_minutes=240,
        )
        normal = await sla.create_policy(
            s, name="Std", calendar_id=cal, first_response_minutes=240, resolution_minutes=960
        )
        answered, unanswered = await new_case(s), await new_case(s)
        for case in (answered, unanswered):
            await sla.start_clocks(s, case, jst(5, 10, 9))
        await sla.on_agent_public_reply(s, answered.id, jst(5, 10, 9, 20))

        answered.priority = "urgent"
        (resolution,) = await sla.recompute(s, answered, jst(5, 10, 9, 30))
        assert (resolution.kind, resolution.policy_id) == ("resolution", urgent.id)
        assert resolution.target_minutes == 240
        assert resolution.started_at == jst(5, 10, 9)
        assert resolution.deadline_at == jst(5, 10, 14)
        assert resolution.warning_at == jst(5, 10, 13, 12)  # 192 minutes
        first = (await clocks_of(s, answered))["first_response"]
        assert (first.state, first.policy_id) == ("met", normal.id)  # judged, stays

        # Pending from 10:00 (60 minutes spent), back to normal at 11:00: 900 left of 960.
        await sla.on_status_change(s, answered.id, "new", "pending", jst(5, 10, 10))
        answered.priority = "normal"
        (resolution,) = await sla.recompute(s, answered, jst(5, 10, 11))
        assert (resolution.state, resolution.remaining_minutes) == ("paused", 900)
        assert resolution.deadline_at is None

        # Two hours in with no answer, the new one-hour target is already overdue.
        unanswered.priority = "urgent"
        changed = by_kind(await sla.recompute(s, unanswered, jst(5, 10, 11)))
        assert changed["first_response"].deadline_at == jst(5, 10, 10)
        due = await sla.due(s, jst(5, 10, 11))
        assert [(d.clock.case_id, d.clock.kind, d.event) for d in due] == [
            (unanswered.id, "first_response", "sla_breach")
        ]

        # A policy without a target for a kind drops its running clock.
        urgent.first_response_minutes = None
        await s.flush()
        await sla.recompute(s, unanswered, jst(5, 10, 11))
        assert set(await clocks_of(s, unanswered)) == {"resolution"}


# -- the worker's query ----------------------------------------------------------------------


async def test_due_finds_exactly_the_clocks_past_their_warning_or_deadline(db):
    async with db.unit_of_work() as s:
        cal = await calendar_id(s)
        await sla.create_policy(s, name="Std", calendar_id=cal, first_response_minutes=100)
        starts = {
            "breached": jst(5, 10, 9),  # due 10:40, warning 10:20
            "warned": jst(5, 10, 9, 50),  # due 11:30, warning 11:10
            "quiet": jst(5, 10, 10, 30),  # due 12:10 → 13:00 + 10, warning 11:50
            "paused": jst(5, 10, 9),
            "answered": jst(5, 10, 9),
        }
        cases = {}
        for name, at in starts.items():
            cases[name] = await new_case(s)
            await sla.start_clocks(s, cases[name], at)
        await sla.on_status_change(s, cases["paused"].id, "new", "pending", jst(5, 10, 9, 30))
        await sla.on_agent_public_reply(s, cases["answered"].id, jst(5, 10, 9, 30))

        now = jst(5, 10, 11, 15)
        found = await sla.due(s, now)
        assert [(d.clock.case_id, d.event) for d in found] == [
            (cases["breached"].id, "sla_breach"),
            (cases["warned"].id, "sla_warning"),
        ]
        await sla.record_fired(s, found, now)
        breached = found[0].clock
        assert (breached.state, breached.breached_at, breached.breach_fired_at) == (
            "breached",
            jst(5, 10, 10, 40),
            now,
        )
        assert found[1].clock.warned_at == now
        assert await sla.due(s, now) == []  # announced once

        later = await sla.due(s, jst(5, 10, 13, 0))
        assert [(d.clock.case_id, d.event) for d in later] == [
            (cases["warned"].id, "sla_breach"),
            (cases["quiet"].id, "sla_warning"),
        ]

        # Both probes are answered by a range scan of a partial index over running clocks
        # (the worker's own, or the board's wider one), never by reading the table.
        await s.execute(text("SET LOCAL enable_seqscan = off"))
        probes = {
            "deadline_at": "deadline_at <= now()",
            "warning_at": "warned_at IS NULL AND warning_at <= now()",
        }
        for column, probe in probes.items():
            plan = "\n".join(
                await s.scalars(
                    text(f"EXPLAIN SELECT id FROM sla_clocks WHERE state = 'active' AND {probe}")
                )
            )
            assert "Seq Scan" not in plan, plan
            assert f"Index Cond: ({column} <= now())" in plan, plan


async def test_concurrent_workers_get_disjoint_due_clocks(db):
    async with db.unit_of_work() as s:
        cal = await calendar_id(s)
        await sla.create_policy(s, name="Std", calendar_id=cal, first_response_minutes=60)
        for hour in range(9, 15):
            await sla.start_clocks(s, await new_case(s), jst(5, 10, hour))
    now = jst(5, 11, 9)

    first_has_locked = asyncio.Event()
    second_done = asyncio.Event()

    async def worker(limit: int, wait_for: asyncio.Event | None, then: asyncio.Event) -> set[int]:
        async with db.sessionmaker() as session, session.begin():
            if wait_for is not None:
                await wait_for.wait()
            ids = {d.clock.id for d in await sla.due(session, now, limit)}
            then.set()
            if wait_for is None:
                await second_done.wait()  # hold the locks while the other worker looks
            return ids

    a, b = await asyncio.wait_for(
        asyncio.gather(
            worker(4, None, first_has_locked), worker(100, first_has_locked, second_done)
        ),
        timeout=30,
    )
    assert (len(a), len(b)) == (4, 2)
    assert a.isdisjoint(b)
    async with db.unit_of_work() as s:
        assert a | b == set(await s.scalars(select(SlaClock.id)))
