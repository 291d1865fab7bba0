"""privacy: consent and contact preferences on customers, and when a customer was erased

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-17 09:00:00

See helpdesk/privacy.py and docs/PRIVACY.md. Existing customers start with no consent
recorded and no stated preferences (empty objects), and not erased.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "customers",
        sa.Column(
            "consent",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
    )
    op.add_column(
        "customers",
        sa.Column(
            "contact_preferences",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
    )
    op.add_column("customers", sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("customers", "erased_at")
    op.drop_column("customers", "contact_preferences")
    op.drop_column("customers", "consent")
