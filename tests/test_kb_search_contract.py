"""One contract for every search backend: the same tests run against each adapter.

PostgreSQL always runs. Elasticsearch runs when HELPDESK_ELASTICSEARCH_URL names a cluster
(each run uses its own index prefix and deletes its indices afterwards); otherwise its half
of the suite is reported as skipped.
"""

from __future__ import annotations

import asyncio
import difflib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, text
from sqlalchemy.exc import DBAPIError

from helpdesk.config import Settings
from helpdesk.db import Database
from knowledge_base.models import KbArticle, KbCategory
from knowledge_base.search import (
    ArticleDoc,
    Filters,
    SearchPort,
    category_paths,
    iter_docs,
    make_search,
)
from knowledge_base.search import postgres as pg
from knowledge_base.search.postgres import PostgresSearch

ES_URL = os.environ.get("HELPDESK_ELASTICSEARCH_URL")
ES_SKIP = "HELPDESK_ELASTICSEARCH_URL is not set: the Elasticsearch adapter's contract tests need a cluster"
EVERYONE = Filters(visibility=("public", "internal"))


@pytest.fixture(params=["postgres", "elasticsearch"])
async def adapter(request: pytest.FixtureRequest, db: Database) -> AsyncIterator[SearchPort]:
    if request.param == "postgres":
        yield PostgresSearch(db)
        return
    if not ES_URL:
        pytest.skip(ES_SKIP)
    pytest.importorskip("elasticsearch")
    from knowledge_base.search.elasticsearch import ElasticsearchSearch

    prefix = f"helpdesk-test-{uuid.uuid4().hex[:10]}"
    search = ElasticsearchSearch(ES_URL, index_prefix=prefix, database=db)
    try:
        yield search
    finally:
        # by name: clusters refuse wildcard deletes (action.destructive_requires_name)
        made = await search.client.indices.get(index=f"{prefix}-kb-*", allow_no_indices=True)
        for name in made.body:
            await search.client.indices.delete(index=name, ignore_unavailable=True)
        await search.close()


class Kb:
    """Articles written straight to the table, then handed to the adapter to index."""

    def __init__(self, db: Database, adapter: SearchPort) -> None:
        self.db = db
        self.adapter = adapter

    async def category(self, slug: str, parent: int | None = None) -> int:
        async with self.db.unit_of_work() as session:
            category = KbCategory(slug=slug, parent_id=parent, names={"en": slug})
            session.add(category)
            await session.flush()
            return category.id

    async def add(self, title: str, body: str = "", **fields: object) -> KbArticle:
        return (await self.add_many([(title, body, fields)]))[0]

    async def add_many(self, items: list[tuple[str, str, dict[str, object]]]) -> list[KbArticle]:
        async with self.db.unit_of_work() as session:
            articles = []
            for title, body, fields in items:
                values: dict[str, object] = {
                    "language": "en",
                    "status": "published",
                    "visibility": "public",
                    "slug": f"a-{uuid.uuid4().hex[:12]}",
                    **fields,
                }
                article = KbArticle(
                    title=title, body_md=body, body_html="", body_text=body, **values
                )
                session.add(article)
                articles.append(article)
            await session.flush()
        paths = await category_paths(self.db)
        await self.adapter.index(
            [ArticleDoc.from_article(a, paths.get(a.category_id or 0, ())) for a in articles]
        )
        return articles


@pytest.fixture
def kb(db: Database, adapter: SearchPort) -> Kb:
    return Kb(db, adapter)


def ids(result) -> list[int]:  # type: ignore[no-untyped-def]
    return [h.article_id for h in (result.hits if hasattr(result, "hits") else result)]


async def test_english_plural_finds_the_singular(kb: Kb, adapter: SearchPort) -> None:
    refund = await kb.add("How do I get a refund?", "Money goes back to the card you paid with.")
    await kb.add("Change your delivery address", "Open your account settings.")
    result = await adapter.search("refunds")
    assert ids(result) == [refund.id]
    assert result.total == 1


async def test_title_match_ranks_above_body_match(kb: Kb, adapter: SearchPort) -> None:
    body_only = await kb.add(
        "Paying by bank transfer", "An invoice is sent. The invoice lists the invoice number."
    )
    in_title = await kb.add("Where is my invoice?", "We email it on the first of the month.")
    assert ids(await adapter.search("invoice")) == [in_title.id, body_only.id]


