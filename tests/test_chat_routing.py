"""Chat routing in the domain layer: who gets an offer, capacity, teams, lapsing offers,
abandoned chats, queue positions, accept/transfer, and which customer a visitor is.

No sockets and no sleeps: agents are put "online" by writing their presence and socket rows,
the router is run by hand (`chat.route`), and a lapsed offer or a gone visitor is made by
moving a timestamp into the past.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text

from helpdesk import chat, events, presence
from helpdesk.customers import CustomerInput, IdentityInput, create_customer
from helpdesk.errors import Conflict, Forbidden, InvalidInput
from helpdesk.models import (
    AgentPresence,
    AgentSocket,
    Case,
    ChatConversation,
    ChatMessage,
    ContactIdentity,
    Customer,
    Interaction,
    Team,
    User,
)
from helpdesk.opening_hours import OpeningHours

REGION = "JP"
OFFER = 20.0
ABANDON = 120.0


# -- helpers --------------------------------------------------------------------------------


@pytest.fixture
def published(monkeypatch) -> list[events.Event]:
    """Every event published (committed or not), in order."""
    seen: list[events.Event] = []
    original = events.publish

    async def record(session, event: events.Event) -> None:
        seen.append(event)
        await original(session, event)

    monkeypatch.setattr(events, "publish", record)
    return seen


def of_type(published: list[events.Event], type_: str) -> list[events.Event]:
    return [e for e in published if e.type == type_]


@pytest.fixture
def online(db, make_staff) -> Callable:
    """An agent who chose `available` and has an agent socket open."""

    async def make(
        name: str, *, team: str | None = None, capacity: int = 3, role: str = "agent"
    ) -> User:
        staff = await make_staff(role, name=name, team_name=team)
        async with db.unit_of_work() as session:
            session.add(
                AgentPresence(user_id=staff.user.id, status="available", chat_capacity=capacity)
            )
            session.add(AgentSocket(id=uuid.uuid4().hex, user_id=staff.user.id, process="test"))
        return staff.user

    return make


async def new_chat(
    db,
    name: str = "山田 花子",
    *,
    team: str | None = None,
    email: str | None = None,
    visitor_id: str | None = None,
    body: str = "こんにちは",
) -> int:
    """`hello`, then the visitor's first message: the chat is queued."""
    async with db.unit_of_work() as session:
        conv, token = await chat.start(
            session,
            chat.VisitorInput(name=name, email=email, visitor_id=visitor_id, team=team),
            region=REGION,
        )
        assert token and conv.state == "new"
        await chat.post(
            session, conv.id, sender="visitor", body=body, client_id=uuid.uuid4().hex[:12]
        )
        return conv.id


async def route(
    db, *, offer_seconds: float = OFFER, abandon_seconds: float = ABANDON
) -> chat.Routed:
    async with db.unit_of_work() as session:
        return await chat.route(
            session, offer_seconds=offer_seconds, abandon_seconds=abandon_seconds
        )


async def load(db, conv_id: int) -> ChatConversation:
    async with db.unit_of_work() as session:
        conv = await session.get(ChatConversation, conv_id)
        assert conv is not None
        return conv


async def sql(db, statement: str, **params: object) -> None:
    async with db.unit_of_work() as session:
        await session.execute(text(statement), params)


async def lapse(db, conv_id: int) -> None:
    """The offer's time is up (without waiting for it)."""
    await sql(
        db,
        "UPDATE chat_conversations SET offer_expires_at = now() - interval '1 second' "
        "WHERE id = :id AND state = 'offered'",
        id=conv_id,
    )


async def busy_with(db, agent: User, n: int, *, state: str = "active", ago: float = 300) -> None:
    """Give `agent` n chats of their own (active, or closed: a past chat), accepted `ago`
    seconds back."""
    for _ in range(n):
        conv_id = await new_chat(db, "Earlier visitor")
        await sql(
            db,
            "UPDATE chat_conversations SET state = CAST(:state AS text), agent_id = :agent, "
            "accepted_at = now() - make_interval(secs => :ago), "
            "closed_at = CASE WHEN CAST(:state AS text) = 'closed' THEN now() END WHERE id = :id",
            state=state,
            agent=agent.id,
            ago=float(ago),
            id=conv_id,
        )


async def accept(db, conv_id: int, user: User) -> ChatConversation:
    async with db.unit_of_work() as session:
        return await chat.accept(session, conv_id, user)


async def team_id(db, name: str) -> int:
    async with db.unit_of_work() as session:
        found = await session.scalar(select(Team.id).where(Team.name == name))
        assert found is not None
        return found


