"""Article search in PostgreSQL: the default backend, with nothing to run beside the database.

Three kinds of match, each answered by a GIN index on `kb_articles`, are merged into one
ranking:

- words: `search_vector @@ websearch_to_tsquery(...)` (english stemming for English
  articles: "refunds" finds "refund"; the query is parsed both ways and OR'ed, so one
  constant query serves every language);
- substrings: `ILIKE '%…%'` on title and body through the trigram indexes, which is how
  Japanese, written without spaces, is found ("請求書" in "請求書の再発行");
- near spellings: pg_trgm word similarity (`title %> q`: "refnd", "pasword", and
  "請求書再発行" for "請求書の再発行").

A title match of any kind outweighs any body match. Kana and kanji spellings of one word
("へんきん", "返金") share no characters, so nothing here matches one from the other.
"""

from __future__ import annotations

import unicodedata
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from helpdesk.db import Database
from knowledge_base.search import (
    ArticleDoc,
    EverythingHit,
    Filters,
    Hit,
    SearchResult,
)
from knowledge_base.search import highlight as hl

# Word-similarity thresholds (0..1) for the `%>` operator. Japanese runs are one "word" to
# pg_trgm, so a query missing a particle ("請求書再発行" against "請求書の再発行") shares
# only about 0.43 of its trigrams; Latin typos share more ("refnd"/"refund" 0.5,
# "pasword"/"password" 0.7) and a lower bar there lets unrelated words in.
LATIN_THRESHOLD = 0.45
CJK_THRESHOLD = 0.4
# pg_trgm finds no trigram in a substring pattern shorter than this, so ILIKE could only scan.
MIN_INDEXED_SUBSTRING = 3
MAX_GAPPED_CHARS = 16
# Title and body are scored 0..1 each; the title counts this many times.
TITLE_WEIGHT = 2.0
HEADLINE_OPTIONS = f"StartSel={hl.START}, StopSel={hl.STOP}, MaxWords=28, MinWords=12, ShortWord=2"
TITLE_HEADLINE_OPTIONS = f"StartSel={hl.START}, StopSel={hl.STOP}, HighlightAll=true"


@dataclass(frozen=True)
class _Query:
    """A search box entry prepared for SQL."""

    text: str  # NFKC, whitespace collapsed
    terms: list[str]  # for marking matches, see highlight.py
    patterns: list[str]  # ILIKE patterns, any of which matches; [] when none is worth it
    threshold: float

    @classmethod
    def parse(cls, raw: str) -> _Query | None:
        """None for an entry with nothing to look for: blank, or only excluded words
        ("-refund" alone would otherwise list every article without that word)."""
        value = " ".join(unicodedata.normalize("NFKC", raw or "").split())
        if not hl.query_terms(value):
            return None
        is_cjk = any(hl.is_cjk(ch) for ch in value)
        return cls(
            text=value,
            terms=hl.query_terms(value),
            patterns=like_patterns(value),
            threshold=CJK_THRESHOLD if is_cjk else LATIN_THRESHOLD,
        )


def like_patterns(query: str) -> list[str]:
    """ILIKE patterns for a query, any of which matches: its words in order, anything
    between them. Quotes are dropped; excluded words (`-word`) and `or` are left out.

    A Japanese query is often a run of words a text writes with a particle between them
    ("請求書再発行" for "請求書の再発行"), so a single run of four characters or more is also
    tried with one gap at each place inside it that leaves two characters on either side.
    Latin queries shorter than three characters get no pattern (pg_trgm cannot index it and
    the words match anyway); Japanese ones do, as "返金" is a whole word.
    """
    value = unicodedata.normalize("NFKC", query or "").replace('"', " ")
    words = [w for w in value.split() if not w.startswith("-") and w.lower() != "or"]
    is_cjk = any(hl.is_cjk(ch) for ch in value)
    if not words or (not is_cjk and len("".join(words)) < MIN_INDEXED_SUBSTRING):
        return []
    escaped = [_escape_like(w) for w in words]
    if is_cjk and len(words) == 1 and 4 <= len(words[0]) <= MAX_GAPPED_CHARS:
        word = words[0]
        return [
            f"%{_escape_like(word[:k])}%{_escape_like(word[k:])}%" for k in range(2, len(word) - 1)
        ]
    return ["%" + "%".join(escaped) + "%"]


