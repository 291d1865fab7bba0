"""knowledge base: articles, translations, categories, revisions, votes, related links

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 12:52:49.598212
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(sa.schema.CreateSequence(sa.Sequence("kb_translation_group_seq")))
    op.create_table(
        "kb_categories",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("slug", sa.String(length=120), nullable=False),
        sa.Column(
            "names",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("position", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["parent_id"], ["kb_categories.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("slug"),
    )
    op.create_index(
        op.f("ix_kb_categories_parent_id"), "kb_categories", ["parent_id"], unique=False
    )
    op.create_table(
        "kb_articles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "translation_group",
            sa.Integer(),
            server_default=sa.text("nextval('kb_translation_group_seq')"),
            nullable=False,
        ),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("slug", sa.String(length=200), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("body_md", sa.Text(), server_default="", nullable=False),
        sa.Column("body_html", sa.Text(), server_default="", nullable=False),
        sa.Column("body_text", sa.Text(), server_default="", nullable=False),
        sa.Column("category_id", sa.Integer(), nullable=True),
        sa.Column("visibility", sa.String(length=16), server_default="public", nullable=False),
        sa.Column("status", sa.String(length=16), server_default="draft", nullable=False),
        sa.Column("tags", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("helpful_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("unhelpful_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("view_count", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("revision", sa.Integer(), server_default="1", nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=True),
        sa.Column("updated_by_id", sa.Integer(), nullable=True),
        sa.Column(
            "search_vector",
            postgresql.TSVECTOR(),
            sa.Computed(
                "setweight(to_tsvector(CASE WHEN language = 'en' THEN 'english'::regconfig ELSE 'simple'::regconfig END, coalesce(title, '')), 'A') || setweight(to_tsvector(CASE WHEN language = 'en' THEN 'english'::regconfig ELSE 'simple'::regconfig END, coalesce(body_text, '')), 'B')",
                persisted=True,
            ),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('draft', 'published', 'archived')", name="ck_kb_articles_status"
        ),
        sa.CheckConstraint(
            "visibility IN ('public', 'internal')", name="ck_kb_articles_visibility"
        ),
        sa.ForeignKeyConstraint(["author_id"], ["users.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["category_id"], ["kb_categories.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["updated_by_id"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("language", "slug", name="uq_kb_articles_language_slug"),
        sa.UniqueConstraint(
            "translation_group", "language", name="uq_kb_articles_translation_language"
        ),
    )
    op.create_index(
        "ix_kb_articles_body_text_trgm",
        "kb_articles",
        ["body_text"],
        unique=False,
        postgresql_using="gin",
        postgresql_ops={"body_text": "gin_trgm_ops"},
    )
    op.create_index(
        "ix_kb_articles_listing",
        "kb_articles",
        ["status", "visibility", "language", "category_id"],
        unique=False,
    )
    op.create_index(
        "ix_kb_articles_search_vector",
        "kb_articles",
        ["search_vector"],
        unique=False,
        postgresql_using="gin",
    )
    op.create_index(
        "ix_kb_articles_tags", "kb_articles", ["tags"], unique=False, postgresql_using="gin"
    )
    op.create_index(
        "ix_kb_articles_title_trgm",
        "kb_articles",
        ["title"],
        unique=False,
        postgresql_using="gin",
        postgresql_ops={"title": "gin_trgm_ops"},
    )
    op.create_index(
        op.f("ix_kb_articles_translation_group"), "kb_articles", ["translation_group"], unique=False
    )
    op.create_table(
        "kb_related",
        sa.Column("article_id", sa.Integer(), nullable=False),
        sa.Column("related_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["article_id"], ["kb_articles.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["related_id"], ["kb_articles.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("article_id", "related_id"),
    )
    op.create_table(
        "kb_revisions",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("article_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("body_md", sa.Text(), nullable=False),
        sa.Column(
            "fields",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("note", sa.String(length=300), server_default="", nullable=False),
        sa.Column("changed_by_id", sa.Integer(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["article_id"], ["kb_articles.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["changed_by_id"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("article_id", "number", name="uq_kb_revisions_number"),
    )
    op.create_table(
        "kb_votes",
        sa.Column("article_id", sa.Integer(), nullable=False),
        sa.Column("voter", sa.String(length=64), nullable=False),
        sa.Column("helpful", sa.Boolean(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["article_id"], ["kb_articles.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("article_id", "voter"),
    )


def downgrade() -> None:
    op.drop_table("kb_votes")
    op.drop_table("kb_revisions")
    op.drop_table("kb_related")
    op.drop_index(op.f("ix_kb_articles_translation_group"), table_name="kb_articles")
    op.drop_index(
        "ix_kb_articles_title_trgm",
        table_name="kb_articles",
        postgresql_using="gin",
        postgresql_ops={"title": "gin_trgm_ops"},
    )
    op.drop_index("ix_kb_articles_tags", table_name="kb_articles", postgresql_using="gin")
    op.drop_index("ix_kb_articles_search_vector", table_name="kb_articles", postgresql_using="gin")
    op.drop_index("ix_kb_articles_listing", table_name="kb_articles")
    op.drop_index(
        "ix_kb_articles_body_text_trgm",
        table_name="kb_articles",
        postgresql_using="gin",
        postgresql_ops={"body_text": "gin_trgm_ops"},
    )
    op.drop_table("kb_articles")
    op.drop_index(op.f("ix_kb_categories_parent_id"), table_name="kb_categories")
    op.drop_table("kb_categories")
    op.execute(sa.schema.DropSequence(sa.Sequence("kb_translation_group_seq")))