async def active_chats(db, user: User) -> tuple[int, str]:
    async with db.unit_of_work() as session:
        shown = await presence.get_presence(session, user.id)
        return shown.active_chats, shown.status


# -- who gets the offer ----------------------------------------------------------------------


async def test_the_offer_goes_to_the_agent_with_the_fewest_chats_under_capacity(
    db, online, published
):
    a = await online("A")
    b = await online("B")
    await busy_with(db, a, 2)
    await busy_with(db, b, 1)

    conv_id = await new_chat(db)
    before = datetime.now(UTC)
    done = await route(db, offer_seconds=15)

    assert done.worked and done.offered == 1 and done.lapsed == 0
    conv = await load(db, conv_id)
    assert conv.state == "offered" and conv.offered_to == b.id and conv.agent_id is None
    assert before + timedelta(seconds=14) < conv.offer_expires_at < before + timedelta(seconds=16)
    [offer] = of_type(published, "chat_offered")
    assert offer.users == (b.id,)
    assert offer.data["conversation"]["id"] == conv_id
    assert offer.data["conversation"]["preview"] == "こんにちは"
    assert offer.data["expires_at"] == conv.offer_expires_at.isoformat()


async def test_ties_go_to_who_never_had_a_chat_then_to_the_longest_since_the_last(db, online):
    recent = await online("Recent")
    old = await online("Old")
    never = await online("Never")
    await busy_with(db, recent, 1, state="closed", ago=60)
    await busy_with(db, old, 1, state="closed", ago=3600)

    chats = [await new_chat(db, f"Visitor {n}") for n in range(3)]
    done = await route(db)

    assert done.offered == 3
    offered_to = [(await load(db, c)).offered_to for c in chats]
    # one pass, in queue order: each offer counts as a chat for the next pick
    assert offered_to == [never.id, old.id, recent.id]


async def test_capacity_counts_active_chats_and_pending_offers(db, online):
    one = await online("One", capacity=1)
    three = await online("Three", capacity=3)
    chats = [await new_chat(db, f"Visitor {n}") for n in range(5)]

    done = await route(db)

    assert done.offered == 4
    got = [(await load(db, c)).offered_to for c in chats]
    # the first is a tie (both empty, neither ever had a chat): the lower id
    assert got == [one.id, three.id, three.id, three.id, None]
    assert (await load(db, chats[4])).state == "queued"

    # accepting turns an offer into an active chat: the load is the same, still no room
    await accept(db, chats[0], one)
    for conv_id in chats[1:4]:
        await accept(db, conv_id, three)
    assert await active_chats(db, one) == (1, "busy")
    assert await active_chats(db, three) == (3, "busy")
    again = await route(db)
    assert again.worked and again.offered == 0
    assert (await load(db, chats[4])).state == "queued"

    # One's chat ends: room for exactly one more, with One
    async with db.unit_of_work() as session:
        await chat.close(session, chats[0], by="agent", actor=one)
    assert await active_chats(db, one) == (0, "available")
    assert (await route(db)).offered == 1
    conv = await load(db, chats[4])
    assert conv.state == "offered" and conv.offered_to == one.id


async def test_an_agent_at_capacity_with_an_unanswered_offer_gets_no_second_offer(db, online):
    a = await online("A", capacity=3)
    await busy_with(db, a, 2)
    first = await new_chat(db)
    second = await new_chat(db)
    assert (await route(db)).offered == 1
    assert (await load(db, first)).offered_to == a.id
    conv = await load(db, second)
    assert conv.state == "queued" and conv.offered_to is None


UNAVAILABLE = {
    "away": "UPDATE agent_presence SET status = 'away' WHERE user_id = :id",
    "busy": "UPDATE agent_presence SET status = 'busy' WHERE user_id = :id",
    "offline": "UPDATE agent_presence SET status = 'offline' WHERE user_id = :id",
    "on a call": "UPDATE agent_presence SET on_call = true WHERE user_id = :id",
    "no socket": "DELETE FROM agent_sockets WHERE user_id = :id",
    "deactivated": "UPDATE users SET is_active = false WHERE id = :id",
    "no presence row": "DELETE FROM agent_presence WHERE user_id = :id",
}


@pytest.mark.parametrize("why", [None, *UNAVAILABLE])
async def test_an_agent_who_cannot_take_chats_gets_no_offer(db, online, why):
    """X has nothing to do and would win on load; Y already has a chat. The visitor queues
    while X is available; then X becomes unable to take chats (or not: the control)."""
    x = await online("X")
    y = await online("Y")
    await busy_with(db, y, 1)
    conv_id = await new_chat(db)
    if why is not None:
        await sql(db, UNAVAILABLE[why], id=x.id)

    assert (await route(db)).offered == 1
    conv = await load(db, conv_id)
    assert conv.offered_to == (x.id if why is None else y.id)