async def test_japanese_is_found_without_spaces(kb: Kb, adapter: SearchPort) -> None:
    reissue = await kb.add(
        "請求書の再発行について",
        "請求書を再発行するには、マイページの「お支払い」から申請してください。",
        language="ja",
    )
    await kb.add(
        "パスワードの再設定", "ログイン画面の「パスワードを忘れた方」から。", language="ja"
    )
    for query in ("再発行", "請求書", "請求書再発行", "マイページ"):
        result = await adapter.search(query)
        assert ids(result) == [reissue.id], query


async def test_misspelled_words_still_find_the_article(kb: Kb, adapter: SearchPort) -> None:
    password = await kb.add("Reset your password", "Use the link on the sign-in page.")
    refund = await kb.add("Refund policy", "Refunds are paid within five days.")
    assert ids(await adapter.search("pasword")) == [password.id]
    assert ids(await adapter.search("refnd")) == [refund.id]


async def test_full_width_letters_match_half_width(kb: Kb, adapter: SearchPort) -> None:
    password = await kb.add("Reset your password", "Use the link on the sign-in page.")
    result = await adapter.search("ＰＡＳＳＷＯＲＤ")
    assert ids(result) == [password.id]
    assert "<mark>password</mark>" in result.hits[0].title_html


async def test_partial_word_matches(kb: Kb, adapter: SearchPort) -> None:
    article = await kb.add("Two-factor authentication", "Scan the QR code with your phone.")
    assert ids(await adapter.search("authenti")) == [article.id]


async def test_language_filter(kb: Kb, adapter: SearchPort) -> None:
    en = await kb.add("Shipping times", "Orders ship in 2 days.")
    ja = await kb.add("配送について", "Shipping は2日以内です。", language="ja")
    assert set(ids(await adapter.search("shipping"))) == {en.id, ja.id}
    assert ids(await adapter.search("shipping", Filters(language="ja"))) == [ja.id]
    assert ids(await adapter.search("shipping", Filters(language="en"))) == [en.id]


async def test_internal_articles_are_hidden_unless_asked_for(kb: Kb, adapter: SearchPort) -> None:
    public = await kb.add("Refund policy", "Refunds take five days.")
    internal = await kb.add(
        "Refund approval steps", "Agents approve refunds.", visibility="internal"
    )
    assert ids(await adapter.search("refund")) == [public.id]
    assert set(ids(await adapter.search("refund", EVERYONE))) == {public.id, internal.id}
    assert ids(await adapter.suggest("refund")) == [public.id]


async def test_drafts_and_archived_articles_are_hidden(kb: Kb, adapter: SearchPort) -> None:
    published = await kb.add("Refund policy", "Refunds take five days.")
    draft = await kb.add("Refund policy (new)", "Refunds take three days.", status="draft")
    await kb.add("Refund policy (2019)", "Refunds took ten days.", status="archived")
    assert ids(await adapter.search("refund")) == [published.id]
    assert ids(await adapter.suggest("refund")) == [published.id]
    drafts = await adapter.search("refund", Filters(status=("draft",)))
    assert ids(drafts) == [draft.id]


async def test_category_filter_includes_descendants(kb: Kb, adapter: SearchPort) -> None:
    billing = await kb.category("billing")
    invoices = await kb.category("invoices", parent=billing)
    account = await kb.category("account")
    top = await kb.add("Billing cycle and refund", "", category_id=billing)
    nested = await kb.add("Invoice refund", "", category_id=invoices)
    await kb.add("Account refund", "", category_id=account)
    await kb.add("Uncategorised refund", "")
    assert set(ids(await adapter.search("refund", Filters(category_id=billing)))) == {
        top.id,
        nested.id,
    }
    assert ids(await adapter.search("refund", Filters(category_id=invoices))) == [nested.id]


async def test_matches_are_marked_and_everything_else_escaped(kb: Kb, adapter: SearchPort) -> None:
    await kb.add(
        "<script>alert(1)</script> & refund",
        "Never paste <b>markup</b> & expect a refund <img src=x onerror=alert(1)>.",
    )
    [hit] = (await adapter.search("refund")).hits
    assert "<mark>refund</mark>" in hit.title_html
    assert "&lt;script&gt;" in hit.title_html and "<script>" not in hit.title_html
    assert "&amp;" in hit.title_html
    assert "<mark>refund</mark>" in hit.snippet_html
    assert "<img" not in hit.snippet_html and "<b>" not in hit.snippet_html
    assert hit.title == "<script>alert(1)</script> & refund"


