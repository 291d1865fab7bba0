"""The search port: what the desk asks of a search backend, and how one is chosen.

Two adapters implement `SearchPort`: `postgres` (the default; the article table's generated
tsvector and its trigram indexes) and `elasticsearch` (for deployments that run a cluster).
`make_search` picks one from `Settings.search` (`HELPDESK_SEARCH`). Callers never import an
adapter module: the Elasticsearch client is an optional dependency.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import select
from sqlalchemy.orm import load_only

from knowledge_base.models import KbArticle, KbCategory

if TYPE_CHECKING:
    from helpdesk.config import Settings
    from helpdesk.db import Database
    from helpdesk.visibility import Scope

BACKENDS = ("postgres", "elasticsearch")


@dataclass(frozen=True)
class ArticleDoc:
    """One article as a search backend indexes it (no Markdown, no HTML: `body_text`)."""

    id: int
    translation_group: int
    language: str
    slug: str
    title: str
    body_text: str
    category_id: int | None
    category_path: tuple[str, ...]  # slugs from the root down to the article's category
    visibility: str
    status: str
    tags: tuple[str, ...]
    updated_at: datetime

    @classmethod
    def from_article(cls, article: KbArticle, category_path: tuple[str, ...] = ()) -> ArticleDoc:
        return cls(
            id=article.id,
            translation_group=article.translation_group,
            language=article.language,
            slug=article.slug,
            title=article.title,
            body_text=article.body_text or "",
            category_id=article.category_id,
            category_path=category_path,
            visibility=article.visibility,
            status=article.status,
            tags=tuple(article.tags or ()),
            updated_at=article.updated_at,
        )


@dataclass(frozen=True)
class Hit:
    article_id: int
    language: str
    slug: str
    title: str
    title_html: str  # the title, HTML-escaped, matches wrapped in <mark>…</mark>
    snippet_html: str  # ~160 characters of body around the best match, escaped, <mark>ed
    score: float  # comparable within one result list only
    category_id: int | None
    visibility: str


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit]
    total: int
    # Set when the backend could not answer: a message the UI shows instead of "no results".
    degraded: str | None = None


@dataclass(frozen=True)
class Filters:
    language: str | None = None
    visibility: tuple[str, ...] = ("public",)
    status: tuple[str, ...] = ("published",)
    category_id: int | None = None  # the category and all its descendants


# What agents may see: internal articles too, but only published ones.
AGENT_FILTERS = Filters(visibility=("public", "internal"))


@dataclass(frozen=True)
class EverythingHit:
    """One row of the agent's "search everything" box."""

    kind: str  # "customer" | "case" | "interaction" | "article"
    id: int
    title: str
    snippet_html: str  # escaped, matches in <mark>
    url: str
    score: float  # 0..1.2, comparable across kinds (see search/everything.py)


class SearchPort(Protocol):
    name: str

    async def index(self, docs: Sequence[ArticleDoc]) -> None:
        """Make these articles findable as they are now (insert or replace). Idempotent."""

    async def delete(self, article_ids: Sequence[int]) -> None:
        """Forget these articles. Ids that are not indexed are ignored."""

    async def search(
        self, query: str, filters: Filters = Filters(), *, limit: int = 10, offset: int = 0
    ) -> SearchResult:
        """Ranked articles for a search box: title matches above body matches, with
        highlighted title and snippet. Never raises for backend outages (see `degraded`)."""

    async def suggest(
        self, prefix: str, filters: Filters = Filters(), *, limit: int = 5
    ) -> list[Hit]:
        """Articles for text still being typed (the widget asks on every keystroke): titles
        only, cheap. Returns [] when the backend is down."""

    async def reindex(
        self,
        docs: AsyncIterator[ArticleDoc],
        *,
        total: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Rebuild the whole index from `docs` without downtime; return how many were indexed.
        `progress` is called with the running count."""

    async def search_everything(
        self, query: str, *, limit: int = 20, scope: Scope | None = None
    ) -> list[EverythingHit]:
        """Customers, cases, interactions and published articles (public and internal) for
        the agent's global search box, best first; without the cases (and their
        interactions) of teams `scope` may not see (helpdesk/visibility.py)."""

    async def close(self) -> None: ...


def make_search(settings: Settings, database: Database) -> SearchPort:
    """The search backend `settings.search` names: "postgres" (default) or "elasticsearch"."""
    if settings.search == "postgres":
        from knowledge_base.search.postgres import PostgresSearch

        return PostgresSearch(database, region=settings.default_region)
    if settings.search == "elasticsearch":
        if not settings.elasticsearch_url:
            raise ValueError(
                "HELPDESK_SEARCH=elasticsearch needs HELPDESK_ELASTICSEARCH_URL "
                "(e.g. http://localhost:9200)"
            )
        from knowledge_base.search.elasticsearch import ElasticsearchSearch

        return ElasticsearchSearch(
            settings.elasticsearch_url, database=database, region=settings.default_region
        )
    raise ValueError(
        f"unknown search backend {settings.search!r} (HELPDESK_SEARCH): "
        f"use one of {', '.join(BACKENDS)}"
    )


async def category_paths(database: Database) -> dict[int, tuple[str, ...]]:
    """Every category's slug path from its root, e.g. {7: ("billing", "invoices")}."""
    async with database.sessionmaker() as session:
        rows = (
            await session.execute(select(KbCategory.id, KbCategory.parent_id, KbCategory.slug))
        ).all()
    parent = {cid: pid for cid, pid, _ in rows}
    slug = {cid: s for cid, _, s in rows}
    paths: dict[int, tuple[str, ...]] = {}
    for cid in parent:
        path: list[str] = []
        node: int | None = cid
        seen: set[int] = set()
        while node is not None and node in slug and node not in seen:  # a cycle ends the walk
            seen.add(node)
            path.append(slug[node])
            node = parent[node]
        paths[cid] = tuple(reversed(path))
    return paths


# What an ArticleDoc needs; the Markdown and HTML bodies stay in the database.
_DOC_COLUMNS = (
    KbArticle.id,
    KbArticle.translation_group,
    KbArticle.language,
    KbArticle.slug,
    KbArticle.title,
    KbArticle.body_text,
    KbArticle.category_id,
    KbArticle.visibility,
    KbArticle.status,
    KbArticle.tags,
    KbArticle.updated_at,
)


async def iter_docs(database: Database, *, batch: int = 500) -> AsyncIterator[ArticleDoc]:
    """Every article (any status, visibility, language) as an ArticleDoc, in id order, read in
    keyset-paged batches so a large knowledge base never sits in memory at once."""
    paths = await category_paths(database)
    last_id = 0
    while True:
        async with database.sessionmaker() as session:
            articles = (
                await session.scalars(
                    select(KbArticle)
                    .options(load_only(*_DOC_COLUMNS))
                    .where(KbArticle.id > last_id)
                    .order_by(KbArticle.id)
                    .limit(batch)
                )
            ).all()
        for article in articles:
            path = paths.get(article.category_id, ()) if article.category_id is not None else ()
            yield ArticleDoc.from_article(article, path)
        if len(articles) < batch:
            return
        last_id = articles[-1].id


__all__ = [
    "AGENT_FILTERS",
    "ArticleDoc",
    "EverythingHit",
    "Filters",
    "Hit",
    "SearchPort",
    "SearchResult",
    "category_paths",
    "iter_docs",
    "make_search",
]