async def test_nobody_who_can_take_it_leaves_the_chat_queued(db, online):
    x = await online("X")
    conv_id = await new_chat(db)
    async with db.unit_of_work() as session:
        await presence.set_on_call(session, x.id, True)  # as the CTI side does
    done = await route(db)
    assert done.worked and done.offered == 0
    conv = await load(db, conv_id)
    assert conv.state == "queued" and conv.last_position == 1
    # the call ends: the next pass offers it
    async with db.unit_of_work() as session:
        await presence.set_on_call(session, x.id, False)
    assert (await route(db)).offered == 1
    assert (await load(db, conv_id)).offered_to == x.id


async def test_team_queues(db, online):
    billing = await online("Bill", team="Billing")
    support = await online("Sue", team="Support")
    await busy_with(db, billing, 2)  # busier than Sue, still the only one for Billing

    for_billing = await new_chat(db, "Billing visitor", team="Billing")
    for_support = await new_chat(db, "Support visitor", team="Support")
    assert (await route(db)).offered == 2
    assert (await load(db, for_billing)).offered_to == billing.id
    assert (await load(db, for_support)).offered_to == support.id
    assert (await load(db, for_billing)).team_id == await team_id(db, "Billing")

    # Billing is now full (2 active + 1 offer); a second Billing chat waits even though Sue
    # has room, while a chat with no team goes to anyone with room
    more_billing = await new_chat(db, "Second billing visitor", team="Billing")
    no_team = await new_chat(db, "Anyone visitor")
    assert (await route(db)).offered == 1
    assert (await load(db, more_billing)).state == "queued"
    assert (await load(db, no_team)).offered_to == support.id

    # a team may also be named by its id
    async with db.unit_of_work() as session:
        by_id, _ = await chat.start(
            session,
            chat.VisitorInput(name="By id", team=str(await team_id(db, "Support"))),
            region=REGION,
        )
        assert by_id.team_id == await team_id(db, "Support")
        with pytest.raises(InvalidInput, match="no team 'Nope'"):
            await chat.start(session, chat.VisitorInput(name="x", team="Nope"), region=REGION)


# -- lapsing offers -------------------------------------------------------------------------


async def test_a_lapsed_offer_moves_on_then_starts_a_new_round(db, online, published):
    a = await online("A")
    b = await online("B")
    conv_id = await new_chat(db)
    await route(db)
    assert (await load(db, conv_id)).offered_to == a.id  # tie, never had a chat: by id

    # nothing lapses before its time
    quiet = await route(db)
    assert quiet.lapsed == 0 and (await load(db, conv_id)).offered_to == a.id

    await lapse(db, conv_id)
    # the offer is over even before the router has noticed
    with pytest.raises(Conflict, match="the offer has lapsed"):
        await accept(db, conv_id, a)
    published.clear()
    done = await route(db)
    assert done.lapsed == 1 and done.offered == 1
    conv = await load(db, conv_id)
    assert conv.state == "offered" and conv.offered_to == b.id and conv.passed_over == [a.id]
    [withdrawn] = of_type(published, "chat_offer_withdrawn")
    assert withdrawn.users == (a.id,)
    assert withdrawn.data == {"conversation": conv_id, "reason": "timeout"}
    [offer] = of_type(published, "chat_offered")
    assert offer.users == (b.id,)
    with pytest.raises(Conflict, match="no longer offered to you"):
        await accept(db, conv_id, a)

    # B lets it lapse too: everyone eligible has had it, so a new round starts with A
    await lapse(db, conv_id)
    done = await route(db)
    assert done.lapsed == 1 and done.offered == 1
    conv = await load(db, conv_id)
    assert conv.offered_to == a.id and conv.passed_over == []

    # and A may take it this time
    taken = await accept(db, conv_id, a)
    assert taken.state == "active" and taken.agent_id == a.id


async def test_a_lapsed_offer_returns_to_the_same_agent_when_nobody_else_has_room(db, online):
    a = await online("A")
    b = await online("B", capacity=1)
    await busy_with(db, b, 1)
    conv_id = await new_chat(db)
    await route(db)
    assert (await load(db, conv_id)).offered_to == a.id
    await lapse(db, conv_id)
    await route(db)
    # B cannot have it; A is the only eligible agent and gets it again
    conv = await load(db, conv_id)
    assert conv.state == "offered" and conv.offered_to == a.id and conv.passed_over == []