async def test_snippet_shows_the_part_of_a_long_body_that_matches(
    kb: Kb, adapter: SearchPort
) -> None:
    filler = "Our shop is open every day of the week. " * 20
    await kb.add("Opening hours", filler + "Refunds are handled at the counter. " + filler)
    [hit] = (await adapter.search("counter")).hits
    assert "<mark>counter</mark>" in hit.snippet_html
    assert hit.snippet_html.startswith("…") and hit.snippet_html.endswith("…")
    assert len(hit.snippet_html) < 400


async def test_japanese_snippet_marks_the_query(kb: Kb, adapter: SearchPort) -> None:
    await kb.add(
        "お支払いについて",
        "ご利用いただけるお支払い方法は次のとおりです。" * 10 + "返金は五営業日以内に行います。",
        language="ja",
    )
    [hit] = (await adapter.search("返金")).hits
    assert "<mark>返金</mark>" in hit.snippet_html


async def test_suggest_completes_the_last_word(kb: Kb, adapter: SearchPort) -> None:
    password = await kb.add("Reset your password", "Use the link on the sign-in page.")
    await kb.add("Change your delivery address", "Open your account settings.")
    reissue = await kb.add("請求書の再発行について", "マイページから。", language="ja")
    assert ids(await adapter.suggest("reset pass")) == [password.id]
    assert ids(await adapter.suggest("passw")) == [password.id]
    assert ids(await adapter.suggest("請求書")) == [reissue.id]
    [hit] = await adapter.suggest("passw")
    assert "<mark>" in hit.title_html
    assert await adapter.suggest("") == []


async def test_delete_removes_the_article(kb: Kb, adapter: SearchPort, db: Database) -> None:
    gone = await kb.add("Refund policy", "Refunds take five days.")
    kept = await kb.add("Refund form", "Fill it in.")
    async with db.unit_of_work() as session:
        await session.execute(delete(KbArticle).where(KbArticle.id == gone.id))
    await adapter.delete([gone.id])
    assert ids(await adapter.search("refund")) == [kept.id]
    await adapter.delete([gone.id])  # again: nothing left to delete is no error


async def test_reindex_counts_and_keeps_results(kb: Kb, adapter: SearchPort, db: Database) -> None:
    billing = await kb.category("billing")
    await kb.add("Refund policy", "Refunds take five days.", category_id=billing)
    await kb.add("Refund form", "Fill it in.")
    await kb.add("Refund draft", "Not yet.", status="draft")
    await kb.add("返金について", "返金は五営業日以内です。", language="ja")
    before = await adapter.search("refund", EVERYONE)
    seen: list[int] = []
    count = await adapter.reindex(iter_docs(db, batch=2), total=4, progress=seen.append)
    assert count == 4
    assert seen and seen[-1] == 4
    after = await adapter.search("refund", EVERYONE)
    assert ids(after) == ids(before) and after.total == before.total
    assert ids(await adapter.search("返金")) != []


async def test_pagination_is_stable_and_counts_every_match(kb: Kb, adapter: SearchPort) -> None:
    await kb.add_many([(f"Refund case {n}", "How refunds work.", {}) for n in range(12)])
    pages = [await adapter.search("refund", limit=5, offset=o) for o in (0, 5, 10)]
    assert [len(p.hits) for p in pages] == [5, 5, 2]
    assert {p.total for p in pages} == {12}
    every = [i for p in pages for i in ids(p)]
    assert len(set(every)) == 12
    past_the_end = await adapter.search("refund", limit=5, offset=20)
    assert past_the_end.hits == [] and past_the_end.total == 12


async def test_empty_query_finds_nothing(kb: Kb, adapter: SearchPort) -> None:
    await kb.add("Refund policy", "")
    result = await adapter.search("   ")
    assert result.hits == [] and result.total == 0


async def test_an_answering_backend_is_not_degraded(kb: Kb, adapter: SearchPort) -> None:
    await kb.add("Refund policy", "")
    assert (await adapter.search("refund")).degraded is None
    assert (await adapter.search("nothing-like-this")).degraded is None


# -- adapter-specific ------------------------------------------------------------------------


async def test_the_test_database_extracts_trigrams_from_japanese(db: Database) -> None:
    # pg_trgm only sees characters the database's ctype calls alphanumeric; with the C locale
    # Japanese yields no trigram at all and every Japanese search here would scan.
    async with db.engine.connect() as conn:
        trigrams = await conn.scalar(text("SELECT show_trgm('請求書の再発行')"))
    assert len(trigrams) >= 7


