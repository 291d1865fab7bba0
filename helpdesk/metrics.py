"""Contact-center figures: the supervisor's live board and the service level of a period.

Two questions, two functions, each with a session and plain values (`now`, a timezone, team
ids), so a request, the benchmark and a test with a frozen clock ask them alike:

- `board_snapshot`: what the desk looks like *now*, per team: open work, SLA clocks at risk or
  breached, who has waited longest, chats and calls waiting, agents and their load, and
  today's service level.
- `service_level`: how the desk did over a period: calls answered within the threshold, first
  responses within target, ASA, AHT, abandonment, FCR and CSAT, in total and by hour.

docs/METRICS.md defines every figure (numerator, denominator, exclusions, window, timezone);
keep it in step with the code here.

The board must stay fast on a desk with a million cases, so every query starts from a partial
index that holds only what is live: open cases (`ix_cases_open_team`), running or breached
clocks (`ix_sla_clocks_active_warning`, `ix_sla_clocks_breached_unmet`,
`ix_sla_clocks_waiting`), waiting chats, ringing calls. State names are written into the SQL as
literals, never bound, so that even a generic prepared plan can prove those indexes' predicates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from helpdesk.cases import OPEN_STATUSES
from helpdesk.db import Database
from helpdesk.models import AgentPresence, Team, User
from helpdesk.presence import effective_status

# Open statuses as an SQL literal (the partial index ix_cases_open_team has the same list).
OPEN = "(" + ", ".join(f"'{status}'" for status in OPEN_STATUSES) + ")"
# A call the PBX never reported ending: after this long "ringing" it is a lost hangup, not a
# caller still waiting, and it would otherwise sit on the board for ever.
STALE_RING = timedelta(hours=1)
MAX_PERIOD = timedelta(days=31)  # hourly figures for longer periods would be thousands of rows
STATUS_ORDER = {"available": 0, "busy": 1, "away": 2, "offline": 3}


# -- the board -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseRef:
    """A case to link to: the board's "oldest waiting" and its list of clocks in trouble."""

    id: int
    number: int
    subject: str


@dataclass
class TeamBoard:
    """One team's live figures (`team_id` None: cases, chats and calls of no team).

    Counts are of cases (a case with two clocks in trouble counts once, as its worse
    state: breached before at risk). Waits are measured at the snapshot's `now`.
    """

    team_id: int | None
    name: str | None
    open: int = 0
    unassigned: int = 0
    at_risk: int = 0
    breached: int = 0
    oldest_waiting_since: datetime | None = None
    oldest_waiting_case: CaseRef | None = None
    chats_waiting: int = 0
    oldest_chat_since: datetime | None = None
    calls_ringing: int = 0
    oldest_call_since: datetime | None = None

    def as_dict(self, now: datetime) -> dict[str, Any]:
        return {
            "team_id": self.team_id,
            "name": self.name,
            "open": self.open,
            "unassigned": self.unassigned,
            "at_risk": self.at_risk,
            "breached": self.breached,
            "oldest_waiting_seconds": seconds_since(self.oldest_waiting_since, now),
            "oldest_waiting_case": (
                _case_ref_dict(self.oldest_waiting_case) if self.oldest_waiting_case else None
            ),
            "chats_waiting": self.chats_waiting,
            "longest_chat_wait_seconds": seconds_since(self.oldest_chat_since, now),
            "calls_ringing": self.calls_ringing,
            "longest_call_wait_seconds": seconds_since(self.oldest_call_since, now),
        }


@dataclass(frozen=True)
class ClockAlert:
    """A running clock past its warning time (`breached` False) or past its deadline."""

    case: CaseRef
    team_id: int | None
    assignee: str | None
    clock: str  # first_response | next_response | resolution
    deadline_at: datetime
    breached: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            **_case_ref_dict(self.case),
            "team_id": self.team_id,
            "assignee": self.assignee,
            "clock": self.clock,
            "deadline_at": self.deadline_at.isoformat(),
            "breached": self.breached,
        }


@dataclass(frozen=True)
class AgentLoad:
    """An agent as the board shows them: shown presence and what they carry right now."""

    user_id: int
    name: str
    team_id: int | None
    status: str  # effective presence: available | busy | away | offline
    on_call: bool
    active_chats: int
    chat_capacity: int
    open_cases: int

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class BoardSnapshot:
    now: datetime
    tz: ZoneInfo
    teams: list[TeamBoard]
    total: TeamBoard
    at_risk: list[ClockAlert]  # soonest deadline first
    breached: list[ClockAlert]  # latest breach first
    agents: list[AgentLoad]
    today: ServiceLevel

    def as_dict(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "timezone": self.tz.key,
            "teams": [t.as_dict(self.now) for t in self.teams],
            "total": self.total.as_dict(self.now),
            "at_risk": [a.as_dict() for a in self.at_risk],
            "breached": [a.as_dict() for a in self.breached],
            "agents": [a.as_dict() for a in self.agents],
            "today": self.today.as_dict(),
        }


