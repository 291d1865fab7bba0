"""realtime hub: agent presence, open agent sockets, stored large events

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 09:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "agent_presence",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="offline", nullable=False),
        sa.Column("on_call", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("active_chats", sa.Integer(), server_default="0", nullable=False),
        sa.Column("chat_capacity", sa.Integer(), server_default="3", nullable=False),
        sa.Column(
            "changed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "last_seen_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('available', 'busy', 'away', 'offline')", name="ck_agent_presence_status"
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id"),
    )
    op.create_table(
        "agent_sockets",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("process", sa.String(length=200), nullable=False),
        sa.Column(
            "connected_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "seen_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_agent_sockets_process"), "agent_sockets", ["process"])
    op.create_index(op.f("ix_agent_sockets_user_id"), "agent_sockets", ["user_id"])
    op.create_table(
        "hub_events",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_hub_events_created_at"), "hub_events", ["created_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_hub_events_created_at"), table_name="hub_events")
    op.drop_table("hub_events")
    op.drop_index(op.f("ix_agent_sockets_user_id"), table_name="agent_sockets")
    op.drop_index(op.f("ix_agent_sockets_process"), table_name="agent_sockets")
    op.drop_table("agent_sockets")
    op.drop_table("agent_presence")
