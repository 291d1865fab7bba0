"""Administering the desk (`/admin`): agents, teams, the CTI token, canned responses, and
reading the audit log.

Each function takes a session and plain values and writes an audit record with the values
before and after in the caller's transaction, so the record exists exactly when the change
does. Forms are checked whole: `InvalidFields` carries every wrong field with its message.

Agents get an **initial password** from the admin (handed over out of band; the agent
should change it). There is no invite mail: the desk may have no outbound relay, and a
one-time link would be a second credential to protect.

Deactivating an agent ends every session at once (their tokens are void from that moment,
even if the account is reactivated later, and their sockets close) and **unassigns** their
open cases, which stay in their team's queue for someone else to pick up; solved and
closed cases keep their assignee as history.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from helpdesk import audit, auth, cases, events, visibility
from helpdesk.config import replace_generated_secret
from helpdesk.errors import Conflict, InvalidInput, NotFound
from helpdesk.identities import normalize_email
from helpdesk.models import (
    LANGUAGES,
    OUTBOX_STATES,
    ROLES,
    AgentPresence,
    AuditRecord,
    CannedResponse,
    Case,
    MailboxCursor,
    OutboxMail,
    Team,
    User,
)
from helpdesk.pagination import Page, newest_first
from helpdesk.sla_admin import FieldError, InvalidFields

OPEN_STATUSES = ("new", "open", "pending", "on_hold")
MAX_CAPACITY = 20
AGENTS_PER_PAGE = 50


def _(message: str) -> str:
    """Mark a message for extraction (pybabel's `_` keyword); the web layer translates it."""
    return message


# -- agents ----------------------------------------------------------------------------------


@dataclass
class AgentForm:
    """An agent's form as typed: every value a string, checked by `agent_values`."""

    email: str = ""
    name: str = ""
    role: str = "agent"
    extension: str = ""
    team_id: str = ""
    language: str = ""
    chat_capacity: str = "3"
    password: str = ""


@dataclass(frozen=True)
class AgentRow:
    user: User
    team_name: str | None
    chat_capacity: int
    open_cases: int


async def _capacity(session: AsyncSession, user_id: int) -> int:
    presence = await session.get(AgentPresence, user_id)
    return presence.chat_capacity if presence is not None else 3


async def list_agents(
    session: AsyncSession,
    *,
    role: str | None = None,
    team_id: int | None = None,
    active: bool | None = None,
    page: int = 1,
    per_page: int = AGENTS_PER_PAGE,
) -> tuple[list[AgentRow], int]:
    """One page of users by name, with their team, chat capacity and open cases; and the
    number of users the filter matches."""
    stmt = select(User)
    if role:
        stmt = stmt.where(User.role == role)
    if team_id is not None:
        stmt = stmt.where(User.team_id == team_id)
    if active is not None:
        stmt = stmt.where(User.is_active.is_(active))
    total = await session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    users = list(
        await session.scalars(
            stmt.order_by(User.name, User.id).offset((max(page, 1) - 1) * per_page).limit(per_page)
        )
    )
    ids = [u.id for u in users]
    teams = {t.id: t.name for t in await session.scalars(select(Team))}
    capacities = dict(
        (
            await session.execute(
                select(AgentPresence.user_id, AgentPresence.chat_capacity).where(
                    AgentPresence.user_id.in_(ids)
                )
            )
        ).all()
    )
    open_counts = await _count_by(
        session, Case.assignee_id, Case.assignee_id.in_(ids), Case.status.in_(OPEN_STATUSES)
    )
    rows = [
        AgentRow(
            u,
            teams.get(u.team_id) if u.team_id else None,
            capacities.get(u.id, 3),
            open_counts.get(u.id, 0),
        )
        for u in users
    ]
    return rows, total


async def get_agent(session: AsyncSession, user_id: int) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found")
    return user


async def agent_form_of(session: AsyncSession, user: User) -> AgentForm:
    return AgentForm(
        email=user.email,
        name=user.name,
        role=user.role,
        extension=user.extension or "",
        team_id=str(user.team_id or ""),
        language=user.language or "",
        chat_capacity=str(await _capacity(session, user.id)),
    )


async def _agent_values(
    session: AsyncSession, form: AgentForm, *, user_id: int | None
) -> dict[str, Any]:
    errors: dict[str, FieldError] = {}
    values: dict[str, Any] = {}
    if user_id is None:
        try:
            values["email"] = normalize_email(form.email)
        except InvalidInput:
            errors["email"] = FieldError(_("Enter an email address like name@example.com."))
        if len(form.password) < auth.MIN_PASSWORD_LENGTH:
            errors["password"] = FieldError(
                _("The password needs at least %(n)s characters."),
                {"n": auth.MIN_PASSWORD_LENGTH},
            )
    name = form.name.strip()
    if not name or len(name) > 200:
        errors["name"] = FieldError(_("Enter a name of at most 200 characters."))
    values["name"] = name
    if form.role not in ROLES:
        errors["role"] = FieldError(_("Choose a role."))
    values["role"] = form.role
    extension = form.extension.strip()
    if extension and (len(extension) > 32 or not extension.replace("-", "").isalnum()):
        errors["extension"] = FieldError(_("An extension is letters and digits, such as 201."))
    elif extension:
        taken = await session.scalar(
            select(User.id).where(User.extension == extension, User.id != (user_id or 0))
        )
        if taken is not None:
            errors["extension"] = FieldError(_("Another user already has this extension."))
    values["extension"] = extension or None
    values["team_id"] = None
    if form.team_id.strip():
        team = (
            await session.get(Team, int(form.team_id)) if form.team_id.strip().isdigit() else None
        )
        if team is None:
            errors["team_id"] = FieldError(_("Choose a team that exists."))
        else:
            values["team_id"] = team.id
    if form.language and form.language not in LANGUAGES:
        errors["language"] = FieldError(_("Choose a language."))
    values["language"] = form.language or None
    raw = form.chat_capacity.strip()
    if not raw.isdigit() or not 0 <= int(raw) <= MAX_CAPACITY:
        errors["chat_capacity"] = FieldError(
            _("Enter a number of chats from 0 to %(max)s."), {"max": MAX_CAPACITY}
        )
    else:
        values["chat_capacity"] = int(raw)
    if errors:
        raise InvalidFields(errors)
    return values


def _agent_audit(user: User, capacity: int) -> dict[str, Any]:
    return {
        "email": user.email,
        "name": user.name,
        "role": user.role,
        "extension": user.extension,
        "team_id": user.team_id,
        "language": user.language,
        "chat_capacity": capacity,
        "is_active": user.is_active,
    }


async def _set_capacity(session: AsyncSession, user_id: int, capacity: int) -> None:
    presence = await session.get(AgentPresence, user_id)
    if presence is None:
        session.add(AgentPresence(user_id=user_id, chat_capacity=capacity))
    else:
        presence.chat_capacity = capacity
    await session.flush()


async def create_agent(session: AsyncSession, form: AgentForm, *, actor_user_id: int) -> User:
    """A new user with the admin's initial password (never written to the audit log)."""
    values = await _agent_values(session, form, user_id=None)
    if await session.scalar(select(User.id).where(User.email == values["email"])) is not None:
        raise InvalidFields({"email": FieldError(_("A user with this email already exists."))})
    try:
        password_hash = auth.hash_password(form.password)
    except InvalidInput as exc:  # the password policy's own reason (length, common words)
        raise InvalidFields({"password": FieldError(exc.message)}) from exc
    user = User(
        email=values["email"],
        name=values["name"],
        role=values["role"],
        password_hash=password_hash,
        extension=values["extension"],
        team_id=values["team_id"],
        language=values["language"],
    )
    session.add(user)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        raise Conflict("a user with this email or extension already exists") from exc
    await _set_capacity(session, user.id, values["chat_capacity"])
    await audit.record(
        session,
        actor_user_id,
        "user.create",
        "user",
        user.id,
        after=_agent_audit(user, values["chat_capacity"]),
    )
    return user


async def update_agent(
    session: AsyncSession, user_id: int, form: AgentForm, *, actor_user_id: int
) -> User:
    """Change name, role, extension, team, language and chat capacity (not email/password)."""
    user = await get_agent(session, user_id)
    values = await _agent_values(session, form, user_id=user_id)
    if user_id == actor_user_id and values["role"] != user.role:
        raise InvalidFields({"role": FieldError(_("You cannot change your own role."))})
    before = _agent_audit(user, await _capacity(session, user.id))
    scope_before = visibility.limited_team(user)
    for key in ("name", "role", "extension", "team_id", "language"):
        setattr(user, key, values[key])
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        raise Conflict("another user already has this extension") from exc
    await _set_capacity(session, user.id, values["chat_capacity"])
    after = _agent_audit(user, values["chat_capacity"])
    if after != before:
        await audit.record(
            session, actor_user_id, "user.update", "user", user.id, before=before, after=after
        )
    if visibility.limited_team(user) != scope_before:
        # Their open sockets filter case events by team (helpdesk/hub.py): they follow the
        # new team from this commit on, without signing in again.
        await events.publish(
            session,
            events.Event(
                "user_scope", {"team_id": visibility.limited_team(user)}, users=(user.id,)
            ),
        )
    return user


async def set_agent_active(
    session: AsyncSession,
    user_id: int,
    active: bool,
    *,
    actor_user_id: int,
    now: datetime | None = None,
) -> User:
    """Deactivate (every session ends now, open cases unassigned) or reactivate a user.

    Idempotent: setting the state a user already has changes and records nothing.
    """
    user = await get_agent(session, user_id)
    if user_id == actor_user_id and not active:
        raise Conflict("you cannot deactivate your own account")
    if user.is_active == active:
        return user
    before = _agent_audit(user, await _capacity(session, user.id))
    user.is_active = active
    unassigned: list[int] = []
    if not active:
        user.tokens_valid_after = now or datetime.now(UTC)
        open_ids = list(
            await session.scalars(
                select(Case.id).where(Case.assignee_id == user.id, Case.status.in_(OPEN_STATUSES))
            )
        )
        for case_id in open_ids:
            await cases.update_case(
                session, case_id, {"assignee_id": None}, actor_user_id=actor_user_id
            )
            unassigned.append(case_id)
        # Sockets of every token of this user close (4401) in whichever process holds them.
        await events.publish(
            session,
            events.Event(
                "session_revoked",
                {"jti": None, "all": True, "reason": "account deactivated"},
                users=(user.id,),
            ),
        )
    await session.flush()
    await audit.record(
        session,
        actor_user_id,
        "user.deactivate" if not active else "user.reactivate",
        "user",
        user.id,
        before=before,
        after=_agent_audit(user, before["chat_capacity"]),
        unassigned_case_ids=unassigned,
    )
    return user


# -- teams -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TeamRow:
    team: Team
    members: int
    open_cases: int


async def list_teams(session: AsyncSession) -> list[TeamRow]:
    teams = list(await session.scalars(select(Team).order_by(Team.name)))
    members = await _count_by(session, User.team_id, User.team_id.is_not(None))
    open_cases = await _count_by(
        session, Case.team_id, Case.team_id.is_not(None), Case.status.in_(OPEN_STATUSES)
    )
    return [TeamRow(t, members.get(t.id, 0), open_cases.get(t.id, 0)) for t in teams]


def _team_name(raw: str) -> str:
    name = raw.strip()
    if not name or len(name) > 120:
        raise InvalidFields({"name": FieldError(_("Enter a team name of at most 120 characters."))})
    return name


async def _unique_team_name(session: AsyncSession, name: str, team_id: int | None) -> None:
    clash = await session.scalar(
        select(Team.id).where(func.lower(Team.name) == name.lower(), Team.id != (team_id or 0))
    )
    if clash is not None:
        raise InvalidFields({"name": FieldError(_("A team with this name already exists."))})


async def create_team(session: AsyncSession, name: str, *, actor_user_id: int) -> Team:
    name = _team_name(name)
    await _unique_team_name(session, name, None)
    team = Team(name=name)
    session.add(team)
    await session.flush()
    await audit.record(session, actor_user_id, "team.create", "team", team.id, after={"name": name})
    return team


async def rename_team(
    session: AsyncSession, team_id: int, name: str, *, actor_user_id: int
) -> Team:
    team = await session.get(Team, team_id)
    if team is None:
        raise NotFound(f"team {team_id} not found")
    name = _team_name(name)
    await _unique_team_name(session, name, team_id)
    before = team.name
    if before != name:
        team.name = name
        await session.flush()
        await audit.record(
            session,
            actor_user_id,
            "team.rename",
            "team",
            team.id,
            before={"name": before},
            after={"name": name},
        )
    return team


async def delete_team(session: AsyncSession, team_id: int, *, actor_user_id: int) -> None:
    """Delete a team that has no members and no cases (open or closed), or Conflict."""
    team = await session.get(Team, team_id)
    if team is None:
        raise NotFound(f"team {team_id} not found")
    members = await session.scalar(select(func.count()).where(User.team_id == team_id)) or 0
    case_count = await session.scalar(select(func.count()).where(Case.team_id == team_id)) or 0
    if members or case_count:
        raise Conflict(
            f"team {team.name} still has {members} member(s) and {case_count} case(s); "
            "move them to another team first",
            members=members,
            cases=case_count,
        )
    await audit.record(
        session, actor_user_id, "team.delete", "team", team.id, before={"name": team.name}
    )
    await session.delete(team)
    await session.flush()


# -- CTI token -------------------------------------------------------------------------------


def token_hint(token: str) -> str:
    """Enough of a secret to tell two apart, never enough to use: a short digest."""
    return hashlib.sha256(token.encode()).hexdigest()[:8] if token else ""


async def rotate_cti_token(
    session: AsyncSession, data_dir: Path, old_token: str, *, from_env: bool, actor_user_id: int
) -> str:
    """A new random CTI token, written where settings read it (`DATA_DIR/cti_token`).

    Returns the token, which the caller shows once. A token set by `HELPDESK_CTI_TOKEN` is
    the operator's: it can only be changed there (Conflict).
    """
    if from_env:
        raise Conflict("the CTI token is set by HELPDESK_CTI_TOKEN; change it in the environment")
    new = replace_generated_secret(data_dir, "cti_token")
    await audit.record(
        session,
        actor_user_id,
        "cti.token_rotate",
        "cti",
        0,
        before={"token_sha256_prefix": token_hint(old_token)},
        after={"token_sha256_prefix": token_hint(new)},
    )
    return new


# -- mailboxes -------------------------------------------------------------------------------


async def outbox_counts(session: AsyncSession) -> dict[str, int]:
    """Outbound mail by state (pending, sent, failed), zeros included."""
    rows = await _count_by(session, OutboxMail.state)
    return {state: rows.get(state, 0) for state in OUTBOX_STATES}


async def _count_by(session: AsyncSession, column: Any, *where: Any) -> dict[Any, int]:
    """How many rows (of `column`'s table, matching `where`) there are per value of `column`."""
    stmt = select(column, func.count()).where(*where).group_by(column)
    return {key: int(n) for key, n in (await session.execute(stmt)).all()}


def redacted_url(url: str | None) -> str:
    """A mail URL without its password: `smtp://user:***@host:587`."""
    return re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", url or "")


async def imap_mailboxes(session: AsyncSession) -> list[MailboxCursor]:
    """The IMAP mailboxes a poller has read (their cursors), passwords never stored."""
    return list(await session.scalars(select(MailboxCursor).order_by(MailboxCursor.key)))


# -- canned responses ------------------------------------------------------------------------


@dataclass
class CannedForm:
    shortcut: str = ""
    language: str = ""
    title: str = ""
    body: str = ""


def canned_form_of(item: CannedResponse) -> CannedForm:
    return CannedForm(item.shortcut or "", item.language or "", item.title, item.body)


async def list_canned(session: AsyncSession) -> list[CannedResponse]:
    return list(
        await session.scalars(
            select(CannedResponse).order_by(CannedResponse.shortcut, CannedResponse.title)
        )
    )


async def get_canned(session: AsyncSession, canned_id: int) -> CannedResponse:
    item = await session.get(CannedResponse, canned_id)
    if item is None:
        raise NotFound(f"canned response {canned_id} not found")
    return item


async def _canned_values(
    session: AsyncSession, form: CannedForm, canned_id: int | None
) -> CannedForm:
    errors: dict[str, FieldError] = {}
    shortcut = form.shortcut.strip().lstrip("/").lower()
    if (
        not shortcut
        or len(shortcut) > 32
        or not shortcut.replace("-", "").replace("_", "").isalnum()
    ):
        errors["shortcut"] = FieldError(_("A shortcut is letters, digits, - and _, at most 32."))
    else:
        clash = await session.scalar(
            select(CannedResponse.id).where(
                CannedResponse.shortcut == shortcut, CannedResponse.id != (canned_id or 0)
            )
        )
        if clash is not None:
            errors["shortcut"] = FieldError(_("Another canned response has this shortcut."))
    if form.language and form.language not in LANGUAGES:
        errors["language"] = FieldError(_("Choose a language."))
    title = form.title.strip()
    if not title or len(title) > 200:
        errors["title"] = FieldError(_("Enter a title of at most 200 characters."))
    body = form.body.strip()
    if not body or len(body) > 20_000:
        errors["body"] = FieldError(_("Enter the text, at most 20,000 characters."))
    if errors:
        raise InvalidFields(errors)
    return CannedForm(shortcut, form.language, title, body)


async def save_canned(
    session: AsyncSession, form: CannedForm, *, canned_id: int | None = None, actor_user_id: int
) -> CannedResponse:
    """Create (no `canned_id`) or change a canned response; shortcuts are unique."""
    values = await _canned_values(session, form, canned_id)
    if canned_id is None:
        item = CannedResponse(
            shortcut=values.shortcut,
            language=values.language or None,
            title=values.title,
            body=values.body,
        )
        session.add(item)
        before = None
    else:
        item = await get_canned(session, canned_id)
        before = asdict(canned_form_of(item))
        item.shortcut, item.language = values.shortcut, values.language or None
        item.title, item.body = values.title, values.body
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        raise InvalidFields(
            {"shortcut": FieldError(_("Another canned response has this shortcut."))}
        ) from exc
    after = asdict(canned_form_of(item))
    if before is None:
        await audit.record(
            session, actor_user_id, "canned.create", "canned_response", item.id, after=after
        )
    elif before != after:
        await audit.record(
            session,
            actor_user_id,
            "canned.update",
            "canned_response",
            item.id,
            before=before,
            after=after,
        )
    return item


async def delete_canned(session: AsyncSession, canned_id: int, *, actor_user_id: int) -> None:
    item = await get_canned(session, canned_id)
    await audit.record(
        session,
        actor_user_id,
        "canned.delete",
        "canned_response",
        item.id,
        before=asdict(canned_form_of(item)),
    )
    await session.delete(item)
    await session.flush()


# -- the audit log ---------------------------------------------------------------------------


@dataclass
class AuditFilter:
    actor: str = ""  # a user id or email
    action: str = ""  # a prefix: "user." or "user.deactivate"
    entity_type: str = ""
    entity_id: str = ""
    since: str = ""  # YYYY-MM-DD, in the viewer's timezone, inclusive
    until: str = ""  # YYYY-MM-DD, inclusive


def _day(raw: str, field: str, errors: dict[str, FieldError]) -> date | None:
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        errors[field] = FieldError(_("Enter a date like 2027-04-28."))
        return None


async def browse_audit(
    session: AsyncSession,
    f: AuditFilter,
    zone: ZoneInfo,
    *,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[AuditRecord]:
    """Audit records newest first, filtered; dates are whole days in `zone`."""
    errors: dict[str, FieldError] = {}
    stmt = select(AuditRecord)
    actor = f.actor.strip()
    if actor:
        if actor.isdigit():
            stmt = stmt.where(AuditRecord.actor_user_id == int(actor))
        else:
            user_id = await session.scalar(select(User.id).where(User.email == actor.lower()))
            stmt = stmt.where(AuditRecord.actor_user_id == (user_id or -1))
    if f.action.strip():
        prefix = f.action.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = stmt.where(AuditRecord.action.like(prefix + "%", escape="\\"))
    if f.entity_type.strip():
        stmt = stmt.where(AuditRecord.entity_type == f.entity_type.strip())
    if f.entity_id.strip():
        if f.entity_id.strip().isdigit():
            stmt = stmt.where(AuditRecord.entity_id == int(f.entity_id.strip()))
        else:
            errors["entity_id"] = FieldError(_("Enter a record number."))
    since, until = _day(f.since, "since", errors), _day(f.until, "until", errors)
    if errors:
        raise InvalidFields(errors)
    if since is not None:
        stmt = stmt.where(AuditRecord.at >= datetime.combine(since, time(), zone))
    if until is not None:
        stmt = stmt.where(
            AuditRecord.at < datetime.combine(until + timedelta(days=1), time(), zone)
        )
    return await newest_first(
        session, stmt, AuditRecord.at, AuditRecord.id, limit=limit, cursor=cursor
    )


async def actor_names(session: AsyncSession, records: list[AuditRecord]) -> dict[int, str]:
    ids = {r.actor_user_id for r in records if r.actor_user_id is not None}
    if not ids:
        return {}
    rows = await session.execute(select(User.id, User.name, User.email).where(User.id.in_(ids)))
    return {uid: f"{name} <{email}>" for uid, name, email in rows.all()}


def diff_rows(details: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """An audit record's `before`/`after` as (field, before, after) rows, changed fields
    first; other details (no before/after) as (key, None, value)."""
    before = details.get("before") if isinstance(details.get("before"), dict) else {}
    after = details.get("after") if isinstance(details.get("after"), dict) else {}
    rows: list[tuple[str, Any, Any]] = []
    if before or after:
        keys = list(dict.fromkeys([*before, *after]))
        changed = [k for k in keys if before.get(k) != after.get(k)]
        same = [k for k in keys if before.get(k) == after.get(k)]
        rows += [(k, before.get(k), after.get(k)) for k in changed + same]
    for key, value in details.items():
        if key not in ("before", "after"):
            rows.append((key, None, value))
    return rows