def seconds_since(since: datetime | None, now: datetime) -> int | None:
    return None if since is None else max(0, int((now - since).total_seconds()))


def _case_ref_dict(case: CaseRef) -> dict[str, Any]:
    return {"case_id": case.id, "number": case.number, "subject": case.subject}


def _team_clause(column: str, team_ids: Sequence[int] | None) -> str:
    return "" if team_ids is None else f" AND {column} = ANY(:team_ids)"


# Which open cases are in trouble, each set from its own partial index: breached clocks
# whose obligation is still outstanding (`met_at` is set when the late answer or resolution
# comes), running clocks past their deadline that the worker has not marked yet (it does
# within a second), and running clocks past their warning time. `x IN (subquery)` inside an
# expression is a hashed SubPlan: each set is read once into a hash table and probed per
# open case, with no grouping of clocks and no row multiplication. OFFSET 0 keeps the
# per-case flags from being inlined twice (which would build the hash tables twice). The
# same pass counts open cases per assignee, for the agents' load.
# `(deadline_at > :now) IS TRUE` is not indexable on purpose: the planner, misled by the
# deadlines of millions of settled clocks in the column's statistics, would otherwise read
# every running clock by deadline instead of the few past their warning time.
_TEAM_COUNTS = """
SELECT GROUPING(team_id) = 1 AS by_assignee, team_id, assignee_id,
       count(*) AS open,
       count(*) FILTER (WHERE assignee_id IS NULL) AS unassigned,
       count(*) FILTER (WHERE at_risk AND NOT breached) AS at_risk,
       count(*) FILTER (WHERE breached) AS breached
FROM (
    SELECT c.team_id, c.assignee_id,
           c.id IN (SELECT case_id FROM sla_clocks
                    WHERE state = 'breached' AND met_at IS NULL
                    UNION ALL
                    SELECT case_id FROM sla_clocks
                    WHERE state = 'active' AND deadline_at <= :now) AS breached,
           c.id IN (SELECT case_id FROM sla_clocks
                    WHERE state = 'active' AND warning_at <= :now
                      AND (deadline_at > :now) IS TRUE) AS at_risk
    FROM cases AS c
    WHERE c.status IN {open}{team}
    OFFSET 0
) AS per_case
GROUP BY GROUPING SETS ((team_id), (assignee_id))
"""

# Who has waited longest, per team: response clocks someone is waiting on (running, or
# breached and still unanswered), on open cases. A case may have two (a first response
# breached unanswered, then a next response); for a minimum that does not matter.
_OLDEST_WAITING = """
SELECT c.team_id, min(k.started_at) AS since
FROM sla_clocks AS k
JOIN cases AS c ON c.id = k.case_id
WHERE k.kind IN ('first_response', 'next_response') AND k.state IN ('active', 'breached')
  AND k.met_at IS NULL AND c.status IN {open}{team}
GROUP BY c.team_id
"""

# The case behind each team's oldest wait, for the link: one probe of ix_sla_clocks_waiting
# per team, in one statement.
_OLDEST_WAITING_CASES = """
SELECT DISTINCT ON (w.team_id) w.team_id, c.id, c.number, c.subject
FROM unnest(CAST(:since AS timestamptz[]), CAST(:teams AS integer[])) AS w(since, team_id)
JOIN sla_clocks AS k ON k.started_at = w.since
JOIN cases AS c ON c.id = k.case_id
WHERE k.kind IN ('first_response', 'next_response') AND k.state IN ('active', 'breached')
  AND k.met_at IS NULL AND c.status IN {open} AND c.team_id IS NOT DISTINCT FROM w.team_id
ORDER BY w.team_id, c.id
"""

# The lists walk their clocks in the order shown and stop after `limit` open cases: at risk
# by the soonest deadline, breached by the latest breach (each of its two sources a backward
# index scan that stops at `limit` open cases), so old breaches on cases closed without an
# answer, which stay "breached and unmet" for ever, are never read.
_AT_RISK_LIST = """
SELECT c.id, c.number, c.subject, c.team_id, u.name AS assignee, k.kind, k.deadline_at
FROM sla_clocks AS k
JOIN cases AS c ON c.id = k.case_id
LEFT JOIN users AS u ON u.id = c.assignee_id
WHERE k.state = 'active' AND k.warning_at <= :now AND k.deadline_at > :now
  AND c.status IN {open}{team}
ORDER BY k.deadline_at, c.id
LIMIT :limit
"""

