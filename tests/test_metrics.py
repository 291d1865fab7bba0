"""The supervisor's board and the service-level figures, against numbers worked out by hand
from data made here (docs/METRICS.md has the definitions); the board page and the metrics
API, their roles and their refusals."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from babel.support import NullTranslations
from sqlalchemy import select

from helpdesk import metrics, sla
from helpdesk.business_time import BusinessCalendar, parse_weekly
from helpdesk.interactions import add_interaction
from helpdesk.models import (
    AgentPresence,
    Call,
    Case,
    ChatConversation,
    Customer,
    SlaClock,
    Team,
    User,
)
from helpdesk.web import board

TOKYO = ZoneInfo("Asia/Tokyo")
NOW = datetime(2026, 12, 7, 10, 30, tzinfo=TOKYO)
ALWAYS = BusinessCalendar(
    timezone="UTC", weekly=parse_weekly("mon-sun 00:00-24:00"), holiday_region=None
)
_serial = itertools.count(1)


def minutes_ago(n: float) -> datetime:
    return NOW - timedelta(minutes=n)


async def catch_all_policy(session) -> None:  # type: ignore[no-untyped-def]
    """First response 60 minutes, resolution 480, warning at 80 %, around the clock."""
    calendar = await sla.create_calendar(session, "always", ALWAYS)
    await sla.create_policy(
        session,
        name="everything",
        calendar_id=calendar.id,
        first_response_minutes=60,
        next_response_minutes=30,
        resolution_minutes=480,
    )


async def a_customer(session) -> Customer:  # type: ignore[no-untyped-def]
    customer = Customer(name=f"顧客 {next(_serial)}")
    session.add(customer)
    await session.flush()
    return customer


async def a_case(  # type: ignore[no-untyped-def]
    session,
    *,
    team: Team | None,
    started: datetime,
    assignee: User | None = None,
    status: str = "open",
    channel: str = "email",
    clocks: bool = True,
) -> Case:
    """A case opened at `started`, its clocks started then (when `clocks`)."""
    customer = await a_customer(session)
    case = Case(
        customer_id=customer.id,
        subject=f"件名 {next(_serial)}",
        channel=channel,
        team_id=team.id if team else None,
        assignee_id=assignee.id if assignee else None,
        status="new",
        created_at=started,
    )
    session.add(case)
    await session.flush()
    if clocks:
        await sla.start_clocks(session, case, started)
    if status != "new":
        case.status = status
        await session.flush()
    return case


async def clock(session, case: Case, kind: str = "first_response") -> SlaClock:  # type: ignore[no-untyped-def]
    found = await session.scalar(
        select(SlaClock)
        .where(SlaClock.case_id == case.id, SlaClock.kind == kind)
        .execution_options(populate_existing=True)
    )
    assert found is not None
    return found


async def breach(session, case: Case, kind: str = "first_response") -> None:  # type: ignore[no-untyped-def]
    """What the escalation worker records when the clock's deadline passes."""
    c = await clock(session, case, kind)
    await sla.record_fired(session, [sla.DueClock(c, "sla_breach")], c.deadline_at)


async def a_user(session, name: str, role: str, team: Team | None, status: str | None = None):  # type: ignore[no-untyped-def]
    user = User(
        email=f"{name.lower()}@example.com",
        name=name,
        role=role,
        password_hash="x",
        team_id=team.id if team else None,
    )
    session.add(user)
    await session.flush()
    if status is not None:
        session.add(AgentPresence(user_id=user.id, status=status))
        await session.flush()
    return user


def a_call(  # type: ignore[no-untyped-def]
    *,
    started: datetime,
    wait: float | None = None,
    talk: float | None = None,
    rang_at: User | None = None,
    state: str | None = None,
    direction: str = "in",
    ended_unanswered_after: float | None = None,
) -> Call:
    """A call `wait` seconds from ring to answer and `talk` seconds long, or one that ended
    unanswered after `ended_unanswered_after` seconds."""
    answered = started + timedelta(seconds=wait) if wait is not None else None
    if answered is not None:
        ended = answered + timedelta(seconds=talk) if talk is not None else None
        state = state or ("completed" if ended else "answered")
    elif ended_unanswered_after is not None:
        ended = started + timedelta(seconds=ended_unanswered_after)
        state = state or "abandoned"
    else:
        ended, state = None, "ringing"
    return Call(
        call_id=f"call-{next(_serial)}",
        direction=direction,
        state=state,
        started_at=started,
        answered_at=answered,
        ended_at=ended,
        agent_id=rang_at.id if rang_at is not None and answered is not None else None,
        ringing_user_ids=[rang_at.id] if rang_at is not None else [],
    )


