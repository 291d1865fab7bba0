"""Article search in Elasticsearch, for deployments that already run a cluster.

Needs the optional dependency (`pip install 'helpdesk[elasticsearch]'`); it is imported only
when this adapter is made, so the desk runs without it. The client major version must match
the cluster's (8.x client for an 8.x cluster, 9.x for 9.x).

Layout in the cluster: readers use the alias `<prefix>-kb`, which points at one concrete
index `<prefix>-kb-<timestamp>`. `reindex` fills a new concrete index, then moves the alias
in one atomic `_aliases` call and deletes the old index, so searches never see a half-built
or missing index.

Each text is indexed several ways (multi-fields): `title`/`body` folded (width, case) with
the standard analyzer, which also serves fuzzy matching of typos; `.en` with the english
analyzer (stemming); `.ja` with kuromoji when every node has the analysis-kuromoji plugin,
else the built-in `cjk` analyzer (overlapping bigrams, which need no plugin); and
`title.suggest`, a search-as-you-type field for the widget's suggestions.

Customers, cases and interactions are not in Elasticsearch in this version: `search_everything`
takes articles from here and the rest from PostgreSQL (knowledge_base/search/everything.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import re
import secrets
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from knowledge_base.search import ArticleDoc, EverythingHit, Filters, Hit, SearchResult
from knowledge_base.search import highlight as hl

if TYPE_CHECKING:
    from elasticsearch import AsyncElasticsearch

    from helpdesk.db import Database
    from helpdesk.visibility import Scope

log = logging.getLogger(__name__)

RETRY_STATUSES = (429, 502, 503, 504)
BULK_ATTEMPTS = 4  # our own retries of a whole bulk call, on top of the client's per request
BULK_CHUNK = 500
SEARCH_TIMEOUT = 5.0  # seconds
_TAG = re.compile(r"</?mark>")

_FOLDED_ANALYZER = {"tokenizer": "standard", "filter": ["cjk_width", "lowercase"]}
# The built-in english analyzer, rebuilt to fold full-width letters first.
_ENGLISH_ANALYZER = {
    "tokenizer": "standard",
    "filter": ["cjk_width", "en_possessive", "lowercase", "en_stop", "en_stemmer"],
}
_ENGLISH_FILTERS = {
    "en_possessive": {"type": "stemmer", "language": "possessive_english"},
    "en_stop": {"type": "stop", "stopwords": "_english_"},
    "en_stemmer": {"type": "stemmer", "language": "english"},
}
_KUROMOJI_ANALYZER = {
    "type": "custom",
    "tokenizer": "kuromoji_tokenizer",
    "filter": [
        "kuromoji_baseform",
        "kuromoji_part_of_speech",
        "cjk_width",
        "ja_stop",
        "kuromoji_stemmer",
        "lowercase",
    ],
}


def index_definition(kuromoji: bool) -> dict[str, Any]:
    """Settings and mappings of a concrete article index."""
    analyzers: dict[str, Any] = {"folded": _FOLDED_ANALYZER, "en_folded": _ENGLISH_ANALYZER}
    japanese = "ja_kuromoji" if kuromoji else "cjk"
    if kuromoji:
        analyzers["ja_kuromoji"] = _KUROMOJI_ANALYZER

    def text_field(*, suggest: bool) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "en": {"type": "text", "analyzer": "en_folded"},
            "ja": {"type": "text", "analyzer": japanese},
        }
        if suggest:
            fields["suggest"] = {"type": "search_as_you_type", "analyzer": "folded"}
        return {"type": "text", "analyzer": "folded", "fields": fields}

    return {
        "settings": {"analysis": {"analyzer": analyzers, "filter": _ENGLISH_FILTERS}},
        "mappings": {
            "dynamic": "strict",
            "properties": {
                "id": {"type": "integer"},
                "translation_group": {"type": "integer"},
                "language": {"type": "keyword"},
                "slug": {"type": "keyword"},
                "title": text_field(suggest=True),
                "body": text_field(suggest=False),
                "category_id": {"type": "integer"},
                "category_path": {"type": "keyword"},
                "visibility": {"type": "keyword"},
                "status": {"type": "keyword"},
                "tags": {"type": "keyword"},
                "updated_at": {"type": "date"},
            },
        },
    }


def _source(doc: ArticleDoc) -> dict[str, Any]:
    return {
        "id": doc.id,
        "translation_group": doc.translation_group,
        "language": doc.language,
        "slug": doc.slug,
        "title": doc.title,
        "body": doc.body_text,
        "category_id": doc.category_id,
        "category_path": list(doc.category_path),
        "visibility": doc.visibility,
        "status": doc.status,
        "tags": list(doc.tags),
        "updated_at": doc.updated_at.isoformat(),
    }


class SearchUnavailable(RuntimeError):
    """The cluster could not answer; the message is fit for the UI."""


class ElasticsearchSearch:
    name = "elasticsearch"

    def __init__(
        self,
        url: str,
        *,
        index_prefix: str = "helpdesk",
        database: Database | None = None,
        region: str = "JP",
        request_timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.alias = f"{index_prefix}-kb"
        self.database = database
        self.region = region
        self.request_timeout = request_timeout
        self._client: AsyncElasticsearch | None = None
        self._kuromoji: bool | None = None

    # -- the client --------------------------------------------------------------------------

    @property
    def client(self) -> AsyncElasticsearch:
        if self._client is None:
            from elasticsearch import AsyncElasticsearch

            self._client = AsyncElasticsearch(
                self.url,
                request_timeout=self.request_timeout,
                retry_on_timeout=True,
                max_retries=3,
                retry_on_status=RETRY_STATUSES,
            )
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    # -- writing -----------------------------------------------------------------------------

    async def index(self, docs: Sequence[ArticleDoc]) -> None:
        """Insert or replace these articles, visible to searches when this returns."""
        if not docs:
            return
        await self._ensure_alias()
        actions = [
            {"_op_type": "index", "_index": self.alias, "_id": str(d.id), "_source": _source(d)}
            for d in docs
        ]
        await self._bulk(lambda: self._send(actions, refresh="wait_for"))

    async def delete(self, article_ids: Sequence[int]) -> None:
        if not article_ids:
            return
        from elasticsearch import NotFoundError

        actions = [{"_op_type": "delete", "_index": self.alias, "_id": str(i)} for i in article_ids]
        with contextlib.suppress(NotFoundError):  # no index yet: nothing to forget
            await self._bulk(lambda: self._send(actions, refresh="wait_for", ignore_status=(404,)))

    async def reindex(
        self,
        docs: AsyncIterator[ArticleDoc],
        *,
        total: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Build a new concrete index from `docs`, then point the alias at it atomically and
        delete the old one. On failure the new index is removed and the old one stays live.

        An article saved while this runs, after `docs` has read it, is written to the old
        index only; it is current again at its next save or the next reindex."""
        from elasticsearch import helpers

        stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        concrete = f"{self.alias}-{stamp}-{secrets.token_hex(3)}"
        await self._create_index(concrete)
        count = 0

        async def actions() -> AsyncIterator[dict[str, Any]]:
            nonlocal count
            async for doc in docs:
                yield {"_index": concrete, "_id": str(doc.id), "_source": _source(doc)}
                count += 1
                if progress is not None and count % BULK_CHUNK == 0:
                    progress(count)

        try:
            # A stream cannot be replayed, so retries here are per chunk: documents the
            # cluster rejected with 429, and the client's own retries of a request that
            # failed to connect or got 502/503/504. (async_bulk's retry_on_status needs
            # client 8.17+, so it is not used.)
            await helpers.async_bulk(
                self.client,
                actions(),
                chunk_size=BULK_CHUNK,
                max_retries=BULK_ATTEMPTS,
                initial_backoff=1,
                max_backoff=30,
            )
            await self.client.indices.refresh(index=concrete)
            await self._swap_alias(concrete)
        except BaseException:
            await self._drop_quietly(concrete)
            raise
        if progress is not None:
            progress(count)
        return count

    async def _send(self, actions: list[dict[str, Any]], **kwargs: Any) -> None:
        from elasticsearch import helpers

        await helpers.async_bulk(
            self.client,
            actions,
            max_retries=BULK_ATTEMPTS,
            initial_backoff=1,
            max_backoff=10,
            **kwargs,
        )

    async def _bulk(self, call: Callable[[], Awaitable[None]]) -> None:
        """Run a bulk call again, with backoff, when the cluster is unreachable or busy."""
        from elasticsearch import ApiError, ConnectionError, ConnectionTimeout

        for attempt in range(1, BULK_ATTEMPTS + 1):
            try:
                await call()
                return
            except (ConnectionError, ConnectionTimeout, ApiError) as exc:
                busy = not isinstance(exc, ApiError) or exc.meta.status in RETRY_STATUSES
                if not busy or attempt == BULK_ATTEMPTS:
                    raise
                delay = min(10.0, 0.5 * 2**attempt)
                log.warning("elasticsearch bulk failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)

    async def _ensure_alias(self) -> None:
        if await self.client.indices.exists_alias(name=self.alias):
            return
        stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        concrete = f"{self.alias}-{stamp}-{secrets.token_hex(3)}"
        await self._create_index(concrete)
        await self._swap_alias(concrete)

    async def _create_index(self, name: str) -> None:
        from elasticsearch import BadRequestError

        kuromoji = await self._has_kuromoji()
        try:
            await self.client.indices.create(index=name, **index_definition(kuromoji))
        except BadRequestError:
            if not kuromoji:
                raise
            # a node without the plugin: fall back to CJK bigrams, which every node has
            log.warning("kuromoji analyzer refused; using the cjk analyzer for Japanese")
            self._kuromoji = False
            await self.client.indices.create(index=name, **index_definition(False))

    async def _has_kuromoji(self) -> bool:
        from elasticsearch import ApiError

        if self._kuromoji is None:
            try:
                plugins = (await self.client.cat.plugins(format="json")).body
            except ApiError:  # not allowed to list plugins: try kuromoji, fall back if refused
                return True
            nodes = {p.get("name") for p in plugins}
            with_kuromoji = {
                p.get("name") for p in plugins if p.get("component") == "analysis-kuromoji"
            }
            self._kuromoji = bool(nodes) and nodes == with_kuromoji
        return self._kuromoji

    async def _swap_alias(self, concrete: str) -> None:
        from elasticsearch import NotFoundError

        try:
            current = list((await self.client.indices.get_alias(name=self.alias)).body)
        except NotFoundError:
            current = []
        actions: list[dict[str, Any]] = [
            {"remove": {"index": old, "alias": self.alias}} for old in current if old != concrete
        ]
        actions.append({"add": {"index": concrete, "alias": self.alias}})
        await self.client.indices.update_aliases(actions=actions)
        for old in current:
            if old != concrete:
                await self._drop_quietly(old)

    async def _drop_quietly(self, index: str) -> None:
        try:
            await self.client.indices.delete(index=index, ignore_unavailable=True)
        except Exception:  # cleanup must not hide the error that brought us here
            log.exception("could not delete index %s", index)

    # -- reading -----------------------------------------------------------------------------

    async def search(
        self, query: str, filters: Filters = Filters(), *, limit: int = 10, offset: int = 0
    ) -> SearchResult:
        q = _normalized(query)
        if not hl.query_terms(q) or limit <= 0:  # blank, or only excluded words
            return SearchResult([], 0)
        try:
            body = await self._query(
                query=_search_query(q, await self._filter_clauses(filters)),
                highlight=_HIGHLIGHT,
                from_=max(0, offset),
                size=limit,
                track_total_hits=True,
                sort=["_score", {"id": "asc"}],  # ties in a stable order, so pages do not overlap
                source=["id", "language", "slug", "title", "category_id", "visibility", "body"],
            )
        except SearchUnavailable as exc:
            return SearchResult([], 0, degraded=str(exc))
        terms = hl.query_terms(q)
        hits = [_hit(h, terms) for h in body["hits"]["hits"]]
        return SearchResult(hits, int(body["hits"]["total"]["value"]))

    async def suggest(
        self, prefix: str, filters: Filters = Filters(), *, limit: int = 5
    ) -> list[Hit]:
        q = _normalized(prefix)
        if not hl.query_terms(q) or limit <= 0:
            return []
        query = {
            "bool": {
                "should": [
                    {
                        "multi_match": {
                            "query": q,
                            "type": "bool_prefix",
                            "operator": "and",
                            "fields": _SUGGEST_FIELDS,
                        }
                    },
                    {"match": {"title.ja": {"query": q, "boost": 0.5}}},
                ],
                "minimum_should_match": 1,
                "filter": await self._filter_clauses(filters),
            }
        }
        try:
            body = await self._query(
                query=query,
                size=limit,
                source=["id", "language", "slug", "title", "category_id", "visibility", "body"],
            )
        except SearchUnavailable:
            return []
        terms = hl.query_terms(q)
        hits = []
        for h in body["hits"]["hits"]:
            src = h["_source"]
            hits.append(
                Hit(
                    article_id=int(src["id"]),
                    language=src["language"],
                    slug=src["slug"],
                    title=src["title"],
                    title_html=hl.highlight(src["title"], terms),
                    snippet_html=hl.snippet(src.get("body", "")[:400], [], width=120),
                    score=float(h["_score"] or 0.0),
                    category_id=src.get("category_id"),
                    visibility=src["visibility"],
                )
            )
        return hits

    async def search_everything(
        self, query: str, *, limit: int = 20, scope: Scope | None = None
    ) -> list[EverythingHit]:
        """Articles from Elasticsearch; customers, cases and interactions from PostgreSQL,
        where they live (they are not indexed in Elasticsearch in this version)."""
        from knowledge_base.search import AGENT_FILTERS
        from knowledge_base.search.everything import ARTICLE_URL, search_everything

        if self.database is None:  # nothing but articles to offer
            result = await self.search(query, AGENT_FILTERS, limit=limit)
            return [
                EverythingHit(
                    kind="article",
                    id=h.article_id,
                    title=h.title,
                    snippet_html=h.snippet_html,
                    url=ARTICLE_URL.format(language=h.language, slug=h.slug),
                    score=h.score,
                )
                for h in result.hits
            ]
        return await search_everything(
            self.database, self, query, limit=limit, region=self.region, scope=scope
        )

    async def _query(self, **kwargs: Any) -> dict[str, Any]:
        from elasticsearch import ApiError, NotFoundError, TransportError

        try:
            # One retry only: a person is waiting, and a degraded answer beats a slow one.
            client = self.client.options(max_retries=1, request_timeout=SEARCH_TIMEOUT)
            response = await client.search(index=self.alias, **kwargs)
        except NotFoundError as exc:
            raise SearchUnavailable(
                "search is temporarily unavailable: the article index has not been built "
                "(run `helpdesk kb reindex`)"
            ) from exc
        except (TransportError, ApiError) as exc:
            log.warning("elasticsearch search failed: %s", exc)
            raise SearchUnavailable(f"search is temporarily unavailable: {_reason(exc)}") from exc
        return dict(response.body)

    async def _filter_clauses(self, filters: Filters) -> list[dict[str, Any]]:
        clauses: list[dict[str, Any]] = [
            {"terms": {"status": list(filters.status)}},
            {"terms": {"visibility": list(filters.visibility)}},
        ]
        if filters.language is not None:
            clauses.append({"term": {"language": filters.language}})
        if filters.category_id is not None:
            clauses.append({"terms": {"category_id": await self._subtree(filters.category_id)}})
        return clauses

    async def _subtree(self, category_id: int) -> list[int]:
        """The category and its descendants, from PostgreSQL: the tree may have changed since
        articles were indexed, and only the articles' own category is in the index."""
        if self.database is None:
            return [category_id]
        from sqlalchemy import text

        async with self.database.sessionmaker() as session:
            rows = await session.scalars(
                text(
                    "WITH RECURSIVE subtree(id) AS ("
                    " SELECT id FROM kb_categories WHERE id = :id"
                    " UNION SELECT c.id FROM kb_categories c JOIN subtree s ON c.parent_id = s.id"
                    ") SELECT id FROM subtree"
                ),
                {"id": category_id},
            )
            return list(rows) or [category_id]


_SUGGEST_FIELDS = ["title.suggest", "title.suggest._2gram", "title.suggest._3gram"]


def _normalized(query: str | None) -> str:
    """NFKC, whitespace collapsed: full-width "ＰＡＳＳ" is searched as "PASS"."""
    return " ".join(unicodedata.normalize("NFKC", query or "").split())


def _search_query(q: str, filters: list[dict[str, Any]]) -> dict[str, Any]:
    should: list[dict[str, Any]] = [
        # words, stemmed (English) or segmented (Japanese), title first
        {
            "multi_match": {
                "query": q,
                "type": "best_fields",
                "fields": ["title.en^3", "title.ja^3", "body.en", "body.ja"],
                "minimum_should_match": "2<75%",
            }
        },
        # the words in order in the title
        {"match_phrase": {"title": {"query": q, "boost": 2}}},
        # a word still being typed, or a partial one, at the start of a title word
        {
            "multi_match": {
                "query": q,
                "type": "bool_prefix",
                "operator": "and",
                "fields": _SUGGEST_FIELDS,
            }
        },
    ]
    if not any(hl.is_cjk(ch) for ch in q):
        # typos; not for Japanese, where the folded fields hold single characters
        should.append(
            {
                "multi_match": {
                    "query": q,
                    "type": "best_fields",
                    "fields": ["title^3", "body"],
                    "fuzziness": "AUTO",
                    "prefix_length": 1,
                    "minimum_should_match": "2<75%",
                    "boost": 0.5,
                }
            }
        )
    return {"bool": {"should": should, "minimum_should_match": 1, "filter": filters}}


# `encoder: html` escapes the text around the tags, so fragments are safe to show as they are.
_HIGHLIGHT: dict[str, Any] = {
    "pre_tags": ["<mark>"],
    "post_tags": ["</mark>"],
    "encoder": "html",
    "require_field_match": False,
    "fields": {
        "title": {"number_of_fragments": 0},
        "title.en": {"number_of_fragments": 0},
        "title.ja": {"number_of_fragments": 0},
        "body": {"fragment_size": hl.SNIPPET_CHARS, "number_of_fragments": 1},
        "body.en": {"fragment_size": hl.SNIPPET_CHARS, "number_of_fragments": 1},
        "body.ja": {"fragment_size": hl.SNIPPET_CHARS, "number_of_fragments": 1},
    },
}


def _best(fragments: dict[str, list[str]], field: str) -> str | None:
    """The fragment with the most marks among a field's variants."""
    candidates = [
        f for name in (field, f"{field}.en", f"{field}.ja") for f in fragments.get(name, [])[:1]
    ]
    marked = [f for f in candidates if "<mark>" in f]
    return max(marked, key=lambda f: f.count("<mark>")) if marked else None


def _hit(raw: dict[str, Any], terms: list[str]) -> Hit:
    src = raw["_source"]
    fragments = raw.get("highlight", {})
    body = src.get("body", "")
    title_html = _best(fragments, "title") or hl.highlight(src["title"], terms)
    snippet = _best(fragments, "body")
    if snippet is None:
        snippet_html = hl.snippet(body, terms)
    else:
        plain = html.unescape(_TAG.sub("", snippet))
        snippet_html = hl.elide(" ".join(snippet.split()), plain, body)
    return Hit(
        article_id=int(src["id"]),
        language=src["language"],
        slug=src["slug"],
        title=src["title"],
        title_html=title_html,
        snippet_html=snippet_html,
        score=float(raw["_score"] or 0.0),
        category_id=src.get("category_id"),
        visibility=src["visibility"],
    )


def _reason(exc: Exception) -> str:
    from elasticsearch import ApiError

    if isinstance(exc, ApiError):
        return f"the cluster answered {exc.meta.status}"
    return "the cluster cannot be reached"