def like_operator(patterns: list[str]) -> str:
    """LIKE when no pattern has letters with case (Japanese, digits): it matches the same as
    ILIKE but does not case-fold every row, which halves a scan's cost."""
    caseless = all(p.lower() == p.upper() for p in patterns)
    return "LIKE" if caseless else "ILIKE"


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_")


_TSQUERY = "(websearch_to_tsquery('english', :q) || websearch_to_tsquery('simple', :q))"
_CATEGORY_SUBTREE = """
    a.category_id IN (
        WITH RECURSIVE subtree(id) AS (
            SELECT id FROM kb_categories WHERE id = :category_id
            UNION
            SELECT c.id FROM kb_categories c JOIN subtree s ON c.parent_id = s.id
        )
        SELECT id FROM subtree
    )"""


def _filter_sql(filters: Filters, params: dict[str, Any]) -> str:
    clauses = ["a.status = ANY(:statuses)", "a.visibility = ANY(:visibilities)"]
    params["statuses"] = list(filters.status)
    params["visibilities"] = list(filters.visibility)
    if filters.language is not None:
        clauses.append("a.language = :language")
        params["language"] = filters.language
    if filters.category_id is not None:
        clauses.append(_CATEGORY_SUBTREE)
        params["category_id"] = filters.category_id
    return " AND ".join(clauses)


def _match_sql(query: _Query) -> str:
    # Each branch is answered by a GIN index; PostgreSQL ORs the bitmaps. Near spellings are
    # looked for in titles only: a body of a few hundred words holds most common trigrams
    # somewhere, so the index hands over nearly every body for an exact word_similarity
    # pass, at 0.2-0.5 ms per 1 KB body (over a second for 5,000 articles). Typos in bodies
    # need a word list (the lexemes, with a trigram index) to correct the query against.
    branches = [f"a.search_vector @@ {_TSQUERY}", "a.title %> :q"]
    if query.patterns:
        like = like_operator(query.patterns)
        branches += [f"a.title {like} ANY(:patterns)", f"a.body_text {like} ANY(:patterns)"]
    return "(" + " OR ".join(branches) + ")"


def _score_sql(query: _Query) -> str:
    like = like_operator(query.patterns)
    title_substring = f"a.title {like} ANY(:patterns)" if query.patterns else "false"
    body_substring = f"a.body_text {like} ANY(:patterns)" if query.patterns else "false"
    return f"""
        :title_weight * GREATEST(
            CASE WHEN ts_filter(a.search_vector, '{{a}}') @@ {_TSQUERY} THEN 1.0 ELSE 0 END,
            CASE WHEN {title_substring} THEN 1.0 ELSE 0 END,
            word_similarity(:q, a.title))
        + CASE
            WHEN ts_filter(a.search_vector, '{{b}}') @@ {_TSQUERY}
                THEN 0.5 + 0.5 * ts_rank_cd('{{0, 0, 1, 0}}', a.search_vector, {_TSQUERY}, 32)
            WHEN {body_substring} THEN 0.5
            ELSE 0
          END"""