def a_chat(  # type: ignore[no-untyped-def]
    customer: Customer,
    team: Team | None,
    *,
    state: str,
    queued: datetime | None = None,
    agent: User | None = None,
    score: int | None = None,
    closed: datetime | None = None,
) -> ChatConversation:
    return ChatConversation(
        token_hash=f"token-{next(_serial)}",
        state=state,
        customer_id=customer.id,
        team_id=team.id if team else None,
        agent_id=agent.id if agent else None,
        visitor_name="訪問者",
        queued_at=queued,
        csat_score=score,
        closed_at=closed,
    )


# -- the board -------------------------------------------------------------------------------


@pytest.fixture
async def desk(db):  # type: ignore[no-untyped-def]
    """Two teams and a desk in every state the board tells apart (numbers in the test)."""
    async with db.unit_of_work() as session:
        await catch_all_policy(session)
        tokyo, osaka = Team(name="Tokyo"), Team(name="Osaka")
        session.add_all([tokyo, osaka])
        await session.flush()
        aoki = await a_user(session, "Aoki", "agent", tokyo, "available")
        baba = await a_user(session, "Baba", "agent", tokyo, "away")
        chiba = await a_user(session, "Chiba", "agent", osaka)  # never signed in
        await a_user(session, "Boss", "supervisor", tokyo, "available")

        # Tokyo: six open cases.
        fine = await a_case(session, team=tokyo, started=minutes_ago(10), assignee=aoki)
        risky = await a_case(session, team=tokyo, started=minutes_ago(50), status="new")
        overdue = await a_case(session, team=tokyo, started=minutes_ago(90), assignee=baba)
        waiting_on_customer = await a_case(
            session, team=tokyo, started=minutes_ago(300), assignee=aoki, status="pending"
        )
        await sla.on_agent_public_reply(session, waiting_on_customer.id, minutes_ago(290))
        await sla.on_status_change(
            session, waiting_on_customer.id, "open", "pending", minutes_ago(280)
        )
        unanswered = await a_case(session, team=tokyo, started=minutes_ago(180))
        await breach(session, unanswered)  # breached 120 minutes ago, still no answer
        late_but_answered = await a_case(
            session, team=tokyo, started=minutes_ago(120), assignee=baba
        )
        await breach(session, late_but_answered)
        await sla.on_agent_public_reply(session, late_but_answered.id, minutes_ago(30))
        # Not open: breached, but solved since; closed long ago.
        solved = await a_case(session, team=tokyo, started=minutes_ago(200))
        await breach(session, solved)
        solved.status = "solved"
        await a_case(session, team=tokyo, started=minutes_ago(5000), status="closed")
        # Osaka: one open case, fine.
        osaka_case = await a_case(session, team=osaka, started=minutes_ago(20), assignee=chiba)
        # No team: one open case, first response overdue (the worker has not run yet).
        orphan = await a_case(session, team=None, started=minutes_ago(75))

        customer = await a_customer(session)
        session.add_all(
            [
                a_chat(customer, tokyo, state="queued", queued=minutes_ago(3)),
                a_chat(customer, tokyo, state="offered", queued=minutes_ago(1)),
                a_chat(customer, tokyo, state="active", queued=minutes_ago(8), agent=aoki),
                a_chat(customer, osaka, state="closed", queued=minutes_ago(9)),
                a_call(started=NOW - timedelta(seconds=40), rang_at=aoki),
                a_call(started=NOW - timedelta(seconds=15), rang_at=chiba),
                a_call(started=NOW - timedelta(hours=3)),  # lost its hangup: stale
                a_call(started=minutes_ago(5), wait=5, talk=60, rang_at=aoki),
            ]
        )
    return {
        "tokyo": tokyo,
        "osaka": osaka,
        "aoki": aoki,
        "baba": baba,
        "chiba": chiba,
        "cases": {
            "fine": fine,
            "risky": risky,
            "overdue": overdue,
            "unanswered": unanswered,
            "late_but_answered": late_but_answered,
            "osaka": osaka_case,
            "orphan": orphan,
        },
    }