_BREACHED_LIST = """
SELECT c.id, c.number, c.subject, c.team_id, u.name AS assignee, k.kind, k.deadline_at
FROM (
    (SELECT k.case_id, k.kind, k.deadline_at FROM sla_clocks AS k
     JOIN cases AS c ON c.id = k.case_id
     WHERE k.state = 'breached' AND k.met_at IS NULL AND c.status IN {open}{team}
     ORDER BY k.deadline_at DESC LIMIT :limit)
    UNION ALL
    (SELECT k.case_id, k.kind, k.deadline_at FROM sla_clocks AS k
     JOIN cases AS c ON c.id = k.case_id
     WHERE k.state = 'active' AND k.deadline_at <= :now AND c.status IN {open}{team}
     ORDER BY k.deadline_at DESC LIMIT :limit)
) AS k
JOIN cases AS c ON c.id = k.case_id
LEFT JOIN users AS u ON u.id = c.assignee_id
ORDER BY k.deadline_at DESC, c.id
LIMIT :limit
"""

_CHATS_WAITING = """
SELECT team_id, count(*) AS waiting, min(queued_at) AS since FROM chat_conversations
WHERE state IN ('queued', 'offered'){team}
GROUP BY team_id
"""

_CALLS_RINGING = """
SELECT started_at, ringing_user_ids FROM calls
WHERE state = 'ringing' AND direction = 'in' AND started_at > :stale
"""


async def list_teams(session: AsyncSession) -> list[tuple[int, str]]:
    """Every team as (id, name), by name: what a board can be filtered to."""
    rows = await session.execute(select(Team.id, Team.name).order_by(Team.name, Team.id))
    return [(tid, name) for tid, name in rows.all()]