async def test_an_agent_who_let_an_offer_lapse_is_skipped_for_that_chat_only(db, online):
    a = await online("A")
    b = await online("B")
    c = await online("C")
    first = await new_chat(db)
    await route(db)
    assert (await load(db, first)).offered_to == a.id
    await lapse(db, first)
    await route(db)
    assert (await load(db, first)).offered_to == b.id
    await lapse(db, first)
    await route(db)
    conv = await load(db, first)
    assert conv.offered_to == c.id and conv.passed_over == [a.id, b.id]
    # a new chat may still go to A (no offers now, and the lowest id among equals)
    second = await new_chat(db)
    await route(db)
    assert (await load(db, second)).offered_to == a.id


# -- offline --------------------------------------------------------------------------------


async def _count(db, model) -> int:
    async with db.unit_of_work() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_nobody_online_means_offline_no_agents(db, make_staff, online):
    await make_staff("agent")  # exists, but has no presence and no socket
    async with db.unit_of_work() as session:
        with pytest.raises(chat.ChatOffline) as err:
            await chat.start(session, chat.VisitorInput(name="山田"), region=REGION)
    assert err.value.reason == "no_agents" and err.value.status == 503
    assert await _count(db, ChatConversation) == 0 and await _count(db, Customer) == 0

    # an agent of another team does not make the Billing queue open
    await online("Sue", team="Support")
    await online("Away", team="Billing")
    await sql(
        db,
        "UPDATE agent_presence SET status = 'away' FROM users "
        "WHERE users.id = agent_presence.user_id AND users.name = 'Away'",
    )
    async with db.unit_of_work() as session:
        with pytest.raises(chat.ChatOffline) as err:
            await chat.start(session, chat.VisitorInput(name="山田", team="Billing"), region=REGION)
        assert err.value.reason == "no_agents"
        assert await chat.agents_taking_chats(session, await team_id(db, "Billing")) == 0
        assert await chat.agents_taking_chats(session, await team_id(db, "Support")) == 1
        assert await chat.agents_taking_chats(session, None) == 1
        conv, _ = await chat.start(session, chat.VisitorInput(name="山田"), region=REGION)
        assert conv.state == "new"


async def test_an_agent_on_a_call_keeps_the_queue_open(db, online):
    x = await online("X")
    await sql(db, UNAVAILABLE["on a call"], id=x.id)
    conv_id = await new_chat(db)  # no ChatOffline: the visitor may wait for them
    assert (await load(db, conv_id)).state == "queued"


async def test_outside_the_hours_means_offline_closed_hours(db, online):
    await online("A")
    hours = OpeningHours.parse("mon-fri 09:00-18:00", timezone="Asia/Tokyo")
    sunday = datetime(2027, 1, 24, 12, 0, tzinfo=UTC)
    monday_7am_tokyo = datetime(2027, 1, 17, 22, 0, tzinfo=UTC)
    monday_noon_tokyo = datetime(2027, 1, 18, 3, 0, tzinfo=UTC)
    new_years_day = datetime(2027, 1, 1, 3, 0, tzinfo=UTC)
    async with db.unit_of_work() as session:
        for closed in (sunday, monday_7am_tokyo, new_years_day):
            with pytest.raises(chat.ChatOffline) as err:
                await chat.start(
                    session, chat.VisitorInput(name="山田"), region=REGION, hours=hours, now=closed
                )
            assert err.value.reason == "closed_hours"
            assert err.value.message == "outside chat hours"
        conv, _ = await chat.start(
            session,
            chat.VisitorInput(name="山田"),
            region=REGION,
            hours=hours,
            now=monday_noon_tokyo,
        )
        assert conv.id is not None
    # closed hours win over "nobody online"
    await sql(db, "DELETE FROM agent_sockets")
    async with db.unit_of_work() as session:
        with pytest.raises(chat.ChatOffline) as err:
            await chat.start(
                session, chat.VisitorInput(name="山田"), region=REGION, hours=hours, now=sunday
            )
        assert err.value.reason == "closed_hours"
        with pytest.raises(chat.ChatOffline) as err:
            await chat.start(
                session,
                chat.VisitorInput(name="山田"),
                region=REGION,
                hours=hours,
                now=monday_noon_tokyo,
            )
        assert err.value.reason == "no_agents"


# -- accept ---------------------------------------------------------------------------------