def row(snapshot: metrics.BoardSnapshot, team_id: int | None) -> metrics.TeamBoard:
    return next(t for t in snapshot.teams if t.team_id == team_id)


async def test_board_counts_open_work_clocks_in_trouble_and_who_waited_longest_per_team(db, desk):
    async with db.unit_of_work() as session:
        snap = await metrics.board_snapshot(session, now=NOW, tz=TOKYO)
    cases = desk["cases"]

    tokyo = row(snap, desk["tokyo"].id)
    assert (tokyo.name, tokyo.open, tokyo.unassigned) == ("Tokyo", 6, 2)
    # at risk: first response 60 min, warned at 48 min; 50 minutes in, deadline in 10
    assert tokyo.at_risk == 1
    # breached: the overdue one (not yet marked) and the unanswered one; the one answered
    # late is no longer in breach, the solved one is not open
    assert tokyo.breached == 2
    # the customer waiting longest for an answer: the breached, unanswered first response
    assert tokyo.oldest_waiting_since == minutes_ago(180)
    assert tokyo.oldest_waiting_case is not None
    assert tokyo.oldest_waiting_case.id == cases["unanswered"].id
    assert (tokyo.chats_waiting, tokyo.oldest_chat_since) == (2, minutes_ago(3))
    assert (tokyo.calls_ringing, tokyo.oldest_call_since) == (1, NOW - timedelta(seconds=40))

    osaka = row(snap, desk["osaka"].id)
    assert (osaka.open, osaka.unassigned, osaka.at_risk, osaka.breached) == (1, 0, 0, 0)
    assert osaka.oldest_waiting_since == minutes_ago(20)
    assert (osaka.chats_waiting, osaka.calls_ringing) == (0, 1)

    no_team = row(snap, None)
    assert (no_team.open, no_team.unassigned, no_team.breached) == (1, 1, 1)
    assert [t.team_id for t in snap.teams] == [desk["osaka"].id, desk["tokyo"].id, None]

    total = snap.total
    assert (total.open, total.unassigned, total.at_risk, total.breached) == (8, 3, 1, 3)
    assert total.oldest_waiting_case.id == cases["unanswered"].id  # type: ignore[union-attr]
    assert (total.chats_waiting, total.calls_ringing) == (2, 2)
    assert metrics.seconds_since(total.oldest_call_since, NOW) == 40


async def test_the_board_on_three_connections_is_the_board_on_one(db, desk):
    """`board_snapshot_on` runs its parts concurrently; what it finds must not change."""
    for scope in (None, [desk["tokyo"].id]):
        async with db.unit_of_work() as session:
            one = await metrics.board_snapshot(session, now=NOW, tz=TOKYO, team_ids=scope)
        three = await metrics.board_snapshot_on(db, now=NOW, tz=TOKYO, team_ids=scope)
        assert three.as_dict() == one.as_dict()
    assert one.total.open == 6 and one.at_risk and one.breached  # not a comparison of nothing


async def test_board_lists_clocks_at_risk_soonest_first_and_breaches_latest_first(db, desk):
    async with db.unit_of_work() as session:
        snap = await metrics.board_snapshot(session, now=NOW, tz=TOKYO)
    cases = desk["cases"]
    assert [(a.case.id, a.clock, a.deadline_at) for a in snap.at_risk] == [
        (cases["risky"].id, "first_response", minutes_ago(-10))
    ]
    assert [(a.case.id, a.deadline_at) for a in snap.breached] == [
        (cases["orphan"].id, minutes_ago(15)),
        (cases["overdue"].id, minutes_ago(30)),
        (cases["unanswered"].id, minutes_ago(120)),
    ]
    assert all(a.breached for a in snap.breached) and not snap.at_risk[0].breached
    assert snap.breached[1].assignee == "Baba"


async def test_board_shows_agents_with_presence_and_load_available_first(db, desk):
    async with db.unit_of_work() as session:
        snap = await metrics.board_snapshot(session, now=NOW, tz=TOKYO)
    agents = [(a.name, a.status, a.active_chats, a.open_cases) for a in snap.agents]
    # supervisors are not listed; open cases: Aoki has the fine and the pending one
    assert agents == [
        ("Aoki", "available", 1, 2),
        ("Baba", "away", 0, 2),
        ("Chiba", "offline", 0, 1),
    ]