async def board_snapshot(
    session: AsyncSession,
    *,
    now: datetime,
    tz: ZoneInfo,
    team_ids: Sequence[int] | None = None,
    alert_limit: int = 6,
    targets: ServiceTargets | None = None,
    helpers: Sequence[AsyncSession] = (),
) -> BoardSnapshot:
    """The live board at `now`: per team (`team_ids`; None for every team and "no team"),
    open and unassigned cases, cases with a clock at risk or breached, the oldest waiting
    customer, chats and calls waiting; the agents of those teams with presence and load; up
    to `alert_limit` clocks at risk (soonest deadline first) and breached (latest first); and
    today's service level (today in `tz`).

    Read-only. Definitions: docs/METRICS.md, "Board". Turns off parallel query for the rest
    of the caller's transaction: every statement here reads few rows through a partial index,
    and starting parallel workers costs more (milliseconds, more on a busy machine) than it
    saves.

    With `helpers` (up to two more sessions, see `board_snapshot_on`), the three independent
    parts — the counts, lists and agents; the waits (oldest case, chats, calls); today's
    service level — run at the same time on their own connections: the database works on
    them in parallel, and a wall screen's refresh costs the slowest part, not their sum. Each
    part is then its own snapshot, taken within a few milliseconds of the others.
    """
    second = helpers[0] if helpers else session
    third = helpers[1] if len(helpers) > 1 else second
    for each in {id(x): x for x in (session, second, third)}.values():
        await each.execute(text("SET LOCAL max_parallel_workers_per_gather = 0"))
    wanted = None if team_ids is None else sorted(set(team_ids))
    params: dict[str, Any] = {"now": now}
    if wanted is not None:
        params["team_ids"] = wanted

    team_query = select(Team.id, Team.name).order_by(Team.name, Team.id)
    if wanted is not None:
        team_query = team_query.where(Team.id.in_(wanted))
    team_rows = await session.execute(team_query)
    boards: dict[int | None, TeamBoard] = {
        tid: TeamBoard(tid, name) for tid, name in team_rows.all()
    }

    def board(team_id: int | None) -> TeamBoard:
        if team_id not in boards:
            boards[team_id] = TeamBoard(team_id, None)  # no team, or a team deleted meanwhile
        return boards[team_id]

    async def counts_lists_agents() -> tuple[list[ClockAlert], list[ClockAlert], list[AgentLoad]]:
        counts = await session.execute(
            text(_TEAM_COUNTS.format(open=OPEN, team=_team_clause("c.team_id", wanted))), params
        )
        open_by_assignee: dict[int, int] = {}
        any_at_risk = any_breached = False
        for row in counts.mappings():
            if row["by_assignee"]:
                if row["assignee_id"] is not None:
                    open_by_assignee[row["assignee_id"]] = row["open"]
                continue
            b = board(row["team_id"])
            b.open, b.unassigned = row["open"], row["unassigned"]
            b.at_risk, b.breached = row["at_risk"], row["breached"]
            any_at_risk = any_at_risk or bool(b.at_risk)
            any_breached = any_breached or bool(b.breached)
        at_risk: list[ClockAlert] = []
        breached: list[ClockAlert] = []
        if any_at_risk:
            at_risk = await _alerts(session, _AT_RISK_LIST, params, wanted, alert_limit, False)
        if any_breached:
            breached = await _alerts(session, _BREACHED_LIST, params, wanted, alert_limit, True)
        return at_risk, breached, await _agents(session, wanted, open_by_assignee)

    async def waits() -> tuple[int, datetime | None]:
        waiting = await second.execute(
            text(_OLDEST_WAITING.format(open=OPEN, team=_team_clause("c.team_id", wanted))),
            params,
        )
        oldest = waiting.all()
        for team_id, since in oldest:
            board(team_id).oldest_waiting_since = since
        if oldest:
            found = await second.execute(
                text(_OLDEST_WAITING_CASES.format(open=OPEN)),
                {"since": [since for _, since in oldest], "teams": [tid for tid, _ in oldest]},
            )
            for ref in found.all():
                board(ref.team_id).oldest_waiting_case = CaseRef(ref.id, ref.number, ref.subject)
        chats = await second.execute(
            text(_CHATS_WAITING.format(team=_team_clause("team_id", wanted))), params
        )
        for row in chats.mappings():
            b = board(row["team_id"])
            b.chats_waiting, b.oldest_chat_since = row["waiting"], row["since"]
        return await _count_ringing_calls(second, now, board, wanted)

    async def today() -> ServiceLevel:
        start = datetime.combine(now.astimezone(tz).date(), datetime.min.time(), tz)
        goal = targets or ServiceTargets()
        return await service_level(
            third,
            start=start,
            end=_next_local_day(start, tz),
            tz=tz,
            team_id=wanted[0] if wanted is not None and len(wanted) == 1 else None,
            threshold_seconds=goal.threshold_seconds,
            target_percent=goal.target_percent,
            short_abandon_seconds=goal.short_abandon_seconds,
        )

    if helpers:
        (at_risk, breached, agents), (calls_ringing, oldest_call), level = await asyncio.gather(
            counts_lists_agents(), waits(), today()
        )
    else:  # one connection: one statement at a time
        at_risk, breached, agents = await counts_lists_agents()
        calls_ringing, oldest_call = await waits()
        level = await today()

    teams = [b for b in boards.values() if b.team_id is not None]
    no_team = boards.get(None)
    if no_team is not None and _has_anything(no_team):
        teams.append(no_team)
    total = _sum_boards(teams)
    total.calls_ringing, total.oldest_call_since = calls_ringing, oldest_call
    return BoardSnapshot(
        now=now,
        tz=tz,
        teams=teams,
        total=total,
        at_risk=at_risk,
        breached=breached,
        agents=agents,
        today=level,
    )


async def board_snapshot_on(db: Database, **options: Any) -> BoardSnapshot:
    """`board_snapshot` on three connections of `db` at once (see its `helpers`)."""
    async with db.unit_of_work() as main, db.unit_of_work() as two, db.unit_of_work() as three:
        return await board_snapshot(main, helpers=(two, three), **options)


async def _alerts(
    session: AsyncSession,
    query: str,
    params: dict[str, Any],
    wanted: list[int] | None,
    limit: int,
    breached: bool,
) -> list[ClockAlert]:
    rows = await session.execute(
        text(query.format(open=OPEN, team=_team_clause("c.team_id", wanted))),
        {**params, "limit": limit},
    )
    return [
        ClockAlert(
            CaseRef(r["id"], r["number"], r["subject"]),
            r["team_id"],
            r["assignee"],
            r["kind"],
            r["deadline_at"],
            breached,
        )
        for r in rows.mappings()
    ]


