"""admin: revoke every token of a user at once

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-18 09:00:00

`users.tokens_valid_after`: tokens issued at or before it are refused (see
helpdesk/auth.py, `user_for_token`). Set when an admin deactivates an account, so that
reactivating it later does not revive old tokens. Existing users start with none.
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "users", sa.Column("tokens_valid_after", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("users", "tokens_valid_after")