async def test_a_board_for_one_team_counts_only_that_team(db, desk):
    async with db.unit_of_work() as session:
        snap = await metrics.board_snapshot(session, now=NOW, tz=TOKYO, team_ids=[desk["osaka"].id])
    assert [t.team_id for t in snap.teams] == [desk["osaka"].id]
    assert (snap.total.open, snap.total.breached, snap.total.calls_ringing) == (1, 0, 1)
    assert snap.at_risk == [] and snap.breached == []
    assert [a.name for a in snap.agents] == ["Chiba"]


async def test_a_call_ringing_at_two_teams_is_in_both_rows_and_once_in_the_total(db):
    async with db.unit_of_work() as session:
        tokyo, osaka = Team(name="Tokyo"), Team(name="Osaka")
        session.add_all([tokyo, osaka])
        await session.flush()
        aoki = await a_user(session, "Aoki", "agent", tokyo)
        chiba = await a_user(session, "Chiba", "agent", osaka)
        call = a_call(started=NOW - timedelta(seconds=30), rang_at=aoki)
        call.ringing_user_ids = [aoki.id, chiba.id]
        session.add(call)
        await session.flush()
        snap = await metrics.board_snapshot(session, now=NOW, tz=TOKYO)
        just_osaka = await metrics.board_snapshot(session, now=NOW, tz=TOKYO, team_ids=[osaka.id])
    assert [(t.name, t.calls_ringing) for t in snap.teams] == [("Osaka", 1), ("Tokyo", 1)]
    assert snap.total.calls_ringing == 1
    assert metrics.seconds_since(snap.total.oldest_call_since, NOW) == 30
    assert (just_osaka.total.calls_ringing, len(just_osaka.teams)) == (1, 1)


async def test_the_worker_marking_a_breach_changes_nothing_on_the_board(db, desk):
    """Overdue-but-unmarked and marked clocks count the same, so the board does not jump
    when the worker catches up."""
    async with db.unit_of_work() as session:
        before = await metrics.board_snapshot(session, now=NOW, tz=TOKYO)
        await breach(session, desk["cases"]["overdue"])
        after = await metrics.board_snapshot(session, now=NOW, tz=TOKYO)
    assert after.total == before.total
    assert [a.case.id for a in after.breached] == [a.case.id for a in before.breached]


async def test_an_empty_desk_has_an_empty_board(db):
    async with db.unit_of_work() as session:
        snap = await metrics.board_snapshot(session, now=NOW, tz=TOKYO)
    assert snap.teams == [] and snap.agents == []
    assert snap.total.open == 0 and snap.total.oldest_waiting_since is None
    assert snap.today.total.calls.service_level_percent is None


# -- service level ---------------------------------------------------------------------------