async def _count_ringing_calls(
    session: AsyncSession,
    now: datetime,
    board: Callable[[int | None], TeamBoard],
    wanted: list[int] | None,
) -> tuple[int, datetime | None]:
    """Calls have no team: a ringing call counts for every team one of whose agents it rings
    at, and for "no team" when it rings at nobody known. Returns the count and oldest ring
    of the calls shown, each call once (for the total row)."""
    ringing = (await session.execute(text(_CALLS_RINGING), {"stale": now - STALE_RING})).all()
    user_ids = sorted({uid for call in ringing for uid in call.ringing_user_ids or ()})
    team_of: dict[int, int | None] = {}
    if user_ids:
        found = await session.execute(select(User.id, User.team_id).where(User.id.in_(user_ids)))
        team_of = {uid: tid for uid, tid in found.all()}
    shown: list[datetime] = []
    for call in ringing:
        teams = {team_of.get(uid) for uid in call.ringing_user_ids or ()} or {None}
        if wanted is not None:
            teams &= set(wanted)
        for team_id in teams:
            b = board(team_id)
            b.calls_ringing += 1
            if b.oldest_call_since is None or call.started_at < b.oldest_call_since:
                b.oldest_call_since = call.started_at
        if teams:
            shown.append(call.started_at)
    return len(shown), min(shown, default=None)


def _has_anything(b: TeamBoard) -> bool:
    return bool(b.open or b.chats_waiting or b.calls_ringing)


def _earliest(values: Iterable[datetime | None]) -> datetime | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _sum_boards(teams: list[TeamBoard]) -> TeamBoard:
    """The whole board's row: the teams' rows added up (calls aside: see the caller)."""
    total = TeamBoard(None, None)
    for b in teams:
        total.open += b.open
        total.unassigned += b.unassigned
        total.at_risk += b.at_risk
        total.breached += b.breached
        total.chats_waiting += b.chats_waiting
    oldest = [b for b in teams if b.oldest_waiting_since is not None]
    if oldest:
        first = min(oldest, key=lambda b: b.oldest_waiting_since)  # type: ignore[arg-type,return-value]
        total.oldest_waiting_since = first.oldest_waiting_since
        total.oldest_waiting_case = first.oldest_waiting_case
    total.oldest_chat_since = _earliest(b.oldest_chat_since for b in teams)
    return total


async def _agents(
    session: AsyncSession, team_ids: list[int] | None, open_cases: dict[int, int]
) -> list[AgentLoad]:
    """Active agents of the teams, with presence and load (chats they are in, and
    `open_cases` by assignee), available first, then by name."""
    stmt = (
        select(
            User.id,
            User.name,
            User.team_id,
            AgentPresence.status,
            AgentPresence.on_call,
            AgentPresence.active_chats,
            AgentPresence.chat_capacity,
        )
        .outerjoin(AgentPresence, AgentPresence.user_id == User.id)
        .where(User.is_active, User.role == "agent")
    )
    if team_ids is not None:
        stmt = stmt.where(User.team_id.in_(team_ids))
    people = (await session.execute(stmt)).all()
    chats: dict[int, int] = {}
    if people:
        found = await session.execute(
            text(
                "SELECT agent_id, count(*) FROM chat_conversations WHERE agent_id = ANY(:ids) "
                "AND state = 'active' GROUP BY agent_id"
            ),
            {"ids": [p.id for p in people]},
        )
        chats = {uid: n for uid, n in found.all()}
    agents = [
        AgentLoad(
            user_id=p.id,
            name=p.name,
            team_id=p.team_id,
            # the row has the presence's fields; no presence row yet is offline
            status=effective_status(p if p.status is not None else None),  # type: ignore[arg-type]
            on_call=bool(p.on_call),
            active_chats=chats.get(p.id, 0),
            chat_capacity=p.chat_capacity if p.chat_capacity is not None else 3,
            open_cases=open_cases.get(p.id, 0),
        )
        for p in people
    ]
    agents.sort(key=lambda a: (STATUS_ORDER.get(a.status, 9), a.name, a.user_id))
    return agents


# -- service level ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceTargets:
    """The service-level objective: `target_percent` of calls answered within
    `threshold_seconds` ("80/20"); unanswered calls shorter than `short_abandon_seconds` are
    left out of the figures altogether."""

    threshold_seconds: int = 20
    target_percent: int = 80
    short_abandon_seconds: int = 5


def percent(part: float, whole: float) -> float | None:
    """`part` of `whole` in percent, one decimal; None when there is nothing to measure."""
    return round(100 * part / whole, 1) if whole else None


def _mean(total: float, count: int) -> float | None:
    return round(total / count, 1) if count else None


class _Additive:
    """Figures that add up field by field (hours into a day), so totals are sums, never
    averages of averages."""

    def __add__(self, other: Any) -> Any:
        return type(self)(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})  # type: ignore[arg-type]  # fmt: skip


