"""Which cases a user may see: the row-level rule under the role matrix.

`helpdesk/permissions.py` says which routes a role may call; this says which rows those
routes may show. A contact center splits its work by team (billing, technical, VIP), and an
agent of one team has no business reading another team's conversations with its customers.

- Admins see every case.
- A user who belongs to a team (agent or supervisor) sees the cases of that team, the cases
  of no team (the shared queue, where new work waits to be routed) and the cases assigned
  to them by name (a colleague may hand one over across teams).
- A user with no team is not limited, so a desk that does not use teams works as before.

Another team's case answers 403 wherever it is asked for by id, and is left out of every
list, count, timeline, customer card, search and live event. Interactions follow their case;
those with no case (a call nobody filed) belong to the customer and stay visible.

One `Scope` per request, built from the signed-in user; `None` means "not limited", so
callers that act for the system (workers, the mail listener) pass nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from helpdesk.errors import Forbidden, NotFound
from helpdesk.models import Case, Interaction, User


@dataclass(frozen=True)
class Scope:
    """The cases one team-bound user may see (see the module's docstring)."""

    user_id: int
    team_id: int

    def sees(self, team_id: int | None, assignee_id: int | None) -> bool:
        return team_id is None or team_id == self.team_id or assignee_id == self.user_id


def scope_for(user: User | Any) -> Scope | None:
    """The user's scope, or None when they see everything (admins, users of no team)."""
    if user.role == "admin" or user.team_id is None:
        return None
    return Scope(user.id, user.team_id)


def limited_team(user: User | Any) -> int | None:
    """The one team a user's live events are limited to, or None (every team)."""
    scope = scope_for(user)
    return scope.team_id if scope else None


def cases_clause(scope: Scope | None, case: Any = Case) -> ColumnElement[bool]:
    """A WHERE clause on `case` (the Case entity or an aliased/subquery column set) that
    keeps the cases `scope` may see."""
    if scope is None:
        return true()
    return or_(
        case.team_id.is_(None), case.team_id == scope.team_id, case.assignee_id == scope.user_id
    )


def interactions_clause(scope: Scope | None, case_id: Any = Interaction.case_id) -> Any:
    """A WHERE clause keeping interactions of visible cases and those of no case.

    A correlated EXISTS, so each interaction costs one primary-key probe of its case: an
    IN over "every visible case" would read the whole cases table for one customer's page.
    """
    if scope is None:
        return true()
    visible_case = select(Case.id).where(Case.id == case_id, cases_clause(scope))
    return or_(case_id.is_(None), visible_case.exists())


def check(scope: Scope | None, case: Case) -> None:
    """Refuse another team's case by name, so the agent knows whom to ask."""
    if scope is not None and not scope.sees(case.team_id, case.assignee_id):
        raise _hidden(case.number)


async def check_case_id(session: AsyncSession, scope: Scope | None, case_id: int) -> None:
    """`check` for a case known only by id: 404 when it does not exist, 403 when hidden."""
    if scope is None:
        return
    row = (
        await session.execute(
            select(Case.number, Case.team_id, Case.assignee_id).where(Case.id == case_id)
        )
    ).first()
    if row is None:
        raise NotFound(f"case {case_id} not found")
    if not scope.sees(row.team_id, row.assignee_id):
        raise _hidden(row.number)


def _hidden(number: int) -> Forbidden:
    return Forbidden(
        f"case #{number} belongs to another team; ask a supervisor of that team "
        "or an admin to transfer it"
    )