async def test_accept(db, online, published):
    a = await online("佐藤", capacity=1)
    b = await online("B")
    await busy_with(db, b, 1)
    conv_id = await new_chat(db)
    await route(db)
    assert (await load(db, conv_id)).offered_to == a.id

    with pytest.raises(Conflict, match="no longer offered to you"):
        await accept(db, conv_id, b)

    published.clear()
    conv = await accept(db, conv_id, a)
    assert conv.state == "active" and conv.agent_id == a.id
    assert conv.offered_to is None and conv.offer_expires_at is None
    # read up to the visitor's message; then the "joined" line (seq 2)
    assert conv.accepted_at is not None and conv.agent_read_seq == 1 and conv.last_seq == 2
    async with db.unit_of_work() as session:
        case = await session.get(Case, conv.case_id)
        assert case.assignee_id == a.id and case.status == "open" and case.channel == "chat"
        joined = await session.scalar(
            select(ChatMessage).where(ChatMessage.conversation_id == conv_id, ChatMessage.seq == 2)
        )
        assert joined.sender == "system" and joined.body == "佐藤が対応を開始しました。"
    assert await active_chats(db, a) == (1, "busy")  # capacity 1: now shown busy
    states = [e.data["state"] for e in of_type(published, "chat_state")]
    assert "active" in states

    # a double click: nothing new
    published.clear()
    again = await accept(db, conv_id, a)
    assert again.state == "active" and again.last_seq == 2
    assert published == []
    assert await active_chats(db, a) == (1, "busy")

    # the other agent still may not
    with pytest.raises(Conflict):
        await accept(db, conv_id, b)


async def test_a_queued_chat_cannot_be_accepted_before_it_is_offered(db, online):
    a = await online("A")
    conv_id = await new_chat(db)
    with pytest.raises(Conflict, match="no longer offered"):
        await accept(db, conv_id, a)
    assert (await load(db, conv_id)).state == "queued"


# -- transfer -------------------------------------------------------------------------------


async def test_transfer_to_an_agent_and_back_to_a_team_queue(db, online, make_staff, published):
    a = await online("A", team="Billing")
    b = await online("B", team="Billing")
    sue = await online("Sue", team="Support")
    await busy_with(db, b, 1)
    conv_id = await new_chat(db, team="Billing")
    await route(db)
    assert (await load(db, conv_id)).offered_to == a.id
    await accept(db, conv_id, a)

    # to an agent (of another team): at once, and the case follows
    async with db.unit_of_work() as session:
        conv = await chat.transfer(session, conv_id, a, agent_id=sue.id)
    assert conv.state == "active" and conv.agent_id == sue.id and conv.agent_read_seq == 0
    async with db.unit_of_work() as session:
        assert (await session.get(Case, conv.case_id)).assignee_id == sue.id
        last = await session.scalar(
            select(ChatMessage.body).where(
                ChatMessage.conversation_id == conv_id, ChatMessage.seq == conv.last_seq
            )
        )
        assert last == "Sueに引き継ぎました。"
    assert (await active_chats(db, a))[0] == 0
    assert (await active_chats(db, sue))[0] == 1

    # to a team: back to that team's queue; the agent who had it is skipped first
    async with db.unit_of_work() as session:
        conv = await chat.transfer(session, conv_id, sue, team_id=await team_id(db, "Billing"))
    assert conv.state == "queued" and conv.agent_id is None and conv.passed_over == [sue.id]
    assert conv.team_id == await team_id(db, "Billing")
    assert (await active_chats(db, sue))[0] == 0
    async with db.unit_of_work() as session:
        case = await session.get(Case, conv.case_id)
        assert case.assignee_id is None and case.team_id == await team_id(db, "Billing")

    await route(db)
    # A has no chats and B one: A gets it (Sue is not in Billing)
    assert (await load(db, conv_id)).offered_to == a.id
    await accept(db, conv_id, a)

    # A puts it back in the Billing queue: A is skipped though A has fewer chats than B
    async with db.unit_of_work() as session:
        conv = await chat.transfer(session, conv_id, a, team_id=await team_id(db, "Billing"))
    assert conv.passed_over == [a.id]
    published.clear()
    await route(db)
    conv = await load(db, conv_id)
    assert conv.state == "offered" and conv.offered_to == b.id
    assert [e.users for e in of_type(published, "chat_offered")] == [(b.id,)]