@dataclass(frozen=True)
class CallFigures(_Additive):
    """Inbound calls that arrived in the period and are answered or over (docs/METRICS.md)."""

    arrived: int = 0  # answered or ended; still ringing is not yet known
    short_abandoned: int = 0  # ended unanswered within short_abandon_seconds
    answered: int = 0
    answered_in_threshold: int = 0
    abandoned: int = 0  # ended unanswered, short abandons excluded
    wait_seconds: float = 0.0  # ring to answer, summed over answered calls
    handled: int = 0  # answered and ended
    talk_seconds: float = 0.0  # answer to hang-up, summed over handled calls

    @property
    def offered(self) -> int:
        """The denominator of service level and abandonment: short abandons left out."""
        return self.arrived - self.short_abandoned

    @property
    def service_level_percent(self) -> float | None:
        return percent(self.answered_in_threshold, self.offered)

    @property
    def abandonment_percent(self) -> float | None:
        return percent(self.abandoned, self.offered)

    @property
    def asa_seconds(self) -> float | None:
        return _mean(self.wait_seconds, self.answered)

    @property
    def aht_seconds(self) -> float | None:
        return _mean(self.talk_seconds, self.handled)

    def as_dict(self) -> dict[str, Any]:
        return {
            "arrived": self.arrived,
            "short_abandoned": self.short_abandoned,
            "offered": self.offered,
            "answered": self.answered,
            "answered_in_threshold": self.answered_in_threshold,
            "abandoned": self.abandoned,
            "handled": self.handled,
            "service_level_percent": self.service_level_percent,
            "abandonment_percent": self.abandonment_percent,
            "asa_seconds": self.asa_seconds,
            "aht_seconds": self.aht_seconds,
        }


@dataclass(frozen=True)
class ResponseFigures(_Additive):
    """First-response clocks settled in the period: met in time, or breached."""

    met: int = 0
    breached: int = 0

    @property
    def within_target_percent(self) -> float | None:
        return percent(self.met, self.met + self.breached)

    def as_dict(self) -> dict[str, Any]:
        return {
            "met": self.met,
            "breached": self.breached,
            "within_target_percent": self.within_target_percent,
        }


@dataclass(frozen=True)
class FcrFigures(_Additive):
    """Cases solved in the period, and those of them solved at the first contact."""

    solved: int = 0
    first_contact: int = 0

    @property
    def fcr_percent(self) -> float | None:
        return percent(self.first_contact, self.solved)

    def as_dict(self) -> dict[str, Any]:
        return {
            "solved": self.solved,
            "first_contact": self.first_contact,
            "fcr_percent": self.fcr_percent,
        }


@dataclass(frozen=True)
class CsatFigures(_Additive):
    """Chat ratings (1 to 5) of chats that ended in the period."""

    ratings: int = 0
    score_total: int = 0
    satisfied: int = 0  # rated 4 or 5

    @property
    def average(self) -> float | None:
        return round(self.score_total / self.ratings, 2) if self.ratings else None

    @property
    def satisfied_percent(self) -> float | None:
        return percent(self.satisfied, self.ratings)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ratings": self.ratings,
            "average": self.average,
            "satisfied": self.satisfied,
            "satisfied_percent": self.satisfied_percent,
        }


@dataclass(frozen=True)
class Figures(_Additive):
    """Every service figure of one period (a whole window, or one hour of it)."""

    calls: CallFigures = field(default_factory=CallFigures)
    chat_first_response: ResponseFigures = field(default_factory=ResponseFigures)
    email_first_response: ResponseFigures = field(default_factory=ResponseFigures)
    first_response: ResponseFigures = field(default_factory=ResponseFigures)  # every channel
    fcr: FcrFigures = field(default_factory=FcrFigures)
    csat: CsatFigures = field(default_factory=CsatFigures)

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls.as_dict(),
            "first_response": {
                "chat": self.chat_first_response.as_dict(),
                "email": self.email_first_response.as_dict(),
                "all": self.first_response.as_dict(),
            },
            "fcr": self.fcr.as_dict(),
            "csat": self.csat.as_dict(),
        }


@dataclass(frozen=True)
class HourFigures:
    start: datetime  # the local hour's start, aware, in the period's timezone
    figures: Figures