@pytest.fixture
async def day(db):  # type: ignore[no-untyped-def]
    """A day of calls, first responses, solved cases and chat ratings (numbers in the tests)."""
    async with db.unit_of_work() as session:
        await catch_all_policy(session)
        tokyo, osaka = Team(name="Tokyo"), Team(name="Osaka")
        session.add_all([tokyo, osaka])
        await session.flush()
        aoki = await a_user(session, "Aoki", "agent", tokyo)
        chiba = await a_user(session, "Chiba", "agent", osaka)
        at_9 = datetime(2026, 12, 7, 9, 10, tzinfo=TOKYO)
        session.add_all(
            [
                a_call(started=at_9, wait=10, talk=300, rang_at=aoki),
                a_call(started=at_9, wait=20, talk=100, rang_at=aoki),  # exactly 20 s: in time
                a_call(started=at_9, wait=45, talk=200, rang_at=aoki),
                a_call(started=at_9, ended_unanswered_after=3, rang_at=aoki),  # short abandon
                a_call(started=at_9, ended_unanswered_after=60, rang_at=aoki),
                a_call(started=at_9, ended_unanswered_after=30, rang_at=aoki, state="missed"),
                a_call(started=minutes_ago(2), wait=5, rang_at=aoki),  # answered, still talking
                a_call(started=at_9, wait=8, talk=60, rang_at=chiba),  # Osaka's
                a_call(started=at_9, wait=1, talk=60, rang_at=aoki, direction="out"),
                a_call(started=minutes_ago(1), rang_at=aoki),  # still ringing: not yet known
                a_call(started=NOW - timedelta(days=1), wait=90, talk=10, rang_at=aoki),
            ]
        )

        async def first_response(channel: str, *, met: bool, hour: int, team=tokyo) -> None:  # type: ignore[no-untyped-def]
            start = datetime(2026, 12, 7, hour, 0, tzinfo=TOKYO)
            case = await a_case(session, team=team, started=start, channel=channel)
            if met:
                await sla.on_agent_public_reply(session, case.id, start + timedelta(minutes=20))
            else:
                await breach(session, case)  # breached at start + 60 minutes

        await first_response("chat", met=True, hour=8)
        await first_response("chat", met=False, hour=8)  # breached at 09:00
        await first_response("email", met=True, hour=9)
        await first_response("email", met=True, hour=9)
        await first_response("email", met=False, hour=7)  # breached at 08:00
        await first_response("phone", met=True, hour=8)
        await first_response("email", met=True, hour=8, team=osaka)
        # settled yesterday: not today's
        yesterday = datetime(2026, 12, 6, 9, 0, tzinfo=TOKYO)
        old = await a_case(session, team=tokyo, started=yesterday, channel="chat")
        await sla.on_agent_public_reply(session, old.id, yesterday + timedelta(minutes=5))

        solved_at = datetime(2026, 12, 7, 9, 30, tzinfo=TOKYO)

        async def solved(*contacts: str, reopened: bool = False, when=solved_at, team=tokyo):  # type: ignore[no-untyped-def]
            case = await a_case(session, team=team, started=minutes_ago(600), clocks=False)
            for kind in contacts:
                await add_interaction(
                    session,
                    customer_id=case.customer_id,
                    case_id=case.id,
                    kind=kind,
                    direction="in",
                    text="お問い合わせ",
                )
            await add_interaction(
                session,
                customer_id=case.customer_id,
                case_id=case.id,
                kind="email",
                direction="out",
                text="回答",
            )
            if reopened:
                await add_interaction(
                    session,
                    customer_id=case.customer_id,
                    case_id=case.id,
                    kind="system",
                    direction="internal",
                    text="status solved → open",
                    meta={"changes": {"status": "open"}},
                )
            case.status, case.solved_at = "solved", when
            await session.flush()
            return case

        await solved("email")  # first contact
        await solved("email", "email")  # the customer had to write twice
        await solved("call", reopened=True)  # reopened
        followed = await solved("chat")  # came back after it closed
        follow_up = await a_case(session, team=tokyo, started=minutes_ago(10), clocks=False)
        follow_up.follow_up_of_id = followed.id
        await solved()  # opened by an agent for the customer, no inbound contact
        await solved("email", when=datetime(2026, 12, 6, 18, 0, tzinfo=TOKYO))  # yesterday
        await solved("email", team=osaka)

        customer = await a_customer(session)
        for score, hour in ((5, 8), (4, 9), (2, 9)):
            session.add(
                a_chat(
                    customer,
                    tokyo,
                    state="closed",
                    score=score,
                    closed=datetime(2026, 12, 7, hour, 15, tzinfo=TOKYO),
                )
            )
        session.add(a_chat(customer, osaka, state="closed", score=3, closed=minutes_ago(20)))
        session.add(a_chat(customer, tokyo, state="closed", score=1, closed=NOW - timedelta(days=1)))  # fmt: skip
        session.add(a_chat(customer, tokyo, state="closed", closed=minutes_ago(20)))  # not rated
    return {"tokyo": tokyo, "osaka": osaka}


async def today(session, team_id: int | None = None) -> metrics.ServiceLevel:  # type: ignore[no-untyped-def]
    start, end = metrics.local_day(NOW.date(), TOKYO)
    return await metrics.service_level(session, start=start, end=end, tz=TOKYO, team_id=team_id)


