"""Calls: the call log, the screen-pop on ring, and what a call leaves behind.

Every PBX adapter hands `apply_event` a normalized `CallEvent`. The call log moves through
`ringing → answered → completed`, or ends `missed` (nobody answered) or `abandoned` (the
caller gave up in a queue). Events are idempotent (a redelivered event is a no-op) and may
arrive out of order: an answer after the hangup turns a missed call into a completed one,
and a ring after the answer only adds who it rang at.

On ring, the caller's number is looked up once (one index probe) and a `screen_pop` frame
is published to the ringing agents only, never broadcast: it carries the customer card,
or a chooser when several customers share the number, or an "unknown caller" card.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from sqlalchemy import Text, any_, bindparam, func, or_, select, update
from sqlalchemy import text as sql_text
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession

from cti.events import CallEvent
from helpdesk import cases, customers, events, presence, sla, visibility
from helpdesk.errors import Conflict, InvalidInput, NotFound
from helpdesk.identities import (
    WITHHELD,
    PhoneMatch,
    customers_for_phone,
    format_phone,
    normalize_phone,
)
from helpdesk.interactions import add_interaction
from helpdesk.models import (
    CALL_STATES,
    Call,
    CallEventSeen,
    Case,
    Customer,
    Interaction,
    User,
)
from helpdesk.pagination import Page, decode_cursor, encode_cursor

log = logging.getLogger(__name__)
LAST_INTERACTIONS = 5
CHOOSER_LIMIT = 10
# A caller who hangs up while queued abandons; one who hangs up on a ringing agent with
# these causes did too (they gave up), where "noAnswer" etc. means we missed them.
ABANDON_CAUSES = frozenset({"cancel"})


@dataclass(frozen=True)
class Applied:
    """What `apply_event` did: the call (None for a duplicate) and whether it was new."""

    call: Call | None
    duplicate: bool


async def resolve_agents(session: AsyncSession, names: tuple[str, ...]) -> list[User]:
    """Users named by a PBX: extension, email, or (Zammad's `user[]`) full name."""
    if not names:
        return []
    rows = await session.scalars(select(User).where(User.is_active, _named(names)))
    return list(rows.all())


def _customer_number(event: CallEvent, region: str) -> str | None:
    raw = event.from_number if event.direction == "in" else event.to_number
    if not raw or raw.strip().lower() in WITHHELD:
        return None
    try:
        return normalize_phone(raw, region)
    except InvalidInput:
        return None


# The ring path's statements, built once: building a statement (an upsert's `excluded`
# columns above all) costs more Python per ring than running it; the compiled form is
# cached by SQLAlchemy and the prepared one by asyncpg.
_SEEN = CallEventSeen.__table__
_SEEN_INSERT = (
    insert(_SEEN)
    .values(call_id=bindparam("call_id"), event=bindparam("event"), agents=bindparam("agents"))
    .on_conflict_do_nothing()
    .returning(_SEEN.c.call_id)
)
_CALLS = Call.__table__
_CALL_INSERT = insert(_CALLS).values(
    call_id=bindparam("call_id"),
    direction=bindparam("direction"),
    from_number=bindparam("from_number"),
    to_number=bindparam("to_number"),
    customer_number=bindparam("customer_number"),
    state="ringing",
    queue=bindparam("queue"),
    started_at=bindparam("started_at"),
)
_CALL_UPSERT = _CALL_INSERT.on_conflict_do_update(
    index_elements=["call_id"],
    set_={
        "started_at": func.least(_CALLS.c.started_at, _CALL_INSERT.excluded.started_at),
        "queue": func.coalesce(_CALLS.c.queue, _CALL_INSERT.excluded.queue),
    },
)
_CALL_UPSERT_ROW = _CALL_UPSERT.returning(*_CALLS.c)
_CALL_UPSERT_ORM = _CALL_UPSERT.returning(Call)
_AGENT_IDS = select(User.id, User.role, User.team_id).where(
    User.is_active,
    or_(
        User.extension == any_(bindparam("names", type_=ARRAY(Text))),
        func.lower(User.email) == any_(bindparam("lowered", type_=ARRAY(Text))),
        User.name == any_(bindparam("names", type_=ARRAY(Text))),
    ),
)
_RING_UPDATE = (
    update(_CALLS)
    .where(_CALLS.c.id == bindparam("call_pk"))
    .values(customer_id=bindparam("customer_id"), ringing_user_ids=bindparam("ringing"))
)


async def _seen_before(session: AsyncSession, event: CallEvent) -> bool:
    key = ",".join(sorted(a.strip().lower() for a in event.agents))[:2000]
    inserted = await session.scalar(
        _SEEN_INSERT, {"call_id": event.call_id, "event": event.event, "agents": key}
    )
    return inserted is None


async def apply_event(session: AsyncSession, event: CallEvent, *, region: str) -> Applied:
    """Record one call event, in the caller's transaction, and publish what it causes."""
    if await _seen_before(session, event):
        return Applied(None, duplicate=True)
    # Create the call row or lock the existing one, in one statement: the no-op update on a
    # conflict takes the row lock, so two events of one call never interleave. An earlier
    # start time (events out of order) and a queue heard late are kept on the way.
    values = {
        "call_id": event.call_id,
        "direction": event.direction,
        "from_number": event.from_number[:64],
        "to_number": event.to_number[:64],
        "customer_number": _customer_number(event, region),
        "queue": event.queue,
        "started_at": event.at,
    }
    if event.event == "ring":
        row = (await session.execute(_CALL_UPSERT_ROW, values)).one()
        return await _apply_ring(session, Call(**row._mapping), event, region)
    call = await session.scalar(
        select(Call).from_statement(_CALL_UPSERT_ORM).execution_options(populate_existing=True),
        values,
    )
    assert call is not None
    agents = await resolve_agents(session, event.agents)
    if event.agents and not agents:
        log.info("call %s: no active agent matches %s", event.call_id, list(event.agents))
    matches = None
    if call.customer_number and (call.customer_id is None or event.event == "ring"):
        # One lookup serves both the call's customer and the screen-pop card.
        matches = await customers_for_phone(session, call.customer_number, region)
        if call.customer_id is None and len(matches) == 1:
            call.customer_id = matches[0].customer_id

    if event.event == "ring":
        await _ring(session, call, agents, region, matches)
    elif event.event == "answer":
        await _answer(session, call, agents, event.at)
    else:
        await _hangup(session, call, event, region)
    await session.flush()
    return Applied(call, duplicate=False)


async def _apply_ring(session: AsyncSession, call: Call, event: CallEvent, region: str) -> Applied:
    """A ring, the hot path of the screen-pop: plain statements on a detached `Call` (the
    row as the upsert returned it), no unit of work. What it does is `_ring`'s."""
    names = [n.strip() for n in event.agents if n.strip()]
    agent_ids: list[int] = []
    teams: dict[int, int | None] = {}
    if names:
        found = await session.execute(
            _AGENT_IDS, {"names": names, "lowered": [n.lower() for n in names]}
        )
        for row in found.all():
            agent_ids.append(row.id)
            teams[row.id] = None if row.role == "admin" else row.team_id
    if event.agents and not agent_ids:
        log.info("call %s: no active agent matches %s", event.call_id, list(event.agents))
    changes: dict[str, Any] = {}
    matches = None
    if call.customer_number:
        matches = await customers_for_phone(session, call.customer_number, region)
        if call.customer_id is None and len(matches) == 1:
            changes["customer_id"] = matches[0].customer_id
    ringing = list(call.ringing_user_ids or [])
    new = [uid for uid in agent_ids if uid not in ringing]
    if new:
        changes["ringing_user_ids"] = [*ringing, *new]
    if changes:
        for key, value in changes.items():
            setattr(call, key, value)
        await session.execute(
            _RING_UPDATE,
            {
                "call_pk": call.id,
                "customer_id": call.customer_id,
                "ringing": call.ringing_user_ids,
            },
        )
    if new and call.state == "ringing":
        await _pop(session, call, region, matches, {uid: teams[uid] for uid in new})
        await _announce_ringing(session, call)
    return Applied(call, duplicate=False)


async def _pop(
    session: AsyncSession,
    call: Call,
    region: str,
    matches: list[PhoneMatch] | None,
    agent_teams: dict[int, int | None],
) -> None:
    """Push the screen-pop to the ringing agents, one card per team they are limited to
    (helpdesk/visibility.py): a call ringing in one queue makes one card, as before."""
    by_team: dict[int | None, list[int]] = {}
    for uid, team in agent_teams.items():
        by_team.setdefault(team, []).append(uid)
    for team, uids in by_team.items():
        card = await screen_pop_card(
            session, call, region, matches, team=team, user_ids=tuple(uids)
        )
        await events.publish(session, events.Event("screen_pop", card, users=tuple(uids)))


async def _announce_ringing(session: AsyncSession, call: Call) -> None:
    """Supervisors' boards count ringing calls live: they hear of each new ring (the agents
    it rings at have the screen-pop, and must not get a second frame for it)."""
    await events.publish(
        session, events.Event("call_update", call_json(call), roles=("supervisor", "admin"))
    )


def _named(names: tuple[str, ...]):  # type: ignore[no-untyped-def]
    """Users named by a PBX: extension, email, or (Zammad's `user[]`) full name."""
    stripped = [n.strip() for n in names if n.strip()]
    return or_(
        User.extension.in_(stripped),
        func.lower(User.email).in_([n.lower() for n in stripped]),
        User.name.in_(stripped),
    )


async def _ring(
    session: AsyncSession,
    call: Call,
    agents: list[User],
    region: str,
    matches: list[PhoneMatch] | None = None,
) -> None:
    new = [a for a in agents if a.id not in (call.ringing_user_ids or [])]
    if not new:
        return
    call.ringing_user_ids = [*(call.ringing_user_ids or []), *(a.id for a in new)]
    if call.state != "ringing":
        return  # a late ring for a call already answered or over: nothing to pop
    await _pop(session, call, region, matches, {a.id: visibility.limited_team(a) for a in new})
    await _announce_ringing(session, call)


async def _answer(session: AsyncSession, call: Call, agents: list[User], at: datetime) -> None:
    agent = agents[0] if agents else None
    if call.answered_at is not None and call.agent_id is not None:
        if call.state == "answered" and agent is not None and agent.id != call.agent_id:
            # Another agent answering a call in progress is a transfer: the call moves.
            await presence.set_on_call(session, call.agent_id, False)
            call.agent_id = agent.id
            if agent.id not in (call.ringing_user_ids or []):
                call.ringing_user_ids = [*(call.ringing_user_ids or []), agent.id]
            await presence.set_on_call(session, agent.id, True)
            await _publish_update(session, call)
        return  # otherwise answered twice: the first answer stands
    call.answered_at = at
    if agent is not None:
        call.agent_id = agent.id
    if call.state in ("missed", "abandoned") and call.ended_at and call.ended_at >= at:
        # The hangup arrived first; the call was answered after all.
        call.state = "completed"
        await _withdraw_callback(session, call)
        await _log_interaction(session, call)
    elif call.state == "ringing":
        call.state = "answered"
        if agent is not None:
            await presence.set_on_call(session, agent.id, True)
    if call.case_id is not None and agent is not None:  # a person answered: SLA response met
        await sla.on_agent_public_reply(session, call.case_id, at)
    await _publish_update(session, call)


async def _hangup(session: AsyncSession, call: Call, event: CallEvent, region: str) -> None:
    if call.ended_at is not None:
        return
    call.ended_at = max(event.at, call.started_at)
    call.cause = event.cause
    if call.answered_at is not None:
        call.state = "completed"
        if call.agent_id is not None:
            await presence.set_on_call(session, call.agent_id, False)
    else:
        call.state = "abandoned" if (event.cause in ABANDON_CAUSES) else "missed"
        await _create_callback(session, call, region)
    await _log_interaction(session, call)
    await _publish_update(session, call)


async def _publish_update(session: AsyncSession, call: Call) -> None:
    users = {*(call.ringing_user_ids or []), *([call.agent_id] if call.agent_id else [])}
    if not users:
        return
    await events.publish(
        session,
        events.Event(
            "call_update",
            call_json(call),
            users=tuple(sorted(users)),
            roles=("supervisor", "admin"),
        ),
    )


async def _log_interaction(session: AsyncSession, call: Call) -> None:
    """The call on the customer's timeline (and the case's), once it is over."""
    if call.ended_at is None or call.customer_id is None:
        return
    meta = {
        "call_id": call.call_id,
        "from": call.from_number,
        "to": call.to_number,
        "state": call.state,
        "cause": call.cause,
        "wait_seconds": call.wait_seconds,
        "talk_seconds": call.talk_seconds,
        "agent_id": call.agent_id,
        "queue": call.queue,
    }
    if call.interaction_id is not None:
        entry = await session.get(Interaction, call.interaction_id)
        if entry is not None:
            entry.meta = meta
            entry.text = call.notes or ""
            entry.case_id = call.case_id
            entry.customer_id = call.customer_id
            return
    entry = await add_interaction(
        session,
        customer_id=call.customer_id,
        case_id=call.case_id,
        kind="call",
        direction=call.direction,
        text=call.notes or "",
        author_user_id=call.agent_id,
        meta=meta,
        occurred_at=call.started_at,
    )
    call.interaction_id = entry.id


async def _create_callback(session: AsyncSession, call: Call, region: str) -> None:
    """A missed or abandoned inbound call becomes a call-back case in the queue."""
    if call.direction != "in" or call.customer_number is None or call.callback_case_id:
        return
    customer_id = call.customer_id
    if customer_id is None:
        # An unknown caller: keep the number as a contact so the call-back has someone.
        customer = await customers.create_customer(
            session,
            customers.CustomerInput(
                name=format_phone(call.customer_number, region),
                identities=[
                    customers.IdentityInput("phone", call.customer_number, is_primary=True)
                ],
            ),
            region=region,
        )
        customer_id = call.customer_id = customer.id
    case = await cases.create_case(
        session,
        cases.CaseInput(
            customer_id=customer_id,
            subject=f"Call back {format_phone(call.customer_number, region)} ({call.state})",
            channel="phone",
            priority="high" if call.state == "abandoned" else "normal",
            tags=["callback", call.state],
        ),
        author_user_id=None,
    )
    call.callback_case_id = case.id
    if call.case_id is None:
        call.case_id = case.id


async def _withdraw_callback(session: AsyncSession, call: Call) -> None:
    if call.callback_case_id is None:
        return
    case = await session.get(Case, call.callback_case_id)
    if case is not None and case.status in cases.OPEN_STATUSES:
        await cases.update_case(session, case.id, {"status": "solved"}, actor_user_id=None)
    if call.case_id == call.callback_case_id:
        call.case_id = None
    call.callback_case_id = None


# -- the screen-pop card ---------------------------------------------------------------------


async def screen_pop_card(
    session: AsyncSession,
    call: Call,
    region: str,
    matches: list[PhoneMatch] | None = None,
    *,
    team: int | None = None,
    user_ids: tuple[int, ...] = (),
) -> dict[str, Any]:
    """What the ringing agent sees: one customer, a chooser, or an unknown caller; with
    `team`, only the cases that team (and `user_ids`, by assignment) may see."""
    base: dict[str, Any] = {
        "call": call_json(call),
        "number": format_phone(call.customer_number, region) if call.customer_number else None,
        "withheld": call.customer_number is None,
    }
    if call.customer_number is None:
        return {**base, "match": "withheld", "customers": []}
    if matches is None:
        matches = await customers_for_phone(session, call.customer_number, region)
    if not matches:
        return {
            **base,
            "match": "unknown",
            "customers": [],
            "create_url": f"/customers/new?phone={quote(call.customer_number)}",
        }
    if len(matches) > 1:
        return {
            **base,
            "match": "several",
            "customers": [m.as_json() for m in matches[:CHOOSER_LIMIT]],
        }
    return {
        **base,
        "match": "one",
        "customers": [
            await customer_card(session, matches[0].customer_id, team=team, user_ids=user_ids)
        ],
    }


# The whole card in one round trip: the ring path is latency-bound, and four ORM queries
# (customer, identities, open cases, recent entries) cost four trips and their Python.
_CARD_SQL = sql_text(
    """
    SELECT json_build_object(
      'id', c.id, 'name', c.name, 'name_kana', c.name_kana,
      'organization', c.organization, 'tier', c.tier, 'language', c.language,
      'url', '/customers/' || c.id,
      'identities', COALESCE((
        SELECT json_agg(json_build_object(
                 'kind', i.kind, 'value', i.normalized, 'primary', i.is_primary)
               ORDER BY i.kind, i.id)
        FROM contact_identities i
        WHERE i.customer_id = c.id AND i.kind <> 'external'), '[]'::json),
      'open_cases', COALESCE((
        SELECT json_agg(json_build_object(
                 'id', o.id, 'number', o.number, 'subject', o.subject, 'status', o.status,
                 'priority', o.priority, 'sla', (
                   -- the case's most pressing SLA clock: breached and unanswered first,
                   -- then the earliest running deadline
                   SELECT json_build_object(
                     'clock', k.kind,
                     'state', CASE WHEN k.state IN ('breached', 'paused') THEN k.state
                                   WHEN k.warning_at <= now() THEN 'at_risk'
                                   ELSE 'active' END,
                     'deadline_at', to_char(k.deadline_at AT TIME ZONE 'UTC',
                                            'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'))
                   FROM sla_clocks k
                   WHERE k.case_id = o.id
                     AND (k.state IN ('active', 'paused')
                          OR (k.state = 'breached' AND k.met_at IS NULL))
                   ORDER BY k.state = 'breached' DESC, k.deadline_at NULLS LAST
                   LIMIT 1)) ORDER BY o.updated_at DESC)
        FROM (SELECT * FROM cases
              WHERE customer_id = c.id AND status = ANY(:open_statuses)
                AND (CAST(:team AS integer) IS NULL OR team_id IS NULL OR team_id = :team
                     OR assignee_id = ANY(:uids))
              ORDER BY updated_at DESC LIMIT 10) o), '[]'::json),
      'recent', COALESCE((
        SELECT json_agg(json_build_object(
                 'id', r.id, 'kind', r.kind, 'direction', r.direction,
                 'subject', r.subject, 'text', left(r.text, 200),
                 'occurred_at', to_char(r.occurred_at AT TIME ZONE 'UTC',
                                        'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'))
               ORDER BY r.occurred_at DESC, r.id DESC)
        FROM (SELECT * FROM interactions
              WHERE customer_id = c.id AND kind <> 'system'
                AND (CAST(:team AS integer) IS NULL OR case_id IS NULL OR case_id IN (
                       SELECT h.id FROM cases h
                       WHERE h.customer_id = c.id
                         AND (h.team_id IS NULL OR h.team_id = :team
                              OR h.assignee_id = ANY(:uids))))
              ORDER BY occurred_at DESC, id DESC LIMIT :recent) r), '[]'::json)
    )
    FROM customers c WHERE c.id = :id
    """
)


async def customer_card(
    session: AsyncSession,
    customer_id: int,
    *,
    team: int | None = None,
    user_ids: tuple[int, ...] = (),
) -> dict[str, Any]:
    """The screen-pop card: who they are, how to reach them, what is open, what happened.
    With `team`, another team's cases (and their interactions) are left out, except those
    assigned to one of `user_ids` (helpdesk/visibility.py).

    Each open case carries its most pressing SLA clock as `sla` (`clock`, `state` one of
    active|at_risk|paused|breached, `deadline_at`), or null when no policy applies.
    """
    card = await session.scalar(
        _CARD_SQL,
        {
            "id": customer_id,
            "open_statuses": list(cases.OPEN_STATUSES),
            "recent": LAST_INTERACTIONS,
            "team": team,
            "uids": list(user_ids),
        },
    )
    if card is None:
        raise NotFound(f"customer {customer_id} not found")
    return card if isinstance(card, dict) else json.loads(card)


def call_json(call: Call) -> dict[str, Any]:
    return {
        "id": call.id,
        "call_id": call.call_id,
        "direction": call.direction,
        "from": call.from_number,
        "to": call.to_number,
        "number": call.customer_number,
        "state": call.state,
        "queue": call.queue,
        "agent_id": call.agent_id,
        "ringing_user_ids": list(call.ringing_user_ids or []),
        "customer_id": call.customer_id,
        "case_id": call.case_id,
        "callback_case_id": call.callback_case_id,
        "cause": call.cause,
        "notes": call.notes,
        "started_at": call.started_at.isoformat() if call.started_at else None,
        "answered_at": call.answered_at.isoformat() if call.answered_at else None,
        "ended_at": call.ended_at.isoformat() if call.ended_at else None,
        "wait_seconds": call.wait_seconds,
        "talk_seconds": call.talk_seconds,
    }


# -- what agents do with a call ----------------------------------------------------------------


async def get_call(session: AsyncSession, call_pk: int) -> Call:
    call = await session.get(Call, call_pk, populate_existing=True)
    if call is None:
        raise NotFound(f"call {call_pk} not found")
    return call


async def attach(
    session: AsyncSession,
    call_pk: int,
    *,
    user_id: int,
    customer_id: int | None = None,
    case_id: int | None = None,
    new_case_subject: str | None = None,
    scope: visibility.Scope | None = None,
) -> Call:
    """Tie a call to a customer (chosen from the chooser, or just created) and a case
    (an open one, or a new one); an ended call's timeline entry follows."""
    call = await session.get(Call, call_pk, with_for_update=True, populate_existing=True)
    if call is None:
        raise NotFound(f"call {call_pk} not found")
    if customer_id is not None:
        customer = await session.get(Customer, customer_id)
        if customer is None:
            raise InvalidInput(f"no customer {customer_id}", field="customer_id")
        if customer.merged_into_id is not None:
            raise Conflict(f"customer {customer_id} was merged", field="customer_id")
        if customer.erased_at is not None:
            raise Conflict(f"customer {customer_id} was erased", field="customer_id")
        call.customer_id = customer_id
    if case_id is not None:
        case = await session.get(Case, case_id)
        if case is None:
            raise InvalidInput(f"no case {case_id}", field="case_id")
        visibility.check(scope, case)
        if call.customer_id is not None and case.customer_id != call.customer_id:
            raise Conflict("that case belongs to another customer", field="case_id")
        call.customer_id = case.customer_id
        call.case_id = case_id
    if new_case_subject is not None:
        if call.customer_id is None:
            raise InvalidInput("choose the customer first", field="customer_id")
        case = await cases.create_case(
            session,
            cases.CaseInput(
                customer_id=call.customer_id,
                subject=new_case_subject,
                channel="phone",
                assignee_id=user_id,
            ),
            author_user_id=user_id,
        )
        call.case_id = case.id
    if call.case_id is not None and call.answered_at is not None and call.agent_id is not None:
        # The agent spoke with the customer on this call: a public reply for the SLA, dated
        # now (the case may be younger than the answer).
        await sla.on_agent_public_reply(session, call.case_id, datetime.now(UTC))
    await _log_interaction(session, call)
    await session.flush()
    await _publish_update(session, call)
    return call


async def set_notes(session: AsyncSession, call_pk: int, notes: str) -> Call:
    if len(notes) > 20_000:
        raise InvalidInput("notes are longer than 20000 characters", field="notes")
    call = await session.get(Call, call_pk, with_for_update=True, populate_existing=True)
    if call is None:
        raise NotFound(f"call {call_pk} not found")
    call.notes = notes
    await _log_interaction(session, call)
    await session.flush()
    return call


async def list_calls(
    session: AsyncSession,
    *,
    state: str | None = None,
    agent_id: int | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[Call]:
    """The call log, newest first, cursor-paged by id."""
    stmt = select(Call)
    if state:
        if state not in CALL_STATES:
            raise InvalidInput(f"state must be one of {', '.join(CALL_STATES)}", field="state")
        stmt = stmt.where(Call.state == state)
    if agent_id is not None:
        stmt = stmt.where(
            or_(Call.agent_id == agent_id, Call.ringing_user_ids.contains([agent_id]))
        )
    if cursor:
        (last,) = decode_cursor(cursor, 1)
        if not isinstance(last, int):
            raise InvalidInput("malformed cursor", field="cursor")
        stmt = stmt.where(Call.id < last)
    rows = list((await session.scalars(stmt.order_by(Call.id.desc()).limit(limit + 1))).all())
    return Page(rows[:limit], encode_cursor(rows[limit - 1].id) if len(rows) > limit else None)