@dataclass(frozen=True)
class ServiceLevel:
    start: datetime
    end: datetime
    tz: ZoneInfo
    team_id: int | None
    targets: ServiceTargets
    total: Figures
    hours: list[HourFigures]

    @property
    def meets_target(self) -> bool | None:
        value = self.total.calls.service_level_percent
        return None if value is None else value >= self.targets.target_percent

    def as_dict(self) -> dict[str, Any]:
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "timezone": self.tz.key,
            "team_id": self.team_id,
            "targets": {
                "threshold_seconds": self.targets.threshold_seconds,
                "target_percent": self.targets.target_percent,
                "short_abandon_seconds": self.targets.short_abandon_seconds,
            },
            "meets_target": self.meets_target,
            **self.total.as_dict(),
            "hours": [{"start": h.start.isoformat(), **h.figures.as_dict()} for h in self.hours],
        }


# Every query groups by the local wall-clock hour (`AT TIME ZONE` gives a timestamp without
# zone), the same key `_hours` makes in Python: on a DST fall-back night the repeated hour is
# one bucket, a skipped spring-forward hour none.
_CALLS = """
SELECT date_trunc('hour', started_at AT TIME ZONE :tz) AS hour,
       count(*) AS arrived,
       count(*) FILTER (WHERE answered_at IS NULL
                        AND ended_at - started_at < :short) AS short,
       count(*) FILTER (WHERE answered_at IS NOT NULL) AS answered,
       count(*) FILTER (WHERE answered_at IS NOT NULL
                        AND answered_at - started_at <= :threshold)
           AS in_threshold,
       count(*) FILTER (WHERE answered_at IS NULL
                        AND ended_at - started_at >= :short) AS abandoned,
       coalesce(sum(greatest(0, extract(epoch FROM answered_at - started_at)))
                FILTER (WHERE answered_at IS NOT NULL), 0) AS wait,
       count(*) FILTER (WHERE answered_at IS NOT NULL AND ended_at IS NOT NULL) AS handled,
       coalesce(sum(greatest(0, extract(epoch FROM ended_at - answered_at)))
                FILTER (WHERE answered_at IS NOT NULL AND ended_at IS NOT NULL), 0) AS talk
FROM calls
WHERE state IN ('answered', 'completed', 'missed', 'abandoned') AND direction = 'in'
  AND started_at >= :start AND started_at < :end{team}
GROUP BY 1
"""
_CALLS_OF_TEAM = """
  AND (agent_id IN (SELECT id FROM users WHERE team_id = :team_id)
       OR ringing_user_ids && ARRAY(SELECT id FROM users WHERE team_id = :team_id))"""

_FIRST_RESPONSES = """
SELECT date_trunc('hour', k.settled_at AT TIME ZONE :tz) AS hour, c.channel,
       count(*) FILTER (WHERE k.state = 'met') AS met,
       count(*) FILTER (WHERE k.state = 'breached') AS breached
FROM (
    SELECT case_id, state, met_at AS settled_at FROM sla_clocks
    WHERE kind = 'first_response' AND state = 'met' AND met_at >= :start AND met_at < :end
    UNION ALL
    SELECT case_id, state, breached_at FROM sla_clocks
    WHERE kind = 'first_response' AND state = 'breached'
      AND breached_at >= :start AND breached_at < :end
) AS k
JOIN cases AS c ON c.id = k.case_id{team}
GROUP BY 1, 2
"""

# A contact is the customer reaching us: an inbound call, email or chat on the case. A
# reopen is written on the timeline as a system entry "status solved → ..." (by
# cases.update_case and by an email reply to a solved case alike).
_SOLVED = """
SELECT date_trunc('hour', c.solved_at AT TIME ZONE :tz) AS hour,
       count(*) AS solved,
       count(*) FILTER (
           WHERE (SELECT count(*) FROM interactions AS i
                  WHERE i.case_id = c.id AND i.direction = 'in'
                    AND i.kind IN ('call', 'email', 'chat')) <= 1
             AND NOT EXISTS (SELECT 1 FROM interactions AS i
                             WHERE i.case_id = c.id AND i.kind = 'system'
                               AND i.text LIKE 'status solved →%')
             AND NOT EXISTS (SELECT 1 FROM cases AS f
                             WHERE f.follow_up_of_id = c.id AND f.follow_up_of_id IS NOT NULL)
       ) AS first_contact
FROM cases AS c
WHERE c.solved_at IS NOT NULL AND c.solved_at >= :start AND c.solved_at < :end
  AND c.status IN ('solved', 'closed'){team}
GROUP BY 1
"""

_RATINGS = """
SELECT date_trunc('hour', closed_at AT TIME ZONE :tz) AS hour,
       count(*) AS ratings, sum(csat_score) AS total,
       count(*) FILTER (WHERE csat_score >= 4) AS satisfied
FROM chat_conversations
WHERE csat_score IS NOT NULL AND closed_at >= :start AND closed_at < :end{team}
GROUP BY 1
"""