async def test_service_level_of_a_day_for_one_team(db, day):
    async with db.unit_of_work() as session:
        result = await today(session, day["tokyo"].id)
    calls = result.total.calls
    # 7 inbound calls arrived and are known; the 3-second abandon is left out: 6 offered;
    # answered within 20 s: 10 s, 20 s and 5 s
    assert (calls.arrived, calls.short_abandoned, calls.offered) == (7, 1, 6)
    assert (calls.answered, calls.answered_in_threshold, calls.abandoned) == (4, 3, 2)
    assert calls.service_level_percent == 50.0
    assert calls.abandonment_percent == 33.3
    assert calls.asa_seconds == 20.0  # (10 + 20 + 45 + 5) / 4
    assert calls.aht_seconds == 200.0  # (300 + 100 + 200) / 3: the call in progress is not
    assert result.meets_target is False

    assert (result.total.chat_first_response.met, result.total.chat_first_response.breached) == (1, 1)  # fmt: skip
    assert result.total.chat_first_response.within_target_percent == 50.0
    assert result.total.email_first_response.within_target_percent == 66.7
    assert (result.total.first_response.met, result.total.first_response.breached) == (4, 2)

    assert (result.total.fcr.solved, result.total.fcr.first_contact) == (5, 2)
    assert result.total.fcr.fcr_percent == 40.0

    csat = result.total.csat
    assert (csat.ratings, csat.average, csat.satisfied_percent) == (3, 3.67, 66.7)


async def test_service_level_of_the_whole_desk_adds_every_team(db, day):
    async with db.unit_of_work() as session:
        result = await today(session)
    calls = result.total.calls
    assert (calls.offered, calls.answered, calls.answered_in_threshold) == (7, 5, 4)
    assert calls.service_level_percent == 57.1
    assert calls.asa_seconds == 17.6  # (10 + 20 + 45 + 5 + 8) / 5
    assert calls.aht_seconds == 165.0  # (300 + 100 + 200 + 60) / 4
    assert result.total.email_first_response.within_target_percent == 75.0  # 3 of 4
    assert (result.total.fcr.solved, result.total.fcr.first_contact) == (6, 3)
    assert (result.total.csat.ratings, result.total.csat.average) == (4, 3.5)
    assert result.total.csat.satisfied_percent == 50.0


async def test_service_level_by_hour_puts_each_item_in_its_local_hour(db, day):
    async with db.unit_of_work() as session:
        result = await today(session, day["tokyo"].id)
    assert len(result.hours) == 24
    assert result.hours[0].start == datetime(2026, 12, 7, 0, 0, tzinfo=TOKYO)
    by_hour = {h.start.hour: h.figures for h in result.hours}
    assert by_hour[9].calls.arrived == 6 and by_hour[9].calls.answered_in_threshold == 2
    assert by_hour[9].calls.service_level_percent == 40.0  # 2 of 5 (the short abandon is out)
    assert by_hour[9].first_response.met == 2 and by_hour[9].chat_first_response.breached == 1
    assert by_hour[8].email_first_response.breached == 1
    assert by_hour[9].fcr.solved == 5
    assert (by_hour[9].csat.ratings, by_hour[9].csat.score_total) == (2, 6)
    assert by_hour[3].calls.arrived == 0 and by_hour[3].calls.service_level_percent is None
    # hours add up to the day
    assert sum(h.figures.calls.offered for h in result.hours) == result.total.calls.offered


def test_the_day_is_the_viewers_day():
    """A local day is 23, 24 or 25 hours long, with one bucket for each local hour it has."""
    for tz_name, day, length, buckets in (
        ("America/New_York", datetime(2026, 3, 8), 23, 23),  # spring forward: no 02:00
        ("America/New_York", datetime(2026, 11, 1), 25, 24),  # fall back: 01:00 twice, once
        ("Asia/Kolkata", datetime(2026, 12, 7), 24, 24),  # +05:30
        ("Asia/Tokyo", datetime(2026, 12, 7), 24, 24),
    ):
        tz = ZoneInfo(tz_name)
        start, end = metrics.local_day(day.date(), tz)
        assert end.astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=length), tz_name
        hours = metrics._local_hours(start, end, tz)
        assert len(hours) == buckets, tz_name
        assert (hours[0], hours[-1]) == (day, day.replace(hour=23)), tz_name


