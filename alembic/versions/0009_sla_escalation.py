"""sla escalation: what a policy does to a case when one of its clocks breaches

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-15 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FK = "sla_policies_breach_reassign_team_id_fkey"


def upgrade() -> None:
    op.add_column(
        "sla_policies",
        sa.Column(
            "breach_raise_priority", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
    )
    op.add_column("sla_policies", sa.Column("breach_reassign_team_id", sa.Integer(), nullable=True))
    op.create_foreign_key(
        FK, "sla_policies", "teams", ["breach_reassign_team_id"], ["id"], ondelete="SET NULL"
    )


def downgrade() -> None:
    op.drop_constraint(FK, "sla_policies", type_="foreignkey")
    op.drop_column("sla_policies", "breach_reassign_team_id")
    op.drop_column("sla_policies", "breach_raise_priority")
