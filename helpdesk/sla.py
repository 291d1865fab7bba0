"""SLA policies and per-case clocks: which targets apply to a case, and when each is due.

Every amount is in business minutes on the calendar of the clock's policy; every instant is
an aware datetime passed in by the caller (`now`), so the same functions serve a request, the
worker and a test with a frozen clock. Functions flush and return the clock rows they
changed; publishing events about them is the caller's business.

A clock's deadline is stored, never recomputed on read, and two partial indexes over running
clocks (`ix_sla_clocks_due_deadline`, `ix_sla_clocks_due_warning`) let `due` find the ones
whose time has come without looking at any other case.

Choices this module makes (the issue leaves them open):

- Next response measures from the *oldest unanswered* customer message: a second message
  before an agent answers does not push the deadline out. It starts only once first response
  is settled (met or breached); before that, first response is the clock that runs.
- Pending pauses every running clock; solved or closed meets resolution and pauses the
  response clocks (nothing to answer on a solved case; a status change never meets them).
- Reopening resumes resolution with the business time it had left when solved, so bouncing a
  case through solved does not buy a fresh target. A resolution breached before it was
  solved stays breached.
- A clock whose deadline has passed stays active until the worker records the breach, even if
  the case goes pending meanwhile, so no breach goes unannounced.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import bindparam, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from helpdesk.business_time import BusinessCalendar
from helpdesk.errors import InvalidInput, NotFound
from helpdesk.models import (
    CHANNELS,
    PRIORITIES,
    TIERS,
    BusinessCalendarRecord,
    Case,
    Customer,
    SlaClock,
    SlaPolicy,
    Team,
)

CONDITION_VALUES: dict[str, tuple[str, ...]] = {
    "priority": PRIORITIES,
    "channel": CHANNELS,
    "tier": TIERS,
}
CONDITION_KEYS = ("priority", "channel", "tier", "team_id")
RUNNING = ("active", "paused")
# Statuses in which clocks stand still: the customer owes us an answer, or there is nothing
# left to do.
PAUSED_STATUSES = ("pending", "solved", "closed")
DONE_STATUSES = ("solved", "closed")
# Written as SQL literals, not parameters, so that even a generic prepared plan can prove the
# partial indexes' predicates and use them.
_IS_ACTIVE = SlaClock.state == literal_column("'active'")


# -- calendars -------------------------------------------------------------------------------


def calendar_of(record: BusinessCalendarRecord) -> BusinessCalendar:
    """The business-time arithmetic of a stored calendar (validated like the constructor)."""
    return BusinessCalendar.from_dict(
        {
            "timezone": record.timezone,
            "weekly": record.weekly,
            "holiday_region": record.holiday_region,
            "closed_dates": record.closed_dates or [],
            "special_hours": record.special_hours or {},
        }
    )


async def create_calendar(
    session: AsyncSession, name: str, calendar: BusinessCalendar
) -> BusinessCalendarRecord:
    """Store `calendar` under a unique `name`."""
    name = (name or "").strip()
    if not name:
        raise InvalidInput("calendar name is required", field="name")
    data = calendar.as_dict()
    record = BusinessCalendarRecord(
        name=name,
        timezone=data["timezone"],
        weekly=data["weekly"],
        holiday_region=data["holiday_region"],
        closed_dates=data["closed_dates"],
        special_hours=data["special_hours"],
    )
    session.add(record)
    await session.flush()
    return record


# -- policies --------------------------------------------------------------------------------


def validate_conditions(conditions: object) -> dict[str, list[object]]:
    """Check a policy's conditions and return them normalized (duplicates dropped).

    Each key is optional and holds a non-empty list: `priority`, `channel` and `tier` of
    their known values, `team_id` of team ids. A key left out matches anything; `{}` is a
    catch-all policy.
    """
    if not isinstance(conditions, Mapping):
        raise InvalidInput("conditions must be an object", field="conditions")
    cleaned: dict[str, list[object]] = {}
    for key, values in conditions.items():
        if key not in CONDITION_KEYS:
            raise InvalidInput(
                f"unknown condition {key!r}; use {', '.join(CONDITION_KEYS)}", field="conditions"
            )
        if not isinstance(values, list) or not values:
            raise InvalidInput(
                f"condition {key!r} must be a non-empty list (leave it out to match any)",
                field="conditions",
            )
        for value in values:
            if key == "team_id":
                if not isinstance(value, int) or isinstance(value, bool):
                    raise InvalidInput(
                        f"condition 'team_id': {value!r} is not a team id", field="conditions"
                    )
            elif value not in CONDITION_VALUES[key]:
                raise InvalidInput(
                    f"condition {key!r}: {value!r} is not one of "
                    f"{', '.join(CONDITION_VALUES[key])}",
                    field="conditions",
                )
        cleaned[key] = list(dict.fromkeys(values))
    return cleaned


def _checked_minutes(value: object, name: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InvalidInput(f"{name} must be a positive number of minutes", field=name)
    return value


async def create_policy(
    session: AsyncSession,
    *,
    name: str,
    calendar_id: int,
    conditions: object = None,
    first_response_minutes: int | None = None,
    next_response_minutes: int | None = None,
    resolution_minutes: int | None = None,
    warning_percent: int = 80,
    position: int | None = None,
    active: bool = True,
    breach_raise_priority: bool = False,
    breach_reassign_team_id: int | None = None,
) -> SlaPolicy:
    """Add a policy; without a `position` it goes last.

    `breach_raise_priority` and `breach_reassign_team_id` are what the escalation worker
    does to a case when one of the policy's clocks breaches (see `sla_worker`).
    """
    name = (name or "").strip()
    if not name:
        raise InvalidInput("policy name is required", field="name")
    cleaned = validate_conditions(conditions or {})
    for team_id in cleaned.get("team_id", []):
        if await session.get(Team, team_id) is None:
            raise InvalidInput(f"condition 'team_id': no team {team_id}", field="conditions")
    if await session.get(BusinessCalendarRecord, calendar_id) is None:
        raise InvalidInput(f"no calendar {calendar_id}", field="calendar_id")
    if (
        not isinstance(warning_percent, int)
        or isinstance(warning_percent, bool)
        or not 1 <= warning_percent <= 100
    ):
        raise InvalidInput("warning_percent must be 1 to 100", field="warning_percent")
    if not isinstance(breach_raise_priority, bool):
        raise InvalidInput(
            "breach_raise_priority must be true or false", field="breach_raise_priority"
        )
    if breach_reassign_team_id is not None and (
        not isinstance(breach_reassign_team_id, int)
        or isinstance(breach_reassign_team_id, bool)
        or await session.get(Team, breach_reassign_team_id) is None
    ):
        raise InvalidInput(
            f"no team {breach_reassign_team_id} to reassign to", field="breach_reassign_team_id"
        )
    if position is None:
        last = await session.scalar(select(func.max(SlaPolicy.position)))
        position = 0 if last is None else last + 1
    policy = SlaPolicy(
        name=name,
        position=position,
        active=active,
        conditions=cleaned,
        first_response_minutes=_checked_minutes(first_response_minutes, "first_response_minutes"),
        next_response_minutes=_checked_minutes(next_response_minutes, "next_response_minutes"),
        resolution_minutes=_checked_minutes(resolution_minutes, "resolution_minutes"),
        warning_percent=warning_percent,
        calendar_id=calendar_id,
        breach_raise_priority=breach_raise_priority,
        breach_reassign_team_id=breach_reassign_team_id,
    )
    session.add(policy)
    await session.flush()
    return policy


def matches(conditions: Mapping[str, Sequence[object]], case: Case, customer_tier: str) -> bool:
    """Whether every condition holds for the case (a case without a team matches no
    `team_id` condition)."""
    facts: dict[str, object] = {
        "priority": case.priority,
        "channel": case.channel,
        "tier": customer_tier,
        "team_id": case.team_id,
    }
    return all(facts[key] in values for key, values in conditions.items())


async def choose_policy(session: AsyncSession, case: Case, customer_tier: str) -> SlaPolicy | None:
    """The first active policy, by position, whose conditions all match the case.

    Policies are few; they are read in order and matched here, which keeps the conditions
    structured data rather than SQL built from them.
    """
    policies = await session.scalars(
        select(SlaPolicy)
        .where(SlaPolicy.active)
        .order_by(SlaPolicy.position, SlaPolicy.id)
        .options(selectinload(SlaPolicy.calendar))
    )
    for policy in policies:
        if matches(policy.conditions, case, customer_tier):
            return policy
    return None


# -- clocks: arithmetic on one row ----------------------------------------------------------


def _warning_minutes(clock: SlaClock, policy: SlaPolicy) -> float:
    return clock.target_minutes * policy.warning_percent / 100


def _schedule(clock: SlaClock, policy: SlaPolicy, calendar: BusinessCalendar) -> None:
    """Set an active clock's deadline and warning from its start, target and paused time.

    Business time is additive, so "target minutes counted from `started_at`, not counting
    `paused_minutes`" is the instant `target + paused_minutes` after `started_at`.
    """
    clock.deadline_at = calendar.add(clock.started_at, clock.target_minutes + clock.paused_minutes)
    clock.warning_at = calendar.add(
        clock.started_at, _warning_minutes(clock, policy) + clock.paused_minutes
    )


def _new_clock(
    case_id: int, kind: str, policy: SlaPolicy, calendar: BusinessCalendar, now: datetime
) -> SlaClock:
    target = policy.target_minutes(kind)
    assert target is not None
    clock = SlaClock(
        case_id=case_id,
        kind=kind,
        policy_id=policy.id,
        state="active",
        target_minutes=target,
        started_at=now,
        paused_minutes=0.0,
    )
    _schedule(clock, policy, calendar)
    return clock


def _restart(clock: SlaClock, policy: SlaPolicy, calendar: BusinessCalendar, now: datetime) -> None:
    """Run a settled clock again from `now`, as if new (next response after an answer)."""
    target = policy.target_minutes(clock.kind)
    assert target is not None
    clock.policy_id = policy.id
    clock.target_minutes = target
    clock.state = "active"
    clock.started_at = now
    clock.paused_at = None
    clock.paused_minutes = 0.0
    clock.remaining_minutes = None
    clock.met_at = clock.breached_at = clock.warned_at = clock.breach_fired_at = None
    _schedule(clock, policy, calendar)


def _is_overdue(clock: SlaClock, now: datetime) -> bool:
    return clock.deadline_at is not None and clock.deadline_at <= now


def _pause(clock: SlaClock, calendar: BusinessCalendar, now: datetime) -> bool:
    if clock.state != "active" or _is_overdue(clock, now):
        return False  # an overdue clock stays active so the worker records its breach
    assert clock.deadline_at is not None
    clock.remaining_minutes = calendar.between(now, clock.deadline_at)
    clock.state = "paused"
    clock.paused_at = now
    clock.deadline_at = clock.warning_at = None
    return True


def _resume(clock: SlaClock, policy: SlaPolicy, calendar: BusinessCalendar, now: datetime) -> bool:
    if clock.state != "paused":
        return False
    assert clock.paused_at is not None
    clock.paused_minutes += max(0.0, calendar.between(clock.paused_at, now))
    clock.state = "active"
    clock.paused_at = None
    clock.remaining_minutes = None
    _schedule(clock, policy, calendar)
    return True


def _meet(clock: SlaClock, calendar: BusinessCalendar, now: datetime) -> bool:
    """Settle a clock at `now`: met in time, or breached at its deadline if late."""
    if clock.state == "breached":
        if clock.met_at is None:
            clock.met_at = now
            return True
        return False
    if clock.state not in RUNNING:
        return False
    if clock.state == "active" and _is_overdue(clock, now):
        # Late, and the worker has not recorded it yet: the breach happened at the deadline.
        clock.state = "breached"
        clock.breached_at = clock.deadline_at
    else:
        if clock.state == "active":
            assert clock.deadline_at is not None
            clock.remaining_minutes = calendar.between(now, clock.deadline_at)
        else:  # met while paused: the pause ends here, so a reopen does not count it
            assert clock.paused_at is not None
            clock.paused_minutes += max(0.0, calendar.between(clock.paused_at, now))
            clock.paused_at = None
        clock.state = "met"
    clock.met_at = now
    return True


# -- clocks: loading -------------------------------------------------------------------------


@dataclass
class _Clocks:
    """A case's clocks (locked), and the policies and calendars they run on."""

    by_kind: dict[str, SlaClock]
    policies: dict[int, SlaPolicy]
    calendars: dict[int, BusinessCalendar]

    def policy(self, clock: SlaClock) -> SlaPolicy:
        return self.policies[clock.policy_id]

    def calendar(self, clock: SlaClock) -> BusinessCalendar:
        return self.calendars[clock.policy_id]

    def add_policy(self, policy: SlaPolicy) -> BusinessCalendar:
        if policy.id not in self.policies:
            self.policies[policy.id] = policy
            self.calendars[policy.id] = calendar_of(policy.calendar)
        return self.calendars[policy.id]