async def test_service_level_refuses_a_period_it_cannot_measure(db):
    async with db.unit_of_work() as session:
        with pytest.raises(ValueError, match="after start"):
            await metrics.service_level(session, start=NOW, end=NOW, team_id=None)
        with pytest.raises(ValueError, match="at most 31 days"):
            await metrics.service_level(
                session, start=NOW - timedelta(days=32), end=NOW, team_id=None
            )
        with pytest.raises(ValueError, match="aware"):
            await metrics.service_level(
                session, start=datetime(2026, 1, 1), end=datetime(2026, 1, 2), team_id=None
            )


def test_percentages_are_none_when_nothing_was_measured():
    empty = metrics.Figures()
    assert empty.calls.service_level_percent is None and empty.calls.asa_seconds is None
    assert empty.fcr.fcr_percent is None and empty.csat.average is None
    both = metrics.CallFigures(arrived=2, answered=1) + metrics.CallFigures(arrived=1)
    assert (both.arrived, both.answered) == (3, 1)


# -- the web side ----------------------------------------------------------------------------


def test_waits_and_big_numbers_are_written_to_fit_a_tile():
    from helpdesk.i18n import Viewer

    viewer = Viewer("en", NullTranslations(), TOKYO)
    assert [board.format_age(s, viewer) for s in (None, 42, 725, 3725, 2 * 86400 + 4 * 3600)] == [
        "–",
        "0:42",
        "12:05",
        "1:02:05",
        "2 d 04 h",
    ]
    assert (
        board.format_seconds(17.6, viewer) == "18 s" and board.format_seconds(245, viewer) == "4:05"
    )
    assert board.format_percent(57.1) == "57.1%" and board.format_percent(50.0) == "50%"
    assert [board.fit_class(v) for v in (7, 1892, 50000, "3:00:19", "28日22時間")] == [
        "fit-100",
        "fit-80",
        "fit-65",
        "fit-50",
        "fit-40",
    ]


async def test_agents_may_not_see_the_board_or_the_metrics(client, agent):
    for path in ("/api/metrics/service-level", "/api/sla/board", "/board"):
        r = await client.get(path, headers=agent.headers)
        assert r.status_code == 403, path
    r = await client.get("/api/metrics/service-level", headers=agent.headers)
    assert r.json()["error"]["code"] == "forbidden"


async def test_the_api_gives_todays_service_level_in_the_viewers_timezone(client, supervisor):
    r = await client.get("/api/metrics/service-level", headers=supervisor.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["timezone"] == "Asia/Tokyo"  # the desk's default: this user has none
    today = datetime.now(TOKYO).date()
    assert body["from"] == datetime.combine(today, datetime.min.time(), TOKYO).isoformat()
    assert len(body["hours"]) == 24
    assert body["targets"] == {
        "threshold_seconds": 20,
        "target_percent": 80,
        "short_abandon_seconds": 5,
    }
    assert body["calls"]["service_level_percent"] is None and body["meets_target"] is None
    assert set(body["first_response"]) == {"chat", "email", "all"}


async def test_the_api_counts_a_period_and_a_team(client, make_staff, db, day):
    boss = await make_staff("supervisor")
    r = await client.get(
        "/api/metrics/service-level",
        params={"from": "2026-12-07", "to": "2026-12-07", "team": str(day["tokyo"].id)},
        headers=boss.headers,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["from"] == "2026-12-07T00:00:00+09:00" and body["to"] == "2026-12-08T00:00:00+09:00"
    assert body["calls"]["service_level_percent"] == 50.0
    assert body["calls"]["offered"] == 6 and body["calls"]["asa_seconds"] == 20.0
    assert body["fcr"] == {"solved": 5, "first_contact": 2, "fcr_percent": 40.0}
    assert body["csat"]["average"] == 3.67
    assert body["hours"][9]["calls"]["arrived"] == 6
    # a datetime range with an offset, half of the day: the 9 o'clock calls only
    r = await client.get(
        "/api/metrics/service-level",
        params={"from": "2026-12-07T09:00:00+09:00", "to": "2026-12-07T09:59:59+09:00"},
        headers=boss.headers,
    )
    assert r.json()["calls"]["arrived"] == 7  # six of Tokyo's, one of Osaka's
    assert len(r.json()["hours"]) == 1


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"from": "yesterday"}, "from", "from must be a date (2026-12-01) or a date and time"),
        ({"from": "2026-02-30"}, "from", "not '2026-02-30'"),
        ({"from": "2026-12-07", "to": "2026-12-07T25:00"}, "to", "to must be a date"),
        ({"to": "2026-12-07"}, "from", "from is required when to is given"),
        ({"from": "2026-12-07", "to": "2026-12-06"}, "to", "must be after from"),
        ({"from": "2026-12-07T10:00+09:00", "to": "2026-12-07T10:00+09:00"}, "to", "after"),
        ({"from": "2026-10-01", "to": "2026-12-01"}, "to", "62 days long; ask for at most 31"),
        ({"team": "tokyo"}, "team", "team must be a team id or 'all'"),
        ({"team": "4242"}, "team", "there is no team 4242"),
    ],
)
async def test_the_api_says_precisely_what_is_wrong_with_a_request(
    client, supervisor, params, field, message
):
    r = await client.get("/api/metrics/service-level", params=params, headers=supervisor.headers)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == field
    assert message in error["message"]


