"""metrics: partial indexes for the supervisor's board and the service-level figures

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-16 09:00:00

The board reads only what is live (open cases, clocks at risk or breached, the customers
waiting longest) and the service level only one period's settled items; each index below
holds exactly one of those sets, so neither query grows with the number of closed cases.
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES: tuple[tuple[str, str, list[str], str], ...] = (
    (
        "ix_cases_open_team",
        "cases",
        ["team_id", "assignee_id", "id"],
        "status IN ('new', 'open', 'pending', 'on_hold')",
    ),
    ("ix_cases_solved_at", "cases", ["solved_at"], "solved_at IS NOT NULL"),
    ("ix_cases_follow_up_of", "cases", ["follow_up_of_id"], "follow_up_of_id IS NOT NULL"),
    (
        "ix_sla_clocks_active_warning",
        "sla_clocks",
        ["warning_at", "deadline_at", "case_id"],
        "state = 'active'",
    ),
    (
        "ix_sla_clocks_breached_unmet",
        "sla_clocks",
        ["deadline_at", "case_id"],
        "state = 'breached' AND met_at IS NULL",
    ),
    (
        "ix_sla_clocks_waiting",
        "sla_clocks",
        ["started_at", "case_id"],
        "kind IN ('first_response', 'next_response') AND state IN ('active', 'breached')"
        " AND met_at IS NULL",
    ),
    (
        "ix_sla_clocks_first_response_met",
        "sla_clocks",
        ["met_at"],
        "kind = 'first_response' AND state = 'met'",
    ),
    (
        "ix_sla_clocks_first_response_breached",
        "sla_clocks",
        ["breached_at"],
        "kind = 'first_response' AND state = 'breached'",
    ),
    ("ix_chat_conversations_rated", "chat_conversations", ["closed_at"], "csat_score IS NOT NULL"),
)


def upgrade() -> None:
    for name, table, columns, where in INDEXES:
        op.create_index(name, table, columns, postgresql_where=sa.text(where))


def downgrade() -> None:
    for name, table, _columns, _where in reversed(INDEXES):
        op.drop_index(name, table_name=table)