async def test_a_failed_or_cancelled_postgres_search_leaves_no_transaction_behind(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The adapter runs its transaction through the driver itself (postgres.py,
    # _search_transaction): a search that fails or is cancelled half-way must neither leave
    # a connection in the pool inside that transaction nor surface as anything but the
    # DBAPIError every other query raises (which the app turns into a 503 when the database
    # is down).
    search = PostgresSearch(db)
    refund = await Kb(db, search).add("Refund policy", "Money goes back to the card.")
    original = pg._SEARCH_SQL
    monkeypatch.setattr(
        pg,
        "_SEARCH_SQL",
        original.replace(
            "ORDER BY r.score DESC, r.id\n", "ORDER BY r.score DESC, r.id, no_such_function()\n"
        ),
    )
    with pytest.raises(DBAPIError, match="no_such_function"):
        await search.search("refund")
    monkeypatch.setattr(
        pg, "_SEARCH_SQL", original.replace("SELECT r.id,", "SELECT pg_sleep(3), r.id,")
    )
    slow = asyncio.create_task(search.search("refund"))
    await asyncio.sleep(0.5)
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    monkeypatch.setattr(pg, "_SEARCH_SQL", original)
    for _ in range(12):  # more than the pool holds: every connection in it answers
        assert ids(await search.search("refund")) == [refund.id]
        assert ids(await search.suggest("refu")) == [refund.id]
    async with db.engine.connect() as conn:
        stuck = await conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND state LIKE 'idle in transaction%'"
            )
        )
    assert stuck == 0


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.text(alphabet="adefinoprstuw", min_size=2, max_size=10), max_size=80),
    st.text(alphabet="adefinoprstuw", min_size=1, max_size=10),
)
def test_spelling_corrections_are_difflibs_closest_common_words(
    common: list[str], word: str
) -> None:
    # TermStats.corrections rules out most of the word list before difflib sees it, and
    # remembers its answers: the corrections must be those of difflib over the whole list.
    stats = pg.TermStats(rows=1000.0, shares={"search_grams": dict.fromkeys(common, 0.01)})
    stats.floor["search_grams"] = 0.005
    for term in sorted(set(common)):
        stats.words_by_length.setdefault(len(term), []).append(term)
    near = [
        w
        for length in range(len(word) - 2, len(word) + 3)
        for w in stats.words_by_length.get(length, ())
    ]
    expected = (
        []
        if len(word) < pg.MIN_CORRECTED_CHARS or word in common
        else difflib.get_close_matches(word, near, n=pg.MAX_CORRECTIONS, cutoff=pg.CORRECTION_RATIO)
    )
    assert stats.corrections(word) == expected
    assert stats.corrections(word) == expected  # remembered


async def test_unreachable_elasticsearch_degrades_instead_of_failing() -> None:
    pytest.importorskip("elasticsearch")
    from knowledge_base.search.elasticsearch import ElasticsearchSearch

    search = ElasticsearchSearch("http://127.0.0.1:9", request_timeout=2)  # nothing listens
    try:
        result = await search.search("refund")
        assert result.hits == [] and result.total == 0
        assert result.degraded is not None
        assert result.degraded.startswith("search is temporarily unavailable: ")
        assert await search.suggest("ref") == []
    finally:
        await search.close()


def test_make_search_picks_the_configured_backend(settings: Settings, session_db: Database) -> None:
    assert make_search(settings, session_db).name == "postgres"
    with pytest.raises(ValueError, match="unknown search backend 'solr'"):
        make_search(replace(settings, search="solr"), session_db)
    with pytest.raises(ValueError, match="HELPDESK_ELASTICSEARCH_URL"):
        make_search(replace(settings, search="elasticsearch"), session_db)


async def test_iter_docs_gives_every_article_with_its_category_path(db: Database) -> None:
    kb = Kb(db, PostgresSearch(db))
    billing = await kb.category("billing")
    invoices = await kb.category("invoices", parent=billing)
    nested = await kb.add("Invoice copies", "", category_id=invoices)
    loose = await kb.add("Opening hours", "", status="draft")
    docs = {d.id: d for d in [doc async for doc in iter_docs(db, batch=1)]}
    assert docs[nested.id].category_path == ("billing", "invoices")
    assert docs[loose.id].category_path == () and docs[loose.id].status == "draft"