async def test_who_may_transfer(db, online, make_staff, published):
    a = await online("A")
    c = await online("C")
    supervisor = (await make_staff("supervisor", name="Boss")).user
    await busy_with(db, c, 1)
    conv_id = await new_chat(db)
    await route(db)
    await accept(db, conv_id, a)

    async with db.unit_of_work() as session:
        with pytest.raises(Forbidden, match="only the agent holding the chat"):
            await chat.transfer(session, conv_id, c, agent_id=c.id)
        with pytest.raises(InvalidInput, match="either agent_id or team_id"):
            await chat.transfer(session, conv_id, a)
        with pytest.raises(InvalidInput, match="either agent_id or team_id"):
            await chat.transfer(session, conv_id, a, agent_id=c.id, team_id=1)
        with pytest.raises(InvalidInput, match="no active agent 999"):
            await chat.transfer(session, conv_id, a, agent_id=999)
        with pytest.raises(InvalidInput, match="no team 999"):
            await chat.transfer(session, conv_id, a, team_id=999)
        with pytest.raises(InvalidInput, match="agent_id must be a number"):
            await chat.transfer(session, conv_id, a, agent_id="2")
    assert (await load(db, conv_id)).agent_id == a.id

    # a supervisor may move someone else's chat
    async with db.unit_of_work() as session:
        conv = await chat.transfer(session, conv_id, supervisor, agent_id=c.id)
    assert conv.agent_id == c.id
    # transferring to whoever holds it already changes nothing
    async with db.unit_of_work() as session:
        same = await chat.transfer(session, conv_id, c, agent_id=c.id)
        assert same.last_seq == conv.last_seq

    # a supervisor may also pull back an offered chat: the offer is withdrawn
    other = await new_chat(db)
    await route(db)
    offered_to = (await load(db, other)).offered_to
    assert offered_to is not None
    published.clear()
    async with db.unit_of_work() as session:
        moved = await chat.transfer(session, other, supervisor, agent_id=a.id)
    assert moved.state == "active" and moved.agent_id == a.id and moved.offered_to is None
    withdrawn = of_type(published, "chat_offer_withdrawn")
    assert [(e.users, e.data["reason"]) for e in withdrawn] == [((offered_to,), "transferred")]

    # ended chats cannot be moved
    async with db.unit_of_work() as session:
        await chat.close(session, conv_id, by="agent", actor=c)
    async with db.unit_of_work() as session:
        with pytest.raises(Conflict, match="a closed chat cannot be transferred"):
            await chat.transfer(session, conv_id, supervisor, agent_id=a.id)


async def test_close_frees_the_agent_and_writes_the_transcript(db, online):
    a = await online("A")
    b = await online("B")
    await busy_with(db, b, 2)
    conv_id = await new_chat(db, body="返品したいです")
    await route(db)
    await accept(db, conv_id, a)
    async with db.unit_of_work() as session:
        await chat.post(
            session, conv_id, sender="agent", body="承知しました", client_id="a1", author=a
        )
        with pytest.raises(Forbidden):
            await chat.close(session, conv_id, by="agent", actor=b)
    async with db.unit_of_work() as session:
        conv = await chat.close(session, conv_id, by="agent", actor=a)
        assert conv.state == "closed" and conv.closed_by == "agent"
    assert (await active_chats(db, a)) == (0, "available")
    async with db.unit_of_work() as session:
        again = await chat.close(session, conv_id, by="visitor")
        assert again.closed_by == "agent"  # closing twice changes nothing
        entry = await session.get(Interaction, conv.interaction_id)
        assert entry.kind == "chat" and entry.meta["state"] == "closed"
        assert [(m["seq"], m["from"]) for m in entry.meta["messages"]] == [
            (1, "visitor"),
            (2, "system"),
            (3, "agent"),
            (4, "system"),
        ]
        assert "返品したいです" in entry.text and "承知しました" in entry.text


# -- abandoned ------------------------------------------------------------------------------


async def test_a_chat_whose_visitor_is_gone_is_abandoned(db, online, published):
    a = await online("A")
    gone = await new_chat(db, "Gone", body="もしもし")
    still_here = await new_chat(db, "Still here")
    await route(db)
    assert (await load(db, gone)).offered_to == a.id  # offered, then the visitor left
    # a conversation that never got its first message is cleaned up too
    async with db.unit_of_work() as session:
        silent, _ = await chat.start(session, chat.VisitorInput(name="Silent"), region=REGION)
    await sql(
        db,
        "UPDATE chat_conversations SET visitor_seen_at = now() - interval '121 seconds' "
        "WHERE id = ANY(:ids)",
        ids=[gone, silent.id],
    )
    await sql(
        db,
        "UPDATE chat_conversations SET visitor_seen_at = now() - interval '119 seconds' "
        "WHERE id = :id",
        id=still_here,
    )

    published.clear()
    done = await route(db, abandon_seconds=120)
    assert done.abandoned == 2

    conv = await load(db, gone)
    assert conv.state == "abandoned" and conv.closed_by == "system"
    assert conv.closed_at is not None and conv.offered_to is None
    assert (await load(db, silent.id)).state == "abandoned"
    assert (await load(db, still_here)).state in ("queued", "offered")
    withdrawn = of_type(published, "chat_offer_withdrawn")
    assert [(e.users, e.data) for e in withdrawn] == [
        ((a.id,), {"conversation": gone, "reason": "abandoned"})
    ]
    async with db.unit_of_work() as session:
        entry = await session.get(Interaction, conv.interaction_id)
        assert entry.meta["state"] == "abandoned" and entry.meta["closed_by"] == "system"
        assert [(m["from"], m["body"]) for m in entry.meta["messages"]] == [
            ("visitor", "もしもし"),
            ("system", "お客様が退出しました。"),
        ]
        assert "もしもし" in entry.text
        # a never-started conversation has no case, so no transcript
        assert (await session.get(ChatConversation, silent.id)).interaction_id is None
    # the freed offer went to the one still waiting (A had room for both anyway)
    assert (await load(db, still_here)).offered_to == a.id