# The page's rows, then headlines for those rows only: ts_headline re-parses the text.
_SEARCH_SQL = """
WITH ranked AS (
    SELECT a.id, {score} AS score, count(*) OVER () AS total
    FROM kb_articles a
    WHERE {filters} AND {match}
    ORDER BY score DESC, a.id
    LIMIT :limit OFFSET :offset
)
SELECT r.id, r.score, r.total, a.language, a.slug, a.title, a.body_text, a.category_id,
       a.visibility, title_headline, body_headline
FROM ranked r
JOIN kb_articles a ON a.id = r.id
CROSS JOIN LATERAL (
    SELECT
        CASE WHEN a.language = 'en' AND ts_filter(a.search_vector, '{{a}}') @@ {tsquery}
            THEN ts_headline('english', translate(a.title, :sentinels, ''), {tsquery},
                             :title_options) END AS title_headline,
        CASE WHEN a.language = 'en' AND ts_filter(a.search_vector, '{{b}}') @@ {tsquery}
            THEN ts_headline('english', translate(a.body_text, :sentinels, ''), {tsquery},
                             :body_options) END AS body_headline
) h
ORDER BY r.score DESC, r.id
"""

_COUNT_SQL = "SELECT count(*) FROM kb_articles a WHERE {filters} AND {match}"

# Every typed word must start a title word (weight A); the last one may be unfinished.
_PREFIX_TSQUERY = "(to_tsquery('english', :prefix_text) || to_tsquery('simple', :prefix_text))"
_SUGGEST_SQL = """
SELECT a.id, a.language, a.slug, a.title, left(a.body_text, 400) AS body_start,
       a.category_id, a.visibility,
       CASE WHEN a.title ILIKE :starts THEN 1.0 ELSE 0 END
       + CASE WHEN a.search_vector @@ {prefix_query} THEN 0.5 ELSE 0 END
       + word_similarity(:q, a.title) AS score
FROM kb_articles a
WHERE {filters}
  AND (a.search_vector @@ {prefix_query} OR a.title %> :q {contains})
ORDER BY score DESC, a.id
LIMIT :limit
"""