async def test_a_team_supervisor_watches_their_own_team_and_admins_every_team(
    client, make_staff, db
):
    async with db.unit_of_work() as session:
        osaka = Team(name="Osaka")
        session.add(osaka)
        await session.flush()
        osaka_id = osaka.id
    boss = await make_staff("supervisor", team_name="Tokyo")
    async with db.unit_of_work() as session:
        await a_case(session, team=osaka, started=datetime.now(UTC), clocks=False)
    r = await client.get("/api/sla/board", headers=boss.headers)
    assert [t["name"] for t in r.json()["teams"]] == ["Tokyo"]
    assert r.json()["total"]["open"] == 0
    # Another team's board, or all of them, is refused by name (helpdesk/visibility.py).
    for team in ("all", osaka_id):
        r = await client.get("/api/sla/board", params={"team": team}, headers=boss.headers)
        assert r.status_code == 403
        assert "your own team" in r.json()["error"]["message"]
    admin = await make_staff("admin")
    r = await client.get("/api/sla/board", headers=admin.headers)
    assert r.json()["total"]["open"] == 1  # an admin sees every team
    r = await client.get("/api/sla/board", params={"team": "all"}, headers=admin.headers)
    assert [t["name"] for t in r.json()["teams"]] == ["Osaka", "Tokyo"]
    r = await client.get("/api/sla/board", params={"team": osaka_id}, headers=admin.headers)
    assert [t["name"] for t in r.json()["teams"]] == ["Osaka"]


async def test_the_board_page_and_its_live_region(client, make_staff, db):
    boss = await make_staff("supervisor", team_name="Tokyo")
    async with db.unit_of_work() as session:
        await catch_all_policy(session)
        team = await session.scalar(select(Team).where(Team.name == "Tokyo"))
        case = await a_case(session, team=team, started=datetime.now(UTC) - timedelta(hours=2))
        await breach(session, case)
    page = await client.get("/board", headers=boss.headers)
    assert page.status_code == 200
    html = page.text
    assert "<html" in html and 'src="/static/board.js"' in html and "<script>" not in html
    assert 'aria-current="page">Tokyo</a>' in html
    assert 'data-metric="breached"><span class="label">Breached</span><span class="value fit-100">1<' in html  # fmt: skip
    assert f'href="/cases/{case.id}"' in html
    assert 'hx-trigger="board-refresh from:body, every 15s"' in html
    assert "style=" not in html  # the CSP allows no inline styles
    assert 'href="/board?team=all"' not in html  # a team's supervisor watches their team
    fragment = await client.get(
        "/board", params={"team": team.id}, headers={**boss.headers, "HX-Request": "true"}
    )
    assert fragment.status_code == 200
    assert fragment.text.lstrip().startswith('<main id="board"')
    assert "<html" not in fragment.text
    assert f'hx-get="/board?team={team.id}"' in fragment.text


async def test_the_board_page_refuses_an_unknown_team(client, supervisor):
    r = await client.get("/board", params={"team": "999"}, headers=supervisor.headers)
    assert r.status_code == 422
    assert "there is no team 999" in r.text


async def test_supervisors_and_admins_find_the_board_in_the_menu(client, make_staff):
    boss, worker = await make_staff("supervisor"), await make_staff("agent")
    assert 'href="/board"' in (await client.get("/cases", headers=boss.headers)).text
    assert 'href="/board"' not in (await client.get("/cases", headers=worker.headers)).text