async def service_level(
    session: AsyncSession,
    *,
    start: datetime,
    end: datetime,
    team_id: int | None,
    tz: ZoneInfo = ZoneInfo("UTC"),
    threshold_seconds: int = 20,
    target_percent: int = 80,
    short_abandon_seconds: int = 5,
) -> ServiceLevel:
    """Service figures of `[start, end)` for one team (None: the whole desk), in total and
    by local hour of `tz`.

    Each item belongs to the period of one instant: a call to its arrival, a first response
    to when it was met or breached, a case to when it was solved, a rating to when its chat
    ended. Definitions: docs/METRICS.md, "Service level". `end - start` is at most 31 days.
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be aware datetimes")
    if end <= start:
        raise ValueError("end must be after start")
    if end - start > MAX_PERIOD:
        raise ValueError(f"a period is at most {MAX_PERIOD.days} days")
    targets = ServiceTargets(threshold_seconds, target_percent, short_abandon_seconds)
    params: dict[str, Any] = {
        "start": start,
        "end": end,
        "tz": tz.key,
        "team_id": team_id,
        "threshold": timedelta(seconds=threshold_seconds),
        "short": timedelta(seconds=short_abandon_seconds),
    }
    team = team_id is not None
    by_hour: dict[datetime, dict[str, Any]] = {}

    def add(hour: datetime, **parts: Any) -> None:
        slot = by_hour.setdefault(hour, {})
        for name, value in parts.items():
            slot[name] = slot[name] + value if name in slot else value

    rows = await session.execute(text(_CALLS.format(team=_CALLS_OF_TEAM if team else "")), params)
    for r in rows.mappings():
        add(
            r["hour"],
            calls=CallFigures(
                arrived=r["arrived"],
                short_abandoned=r["short"],
                answered=r["answered"],
                answered_in_threshold=r["in_threshold"],
                abandoned=r["abandoned"],
                wait_seconds=float(r["wait"]),
                handled=r["handled"],
                talk_seconds=float(r["talk"]),
            ),
        )
    rows = await session.execute(
        text(_FIRST_RESPONSES.format(team=" AND c.team_id = :team_id" if team else "")), params
    )
    for r in rows.mappings():
        figures = ResponseFigures(met=r["met"], breached=r["breached"])
        add(r["hour"], first_response=figures)
        if r["channel"] in ("chat", "email"):
            add(r["hour"], **{f"{r['channel']}_first_response": figures})
    rows = await session.execute(
        text(_SOLVED.format(team=" AND c.team_id = :team_id" if team else "")), params
    )
    for r in rows.mappings():
        add(r["hour"], fcr=FcrFigures(solved=r["solved"], first_contact=r["first_contact"]))
    rows = await session.execute(
        text(_RATINGS.format(team=" AND team_id = :team_id" if team else "")), params
    )
    for r in rows.mappings():
        add(
            r["hour"],
            csat=CsatFigures(
                ratings=r["ratings"], score_total=r["total"], satisfied=r["satisfied"]
            ),
        )

    hours = [
        HourFigures(local.replace(tzinfo=tz), Figures(**by_hour.get(local, {})))
        for local in _local_hours(start, end, tz)
    ]
    total = Figures()
    for hour in hours:
        total = total + hour.figures
    return ServiceLevel(start, end, tz, team_id, targets, total, hours)


def _local_hours(start: datetime, end: datetime, tz: ZoneInfo) -> list[datetime]:
    """The local wall-clock hours (naive) that `[start, end)` touches, in order, each once."""
    hours: list[datetime] = []
    at = start.astimezone(UTC)
    while at < end:
        local = at.astimezone(tz).replace(minute=0, second=0, microsecond=0, tzinfo=None)
        if not hours or hours[-1] != local:
            hours.append(local)
        # Steps shorter than an hour land in every local hour, also in zones whose offset
        # is not whole hours (+05:30, +05:45) and across DST changes.
        at += timedelta(minutes=15)
    return hours


def _next_local_day(start: datetime, tz: ZoneInfo) -> datetime:
    """Local midnight after `start` (a local midnight): 23, 24 or 25 hours later."""
    day = start.astimezone(tz).date() + timedelta(days=1)
    return datetime.combine(day, datetime.min.time(), tz)


def local_day(day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """`[local midnight of day, the next local midnight)` in `tz`."""
    start = datetime.combine(day, datetime.min.time(), tz)
    return start, _next_local_day(start, tz)
