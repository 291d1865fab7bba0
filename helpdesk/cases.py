"""Cases: their lifecycle, the transitions it allows, and the queues agents work."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from helpdesk import events, sla, visibility
from helpdesk.errors import Conflict, Forbidden, InvalidInput, NotFound
from helpdesk.identities import fold_text
from helpdesk.interactions import add_interaction
from helpdesk.models import CHANNELS, PRIORITIES, Case, Customer, Team, User
from helpdesk.pagination import Page, newest_first

# Solved is not the end: a customer's reply reopens it. Closed is: a later contact opens a
# follow-up case instead, so closed cases stay exactly as reported.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "new": ("open", "pending", "on_hold", "solved"),
    "open": ("pending", "on_hold", "solved"),
    "pending": ("open", "on_hold", "solved"),
    "on_hold": ("open", "pending", "solved"),
    "solved": ("open", "closed"),
    "closed": (),
}
OPEN_STATUSES = ("new", "open", "pending", "on_hold")
INTERACTION_KIND_FOR_CHANNEL = {"phone": "call", "email": "email", "chat": "chat"}
MAX_TAGS = 30


@dataclass
class CaseInput:
    customer_id: int
    subject: str
    channel: str
    priority: str = "normal"
    body: str | None = None
    team_id: int | None = None
    assignee_id: int | None = None
    tags: list[str] | None = None


def _clean_tags(tags: object) -> list[str]:
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise InvalidInput("tags must be a list of text", field="tags")
    cleaned: list[str] = []
    for tag in tags:
        t = fold_text(tag).strip().replace(" ", "-")
        if not t:
            continue
        if len(t) > 50:
            raise InvalidInput(f"tag {tag!r} is longer than 50 characters", field="tags")
        if t not in cleaned:
            cleaned.append(t)
    if len(cleaned) > MAX_TAGS:
        raise InvalidInput(f"at most {MAX_TAGS} tags", field="tags")
    return cleaned


async def _check_refs(session: AsyncSession, assignee_id: object, team_id: object) -> None:
    if assignee_id is not None:
        if not isinstance(assignee_id, int) or isinstance(assignee_id, bool):
            raise InvalidInput("assignee_id must be a user id", field="assignee_id")
        user = await session.get(User, assignee_id)
        if user is None or not user.is_active:
            raise InvalidInput(f"no active user {assignee_id}", field="assignee_id")
    if team_id is not None:
        if not isinstance(team_id, int) or isinstance(team_id, bool):
            raise InvalidInput("team_id must be a team id", field="team_id")
        if await session.get(Team, team_id) is None:
            raise InvalidInput(f"no team {team_id}", field="team_id")


async def create_case(
    session: AsyncSession, data: CaseInput, *, author_user_id: int | None
) -> Case:
    """Open a case for a customer; its first message (if any) goes on the timeline."""
    subject = (data.subject or "").strip()
    if not subject:
        raise InvalidInput("subject is required", field="subject")
    if len(subject) > 300:
        raise InvalidInput("subject is longer than 300 characters", field="subject")
    if data.priority not in PRIORITIES:
        raise InvalidInput(f"priority must be one of {', '.join(PRIORITIES)}", field="priority")
    if data.channel not in CHANNELS:
        raise InvalidInput(f"channel must be one of {', '.join(CHANNELS)}", field="channel")
    customer = await session.get(Customer, data.customer_id)
    if customer is None:
        raise InvalidInput(f"no customer {data.customer_id}", field="customer_id")
    if customer.merged_into_id is not None:
        raise Conflict(
            f"customer {customer.id} was merged into {customer.merged_into_id}",
            field="customer_id",
        )
    if customer.erased_at is not None:
        raise Conflict(f"customer {customer.id} was erased", field="customer_id")
    await _check_refs(session, data.assignee_id, data.team_id)
    case = Case(
        customer_id=customer.id,
        subject=subject,
        priority=data.priority,
        channel=data.channel,
        team_id=data.team_id,
        assignee_id=data.assignee_id,
        tags=_clean_tags(data.tags or []),
        status="new",
    )
    session.add(case)
    await session.flush()
    await sla.start_clocks(session, case, datetime.now(UTC))
    if data.body:
        kind = INTERACTION_KIND_FOR_CHANNEL.get(data.channel, "note")
        await add_interaction(
            session,
            customer_id=customer.id,
            case_id=case.id,
            kind=kind,
            direction="internal" if kind == "note" else "in",
            text=data.body,
            subject=subject if kind == "email" else None,
            author_user_id=author_user_id if kind == "note" else None,
        )
    await announce(session, case, "created", actor_user_id=author_user_id)
    return case


async def announce(
    session: AsyncSession,
    case: Case,
    change: str,
    *,
    actor_user_id: int | None,
    previous_assignee_id: int | None = None,
) -> None:
    """Tell browsers a case changed, after commit: its assignee (and the one it left) by
    name, and every socket watching the case page, the customer page or the queue."""
    users = {u for u in (case.assignee_id, previous_assignee_id) if u is not None}
    await events.publish(
        session,
        events.Event(
            "case_updated",
            {
                "case_id": case.id,
                "number": case.number,
                "subject": case.subject,
                "status": case.status,
                "priority": case.priority,
                "assignee_id": case.assignee_id,
                "previous_assignee_id": previous_assignee_id,
                "customer_id": case.customer_id,
                "change": change,
                "actor_id": actor_user_id,
            },
            users=tuple(sorted(users)),
            topics=(f"case:{case.id}", f"customer:{case.customer_id}", "queue"),
            team=case.team_id,
        ),
    )


async def get_case(
    session: AsyncSession, case_id: int, *, scope: visibility.Scope | None = None
) -> Case:
    """The case with its customer, assignee and team; 403 when `scope` may not see it."""
    case = await session.get(
        Case,
        case_id,
        options=[
            selectinload(Case.customer).selectinload(Customer.identities),
            selectinload(Case.assignee),
            selectinload(Case.team),
        ],
        populate_existing=True,
    )
    if case is None:
        raise NotFound(f"case {case_id} not found")
    visibility.check(scope, case)
    return case


async def update_case(
    session: AsyncSession,
    case_id: int,
    changes: dict[str, object],
    *,
    actor_user_id: int | None,
    scope: visibility.Scope | None = None,
) -> Case:
    """Change status, priority, assignee, team or tags; illegal transitions are a Conflict.

    Each change is written to the timeline as a system entry, so the history says who moved
    the case and when.
    """
    allowed = {"status", "priority", "assignee_id", "team_id", "tags"}
    unknown = set(changes) - allowed
    if unknown:
        name = sorted(unknown)[0]
        raise InvalidInput(f"unknown field: {name}", field=name)
    if not changes:
        raise InvalidInput("nothing to change", field="status")
    case = await session.get(Case, case_id, with_for_update=True)
    if case is None:
        raise NotFound(f"case {case_id} not found")
    visibility.check(scope, case)
    notes: list[str] = []
    now = datetime.now(UTC)
    previous_assignee_id = case.assignee_id
    previous_status, previous_policy_facts = case.status, (case.priority, case.team_id)

    if "status" in changes and changes["status"] != case.status:
        status = changes["status"]
        if status not in TRANSITIONS:
            raise InvalidInput(f"status must be one of {', '.join(TRANSITIONS)}", field="status")
        allowed_next = TRANSITIONS[case.status]
        if status not in allowed_next:
            raise Conflict(
                f"a {case.status} case cannot become {status}",
                field="status",
                allowed=list(allowed_next),
            )
        notes.append(f"status {case.status} → {status}")
        case.status = str(status)
        if status == "solved":
            case.solved_at = now
        elif status == "closed":
            case.closed_at = now
        else:
            case.solved_at = None
    if "priority" in changes and changes["priority"] != case.priority:
        if changes["priority"] not in PRIORITIES:
            raise InvalidInput(f"priority must be one of {', '.join(PRIORITIES)}", field="priority")
        notes.append(f"priority {case.priority} → {changes['priority']}")
        case.priority = str(changes["priority"])
    if "assignee_id" in changes or "team_id" in changes:
        await _check_refs(session, changes.get("assignee_id"), changes.get("team_id"))
    if "assignee_id" in changes and changes["assignee_id"] != case.assignee_id:
        notes.append(f"assignee {case.assignee_id or '-'} → {changes['assignee_id'] or '-'}")
        case.assignee_id = changes["assignee_id"]  # type: ignore[assignment]
        if case.status == "new" and case.assignee_id is not None:
            case.status = "open"
    if "team_id" in changes and changes["team_id"] != case.team_id:
        notes.append(f"team {case.team_id or '-'} → {changes['team_id'] or '-'}")
        case.team_id = changes["team_id"]  # type: ignore[assignment]
    if "tags" in changes:
        tags = _clean_tags(changes["tags"])
        if tags != list(case.tags or []):
            notes.append("tags " + (", ".join(tags) or "-"))
            case.tags = tags
    if notes:
        case.updated_at = now
        await add_interaction(
            session,
            customer_id=case.customer_id,
            case_id=case.id,
            kind="system",
            direction="internal",
            text="; ".join(notes),
            author_user_id=actor_user_id,
            meta={"changes": {k: v for k, v in changes.items()}},
        )
    await session.flush()
    # SLA: a status change pauses, resumes or meets clocks; a new priority or team may pick
    # another policy. Both see the case as it is now.
    await sla.on_status_change(session, case.id, previous_status, case.status, now)
    if (case.priority, case.team_id) != previous_policy_facts:
        await sla.recompute(session, case, now)
    if notes:
        await announce(
            session,
            case,
            "updated",
            actor_user_id=actor_user_id,
            previous_assignee_id=(
                previous_assignee_id if previous_assignee_id != case.assignee_id else None
            ),
        )
    return await get_case(session, case.id)


async def add_note(
    session: AsyncSession,
    case_id: int,
    body: str,
    *,
    author_user_id: int,
    scope: visibility.Scope | None = None,
) -> tuple[Case, object]:
    text = (body or "").strip()
    if not text:
        raise InvalidInput("note is empty", field="body")
    case = await session.get(Case, case_id)
    if case is None:
        raise NotFound(f"case {case_id} not found")
    visibility.check(scope, case)
    note = await add_interaction(
        session,
        customer_id=case.customer_id,
        case_id=case.id,
        kind="note",
        direction="internal",
        text=text,
        author_user_id=author_user_id,
    )
    case.updated_at = datetime.now(UTC)
    await session.flush()
    await announce(session, case, "note", actor_user_id=author_user_id)
    return case, note


async def claim_for_reply(session: AsyncSession, case_id: int, user: User) -> Case:
    """Who may answer the customer: the assignee, anyone on an unassigned case (which
    becomes theirs, so two agents do not answer the same mail), and supervisors.

    An agent writing on a colleague's case would send the customer two answers; they are
    told whose case it is instead.
    """
    case = await session.get(Case, case_id, with_for_update=True)
    if case is None:
        raise NotFound(f"case {case_id} not found")
    visibility.check(visibility.scope_for(user), case)
    if case.assignee_id == user.id or user.role in ("supervisor", "admin"):
        return case
    if case.assignee_id is not None:
        owner = await session.get(User, case.assignee_id)
        raise Forbidden(
            f"case #{case.number} is assigned to {owner.name if owner else case.assignee_id}; "
            "ask them or a supervisor to reassign it"
        )
    await update_case(session, case.id, {"assignee_id": user.id}, actor_user_id=user.id)
    return case


@dataclass
class CaseFilter:
    status: list[str] | None = None
    assignee_id: int | None = None
    unassigned: bool = False
    team_id: int | None = None
    customer_id: int | None = None
    q: str | None = None
    # Whose eyes: another team's cases are left out (helpdesk/visibility.py).
    scope: visibility.Scope | None = None


def _filtered(f: CaseFilter) -> Select[tuple[Case]]:
    stmt = select(Case).options(selectinload(Case.customer), selectinload(Case.assignee))
    if f.scope is not None:
        stmt = stmt.where(visibility.cases_clause(f.scope))
    if f.status:
        stmt = stmt.where(Case.status.in_(f.status))
    if f.unassigned:
        stmt = stmt.where(Case.assignee_id.is_(None))
    elif f.assignee_id is not None:
        stmt = stmt.where(Case.assignee_id == f.assignee_id)
    if f.team_id is not None:
        stmt = stmt.where(Case.team_id == f.team_id)
    if f.customer_id is not None:
        stmt = stmt.where(Case.customer_id == f.customer_id)
    if f.q:
        q = f.q.strip().lstrip("#")
        conditions = [Case.subject.ilike("%" + q.replace("%", r"\%").replace("_", r"\_") + "%")]
        if q.isdigit():
            conditions.append(Case.number == int(q))
        stmt = stmt.where(or_(*conditions))
    return stmt


async def list_cases(
    session: AsyncSession, f: CaseFilter, *, limit: int = 50, cursor: str | None = None
) -> Page[Case]:
    """Cases most recently updated first, keyset-paged on (updated_at, id)."""
    return await newest_first(
        session, _filtered(f), Case.updated_at, Case.id, limit=limit, cursor=cursor
    )


async def count_cases(session: AsyncSession, f: CaseFilter) -> int:
    sub = _filtered(f).subquery()
    return int(await session.scalar(select(func.count()).select_from(sub)) or 0)
