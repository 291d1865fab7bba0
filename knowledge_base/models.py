"""Knowledge-base tables: articles (with translations, revisions, votes), categories.

They share `helpdesk.models.Base`, so one Alembic history and one metadata cover the
whole schema; `helpdesk.models` imports this module at its end for that reason.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Computed,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Sequence,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy import text as sql_text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR
from sqlalchemy.orm import Mapped, mapped_column

from helpdesk.models import Base, _one_of

ARTICLE_VISIBILITIES = ("public", "internal")
ARTICLE_STATUSES = ("draft", "published", "archived")
KB_LANGUAGES = ("ja", "en")

# Title outweighs body (A over B). English gets stemming; Japanese has no spaces to split
# words on, so it is found through `search_grams` (pairs of characters) instead and `simple`
# only serves the Latin words (product names, codes) inside it.
SEARCH_VECTOR_SQL = (
    "setweight(to_tsvector(CASE WHEN language = 'en' THEN 'english'::regconfig "
    "ELSE 'simple'::regconfig END, coalesce(title, '')), 'A') || "
    "setweight(to_tsvector(CASE WHEN language = 'en' THEN 'english'::regconfig "
    "ELSE 'simple'::regconfig END, coalesce(body_text, '')), 'B')"
)
# Overlapping character pairs of each run of Japanese, and Latin words, with weights A (title)
# and B (body): `kb_search_grams` is defined by migration 0006.
SEARCH_GRAMS_SQL = "kb_search_grams(title, body_text)"


kb_translation_group_seq = Sequence("kb_translation_group_seq")


class KbCategory(Base):
    """A node of the category tree; names per language (`{"ja": ..., "en": ...}`)."""

    __tablename__ = "kb_categories"

    id: Mapped[int] = mapped_column(primary_key=True)
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("kb_categories.id", ondelete="SET NULL"), index=True
    )
    slug: Mapped[str] = mapped_column(String(120), unique=True)
    names: Mapped[dict[str, str]] = mapped_column(JSONB, server_default=sql_text("'{}'::jsonb"))
    position: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class KbArticle(Base):
    """One article in one language; translations share `translation_group`."""

    __tablename__ = "kb_articles"
    __table_args__ = (
        CheckConstraint(
            _one_of("visibility", ARTICLE_VISIBILITIES), name="ck_kb_articles_visibility"
        ),
        CheckConstraint(_one_of("status", ARTICLE_STATUSES), name="ck_kb_articles_status"),
        UniqueConstraint("language", "slug", name="uq_kb_articles_language_slug"),
        UniqueConstraint(
            "translation_group", "language", name="uq_kb_articles_translation_language"
        ),
        Index("ix_kb_articles_search_vector", "search_vector", postgresql_using="gin"),
        Index("ix_kb_articles_search_grams", "search_grams", postgresql_using="gin"),
        Index(
            "ix_kb_articles_title_trgm",
            "title",
            postgresql_using="gin",
            postgresql_ops={"title": "gin_trgm_ops"},
        ),
        Index(
            "ix_kb_articles_body_text_trgm",
            "body_text",
            postgresql_using="gin",
            postgresql_ops={"body_text": "gin_trgm_ops"},
        ),
        Index("ix_kb_articles_listing", "status", "visibility", "language", "category_id"),
        Index("ix_kb_articles_tags", "tags", postgresql_using="gin"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # A new article starts its own group; a translation is created with the group of the
    # article it translates.
    translation_group: Mapped[int] = mapped_column(
        Integer,
        kb_translation_group_seq,
        server_default=kb_translation_group_seq.next_value(),
        index=True,
    )
    language: Mapped[str] = mapped_column(String(8))
    slug: Mapped[str] = mapped_column(String(200))
    title: Mapped[str] = mapped_column(String(300))
    body_md: Mapped[str] = mapped_column(Text, server_default="")
    # Rendered from body_md and sanitized (nh3) on every save; pages show only this.
    body_html: Mapped[str] = mapped_column(Text, server_default="")
    # Plain text of the body, for snippets and trigram matching.
    body_text: Mapped[str] = mapped_column(Text, server_default="")
    category_id: Mapped[int | None] = mapped_column(
        ForeignKey("kb_categories.id", ondelete="SET NULL")
    )
    visibility: Mapped[str] = mapped_column(String(16), server_default="public")
    status: Mapped[str] = mapped_column(String(16), server_default="draft")
    tags: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    helpful_count: Mapped[int] = mapped_column(Integer, server_default="0")
    unhelpful_count: Mapped[int] = mapped_column(Integer, server_default="0")
    view_count: Mapped[int] = mapped_column(BigInteger, server_default="0")
    revision: Mapped[int] = mapped_column(Integer, server_default="1")
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    search_vector: Mapped[Any] = mapped_column(
        TSVECTOR, Computed(SEARCH_VECTOR_SQL, persisted=True), deferred=True
    )
    # Character bigrams of Japanese and the Latin words of title (A) and body (B): what the
    # search matches Japanese queries against (SQL function from migration 0006).
    search_grams: Mapped[Any] = mapped_column(
        TSVECTOR, Computed(SEARCH_GRAMS_SQL, persisted=True), deferred=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class KbRevision(Base):
    """Every saved state of an article, so any change can be read back or restored."""

    __tablename__ = "kb_revisions"
    __table_args__ = (UniqueConstraint("article_id", "number", name="uq_kb_revisions_number"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    article_id: Mapped[int] = mapped_column(ForeignKey("kb_articles.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(String(300))
    body_md: Mapped[str] = mapped_column(Text)
    # The other fields as they were (category, visibility, status, tags, slug).
    fields: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=sql_text("'{}'::jsonb"))
    note: Mapped[str] = mapped_column(String(300), server_default="")
    changed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class KbVote(Base):
    """One "was this helpful?" answer per voter (a hashed visitor key) per article."""

    __tablename__ = "kb_votes"

    article_id: Mapped[int] = mapped_column(
        ForeignKey("kb_articles.id", ondelete="CASCADE"), primary_key=True
    )
    voter: Mapped[str] = mapped_column(String(64), primary_key=True)
    helpful: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class KbRelated(Base):
    """An editor's "see also" link between two articles (stored once per direction)."""

    __tablename__ = "kb_related"

    article_id: Mapped[int] = mapped_column(
        ForeignKey("kb_articles.id", ondelete="CASCADE"), primary_key=True
    )
    related_id: Mapped[int] = mapped_column(
        ForeignKey("kb_articles.id", ondelete="CASCADE"), primary_key=True
    )


__all__ = [
    "ARTICLE_STATUSES",
    "ARTICLE_VISIBILITIES",
    "KB_LANGUAGES",
    "KbArticle",
    "KbCategory",
    "KbRelated",
    "KbRevision",
    "KbVote",
]