# -- queue positions ------------------------------------------------------------------------


async def test_queue_positions_per_team(db, online, published):
    bill = await online("Bill", team="Billing", capacity=1)
    chats = [await new_chat(db, f"Billing {n}", team="Billing") for n in range(3)]
    no_team = await new_chat(db, "No team")

    done = await route(db)
    assert done.offered == 1 and done.positions == 4
    assert (await load(db, chats[0])).offered_to == bill.id  # still in the queue until taken
    assert [(await load(db, c)).last_position for c in chats] == [1, 2, 3]
    assert (await load(db, no_team)).last_position == 1  # its own queue
    pushed = {e.data["conversation"]: e.data for e in of_type(published, "chat_queue")}
    assert {c: pushed[c]["position"] for c in chats} == {chats[0]: 1, chats[1]: 2, chats[2]: 3}
    # no accepted chat in the last hour: 60 s a position, one agent taking chats
    assert [pushed[c]["wait_seconds"] for c in chats] == [60, 120, 180]
    assert pushed[chats[0]]["conversation"] == chats[0]

    async with db.unit_of_work() as session:
        for n, c in enumerate(chats, start=1):
            conv = await session.get(ChatConversation, c)
            assert await chat.queue_position(session, conv) == (n, 60 * n)
        assert await chat.queue_position(session, await session.get(ChatConversation, no_team)) == (
            1,
            60,
        )

    # nothing changed: nothing is pushed again
    published.clear()
    assert (await route(db)).positions == 0
    assert of_type(published, "chat_queue") == []

    await accept(db, chats[0], bill)
    published.clear()
    done = await route(db)
    assert done.positions == 2
    assert [(await load(db, c)).last_position for c in chats[1:]] == [1, 2]
    assert sorted(
        (e.data["conversation"], e.data["position"]) for e in of_type(published, "chat_queue")
    ) == [(chats[1], 1), (chats[2], 2)]
    async with db.unit_of_work() as session:
        positions = [
            (await chat.queue_position(session, await session.get(ChatConversation, c)))[0]
            for c in chats
        ]
    assert positions == [None, 1, 2]


# -- one router at a time -------------------------------------------------------------------


async def test_a_second_router_does_nothing_while_the_first_holds_the_lock(db, online):
    await online("A")
    conv_id = await new_chat(db)
    async with db.sessionmaker() as first, first.begin():
        done = await chat.route(first, offer_seconds=OFFER, abandon_seconds=ABANDON)
        assert done.worked and done.offered == 1
        meanwhile = await route(db)
        assert meanwhile == chat.Routed(worked=False)
    after = await route(db)
    assert after.worked and after.offered == 0
    assert (await load(db, conv_id)).state == "offered"


async def test_concurrent_routers_never_offer_a_chat_twice(db, online, published):
    agents = [await online(f"Agent {n}") for n in range(3)]
    chats = [await new_chat(db, f"Visitor {n}") for n in range(6)]

    results = await asyncio.gather(*(route(db) for _ in range(4)))

    assert any(r.worked for r in results)
    assert sum(r.offered for r in results) == 6
    offers = [e.data["conversation"]["id"] for e in of_type(published, "chat_offered")]
    assert sorted(offers) == sorted(chats)  # each chat once
    holders = [(await load(db, c)).offered_to for c in chats]
    assert all(h is not None for h in holders)
    assert sorted(holders.count(a.id) for a in agents) == [2, 2, 2]  # spread by load


# -- which customer is the visitor ----------------------------------------------------------