async def _clocks_of(session: AsyncSession, case_id: int) -> _Clocks:
    rows = list(
        await session.scalars(
            select(SlaClock)
            .where(SlaClock.case_id == case_id)
            .order_by(SlaClock.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    )
    policy_ids = {c.policy_id for c in rows}
    policies = {}
    if policy_ids:
        found = await session.scalars(
            select(SlaPolicy)
            .where(SlaPolicy.id.in_(policy_ids))
            .options(selectinload(SlaPolicy.calendar))
        )
        policies = {p.id: p for p in found}
    return _Clocks(
        by_kind={c.kind: c for c in rows},
        policies=policies,
        calendars={pid: calendar_of(p.calendar) for pid, p in policies.items()},
    )


async def _case_and_tier(session: AsyncSession, case_or_id: Case | int) -> tuple[Case, str]:
    case = await session.get(Case, case_or_id) if isinstance(case_or_id, int) else case_or_id
    if case is None:
        raise NotFound(f"case {case_or_id} not found")
    customer = await session.get(Customer, case.customer_id)
    return case, customer.tier if customer is not None else "standard"


def _ordered(clocks: Iterable[SlaClock]) -> list[SlaClock]:
    return sorted(clocks, key=lambda c: c.id or 0)


async def case_clocks(session: AsyncSession, case_id: int) -> list[SlaClock]:
    """A case's clocks in a fixed order (first response, next response, resolution)."""
    rows = await session.scalars(select(SlaClock).where(SlaClock.case_id == case_id))
    order = {kind: n for n, kind in enumerate(("first_response", "next_response", "resolution"))}
    return sorted(rows.all(), key=lambda c: order.get(c.kind, 9))


def clock_json(clock: SlaClock, now: datetime) -> dict[str, object]:
    """A clock for the API and the pages. `at_risk` is derived: running past its warning
    time (the stored state says only active)."""

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "kind": clock.kind,
        "state": clock.state,
        "at_risk": clock.state == "active"
        and clock.warning_at is not None
        and clock.warning_at <= now,
        "policy_id": clock.policy_id,
        "target_minutes": clock.target_minutes,
        "started_at": iso(clock.started_at),
        "deadline_at": iso(clock.deadline_at),
        "warning_at": iso(clock.warning_at),
        "remaining_minutes": clock.remaining_minutes,
        "paused_minutes": round(clock.paused_minutes, 2),
        "met_at": iso(clock.met_at),
        "breached_at": iso(clock.breached_at),
    }


# -- clocks: what happens to a case ----------------------------------------------------------

# Probes for the per-message fast paths (built once: they run on every chat message).
_ANSWERABLE = (
    select(literal_column("1"))
    .select_from(SlaClock)
    .where(
        SlaClock.case_id == bindparam("case_id"),
        SlaClock.kind.in_(("first_response", "next_response")),
        # running, or breached and still unanswered (the answer's time is recorded)
        SlaClock.met_at.is_(None),
        SlaClock.state.in_((*RUNNING, "breached")),
    )
    .limit(1)
)
_STATES = select(SlaClock.kind, SlaClock.state).where(SlaClock.case_id == bindparam("case_id"))


async def start_clocks(session: AsyncSession, case: Case, now: datetime) -> list[SlaClock]:
    """Start first response and resolution for a new case, per the policy it matches.

    Idempotent: a kind that already has a clock is left alone. No policy, no clocks.
    """
    case, tier = await _case_and_tier(session, case)
    policy = await choose_policy(session, case, tier)
    if policy is None:
        return []
    clocks = await _clocks_of(session, case.id)
    calendar = clocks.add_policy(policy)
    started = []
    for kind in ("first_response", "resolution"):
        if kind in clocks.by_kind or policy.target_minutes(kind) is None:
            continue
        clock = _new_clock(case.id, kind, policy, calendar, now)
        session.add(clock)
        started.append(clock)
    await session.flush()
    return started


async def on_agent_public_reply(
    session: AsyncSession, case_id: int, now: datetime
) -> list[SlaClock]:
    """A human agent answered the customer in public (email sent, chat message, answered
    call): meets first response and next response.

    Only a call site that is such a reply may call this; status changes and automatic
    replies never do. A first response already breached keeps its state but records when
    it was finally answered.
    """
    if await session.scalar(_ANSWERABLE, {"case_id": case_id}) is None:
        return []  # the usual case mid-conversation: nothing waits for an answer
    clocks = await _clocks_of(session, case_id)
    changed = []
    for kind in ("first_response", "next_response"):
        clock = clocks.by_kind.get(kind)
        if clock is not None and _meet(clock, clocks.calendar(clock), now):
            changed.append(clock)
    await session.flush()
    return changed


async def on_customer_message(session: AsyncSession, case_id: int, now: datetime) -> list[SlaClock]:
    """The customer wrote: paused clocks resume, and next response starts unless one is
    already waiting for an answer (or first response still is).

    Nothing happens on a solved or closed case: reopening it is a status change, which the
    caller records first (`on_status_change`); a closed case gets a follow-up instead.
    """
    states = dict((await session.execute(_STATES, {"case_id": case_id})).all())
    awaited = any(states.get(kind) in RUNNING for kind in ("first_response", "next_response"))
    if awaited and "paused" not in states.values():
        return []  # the usual case mid-conversation: an answer is already awaited
    case, tier = await _case_and_tier(session, case_id)
    if case.status in DONE_STATUSES:
        return []
    clocks = await _clocks_of(session, case.id)
    changed = [
        clock
        for clock in clocks.by_kind.values()
        if _resume(clock, clocks.policy(clock), clocks.calendar(clock), now)
    ]
    first = clocks.by_kind.get("first_response")
    current = clocks.by_kind.get("next_response")
    awaiting_answer = any(c is not None and c.state in RUNNING for c in (first, current))
    if not awaiting_answer:
        policy = await choose_policy(session, case, tier)
        if policy is not None and policy.next_response_minutes is not None:
            calendar = clocks.add_policy(policy)
            if current is None:
                current = _new_clock(case.id, "next_response", policy, calendar, now)
                session.add(current)
            else:
                _restart(current, policy, calendar, now)
            changed.append(current)
    await session.flush()
    return _ordered(changed)


async def on_status_change(
    session: AsyncSession, case_id: int, old: str, new: str, now: datetime
) -> list[SlaClock]:
    """Pause, resume, meet or reopen clocks for a status change from `old` to `new`.

    Pending, solved and closed stand the clocks still; solved and closed meet resolution;
    leaving solved for an open status resumes resolution with the time it had left.
    """
    if old == new:
        return []
    clocks = await _clocks_of(session, case_id)
    changed: list[SlaClock] = []
    for clock in clocks.by_kind.values():
        policy, calendar = clocks.policy(clock), clocks.calendar(clock)
        if clock.kind == "resolution" and new in DONE_STATUSES:
            did = _meet(clock, calendar, now)
        elif clock.kind == "resolution" and old in DONE_STATUSES:
            did = _reopen(clock, policy, calendar, now)
            if did and new in PAUSED_STATUSES:
                _pause(clock, calendar, now)
        elif new in PAUSED_STATUSES:
            did = _pause(clock, calendar, now)
        else:
            did = _resume(clock, policy, calendar, now)
        if did:
            changed.append(clock)
    await session.flush()
    return _ordered(changed)


def _reopen(clock: SlaClock, policy: SlaPolicy, calendar: BusinessCalendar, now: datetime) -> bool:
    if clock.state != "met":
        return False
    assert clock.met_at is not None
    # The solved spell counts as paused time: what was left at solving is left now.
    clock.paused_minutes += max(0.0, calendar.between(clock.met_at, now))
    clock.state = "active"
    clock.met_at = None
    clock.remaining_minutes = None
    _schedule(clock, policy, calendar)
    if clock.warning_at is not None and clock.warning_at > now:
        clock.warned_at = None
    return True


async def recompute(session: AsyncSession, case: Case, now: datetime) -> list[SlaClock]:
    """Re-choose the policy after the case's priority, team or customer tier changed, and
    retarget its running clocks.

    A running clock keeps its start and paused time and gets the new target, so the business
    time already spent counts against it; with no target any more it is removed. Met and
    breached clocks stay as judged. A missing resolution clock starts now; a missing first
    response does not (whether an agent has already answered is not known here), and next
    response starts at the next customer message. Returns the clocks changed or started.
    """
    case, tier = await _case_and_tier(session, case)
    policy = await choose_policy(session, case, tier)
    clocks = await _clocks_of(session, case.id)
    changed: list[SlaClock] = []
    for kind, clock in clocks.by_kind.items():
        if clock.state not in RUNNING:
            continue
        target = policy.target_minutes(kind) if policy is not None else None
        if policy is None or target is None:
            await session.delete(clock)
            continue
        calendar = clocks.add_policy(policy)
        clock.policy_id = policy.id
        clock.target_minutes = target
        if clock.state == "active":
            _schedule(clock, policy, calendar)
            if clock.warning_at is not None and clock.warning_at > now:
                clock.warned_at = None
        else:
            assert clock.paused_at is not None
            spent = calendar.between(clock.started_at, clock.paused_at) - clock.paused_minutes
            clock.remaining_minutes = max(0.0, target - spent)
        changed.append(clock)
    if (
        policy is not None
        and policy.resolution_minutes is not None
        and "resolution" not in clocks.by_kind
        and case.status not in DONE_STATUSES
    ):
        calendar = clocks.add_policy(policy)
        clock = _new_clock(case.id, "resolution", policy, calendar, now)
        if case.status in PAUSED_STATUSES:
            _pause(clock, calendar, now)
        session.add(clock)
        changed.append(clock)
    await session.flush()
    return _ordered(changed)


# -- the worker's side -----------------------------------------------------------------------


@dataclass(frozen=True)
class DueClock:
    """A clock whose warning or deadline has come, and which of the two to announce."""

    clock: SlaClock
    event: Literal["sla_warning", "sla_breach"]


async def due(session: AsyncSession, now: datetime, limit: int = 100) -> list[DueClock]:
    """Running clocks past their deadline (breaches first, oldest first), then past their
    warning, that nobody has announced; locked `FOR UPDATE SKIP LOCKED`.

    Each probe is a range scan of its partial index, so the cost is the number of clocks
    due, not of cases. Concurrent workers get disjoint rows; call `record_fired` for what
    was announced before committing, or the rows come back on the next call.
    """
    breaches = list(
        await session.scalars(
            select(SlaClock)
            .where(_IS_ACTIVE, SlaClock.deadline_at <= now)
            .order_by(SlaClock.deadline_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .execution_options(populate_existing=True)
        )
    )
    found = [DueClock(c, "sla_breach") for c in breaches]
    if len(found) < limit:
        warnings = await session.scalars(
            select(SlaClock)
            .where(
                _IS_ACTIVE,
                SlaClock.warned_at.is_(None),
                SlaClock.warning_at <= now,
                SlaClock.deadline_at > now,
            )
            .order_by(SlaClock.warning_at)
            .limit(limit - len(found))
            .with_for_update(skip_locked=True)
            .execution_options(populate_existing=True)
        )
        found += [DueClock(c, "sla_warning") for c in warnings]
    return found


async def record_fired(session: AsyncSession, fired: Sequence[DueClock], now: datetime) -> None:
    """Record that the events of `fired` were announced at `now`: a warning once, a breach
    by turning the clock breached (as of its deadline)."""
    for item in fired:
        clock = item.clock
        if item.event == "sla_warning":
            clock.warned_at = now
        else:
            clock.state = "breached"
            clock.breached_at = clock.deadline_at
            clock.breach_fired_at = now
    await session.flush()
