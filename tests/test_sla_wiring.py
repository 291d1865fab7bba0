"""The SLA clocks as the channels drive them: a case opened by any channel starts them, a
person's public answer (email sent, chat message, answered call) meets the response clocks,
the customer's next message starts next response, status, priority and tier changes pause,
meet or re-target them — and nothing automatic ever counts as an answer.

The policies here run on a 24/7 calendar, so business minutes are wall-clock minutes and the
channels' own `now` can be checked against stored deadlines.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest
from sqlalchemy import select

from cti.events import CallEvent
from helpdesk import calls, cases, chat, customers, sla
from helpdesk.business_time import BusinessCalendar, parse_weekly
from helpdesk.mail import ingest, outbound
from helpdesk.models import Case, SlaClock, Team
from tests.test_chat_routing import new_chat, online, route  # noqa: F401 (fixture)

ALWAYS = BusinessCalendar(timezone="UTC", weekly=parse_weekly("mon-sun 00:00-24:00"))


@pytest.fixture
async def policies(db) -> dict[str, int]:
    """Urgent cases: 15/30/120 minutes; everyone else: 60/240/1440; gold tier: 30/60/480."""
    async with db.unit_of_work() as s:
        cal = (await sla.create_calendar(s, "Always", ALWAYS)).id
        urgent = await sla.create_policy(
            s,
            name="Urgent",
            position=10,
            calendar_id=cal,
            conditions={"priority": ["urgent"]},
            first_response_minutes=15,
            next_response_minutes=30,
            resolution_minutes=120,
        )
        gold = await sla.create_policy(
            s,
            name="Gold",
            position=20,
            calendar_id=cal,
            conditions={"tier": ["gold"]},
            first_response_minutes=30,
            next_response_minutes=60,
            resolution_minutes=480,
        )
        everyone = await sla.create_policy(
            s,
            name="Everyone",
            position=90,
            calendar_id=cal,
            first_response_minutes=60,
            next_response_minutes=240,
            resolution_minutes=1440,
        )
    return {"urgent": urgent.id, "gold": gold.id, "everyone": everyone.id}


async def clocks(db, case_id: int) -> dict[str, SlaClock]:
    async with db.unit_of_work() as s:
        rows = await s.scalars(select(SlaClock).where(SlaClock.case_id == case_id))
        return {c.kind: c for c in rows}


async def new_customer(db, *, tier: str = "standard", email: str | None = None) -> int:
    async with db.unit_of_work() as s:
        c = await customers.create_customer(
            s,
            customers.CustomerInput(
                name="山田 太郎",
                tier=tier,
                identities=[customers.IdentityInput("email", email)] if email else [],
            ),
        )
        return c.id


async def new_case(db, customer_id: int, *, priority: str = "normal", channel: str = "phone"):
    async with db.unit_of_work() as s:
        case = await cases.create_case(
            s,
            cases.CaseInput(
                customer_id=customer_id, subject="請求書", priority=priority, channel=channel
            ),
            author_user_id=None,
        )
        return case.id


def close_to(value: datetime | None, expected: datetime, seconds: float = 30) -> bool:
    return value is not None and abs((value - expected).total_seconds()) < seconds


async def test_a_new_case_starts_first_response_and_resolution_by_its_policy(db, policies):
    before = datetime.now(UTC)
    case_id = await new_case(db, await new_customer(db), priority="urgent")
    got = await clocks(db, case_id)
    assert set(got) == {"first_response", "resolution"}
    assert {c.policy_id for c in got.values()} == {policies["urgent"]}
    assert close_to(got["first_response"].deadline_at, before + timedelta(minutes=15))
    assert close_to(got["resolution"].deadline_at, before + timedelta(minutes=120))
    assert close_to(got["first_response"].warning_at, before + timedelta(minutes=12))


async def test_no_policy_means_no_clocks(db):
    case_id = await new_case(db, await new_customer(db))
    assert await clocks(db, case_id) == {}


async def test_status_changes_pause_meet_and_reopen(db, policies, agent):
    case_id = await new_case(db, await new_customer(db))
    async with db.unit_of_work() as s:
        await cases.update_case(s, case_id, {"status": "pending"}, actor_user_id=agent.user.id)
    got = await clocks(db, case_id)
    assert {c.state for c in got.values()} == {"paused"}
    assert got["first_response"].deadline_at is None

    async with db.unit_of_work() as s:
        await cases.update_case(s, case_id, {"status": "open"}, actor_user_id=agent.user.id)
    assert {c.state for c in (await clocks(db, case_id)).values()} == {"active"}

    async with db.unit_of_work() as s:
        await cases.update_case(s, case_id, {"status": "solved"}, actor_user_id=agent.user.id)
    got = await clocks(db, case_id)
    # Solving meets resolution, never first response (a status change is not an answer).
    assert got["resolution"].state == "met"
    assert got["first_response"].state == "paused"

    async with db.unit_of_work() as s:
        await cases.update_case(s, case_id, {"status": "open"}, actor_user_id=agent.user.id)
    got = await clocks(db, case_id)
    assert got["resolution"].state == "active" and got["first_response"].state == "active"


async def test_a_priority_change_rechooses_the_policy_and_retargets(db, policies, agent):
    before = datetime.now(UTC)
    case_id = await new_case(db, await new_customer(db))
    assert (await clocks(db, case_id))["first_response"].policy_id == policies["everyone"]
    async with db.unit_of_work() as s:
        await cases.update_case(s, case_id, {"priority": "urgent"}, actor_user_id=agent.user.id)
    got = await clocks(db, case_id)
    assert {c.policy_id for c in got.values()} == {policies["urgent"]}
    # The time already spent counts: the new target runs from the case's start.
    assert close_to(got["first_response"].deadline_at, before + timedelta(minutes=15))


async def test_a_tier_change_retargets_the_customers_open_cases(db, policies):
    before = datetime.now(UTC)
    customer_id = await new_customer(db)
    case_id = await new_case(db, customer_id)
    async with db.unit_of_work() as s:
        await customers.update_customer(s, customer_id, {"tier": "gold"})
    got = await clocks(db, case_id)
    assert got["resolution"].policy_id == policies["gold"]
    assert close_to(got["resolution"].deadline_at, before + timedelta(minutes=480))


def _mail(*, message_id: str, subject: str, body: str, **headers: str) -> bytes:
    m = EmailMessage()
    m["From"] = "山田 <yamada@example.jp>"
    m["To"] = "support@localhost"
    m["Subject"] = subject
    m["Message-ID"] = message_id
    for name, value in headers.items():
        m[name.replace("_", "-")] = value
    m.set_content(body)
    return bytes(m)


async def test_email_the_acknowledgement_is_not_an_answer_an_agents_reply_is(
    db, policies, agent, settings
):
    async with db.unit_of_work() as s:
        first = await ingest.ingest_message(
            s,
            _mail(message_id="<q1@example.jp>", subject="請求書", body="届きません"),
            settings=settings,
            source="test",
        )
    assert first.status == "created"
    got = await clocks(db, first.case_id)
    # Whether or not an acknowledgement went out, first response still runs.
    assert got["first_response"].state == "active"

    async with db.unit_of_work() as s:
        await outbound.reply_to_case(
            s, settings, case_id=first.case_id, author_id=agent.user.id, text="確認します"
        )
    got = await clocks(db, first.case_id)
    assert got["first_response"].state == "met" and "next_response" not in got

    # The customer writes again: next response starts; a second mail does not push it out.
    async with db.unit_of_work() as s:
        await ingest.ingest_message(
            s,
            _mail(
                message_id="<q2@example.jp>",
                subject=f"Re: [#{first.case_number}] 請求書",
                body="まだですか",
                In_Reply_To="<q1@example.jp>",
            ),
            settings=settings,
            source="test",
        )
    started = (await clocks(db, first.case_id))["next_response"]
    assert started.state == "active"
    async with db.unit_of_work() as s:
        await ingest.ingest_message(
            s,
            _mail(
                message_id="<q3@example.jp>",
                subject="Re: 請求書",
                body="急ぎです",
                In_Reply_To="<q2@example.jp>",
            ),
            settings=settings,
            source="test",
        )
    again = (await clocks(db, first.case_id))["next_response"]
    assert again.deadline_at == started.deadline_at

    async with db.unit_of_work() as s:
        await outbound.reply_to_case(
            s, settings, case_id=first.case_id, author_id=agent.user.id, text="お待たせしました"
        )
    assert (await clocks(db, first.case_id))["next_response"].state == "met"


async def test_email_a_reply_while_pending_resumes_the_clocks(db, policies, agent, settings):
    async with db.unit_of_work() as s:
        first = await ingest.ingest_message(
            s,
            _mail(message_id="<p1@example.jp>", subject="住所変更", body="お願いします"),
            settings=settings,
            source="test",
        )
    async with db.unit_of_work() as s:
        await cases.update_case(
            s, first.case_id, {"status": "pending"}, actor_user_id=agent.user.id
        )
    assert (await clocks(db, first.case_id))["resolution"].state == "paused"
    async with db.unit_of_work() as s:
        await ingest.ingest_message(
            s,
            _mail(
                message_id="<p2@example.jp>",
                subject="Re: 住所変更",
                body="新住所です",
                In_Reply_To="<p1@example.jp>",
            ),
            settings=settings,
            source="test",
        )
    got = await clocks(db, first.case_id)
    assert got["resolution"].state == "active" and got["first_response"].state == "active"


async def test_chat_the_agents_message_answers_the_visitors_next_one_asks(db, policies, online):  # noqa: F811
    agent = await online("Chat Agent")
    conv_id = await new_chat(db, email="chat.sla@example.jp")
    routed = await route(db)
    assert routed.offered
    async with db.unit_of_work() as s:
        conv = await chat.accept(s, conv_id, agent)
    got = await clocks(db, conv.case_id)
    # Accepting (and the "joined" system line) is not an answer.
    assert got["first_response"].state == "active"
    async with db.unit_of_work() as s:
        user = await s.get(type(agent), agent.id)
        await chat.post(s, conv_id, sender="agent", body="はい", client_id="a1", author=user)
    got = await clocks(db, conv.case_id)
    assert got["first_response"].state == "met"
    async with db.unit_of_work() as s:
        await chat.post(s, conv_id, sender="visitor", body="もう一つ", client_id="v2")
    assert (await clocks(db, conv.case_id))["next_response"].state == "active"
    async with db.unit_of_work() as s:
        user = await s.get(type(agent), agent.id)
        await chat.post(s, conv_id, sender="agent", body="どうぞ", client_id="a2", author=user)
    assert (await clocks(db, conv.case_id))["next_response"].state == "met"


async def test_an_answered_call_tied_to_a_case_is_an_answer_a_missed_one_is_not(
    db, policies, agent
):
    async with db.unit_of_work() as s:
        c = await customers.create_customer(
            s,
            customers.CustomerInput(
                name="電話 一郎", identities=[customers.IdentityInput("phone", "03-1234-5678")]
            ),
        )
        customer_id = c.id
    case_id = await new_case(db, customer_id)

    call_id = f"sla-{uuid.uuid4().hex[:8]}"
    async with db.unit_of_work() as s:
        ring = await calls.apply_event(
            s,
            CallEvent("ring", call_id, from_number="0312345678", agents=("201",)),
            region="JP",
        )
        call_pk = ring.call.id
    async with db.unit_of_work() as s:
        await calls.attach(s, call_pk, user_id=agent.user.id, case_id=case_id)
    # Ringing with the case attached is not yet an answer.
    assert (await clocks(db, case_id))["first_response"].state == "active"
    async with db.unit_of_work() as s:
        await calls.apply_event(s, CallEvent("answer", call_id, agents=("201",)), region="JP")
    assert (await clocks(db, case_id))["first_response"].state == "met"

    # A missed call's call-back case waits for its answer.
    missed_id = f"sla-{uuid.uuid4().hex[:8]}"
    async with db.unit_of_work() as s:
        await calls.apply_event(
            s,
            CallEvent("ring", missed_id, from_number="0312345678", agents=("201",)),
            region="JP",
        )
    async with db.unit_of_work() as s:
        await calls.apply_event(s, CallEvent("hangup", missed_id, cause="noAnswer"), region="JP")
    async with db.unit_of_work() as s:
        callback = await s.scalar(
            select(Case.id).where(Case.customer_id == customer_id, Case.id != case_id)
        )
    assert callback is not None
    assert (await clocks(db, callback))["first_response"].state == "active"


async def test_the_screen_pop_card_and_the_case_api_show_the_clocks(db, policies, client, agent):
    customer_id = await new_customer(db)
    case_id = await new_case(db, customer_id, priority="urgent")
    async with db.unit_of_work() as s:
        card = await calls.customer_card(s, customer_id)
    (open_case,) = card["open_cases"]
    assert open_case["sla"]["clock"] == "first_response"
    assert open_case["sla"]["state"] == "active"
    deadline = (await clocks(db, case_id))["first_response"].deadline_at
    assert datetime.fromisoformat(open_case["sla"]["deadline_at"]) == deadline

    # Past its warning time the card says at risk; breached once the worker says so.
    async with db.unit_of_work() as s:
        clock = await s.scalar(
            select(SlaClock).where(SlaClock.case_id == case_id, SlaClock.kind == "first_response")
        )
        clock.warning_at = datetime.now(UTC) - timedelta(seconds=1)
    async with db.unit_of_work() as s:
        card = await calls.customer_card(s, customer_id)
    assert card["open_cases"][0]["sla"]["state"] == "at_risk"

    response = await client.get(f"/api/cases/{case_id}", headers=agent.headers)
    assert response.status_code == 200
    got = {c["kind"]: c for c in response.json()["sla"]}
    assert set(got) == {"first_response", "resolution"}
    assert got["first_response"]["at_risk"] is True
    assert got["resolution"]["at_risk"] is False
    assert got["resolution"]["target_minutes"] == 120


async def test_team_condition_follows_a_team_change(db, agent):
    async with db.unit_of_work() as s:
        team = Team(name="VIP desk")
        s.add(team)
        await s.flush()
        cal = (await sla.create_calendar(s, "Always", ALWAYS)).id
        vip = await sla.create_policy(
            s,
            name="VIP team",
            position=1,
            calendar_id=cal,
            conditions={"team_id": [team.id]},
            first_response_minutes=5,
            resolution_minutes=60,
        )
        team_id = team.id
    case_id = await new_case(db, await new_customer(db))
    assert await clocks(db, case_id) == {}  # no policy for a case without the team
    async with db.unit_of_work() as s:
        await cases.update_case(s, case_id, {"team_id": team_id}, actor_user_id=agent.user.id)
    got = await clocks(db, case_id)
    # Only resolution starts on a re-choice: whether someone already answered is unknown.
    assert set(got) == {"resolution"} and got["resolution"].policy_id == vip.id


async def test_the_case_page_lists_the_clocks_in_the_viewers_language(
    db, policies, client, agent, signed_in
):
    case_id = await new_case(db, await new_customer(db), priority="urgent")
    async with db.unit_of_work() as s:
        await cases.update_case(s, case_id, {"status": "pending"}, actor_user_id=agent.user.id)
    page = await client.get(f"/cases/{case_id}", headers={"Accept-Language": "ja"})
    assert page.status_code == 200
    html = page.text
    assert 'data-kind="first_response" data-state="paused"' in html
    assert 'data-kind="resolution" data-state="paused"' in html
    assert "初回応答" in html and "一時停止" in html