async def _chat_identities(db, customer_id: int) -> list[str]:
    async with db.unit_of_work() as session:
        return list(
            (
                await session.scalars(
                    select(ContactIdentity.raw_value).where(
                        ContactIdentity.customer_id == customer_id, ContactIdentity.kind == "chat"
                    )
                )
            ).all()
        )


async def test_the_visitor_is_linked_to_a_customer(db, online):
    await online("A")
    async with db.unit_of_work() as session:
        known = await create_customer(
            session,
            CustomerInput(
                name="山田 花子",
                identities=[IdentityInput("email", "hanako@example.jp", is_primary=True)],
            ),
            region=REGION,
        )

    # an email of an existing customer: that customer, and this browser is remembered
    by_email = await load(
        db, await new_chat(db, "Hanako", email="Hanako@Example.JP", visitor_id="v-1")
    )
    assert by_email.customer_id == known.id
    assert by_email.visitor_email == "hanako@example.jp"
    assert await _chat_identities(db, known.id) == ["v-1"]
    async with db.unit_of_work() as session:
        case = await session.get(Case, by_email.case_id)
        assert case.customer_id == known.id and case.channel == "chat"
        entry = await session.get(Interaction, by_email.interaction_id)
        assert entry.customer_id == known.id and entry.kind == "chat"

    # no email, the same browser: the same customer as last time
    again = await load(db, await new_chat(db, "Hanako", visitor_id="v-1"))
    assert again.customer_id == known.id
    assert await _chat_identities(db, known.id) == ["v-1"]  # not added twice

    # a new browser with no email: a new customer, who keeps that browser
    stranger = await load(db, await new_chat(db, "鈴木 一郎", visitor_id="v-2"))
    assert stranger.customer_id != known.id
    async with db.unit_of_work() as session:
        customer = await session.get(Customer, stranger.customer_id)
        assert customer.name == "鈴木 一郎"
    assert await _chat_identities(db, stranger.customer_id) == ["v-2"]
    back = await load(db, await new_chat(db, "鈴木", visitor_id="v-2"))
    assert back.customer_id == stranger.customer_id
    # the same browser, now with an address the desk does not know: it joins that customer
    told = await load(db, await new_chat(db, "鈴木", email="ichiro@example.jp", visitor_id="v-2"))
    assert told.customer_id == stranger.customer_id
    async with db.unit_of_work() as session:
        emails = (
            await session.scalars(
                select(ContactIdentity.normalized).where(
                    ContactIdentity.customer_id == stranger.customer_id,
                    ContactIdentity.kind == "email",
                )
            )
        ).all()
    assert emails == ["ichiro@example.jp"]

    # an unknown email from a new browser: a new customer with that email
    fresh = await load(db, await new_chat(db, "New", email="new@example.jp", visitor_id="v-3"))
    assert fresh.customer_id not in (known.id, stranger.customer_id)
    async with db.unit_of_work() as session:
        kinds = (
            await session.execute(
                select(ContactIdentity.kind, ContactIdentity.normalized).where(
                    ContactIdentity.customer_id == fresh.customer_id
                )
            )
        ).all()
        assert sorted(kinds) == [("chat", "v-3"), ("email", "new@example.jp")]

    # nothing to go by: a new customer every time
    one = await load(db, await new_chat(db, "Anon"))
    two = await load(db, await new_chat(db, "Anon"))
    assert one.customer_id != two.customer_id
    assert await _count(db, Customer) == 5


async def test_a_teams_chat_events_and_waiting_list_stay_with_that_team(db, online, published):
    """Row-level rule (helpdesk/visibility.py): a chat routed to a team carries the team on
    its staff events (the hub keeps them from other teams' sockets), and an agent of another
    team neither lists it as waiting nor opens it."""
    billing = await online("Billing agent", team="Billing")
    other = await online("Support agent", team="Support")
    conv_id = await new_chat(db, team="Billing")
    await route(db)
    conv = await accept(db, conv_id, billing)
    billing_id = await team_id(db, "Billing")
    assert conv.team_id == billing_id
    async with db.unit_of_work() as session:
        await chat.post(
            session, conv_id, sender="agent", body="はい", client_id="a1", author=billing
        )
    staff_events = [e for e in published if e.type in ("chat_message", "chat_state")]
    assert staff_events and all(e.team == billing_id for e in staff_events)

    waiting = await new_chat(db, team="Billing", name="二人目")
    async with db.unit_of_work() as session:
        lists = await chat.lists_for(session, other)
        assert waiting not in [c["id"] for c in lists["waiting"]]
        with pytest.raises(Forbidden, match="another team"):
            await chat.view(session, waiting, other)
        lists = await chat.lists_for(session, billing)
        assert waiting in [c["id"] for c in lists["waiting"]]