class PostgresSearch:
    """Search over `kb_articles` itself.

    `index` and `delete` do nothing: `search_vector` is a generated column and the trigram
    indexes cover the article's own columns, so PostgreSQL updates them in the same
    transaction that saves the article. A saved article is findable the moment it commits,
    and a rolled-back save never is.
    """

    name = "postgres"

    def __init__(self, database: Database, *, region: str = "JP") -> None:
        self.database = database
        self.region = region

    async def index(self, docs: Sequence[ArticleDoc]) -> None:
        """Nothing to do: the article's row is its own index entry (see the class)."""

    async def delete(self, article_ids: Sequence[int]) -> None:
        """Nothing to do: deleting the row deletes its index entries."""

    async def reindex(
        self,
        docs: AsyncIterator[ArticleDoc],
        *,
        total: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Count the articles: the indexes are never stale, so there is nothing to rebuild."""
        count = 0
        async for _ in docs:
            count += 1
            if progress is not None and count % 100 == 0:
                progress(count)
        if progress is not None:
            progress(count)
        return count

    async def search(
        self, query: str, filters: Filters = Filters(), *, limit: int = 10, offset: int = 0
    ) -> SearchResult:
        parsed = _Query.parse(query)
        if parsed is None or limit <= 0:
            return SearchResult([], 0)
        params: dict[str, Any] = {
            "q": parsed.text,
            "patterns": parsed.patterns,
            "title_weight": TITLE_WEIGHT,
            "limit": limit,
            "offset": max(0, offset),
            "sentinels": hl.START + hl.STOP,
            "title_options": TITLE_HEADLINE_OPTIONS,
            "body_options": HEADLINE_OPTIONS,
        }
        filters_sql = _filter_sql(filters, params)
        match_sql = _match_sql(parsed)
        sql = _SEARCH_SQL.format(
            score=_score_sql(parsed), filters=filters_sql, match=match_sql, tsquery=_TSQUERY
        )
        async with self.database.unit_of_work() as session:
            await _prepare(session, parsed.threshold)
            rows = (await session.execute(text(sql), params)).all()
            if rows:
                total = int(rows[0].total)
            elif offset > 0:  # past the end: the window count saw no row to ride on
                count_sql = _COUNT_SQL.format(filters=filters_sql, match=match_sql)
                total = int(await session.scalar(text(count_sql), params) or 0)
            else:
                total = 0
        return SearchResult([_hit(row, parsed.terms) for row in rows], total)

    async def suggest(
        self, prefix: str, filters: Filters = Filters(), *, limit: int = 5
    ) -> list[Hit]:
        """Titles for text being typed: its last word may be unfinished ("reset passw").

        Matches titles whose words start with the typed words (the tsvector with prefix
        search), near spellings of the whole entry, and, from three characters on, the entry
        anywhere in the title (Japanese). Shorter Japanese entries only match from the start of
        a run of characters, since a shorter substring would need a table scan per keystroke.
        """
        parsed = _Query.parse(prefix)
        if parsed is None or limit <= 0:
            return []
        typed = hl.words(parsed.text)
        if not typed:
            return []
        # \w+ words hold no quote or operator, so they are safe inside to_tsquery's syntax.
        prefix_text = " & ".join([f"'{w}':A" for w in typed[:-1]] + [f"'{typed[-1]}':*A"])
        params: dict[str, Any] = {
            "q": parsed.text,
            "prefix_text": prefix_text,
            "starts": _escape_like(parsed.text) + "%",
            "limit": limit,
        }
        contains = ""
        if len(parsed.text) >= MIN_INDEXED_SUBSTRING:
            params["contains"] = "%" + _escape_like(parsed.text) + "%"
            contains = f"OR a.title {like_operator([params['contains']])} :contains"
        sql = _SUGGEST_SQL.format(
            filters=_filter_sql(filters, params), contains=contains, prefix_query=_PREFIX_TSQUERY
        )
        terms = hl.query_terms(parsed.text)
        async with self.database.unit_of_work() as session:
            await _prepare(session, parsed.threshold)
            rows = (await session.execute(text(sql), params)).all()
        return [
            Hit(
                article_id=row.id,
                language=row.language,
                slug=row.slug,
                title=row.title,
                title_html=hl.highlight(row.title, terms),
                snippet_html=hl.snippet(row.body_start, [], width=120),
                score=float(row.score),
                category_id=row.category_id,
                visibility=row.visibility,
            )
            for row in rows
        ]

    async def search_everything(self, query: str, *, limit: int = 20) -> list[EverythingHit]:
        from knowledge_base.search.everything import search_everything

        return await search_everything(self.database, self, query, limit=limit, region=self.region)

    async def close(self) -> None:
        """Nothing to close: the database belongs to the app."""


async def _prepare(session: AsyncSession, threshold: float) -> None:
    # Both for this transaction only. asyncpg prepares statements, and a generic plan cannot
    # know whether a pattern is selective enough for the trigram index: plan per query.
    await session.execute(
        text(
            "SELECT set_config('pg_trgm.word_similarity_threshold', :t, true),"
            " set_config('plan_cache_mode', 'force_custom_plan', true)"
        ),
        {"t": str(threshold)},
    )


def _hit(row: Any, terms: list[str]) -> Hit:
    if row.title_headline and hl.START in row.title_headline:
        title_html = hl.marked_to_html(row.title_headline)
    else:
        title_html = hl.highlight(row.title, terms)
    if row.body_headline and hl.START in row.body_headline:
        snippet_html = hl.elide(
            hl.marked_to_html(row.body_headline),
            hl.strip_sentinels(row.body_headline),
            row.body_text,
        )
    else:
        snippet_html = hl.snippet(row.body_text, terms)
    return Hit(
        article_id=row.id,
        language=row.language,
        slug=row.slug,
        title=row.title,
        title_html=title_html,
        snippet_html=snippet_html,
        score=float(row.score),
        category_id=row.category_id,
        visibility=row.visibility,
    )
