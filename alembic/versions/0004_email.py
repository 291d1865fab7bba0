"""email: Message-IDs seen and sent, the outbox, IMAP cursors, bounces, follow-up cases

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 12:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("cases", sa.Column("follow_up_of_id", sa.Integer(), nullable=True))
    op.create_foreign_key(
        "cases_follow_up_of_id_fkey",
        "cases",
        "cases",
        ["follow_up_of_id"],
        ["id"],
        ondelete="SET NULL",
    )
    op.add_column(
        "contact_identities",
        sa.Column("bouncing_since", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "contact_identities", sa.Column("bounce_reason", sa.String(length=300), nullable=True)
    )
    op.create_table(
        "mail_messages",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.String(length=998), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=True),
        sa.Column("interaction_id", sa.BigInteger(), nullable=True),
        sa.Column("sender", sa.String(length=320), server_default="", nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("direction IN ('in', 'out')", name="ck_mail_messages_direction"),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["interaction_id"], ["interactions.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("message_id"),
    )
    op.create_index("ix_mail_messages_case_id", "mail_messages", ["case_id"])
    op.create_index("ix_mail_messages_interaction_id", "mail_messages", ["interaction_id"])
    op.create_table(
        "mail_outbox",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.String(length=998), nullable=False),
        sa.Column("interaction_id", sa.BigInteger(), nullable=True),
        sa.Column("sender", sa.String(length=320), nullable=False),
        sa.Column("recipients", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("state", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state IN ('pending', 'sent', 'failed')", name="ck_mail_outbox_state"),
        sa.ForeignKeyConstraint(["interaction_id"], ["interactions.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("message_id"),
    )
    op.create_index("ix_mail_outbox_interaction_id", "mail_outbox", ["interaction_id"])
    op.create_index(
        "ix_mail_outbox_due",
        "mail_outbox",
        ["next_attempt_at"],
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.create_table(
        "mailbox_cursors",
        sa.Column("key", sa.String(length=500), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=True),
        sa.Column("last_uid", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("key"),
    )


def downgrade() -> None:
    op.drop_table("mailbox_cursors")
    op.drop_index("ix_mail_outbox_due", table_name="mail_outbox")
    op.drop_index("ix_mail_outbox_interaction_id", table_name="mail_outbox")
    op.drop_table("mail_outbox")
    op.drop_index("ix_mail_messages_interaction_id", table_name="mail_messages")
    op.drop_index("ix_mail_messages_case_id", table_name="mail_messages")
    op.drop_table("mail_messages")
    op.drop_column("contact_identities", "bounce_reason")
    op.drop_column("contact_identities", "bouncing_since")
    op.drop_constraint("cases_follow_up_of_id_fkey", "cases", type_="foreignkey")
    op.drop_column("cases", "follow_up_of_id")
