"""Administering SLA calendars and policies: edits, ordering, switching off, and the preview
"what would this case's deadlines be?".

Admins write calendars as text (`mon-fri 09:00-12:00,13:00-18:00`, `2027-12-29..2028-01-03`),
so this module turns that text into a `BusinessCalendar` and back. A form is checked whole:
`InvalidFields` carries every wrong field with its own message, and nothing is saved unless
all are right. Every change writes an audit record with the values before and after, in the
caller's transaction.

Edits apply to what is computed from then on: a running clock keeps the deadline it has until
its case changes (a reply, a status, a new priority), when it is recomputed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import holidays
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from helpdesk import audit, sla, visibility
from helpdesk.business_time import DAYS, BusinessCalendar, Interval, parse_weekly
from helpdesk.errors import InvalidInput, NotFound
from helpdesk.models import (
    CHANNELS,
    PRIORITIES,
    SLA_CLOCK_KINDS,
    TIERS,
    BusinessCalendarRecord,
    Case,
    Customer,
    SlaClock,
    SlaPolicy,
    Team,
)

MAX_NAME = 120
MAX_TARGET_MINUTES = 525_600  # a year of minutes: more is a typo, not a promise
MAX_RANGE_DAYS = 366
_DATE = r"\d{4}-\d{2}-\d{2}"
_DATES = re.compile(rf"^({_DATE})(?:\.\.({_DATE}))?$")
_HOURS = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")


def _(message: str) -> str:
    """Mark a message for extraction (pybabel's `_` keyword); the web layer translates it."""
    return message


# -- errors ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldError:
    """One field's message: a msgid with `%(name)s` placeholders, and their values."""

    message: str
    params: Mapping[str, object] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message % dict(self.params) if self.params else self.message


class InvalidFields(InvalidInput):
    """Several fields of one form are wrong; `errors` maps each field to its message.

    The first one is the error's own message and field, so a caller that knows only
    `InvalidInput` still shows something precise.
    """

    def __init__(self, errors: Mapping[str, FieldError]) -> None:
        name, first = next(iter(errors.items()))
        super().__init__(str(first), field=name, errors={k: str(v) for k, v in errors.items()})
        self.errors = dict(errors)


class _Errors(dict[str, FieldError]):
    def add(self, field_name: str, message: str, /, **params: object) -> None:
        self.setdefault(field_name, FieldError(message, params))

    def raise_any(self) -> None:
        if self:
            raise InvalidFields(self)


# -- calendars as text -----------------------------------------------------------------------


@dataclass
class CalendarForm:
    """A calendar as the admin form writes it; every field is text."""

    name: str = ""
    timezone: str = "Asia/Tokyo"
    weekly: str = "mon-fri 09:00-12:00,13:00-18:00"
    holiday_region: str = "JP"
    closed_dates: str = ""
    special_hours: str = ""


def calendar_from_form(form: CalendarForm) -> BusinessCalendar:
    """The calendar the form describes; InvalidFields names every wrong field.

    Weekly hours: one line (or `;`-separated group) per set of days, intervals separated by
    commas or spaces. Closed dates: `YYYY-MM-DD` or `YYYY-MM-DD..YYYY-MM-DD`, separated by
    commas or new lines. Special hours (they replace a day's hours, even on a holiday): one
    line per date or date range, followed by its intervals (or `closed`).
    """
    errors = _Errors()
    timezone = form.timezone.strip()
    if not timezone:
        errors.add("timezone", _("Enter a timezone, such as Asia/Tokyo."))
    elif not _is_timezone(timezone):
        errors.add(
            "timezone",
            _("%(timezone)s is not an IANA timezone; use a name such as Asia/Tokyo."),
            timezone=timezone,
        )
    region = _region(form.holiday_region)
    if region is not None:
        try:
            BusinessCalendar(timezone="UTC", weekly={}, holiday_region=region)
        except ValueError:
            errors.add(
                "holiday_region",
                _("No public holidays are known for %(region)s; use a country code such as JP."),
                region=region,
            )
    weekly: dict[int, tuple[Interval, ...]] = {}
    try:
        weekly = parse_weekly(_weekly_spec(form.weekly))
        BusinessCalendar(timezone="UTC", weekly=weekly, holiday_region=None)
    except ValueError as exc:
        errors.add("weekly", _("Weekly hours: %(detail)s"), detail=str(exc))
    closed: set[date] = set()
    for token in _tokens(form.closed_dates):
        try:
            closed.update(_date_range(token))
        except ValueError as exc:
            errors.add("closed_dates", _("Closed dates: %(detail)s"), detail=str(exc))
    special: dict[date, tuple[Interval, ...]] = {}
    try:
        special = _special_hours(form.special_hours)
        BusinessCalendar(timezone="UTC", weekly={}, holiday_region=None, special_hours=special)
    except ValueError as exc:
        errors.add("special_hours", _("Special hours: %(detail)s"), detail=str(exc))
    errors.raise_any()
    return BusinessCalendar(
        timezone=timezone,
        weekly=weekly,
        holiday_region=region,
        closed_dates=frozenset(closed),
        special_hours=special,
    )


def calendar_form_of(record: BusinessCalendarRecord) -> CalendarForm:
    """The text an admin edits for a stored calendar; `calendar_from_form` reads it back."""
    return CalendarForm(
        name=record.name,
        timezone=record.timezone,
        weekly=_weekly_text(record.weekly),
        holiday_region=record.holiday_region or "",
        closed_dates="\n".join(
            _date_runs(sorted(date.fromisoformat(d) for d in record.closed_dates or []))
        ),
        special_hours=_special_text(record.special_hours or {}),
    )


def _is_timezone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (KeyError, ValueError):
        return False
    return True


def _region(raw: str) -> str | None:
    country, dash, subdivision = raw.strip().partition("-")
    return f"{country.upper()}{dash}{subdivision}" if country else None


def _tokens(text: str) -> list[str]:
    return [t for t in re.split(r"[\s,;]+", text.strip()) if t]


def _weekly_spec(text: str) -> str:
    """`mon-fri 09:00-12:00,13:00-18:00` lines as `parse_weekly` reads them: groups split by
    `;`, intervals by spaces (the days keep their commas: `mon,wed`)."""
    groups = []
    for line in re.split(r"[;\n]+", text):
        days, _sep, hours = line.strip().partition(" ")
        if days:
            groups.append(f"{days} {hours.replace(',', ' ')}")
    return "; ".join(groups)


def _date_range(token: str) -> list[date]:
    match = _DATES.match(token)
    if not match:
        raise ValueError(
            f"{token!r} is not a date like 2027-05-03 or a range like 2027-05-03..2027-05-05"
        )
    try:
        first = date.fromisoformat(match.group(1))
        last = date.fromisoformat(match.group(2) or match.group(1))
    except ValueError as exc:
        raise ValueError(f"{token!r}: {exc}") from exc
    if last < first:
        raise ValueError(f"{token!r} ends before it starts")
    if (last - first).days >= MAX_RANGE_DAYS:
        raise ValueError(f"{token!r} is longer than {MAX_RANGE_DAYS} days")
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def _special_hours(text: str) -> dict[date, tuple[Interval, ...]]:
    special: dict[date, tuple[Interval, ...]] = {}
    for line in text.splitlines():
        words = line.replace(",", " ").split()
        if not words:
            continue
        if len(words) < 2:
            raise ValueError(
                f"{line.strip()!r}: write a date and its hours, e.g. 2027-12-28 09:00-12:00"
            )
        if [w.lower() for w in words[1:]] == ["closed"]:
            intervals: tuple[Interval, ...] = ()  # closed, whatever else the day would be
        else:
            intervals = tuple(_interval(word, line) for word in words[1:])
        for day in _date_range(words[0]):
            if day in special:
                raise ValueError(f"{day.isoformat()} is listed twice")
            special[day] = intervals
    return special


def _interval(word: str, line: str) -> Interval:
    # The weekly parser knows the clock syntax; reuse it through a one-day spec.
    try:
        return parse_weekly(f"mon {word}")[0][0]
    except ValueError:
        raise ValueError(f"{line.strip()!r}: {word!r} is not like 09:00-12:00") from None


def _weekly_text(weekly: Mapping[str, list[list[str]]]) -> str:
    """Consecutive days with the same hours as one line: `mon-fri 09:00-12:00,13:00-18:00`."""
    hours = {int(k): ",".join(f"{a}-{b}" for a, b in v) for k, v in weekly.items() if v}
    lines, day = [], 0
    while day < 7:
        if day not in hours:
            day += 1
            continue
        last = day
        while last + 1 < 7 and hours.get(last + 1) == hours[day]:
            last += 1
        days = DAYS[day] if last == day else f"{DAYS[day]}-{DAYS[last]}"
        lines.append(f"{days} {hours[day]}")
        day = last + 1
    return "\n".join(lines)


def _date_runs(days: Sequence[date]) -> list[str]:
    runs: list[list[date]] = []
    for day in days:
        if runs and day - runs[-1][-1] == timedelta(days=1):
            runs[-1].append(day)
        else:
            runs.append([day])
    return [
        run[0].isoformat() if len(run) == 1 else f"{run[0].isoformat()}..{run[-1].isoformat()}"
        for run in runs
    ]


def _special_text(special: Mapping[str, list[list[str]]]) -> str:
    by_hours: dict[str, list[date]] = {}
    for day, intervals in special.items():
        hours = ",".join(f"{a}-{b}" for a, b in intervals) or "closed"
        by_hours.setdefault(hours, []).append(date.fromisoformat(day))
    lines = [(run, hours) for hours, days in by_hours.items() for run in _date_runs(sorted(days))]
    return "\n".join(f"{run} {hours}" for run, hours in sorted(lines))


# -- calendars: saving -----------------------------------------------------------------------


def _calendar_values(record: BusinessCalendarRecord) -> dict[str, object]:
    return {
        "name": record.name,
        "timezone": record.timezone,
        "weekly": record.weekly,
        "holiday_region": record.holiday_region,
        "closed_dates": list(record.closed_dates or []),
        "special_hours": dict(record.special_hours or {}),
    }


async def list_calendars(session: AsyncSession) -> list[BusinessCalendarRecord]:
    return list(
        await session.scalars(select(BusinessCalendarRecord).order_by(BusinessCalendarRecord.name))
    )


async def get_calendar(session: AsyncSession, calendar_id: int) -> BusinessCalendarRecord:
    record = await session.get(BusinessCalendarRecord, calendar_id)
    if record is None:
        raise NotFound(f"calendar {calendar_id} not found")
    return record


async def save_calendar(
    session: AsyncSession,
    form: CalendarForm,
    *,
    calendar_id: int | None = None,
    actor_user_id: int | None,
) -> BusinessCalendarRecord:
    """Create a calendar (no `calendar_id`) or change one, from its form; audited.

    Checks every field first and raises InvalidFields with all that are wrong.
    """
    record = await get_calendar(session, calendar_id) if calendar_id is not None else None
    errors = _Errors()
    name = form.name.strip()
    if not name:
        errors.add("name", _("Enter a name."))
    elif len(name) > MAX_NAME:
        errors.add("name", _("The name is longer than %(max)s characters."), max=MAX_NAME)
    else:
        taken = await session.scalar(
            select(BusinessCalendarRecord.id).where(
                func.lower(BusinessCalendarRecord.name) == name.lower()
            )
        )
        if taken is not None and taken != calendar_id:
            errors.add("name", _("A calendar named %(name)s already exists."), name=name)
    try:
        calendar = calendar_from_form(form)
    except InvalidFields as exc:
        errors.update({k: v for k, v in exc.errors.items() if k not in errors})
    errors.raise_any()

    if record is None:
        record = await sla.create_calendar(session, name, calendar)
        await audit.record(
            session,
            actor_user_id,
            "sla_calendar.create",
            "sla_calendar",
            record.id,
            after=_calendar_values(record),
        )
        return record
    before = _calendar_values(record)
    data = calendar.as_dict()
    record.name = name
    record.timezone = str(data["timezone"])
    record.weekly = data["weekly"]  # type: ignore[assignment]
    record.holiday_region = data["holiday_region"]  # type: ignore[assignment]
    record.closed_dates = data["closed_dates"]  # type: ignore[assignment]
    record.special_hours = data["special_hours"]  # type: ignore[assignment]
    await session.flush()
    after = _calendar_values(record)
    if after != before:
        await audit.record(
            session,
            actor_user_id,
            "sla_calendar.update",
            "sla_calendar",
            record.id,
            before=before,
            after=after,
        )
    return record


# -- policies --------------------------------------------------------------------------------


@dataclass
class PolicyForm:
    """A policy as the admin form sends it: text fields, and a list per condition (nothing
    ticked matches anything)."""

    name: str = ""
    calendar_id: str = ""
    priority: list[str] = field(default_factory=list)
    channel: list[str] = field(default_factory=list)
    tier: list[str] = field(default_factory=list)
    team_id: list[str] = field(default_factory=list)
    first_response_minutes: str = ""
    next_response_minutes: str = ""
    resolution_minutes: str = ""
    warning_percent: str = "80"
    breach_raise_priority: bool = False
    breach_reassign_team_id: str = ""
    active: bool = True


TARGET_FIELDS = ("first_response_minutes", "next_response_minutes", "resolution_minutes")


def policy_form_of(policy: SlaPolicy) -> PolicyForm:
    conditions = policy.conditions or {}
    return PolicyForm(
        name=policy.name,
        calendar_id=str(policy.calendar_id),
        priority=[str(v) for v in conditions.get("priority", [])],
        channel=[str(v) for v in conditions.get("channel", [])],
        tier=[str(v) for v in conditions.get("tier", [])],
        team_id=[str(v) for v in conditions.get("team_id", [])],
        first_response_minutes=_text(policy.first_response_minutes),
        next_response_minutes=_text(policy.next_response_minutes),
        resolution_minutes=_text(policy.resolution_minutes),
        warning_percent=str(policy.warning_percent),
        breach_raise_priority=policy.breach_raise_priority,
        breach_reassign_team_id=_text(policy.breach_reassign_team_id),
        active=policy.active,
    )


def _text(value: int | None) -> str:
    return "" if value is None else str(value)


@dataclass(frozen=True)
class _PolicyValues:
    name: str
    calendar_id: int
    conditions: dict[str, list[object]]
    first_response_minutes: int | None
    next_response_minutes: int | None
    resolution_minutes: int | None
    warning_percent: int
    breach_raise_priority: bool
    breach_reassign_team_id: int | None


def _whole(raw: str) -> int | None:
    raw = raw.strip()
    return int(raw) if raw.isdigit() else None


async def _checked_policy(
    session: AsyncSession, form: PolicyForm, policy_id: int | None
) -> _PolicyValues:
    errors = _Errors()
    name = form.name.strip()
    if not name:
        errors.add("name", _("Enter a name."))
    elif len(name) > MAX_NAME:
        errors.add("name", _("The name is longer than %(max)s characters."), max=MAX_NAME)
    else:
        taken = await session.scalar(
            select(SlaPolicy.id).where(func.lower(SlaPolicy.name) == name.lower())
        )
        if taken is not None and taken != policy_id:
            errors.add("name", _("A policy named %(name)s already exists."), name=name)

    calendar_id = _whole(form.calendar_id)
    if calendar_id is None or await session.get(BusinessCalendarRecord, calendar_id) is None:
        errors.add("calendar_id", _("Choose a business calendar."))

    conditions: dict[str, list[object]] = {}
    for key, known in (("priority", PRIORITIES), ("channel", CHANNELS), ("tier", TIERS)):
        values = list(dict.fromkeys(getattr(form, key)))
        wrong = [v for v in values if v not in known]
        if wrong:
            errors.add(key, _("Unknown value %(value)s."), value=wrong[0])
        elif values:
            conditions[key] = list(values)
    team_ids = [_whole(v) for v in dict.fromkeys(form.team_id)]
    if team_ids:
        known_teams = set(
            await session.scalars(select(Team.id).where(Team.id.in_([t for t in team_ids if t])))
        )
        if any(t is None or t not in known_teams for t in team_ids):
            errors.add("team_id", _("Choose teams that exist."))
        else:
            conditions["team_id"] = list(team_ids)

    targets: dict[str, int | None] = {}
    for name_ in TARGET_FIELDS:
        raw = getattr(form, name_).strip()
        value = _whole(raw)
        if raw and (value is None or not 0 < value <= MAX_TARGET_MINUTES):
            errors.add(
                name_,
                _(
                    "Enter whole business minutes from 1 to %(max)s, or leave it empty for no target."
                ),
                max=MAX_TARGET_MINUTES,
            )
        targets[name_] = value if raw else None

    warning = _whole(form.warning_percent)
    if warning is None or not 1 <= warning <= 100:
        errors.add("warning_percent", _("Enter a percentage from 1 to 100."))

    reassign: int | None = None
    if form.breach_reassign_team_id.strip():
        reassign = _whole(form.breach_reassign_team_id)
        if reassign is None or await session.get(Team, reassign) is None:
            errors.add("breach_reassign_team_id", _("Choose a team that exists."))
    errors.raise_any()
    assert calendar_id is not None and warning is not None
    return _PolicyValues(
        name=name,
        calendar_id=calendar_id,
        conditions=sla.validate_conditions(conditions),
        first_response_minutes=targets["first_response_minutes"],
        next_response_minutes=targets["next_response_minutes"],
        resolution_minutes=targets["resolution_minutes"],
        warning_percent=warning,
        breach_raise_priority=bool(form.breach_raise_priority),
        breach_reassign_team_id=reassign,
    )


def _policy_values(policy: SlaPolicy) -> dict[str, object]:
    return {
        "name": policy.name,
        "position": policy.position,
        "active": policy.active,
        "conditions": policy.conditions,
        "first_response_minutes": policy.first_response_minutes,
        "next_response_minutes": policy.next_response_minutes,
        "resolution_minutes": policy.resolution_minutes,
        "warning_percent": policy.warning_percent,
        "calendar_id": policy.calendar_id,
        "breach_raise_priority": policy.breach_raise_priority,
        "breach_reassign_team_id": policy.breach_reassign_team_id,
    }


async def list_policies(session: AsyncSession) -> list[SlaPolicy]:
    """Every policy, active or not, in the order they are tried."""
    return list(
        await session.scalars(
            select(SlaPolicy)
            .order_by(SlaPolicy.position, SlaPolicy.id)
            .options(selectinload(SlaPolicy.calendar))
        )
    )


async def get_policy(session: AsyncSession, policy_id: int) -> SlaPolicy:
    policy = await session.get(SlaPolicy, policy_id)
    if policy is None:
        raise NotFound(f"SLA policy {policy_id} not found")
    return policy


async def save_policy(
    session: AsyncSession,
    form: PolicyForm,
    *,
    policy_id: int | None = None,
    actor_user_id: int | None,
) -> SlaPolicy:
    """Create a policy, last in order (no `policy_id`), or change one; audited.

    Checks every field first and raises InvalidFields with all that are wrong. Running clocks
    keep their targets until their case changes.
    """
    policy = await get_policy(session, policy_id) if policy_id is not None else None
    values = await _checked_policy(session, form, policy_id)
    if policy is None:
        policy = await sla.create_policy(
            session,
            name=values.name,
            calendar_id=values.calendar_id,
            conditions=values.conditions,
            first_response_minutes=values.first_response_minutes,
            next_response_minutes=values.next_response_minutes,
            resolution_minutes=values.resolution_minutes,
            warning_percent=values.warning_percent,
            active=bool(form.active),
            breach_raise_priority=values.breach_raise_priority,
            breach_reassign_team_id=values.breach_reassign_team_id,
        )
        await audit.record(
            session,
            actor_user_id,
            "sla_policy.create",
            "sla_policy",
            policy.id,
            after=_policy_values(policy),
        )
        return policy
    before = _policy_values(policy)
    policy.name = values.name
    policy.calendar_id = values.calendar_id
    policy.conditions = values.conditions
    policy.first_response_minutes = values.first_response_minutes
    policy.next_response_minutes = values.next_response_minutes
    policy.resolution_minutes = values.resolution_minutes
    policy.warning_percent = values.warning_percent
    policy.breach_raise_priority = values.breach_raise_priority
    policy.breach_reassign_team_id = values.breach_reassign_team_id
    await session.flush()
    after = _policy_values(policy)
    if after != before:
        await audit.record(
            session,
            actor_user_id,
            "sla_policy.update",
            "sla_policy",
            policy.id,
            before=before,
            after=after,
        )
    return policy


async def reorder_policies(
    session: AsyncSession,
    policy_ids: Sequence[int],
    *,
    actor_user_id: int | None,
    moved_id: int | None = None,
) -> list[SlaPolicy]:
    """Put every policy in the order given (positions 0, 1, 2, ...); audited as one change.

    `policy_ids` must name each policy exactly once, so two admins reordering at once cannot
    silently drop a policy the other just added.
    """
    policies = list(
        await session.scalars(
            select(SlaPolicy).order_by(SlaPolicy.position, SlaPolicy.id).with_for_update()
        )
    )
    by_id = {p.id: p for p in policies}
    if sorted(policy_ids) != sorted(by_id) or len(set(policy_ids)) != len(policy_ids):
        raise InvalidInput("name every SLA policy exactly once to reorder them", field="order")
    before = [p.id for p in policies]
    for position, policy_id in enumerate(policy_ids):
        by_id[policy_id].position = position
    await session.flush()
    if list(policy_ids) != before:
        await audit.record(
            session,
            actor_user_id,
            "sla_policy.reorder",
            "sla_policy",
            moved_id or policy_ids[0],
            before={"order": before},
            after={"order": list(policy_ids)},
        )
    return [by_id[i] for i in policy_ids]


async def move_policy(
    session: AsyncSession, policy_id: int, step: int, *, actor_user_id: int | None
) -> None:
    """Move a policy `step` places earlier (negative) or later in the order; at the ends it
    stays where it is."""
    order = [p.id for p in await list_policies(session)]
    if policy_id not in order:
        raise NotFound(f"SLA policy {policy_id} not found")
    here = order.index(policy_id)
    there = max(0, min(len(order) - 1, here + step))
    order.insert(there, order.pop(here))
    await reorder_policies(session, order, actor_user_id=actor_user_id, moved_id=policy_id)


async def set_policy_active(
    session: AsyncSession, policy_id: int, active: bool, *, actor_user_id: int | None
) -> SlaPolicy:
    """Switch a policy off (no new case chooses it) or on again; audited.

    Policies are never deleted: running clocks count on their policy's calendar.
    """
    policy = await get_policy(session, policy_id)
    if policy.active != active:
        policy.active = active
        await session.flush()
        await audit.record(
            session,
            actor_user_id,
            "sla_policy.activate" if active else "sla_policy.deactivate",
            "sla_policy",
            policy.id,
            before={"active": not active},
            after={"active": active},
        )
    return policy


# -- preview ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseFacts:
    """What a policy's conditions look at, and when the case was opened (aware)."""

    priority: str = "normal"
    channel: str = "email"
    tier: str = "standard"
    team_id: int | None = None
    created_at: datetime | None = None


@dataclass(frozen=True)
class PreviewClock:
    """One target as it would run from `CaseFacts.created_at`, nothing paused."""

    kind: str
    target_minutes: int
    warning_at: datetime
    deadline_at: datetime


@dataclass(frozen=True)
class Preview:
    facts: CaseFacts
    policy: SlaPolicy | None
    clocks: tuple[PreviewClock, ...] = ()
    case: Case | None = None
    # The case's own clocks as stored (they may differ: pauses, replies, later changes).
    stored: tuple[SlaClock, ...] = ()


async def preview(session: AsyncSession, facts: CaseFacts, *, case: Case | None = None) -> Preview:
    """Which policy a case with these facts gets, and when each of its targets is due.

    The same choice `sla.choose_policy` makes for a real case. Next response is shown as if
    the customer wrote at `created_at`; in a real case it runs from each customer message.
    """
    errors = _Errors()
    if facts.priority not in PRIORITIES:
        errors.add("priority", _("Unknown value %(value)s."), value=facts.priority)
    if facts.channel not in CHANNELS:
        errors.add("channel", _("Unknown value %(value)s."), value=facts.channel)
    if facts.tier not in TIERS:
        errors.add("tier", _("Unknown value %(value)s."), value=facts.tier)
    if facts.team_id is not None and await session.get(Team, facts.team_id) is None:
        errors.add("team_id", _("Choose a team that exists."))
    if facts.created_at is None or facts.created_at.tzinfo is None:
        errors.add("created_at", _("Enter the date and time the case was opened."))
    errors.raise_any()
    assert facts.created_at is not None
    # A case that is never added to the session: choose_policy only reads its facts.
    probe = Case(priority=facts.priority, channel=facts.channel, team_id=facts.team_id)
    policy = await sla.choose_policy(session, probe, facts.tier)
    if policy is None:
        return Preview(facts, None, case=case)
    calendar = sla.calendar_of(policy.calendar)
    clocks = []
    for kind in SLA_CLOCK_KINDS:
        target = policy.target_minutes(kind)
        if target is None:
            continue
        clocks.append(
            PreviewClock(
                kind=kind,
                target_minutes=target,
                warning_at=calendar.add(facts.created_at, target * policy.warning_percent / 100),
                deadline_at=calendar.add(facts.created_at, target),
            )
        )
    return Preview(facts, policy, tuple(clocks), case=case)


async def preview_case(
    session: AsyncSession, number: int, *, scope: visibility.Scope | None = None
) -> Preview:
    """The preview for an existing case (by its number): its facts as they are now, from its
    creation time, with its stored clocks alongside; 403 for another team's case."""
    case = await session.scalar(select(Case).where(Case.number == number))
    if case is None:
        raise InvalidFields(
            {"case": FieldError(_("There is no case #%(number)s."), {"number": number})}
        )
    visibility.check(scope, case)
    customer = await session.get(Customer, case.customer_id)
    facts = CaseFacts(
        priority=case.priority,
        channel=case.channel,
        tier=customer.tier if customer is not None else "standard",
        team_id=case.team_id,
        created_at=case.created_at,
    )
    result = await preview(session, facts, case=case)
    stored = await session.scalars(select(SlaClock).where(SlaClock.case_id == case.id))
    order = {kind: n for n, kind in enumerate(SLA_CLOCK_KINDS)}
    return Preview(
        result.facts,
        result.policy,
        result.clocks,
        case=case,
        stored=tuple(sorted(stored, key=lambda c: order[c.kind])),
    )


# -- what a calendar does with the coming weeks ----------------------------------------------


@dataclass(frozen=True)
class DayOff:
    """A date whose hours differ from its weekday's: a holiday, a closed date, special hours."""

    day: date
    reason: str  # "holiday", "closed" or "special"
    name: str = ""  # the holiday's name, in the language asked for when `holidays` has it
    hours: tuple[Interval, ...] = ()


def days_off(
    calendar: BusinessCalendar, start: date, days: int = 120, language: str | None = None
) -> list[DayOff]:
    """The dates from `start` on (for `days` days) where the calendar departs from its weekly
    hours, so an admin can check that Golden Week really is closed before a deadline says so."""
    names: dict[date, str] = {}
    if calendar.holiday_region:
        country, _sep, subdivision = calendar.holiday_region.partition("-")
        years = list(range(start.year, (start + timedelta(days=days)).year + 1))
        try:
            table = holidays.country_holidays(
                country, subdiv=subdivision or None, years=years, language=language
            )
        except (NotImplementedError, KeyError, ValueError):
            table = holidays.country_holidays(country, subdiv=subdivision or None, years=years)
        names = {d: str(n) for d, n in table.items()}
    found = []
    for n in range(days):
        day = start + timedelta(days=n)
        if day in calendar.special_hours:
            found.append(DayOff(day, "special", names.get(day, ""), calendar.special_hours[day]))
        elif day in calendar.closed_dates:
            found.append(DayOff(day, "closed", names.get(day, "")))
        elif calendar.is_holiday(day) and calendar.weekly.get(day.weekday()):
            found.append(DayOff(day, "holiday", names.get(day, "")))
    return found


def team_names(teams: Iterable[Team]) -> dict[int, str]:
    return {t.id: t.name for t in teams}
