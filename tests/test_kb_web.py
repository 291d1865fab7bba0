"""The knowledge base on the web: the public help center, the KB API (public search, staff
reads, editors' writes), the agents' pages, the case sidebar's suggestions, the editor."""

from __future__ import annotations

import re

import httpx
import pytest
from sqlalchemy import select

from helpdesk.interactions import add_interaction
from knowledge_base import articles, categories
from knowledge_base.articles import ArticleInput
from knowledge_base.models import KbArticle

HX = {"HX-Request": "true"}
SAME_ORIGIN = {"Origin": "http://testserver"}


@pytest.fixture(autouse=True)
def fresh_rate_limit(app):  # type: ignore[no-untyped-def]
    """The app (and its rate limiter) lives for the whole session; each test starts afresh."""
    app.state.kb_search_limit.clear()


async def _article(db, title: str, body: str = "本文", **fields: object) -> KbArticle:  # type: ignore[no-untyped-def]
    data = {"language": "en", "status": "published", "visibility": "public", **fields}
    async with db.unit_of_work() as session:
        return await articles.create_article(
            session, ArticleInput(title=title, body_md=body, **data), author_id=None
        )


async def _category(db, names: dict[str, str], **fields: object):  # type: ignore[no-untyped-def]
    async with db.unit_of_work() as session:
        return await categories.create_category(session, names=names, **fields)


async def _stored(db, article_id: int) -> KbArticle:  # type: ignore[no-untyped-def]
    async with db.unit_of_work() as session:
        return await session.get(KbArticle, article_id, populate_existing=True)


def _other_client(app, address: str) -> httpx.AsyncClient:  # type: ignore[no-untyped-def]
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


# -- the public help center ----------------------------------------------------------------


async def test_help_home_lists_categories_with_counts_and_popular_articles_per_language(client, db):
    billing = await _category(db, {"ja": "請求", "en": "Billing"}, slug="billing")
    await _category(db, {"en": "Empty shelf"}, slug="empty")
    await _article(db, "Reset your password", "Use the link.", category_id=billing.id)
    await _article(db, "請求書の再発行", "マイページから再発行できます。", language="ja",
                   category_id=billing.id)  # fmt: skip
    await _article(db, "Agent-only refunds", "x", visibility="internal", category_id=billing.id)
    await _article(db, "Unfinished", "x", status="draft", category_id=billing.id)

    en = await client.get("/help", params={"lang": "en"})
    assert en.status_code == 200
    assert '<html lang="en">' in en.text
    assert 'href="/help/en/c/billing">Billing</a>' in en.text
    assert "(1)" in en.text  # the internal and the draft article are not counted
    assert "Empty shelf" not in en.text  # a category with nothing to read is not shown
    assert "Reset your password" in en.text and "請求書の再発行" not in en.text
    assert "Agent-only" not in en.text and "Unfinished" not in en.text
    assert "topbar" not in en.text  # the public layout, not the staff header
    assert en.cookies.get("helpdesk_lang") == "en"

    client.cookies.clear()
    ja = await client.get("/help", headers={"Accept-Language": "ja,en;q=0.5"})
    assert '<html lang="ja">' in ja.text
    assert 'href="/help/ja/c/billing">請求</a>' in ja.text
    assert "請求書の再発行" in ja.text and "Reset your password" not in ja.text
    assert 'href="/help?lang=en"' in ja.text  # the language switch

    # ?lang= beats the cookie, the cookie beats Accept-Language
    client.cookies.set("helpdesk_lang", "en")
    assert '<html lang="en">' in (await client.get("/help", headers={"Accept-Language": "ja"})).text
    assert '<html lang="ja">' in (await client.get("/help?lang=ja")).text


async def test_help_article_shows_sanitized_body_breadcrumb_translations_and_related(client, db):
    billing = await _category(db, {"ja": "請求", "en": "Billing"}, slug="billing")
    article = await _article(
        db,
        "Download an invoice",
        "## Steps\n\nOpen **Billing**.\n\n<script>alert(1)</script>",
        slug="download-invoice",
        category_id=billing.id,
        tags=["invoice"],
    )
    async with db.unit_of_work() as session:
        translation = await articles.create_translation(
            session, article.id, "ja", "請求書のダウンロード", "「請求」を開きます。",
            author_id=None, status="published",
        )  # fmt: skip
    await _article(db, "Invoice due dates", "30 days.", tags=["invoice"], slug="due-dates")
    await _article(db, "Secret invoice tricks", "x", tags=["invoice"], visibility="internal")

    r = await client.get("/help/en/download-invoice")
    assert r.status_code == 200
    html = r.text
    assert "<h2>Steps</h2>" in html and "<strong>Billing</strong>" in html
    assert "<script>alert" not in html and "&lt;script&gt;" in html
    assert 'href="/help/en/c/billing">Billing</a>' in html  # breadcrumb
    assert f'href="/help/ja/{translation.slug}"' in html and "Also in 日本語" in html
    assert 'href="/help/en/due-dates"' in html  # related, by the shared tag
    assert "Secret invoice tricks" not in html
    assert 'hx-post="/help/en/download-invoice/vote"' in html
    assert r.cookies.get("helpdesk_voter")
    assert (await _stored(db, article.id)).view_count == 1

    ja = await client.get(f"/help/ja/{translation.slug}")
    assert ja.status_code == 200 and '<html lang="ja">' in ja.text
    assert "請求書のダウンロード" in ja.text and 'href="/help/ja/c/billing">請求</a>' in ja.text
    assert 'href="/help/en/download-invoice"' in ja.text and "English" in ja.text


async def test_internal_draft_and_archived_articles_are_not_found_by_the_public(client, db):
    await _article(db, "Internal", "x", slug="internal-one", visibility="internal")
    await _article(db, "Draft", "x", slug="draft-one", status="draft")
    archived = await _article(db, "Archived", "x", slug="archived-one")
    async with db.unit_of_work() as session:
        await articles.set_status(session, archived.id, "archived", editor_id=None)
    await _article(db, "日本語の記事", "x", slug="only-ja", language="ja")

    for path in (
        "/help/en/internal-one",
        "/help/en/draft-one",
        "/help/en/archived-one",
        "/help/en/only-ja",  # the slug exists, but in Japanese
        "/help/fr/only-ja",
        "/help/en/c/no-such-category",
    ):
        r = await client.get(path)
        assert r.status_code == 404, path
        assert "help-top" in r.text  # the help center's own not-found page
    assert (await client.get("/help/ja/only-ja")).status_code == 200


async def test_category_page_pages_through_its_published_public_articles(client, db):
    faq = await _category(db, {"en": "FAQ", "ja": "よくある質問"}, slug="faq")
    child = await _category(db, {"en": "Accounts"}, slug="accounts", parent_id=faq.id)
    for n in range(23):
        await _article(db, f"Question {n:02d}", "Answer.", category_id=faq.id)
    await _article(db, "Hidden question", "x", category_id=faq.id, visibility="internal")
    await _article(db, "Sign-in help", "x", category_id=child.id)

    first = await client.get("/help/en/c/faq")
    assert first.status_code == 200
    assert "<h1" in first.text and "FAQ" in first.text
    assert 'href="/help/en/c/accounts"' in first.text  # the subcategory
    assert len(re.findall(r'href="/help/en/question-\d\d"', first.text)) == 20
    assert "Hidden question" not in first.text
    cursor = re.search(r'href="/help/en/c/faq\?cursor=([^"]+)"', first.text)
    assert cursor, "a next-page link"
    second = await client.get(f"/help/en/c/faq?cursor={cursor.group(1)}")
    assert len(re.findall(r'href="/help/en/question-\d\d"', second.text)) == 3

    empty = await client.get("/help/ja/c/accounts")
    assert empty.status_code == 200 and "このカテゴリーにはまだ記事がありません。" in empty.text


async def test_help_search_highlights_matches_and_offers_support_when_nothing_matches(client, db):
    await _article(db, "Reset your password", "Open the login page and choose Forgot password.")
    await _article(db, "Password policy for agents", "x", visibility="internal")
    await _article(db, "パスワードの再設定", "ログイン画面から再設定できます。", language="ja")

    r = await client.get("/help/search", params={"q": "password", "lang": "en"})
    assert r.status_code == 200
    assert "<mark>password</mark>" in r.text.lower()
    assert 'href="/help/en/reset-your-password"' in r.text
    assert "Password policy" not in r.text

    ja = await client.get("/help/search", params={"q": "パスワード", "lang": "ja"})
    assert "<mark>パスワード</mark>" in ja.text and '<html lang="ja">' in ja.text

    none = await client.get("/help/search", params={"q": "xylophone", "lang": "en"})
    assert none.status_code == 200
    assert "No articles match" in none.text and "mailto:" in none.text

    too_long = await client.get("/help/search", params={"q": "a" * 201, "lang": "en"})
    assert too_long.status_code == 422


async def test_a_vote_counts_once_per_visitor_and_can_be_changed(client, app, db):
    article = await _article(db, "Change your address", "Use the form.", slug="address")
    await client.get("/help/en/address")  # sets the long-lived voter cookie
    voter = client.cookies.get("helpdesk_voter")
    assert voter

    r = await client.post("/help/en/address/vote", data={"helpful": "yes"}, headers=HX)
    assert r.status_code == 200
    assert "<html" not in r.text and 'aria-pressed="true"' in r.text
    assert (await _stored(db, article.id)).helpful_count == 1
    await client.post("/help/en/address/vote", data={"helpful": "yes"}, headers=HX)
    stored = await _stored(db, article.id)
    assert (stored.helpful_count, stored.unhelpful_count) == (1, 0)  # the same voter again
    await client.post("/help/en/address/vote", data={"helpful": "no"}, headers=HX)
    stored = await _stored(db, article.id)
    assert (stored.helpful_count, stored.unhelpful_count) == (0, 1)  # changed their mind

    async with _other_client(app, "198.51.100.20") as stranger:
        r = await stranger.post("/help/en/address/vote", data={"helpful": "yes"}, headers=HX)
        assert r.status_code == 200 and r.cookies.get("helpdesk_voter")  # given a key
    stored = await _stored(db, article.id)
    assert (stored.helpful_count, stored.unhelpful_count) == (1, 1)

    # A plain form post from the help center's own page works without JavaScript.
    r = await client.post("/help/en/address/vote", data={"helpful": "yes"}, headers=SAME_ORIGIN)
    assert r.status_code == 303 and r.headers["location"] == "/help/en/address#feedback"
    assert (await _stored(db, article.id)).helpful_count == 2


async def test_a_cross_site_vote_without_the_htmx_header_is_refused(client, db):
    article = await _article(db, "Voting target", "x", slug="target")
    evil = {"Origin": "https://evil.example"}
    assert (await client.post("/help/en/target/vote", data={"helpful": "yes"})).status_code == 403
    r = await client.post("/help/en/target/vote", data={"helpful": "yes"}, headers=evil)
    assert r.status_code == 403
    r = await client.post("/help/en/target/vote", data={"helpful": "yes"}, headers={**evil, **HX})
    assert r.status_code == 403
    assert (await client.get("/help/en/target/vote")).status_code == 405
    stored = await _stored(db, article.id)
    assert (stored.helpful_count, stored.unhelpful_count) == (0, 0)
    r = await client.post("/help/en/target/vote", data={"helpful": "maybe"}, headers=HX)
    assert r.status_code == 422


# -- the public search API -------------------------------------------------------------------


async def test_public_search_api_returns_published_public_articles_with_highlights(client, db):
    await _article(db, "Reset your password", "Open the login page.", slug="reset-password")
    await _article(db, "Password rules for agents", "x", visibility="internal")
    await _article(db, "Password draft", "x", status="draft")
    await _article(db, "パスワードの再設定", "ログイン画面から。", language="ja", slug="pw-ja")

    r = await client.get("/api/kb/search", params={"q": "password"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "*"
    body = r.json()
    assert body["total"] == 1 and body["degraded"] is False
    (hit,) = body["results"]
    assert set(hit) == {"id", "title", "title_html", "snippet_html", "url", "language"}
    assert hit["url"] == "http://testserver/help/en/reset-password"
    assert "<mark>" in hit["title_html"] and hit["language"] == "en"

    ja = (await client.get("/api/kb/search", params={"q": "パスワード", "lang": "ja"})).json()
    assert [h["url"] for h in ja["results"]] == ["http://testserver/help/ja/pw-ja"]
    en_only = await client.get("/api/kb/search", params={"q": "パスワード", "lang": "en"})
    assert en_only.json()["results"] == []

    for n in range(4):
        await _article(db, f"Password tip {n}", "x")
    limited = (await client.get("/api/kb/search", params={"q": "password", "limit": 2})).json()
    assert len(limited["results"]) == 2 and limited["total"] == 5

    one = await client.get("/api/kb/articles/reset-password", params={"lang": "en"})
    assert one.status_code == 200 and one.json()["title"] == "Reset your password"
    assert "body_md" not in one.json() and one.headers["access-control-allow-origin"] == "*"
    assert (await client.get("/api/kb/articles/password-draft")).status_code == 404


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "q"),
        ({"q": "   "}, "q"),
        ({"q": "x" * 201}, "q"),
        ({"q": "password", "limit": "11"}, "limit"),
        ({"q": "password", "limit": "0"}, "limit"),
        ({"q": "password", "limit": "ten"}, "limit"),
        ({"q": "password", "lang": "fr"}, "lang"),
    ],
)
async def test_public_search_api_rejects_bad_queries_with_a_clear_message(client, params, field):
    r = await client.get("/api/kb/search", params=params)
    assert r.status_code == 422
    assert r.headers["access-control-allow-origin"] == "*"
    error = r.json()["error"]
    assert error["field"] == field and error["message"]


async def test_public_search_api_is_rate_limited_per_client_address(app, client, db):
    await _article(db, "Reset your password", "x")
    async with _other_client(app, "198.51.100.7") as burst:
        answers = [
            (await burst.get("/api/kb/search", params={"q": "password"})).status_code
            for _ in range(21)
        ]
        assert answers[:20] == [200] * 20
        assert answers[20] == 429
        refused = await burst.get("/api/kb/search", params={"q": "password"})
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 10
        assert refused.headers["access-control-allow-origin"] == "*"
        assert refused.json()["error"]["code"] == "too_many_requests"
    # another address is not affected
    assert (await client.get("/api/kb/search", params={"q": "password"})).status_code == 200


# -- the staff API ---------------------------------------------------------------------------


async def test_staff_kb_api_reads_for_agents_and_writes_for_supervisors(client, agent, supervisor):
    assert (await client.get("/api/kb/articles")).status_code == 401
    assert (await client.get("/api/kb/categories")).status_code == 401
    new = {"title": "Refund policy", "language": "en", "body_md": "Refunds within 30 days."}
    r = await client.post("/api/kb/articles", json=new, headers=agent.headers)
    assert r.status_code == 403

    r = await client.post("/api/kb/articles", json=new, headers=supervisor.headers)
    assert r.status_code == 201, r.text
    article = r.json()
    assert article["slug"] == "refund-policy" and article["status"] == "draft"
    assert article["url"] is None  # not public until published

    listed = await client.get("/api/kb/articles", params={"status": "draft"}, headers=agent.headers)
    assert [a["id"] for a in listed.json()["items"]] == [article["id"]]
    got = await client.get(f"/api/kb/articles/{article['id']}", headers=agent.headers)
    assert got.status_code == 200 and got.json()["body_md"] == "Refunds within 30 days."

    url = f"/api/kb/articles/{article['id']}"
    assert (await client.patch(url, json={"title": "x"}, headers=agent.headers)).status_code == 403
    r = await client.patch(url, json={"title": "Refunds", "note": "shorter"}, headers=supervisor.headers)  # fmt: skip
    assert r.status_code == 200 and r.json()["revision"] == 2
    r = await client.patch(
        url, json={"title": "Again", "expected_revision": 1}, headers=supervisor.headers
    )
    assert r.status_code == 409

    r = await client.post(f"{url}/status", json={"status": "published"}, headers=agent.headers)
    assert r.status_code == 403
    r = await client.post(f"{url}/status", json={"status": "published"}, headers=supervisor.headers)
    assert r.status_code == 200
    assert r.json()["url"] == "http://testserver/help/en/refund-policy"

    r = await client.post(
        f"{url}/translations",
        json={"language": "ja", "title": "返金について", "body_md": "30日以内に返金します。"},
        headers=supervisor.headers,
    )
    assert r.status_code == 201 and r.json()["language"] == "ja"
    got = await client.get(url, headers=agent.headers)
    assert [t["language"] for t in got.json()["translations"]] == ["ja"]

    cat = {"names": {"ja": "請求", "en": "Billing"}}
    assert (await client.post("/api/kb/categories", json=cat, headers=agent.headers)).status_code == 403  # fmt: skip
    r = await client.post("/api/kb/categories", json=cat, headers=supervisor.headers)
    assert r.status_code == 201 and r.json()["slug"] == "billing"
    tree = await client.get("/api/kb/categories", params={"lang": "ja"}, headers=agent.headers)
    assert [c["name"] for c in tree.json()["items"]] == ["請求"]

    bad = await client.post(
        "/api/kb/articles", json={"title": "x", "language": "fr"}, headers=supervisor.headers
    )
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "language"


async def test_a_revision_is_restored_through_the_api(client, supervisor, agent):
    r = await client.post(
        "/api/kb/articles",
        json={"title": "Shipping", "language": "en", "body_md": "Ships in 3 days."},
        headers=supervisor.headers,
    )
    url = f"/api/kb/articles/{r.json()['id']}"
    await client.patch(url, json={"body_md": "Ships in 5 days."}, headers=supervisor.headers)
    await client.patch(url, json={"title": "Shipping times"}, headers=supervisor.headers)

    revisions = (await client.get(f"{url}/revisions", headers=agent.headers)).json()["items"]
    assert [rev["number"] for rev in revisions] == [3, 2, 1]
    assert (await client.post(f"{url}/revisions/1/restore", headers=agent.headers)).status_code == 403  # fmt: skip
    r = await client.post(f"{url}/revisions/1/restore", headers=supervisor.headers)
    assert r.status_code == 200
    restored = r.json()
    assert restored["title"] == "Shipping" and restored["body_md"] == "Ships in 3 days."
    assert restored["revision"] == 4
    revisions = (await client.get(f"{url}/revisions", headers=agent.headers)).json()["items"]
    assert revisions[0]["note"] == "restored revision 1"
    assert (await client.post(f"{url}/revisions/9/restore", headers=supervisor.headers)).status_code == 404  # fmt: skip


async def test_saved_articles_go_to_the_search_index_and_an_index_outage_never_fails_a_save(
    client, app, supervisor, monkeypatch
):
    indexed: list[list[int]] = []

    async def record(docs):  # type: ignore[no-untyped-def]
        indexed.append([d.id for d in docs])

    monkeypatch.setattr(app.state.search, "index", record)
    r = await client.post(
        "/api/kb/articles",
        json={"title": "Indexed", "language": "en", "body_md": "x"},
        headers=supervisor.headers,
    )
    article_id = r.json()["id"]
    await client.post(
        f"/api/kb/articles/{article_id}/status",
        json={"status": "published"},
        headers=supervisor.headers,
    )
    assert indexed == [[article_id], [article_id]]

    async def broken(docs):  # type: ignore[no-untyped-def]
        raise ConnectionError("the cluster is down")

    monkeypatch.setattr(app.state.search, "index", broken)
    r = await client.patch(
        f"/api/kb/articles/{article_id}", json={"title": "Still saved"}, headers=supervisor.headers
    )
    assert r.status_code == 200 and r.json()["title"] == "Still saved"


# -- agents' pages -------------------------------------------------------------------------


async def test_agents_browse_and_search_the_kb_with_internal_articles_marked(client, agent, db):
    public = await _article(db, "Refund a payment", "Open the order.", slug="refund-payment")
    internal = await _article(
        db, "Refund approvals", "Supervisors approve refunds.", visibility="internal"
    )

    r = await client.get("/kb")
    assert r.status_code == 303 and r.headers["location"].startswith("/login")

    page = await client.get("/kb", headers=agent.headers)
    assert page.status_code == 200
    assert f'href="/kb/{public.id}"' in page.text and f'href="/kb/{internal.id}"' in page.text
    found = await client.get("/kb", params={"q": "refund"}, headers=agent.headers)
    assert "<mark>" in found.text and "kb-internal" in found.text
    assert found.text.count('class="result kb-hit"') == 2

    view = await client.get(f"/kb/{internal.id}", headers=agent.headers)
    assert view.status_code == 200 and "Supervisors approve refunds." in view.text
    assert "Internal article" in view.text
    view = await client.get(f"/kb/{public.id}", headers=agent.headers)
    assert "http://testserver/help/en/refund-payment" in view.text

    # /kb/<lang>/<slug> (what search results and article links use)
    by_slug = await client.get("/kb/en/refund-payment", headers=agent.headers)
    assert by_slug.status_code == 200 and "Refund a payment" in by_slug.text
    anonymous = await client.get("/kb/en/refund-payment")
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/help/en/refund-payment"


async def _customer(client, agent, **body):  # type: ignore[no-untyped-def]
    body = {"name": "山田 太郎", "phones": ["03-1234-5678"], **body}
    r = await client.post("/api/customers", json=body, headers=agent.headers)
    assert r.status_code == 201, r.text
    return r.json()


async def _case(client, agent, customer_id: int, subject: str) -> dict:  # type: ignore[no-untyped-def]
    body = {"customer_id": customer_id, "subject": subject, "channel": "email"}
    r = await client.post("/api/cases", json=body, headers=agent.headers)
    assert r.status_code == 201, r.text
    return r.json()


async def test_search_everything_finds_a_case_by_number_and_a_customer_by_phone(client, agent):
    customer = await _customer(client, agent, emails=["taro@example.jp"])
    case = await _case(client, agent, customer["id"], "請求書が届かない")
    assert (await client.get("/api/search", params={"q": "1001"})).status_code == 401

    r = await client.get("/api/search", params={"q": str(case["number"])}, headers=agent.headers)
    assert r.status_code == 200
    first = r.json()["results"][0]
    assert (first["kind"], first["id"], first["url"]) == (
        "case",
        case["id"],
        f"/cases/{case['id']}",
    )

    r = await client.get("/api/search", params={"q": "0312345678"}, headers=agent.headers)
    first = r.json()["results"][0]
    assert (first["kind"], first["id"]) == ("customer", customer["id"])
    assert (await client.get("/api/search", headers=agent.headers)).status_code == 422

    page = await client.get("/search", params={"q": "03-1234-5678"}, headers=agent.headers)
    assert page.status_code == 200
    assert f'href="/customers/{customer["id"]}"' in page.text and "<mark>" in page.text
    page = await client.get("/search", params={"q": f"#{case['number']}"}, headers=agent.headers)
    assert f'href="/cases/{case["id"]}"' in page.text
    empty = await client.get("/search", params={"q": "zzqqxx"}, headers=agent.headers)
    assert "Nothing matches" in empty.text


# -- the case sidebar ------------------------------------------------------------------------


async def test_case_sidebar_suggests_relevant_articles_with_an_insert_link_button(
    client, agent, db
):
    customer = await _customer(client, agent, language="ja", emails=["taro@example.jp"])
    case = await _case(client, agent, customer["id"], "Re: 請求書が届かない [#1001]")
    async with db.unit_of_work() as session:
        await add_interaction(
            session,
            customer_id=customer["id"],
            case_id=case["id"],
            kind="email",
            direction="in",
            subject="請求書が届かない",
            text="先月分の請求書の再発行をお願いします。\n\n> 以前のメール: 配送について",
        )
    reissue = await _article(
        db, "請求書の再発行", "マイページの「請求書」から再発行できます。", language="ja",
        slug="invoice-reissue",
    )  # fmt: skip
    internal = await _article(
        db, "請求書の社内処理", "経理に回します。", language="ja", visibility="internal"
    )
    await _article(db, "配送状況の確認", "追跡番号で確認できます。", language="ja")
    await _article(db, "Reissue an invoice", "English twin.", slug="reissue-invoice")

    page = await client.get(f"/cases/{case['id']}", headers=agent.headers)
    assert f'hx-get="/cases/{case["id"]}/kb-suggestions" hx-trigger="load"' in page.text

    r = await client.get(f"/cases/{case['id']}/kb-suggestions", headers={**agent.headers, **HX})
    assert r.status_code == 200 and "<html" not in r.text
    html = r.text
    assert "請求書の再発行" in html.replace("<mark>", "").replace("</mark>", "")
    assert 'data-insert-link="http://testserver/help/ja/invoice-reissue"' in html
    assert f'data-article-id="{internal.id}"' in html  # internal: shown to the agent...
    internal_item = html.split(f'data-article-id="{internal.id}"', 1)[1].split("</li>", 1)[0]
    assert "data-insert-link" not in internal_item  # ...with nothing to send the customer
    assert "配送状況" not in html  # only in the quoted history, which is not searched
    assert "Reissue an invoice" not in html  # the customer reads Japanese
    assert html.index(f'data-article-id="{reissue.id}"') < html.index(
        f'data-article-id="{internal.id}"'
    )

    typed = await client.get(
        f"/cases/{case['id']}/kb-suggestions", params={"q": "invoice"}, headers=agent.headers
    )
    assert 'data-insert-link="http://testserver/help/en/reissue-invoice"' in typed.text
    none = await client.get(
        f"/cases/{case['id']}/kb-suggestions", params={"q": "xylophone"}, headers=agent.headers
    )
    assert "No articles match" in none.text


async def test_case_sidebar_finds_english_articles_from_the_subject_words(client, agent, db):
    customer = await _customer(client, agent, language="en", name="Jane Smith", phones=[])
    case = await _case(client, agent, customer["id"], "Invoice shows the wrong address")
    await _article(db, "Change the address on an invoice", "Edit the billing address.",
                   slug="invoice-address")  # fmt: skip
    await _article(db, "Track a parcel", "Use the tracking number.")
    r = await client.get(f"/cases/{case['id']}/kb-suggestions", headers=agent.headers)
    assert 'data-insert-link="http://testserver/help/en/invoice-address"' in r.text
    assert "Track a parcel" not in r.text


# -- the editors' admin ----------------------------------------------------------------------


async def test_admin_preview_renders_sanitized_html(client, supervisor, agent):
    markdown = "# Title\n\n<script>alert(1)</script>\n\n[x](javascript:alert(2)) **bold**"
    r = await client.post(
        "/admin/kb/preview", data={"body_md": markdown}, headers={**supervisor.headers, **HX}
    )
    assert r.status_code == 200
    assert "<h1>Title</h1>" in r.text and "<strong>bold</strong>" in r.text
    assert "<script" not in r.text and "&lt;script&gt;" in r.text
    assert 'href="javascript' not in r.text
    r = await client.post("/admin/kb/preview", data={"body_md": "x"}, headers=agent.headers)
    assert r.status_code == 403


async def test_admin_preview_from_a_browser_session_needs_the_csrf_token(client, supervisor):
    from tests.conftest import PASSWORD

    csrf = (await client.get("/login")).cookies["helpdesk_csrf"]
    await client.post(
        "/login", data={"email": supervisor.user.email, "password": PASSWORD, "csrf_token": csrf}
    )
    editor = await client.get("/admin/kb/new")
    assert editor.status_code == 200
    assert 'hx-post="/admin/kb/preview" hx-trigger="input changed delay:300ms"' in editor.text
    r = await client.post("/admin/kb/preview", data={"body_md": "*hi*"})
    assert r.status_code == 403
    r = await client.post(
        "/admin/kb/preview", data={"body_md": "*hi*"}, headers={"X-CSRF-Token": csrf, **HX}
    )
    assert r.status_code == 200 and "<em>hi</em>" in r.text


async def test_admin_editor_creates_saves_publishes_and_shows_domain_errors(
    client, supervisor, agent, db
):
    billing = await _category(db, {"en": "Billing", "ja": "請求"}, slug="billing")
    await _article(db, "Taken", "x", slug="taken")
    h = supervisor.headers
    assert (await client.get("/admin/kb", headers=agent.headers)).status_code == 403

    form = {"title": "Pay by card", "language": "en", "category_id": str(billing.id),
            "visibility": "public", "tags": "card, payment", "body_md": "Use **Visa**.",
            "note": "first"}  # fmt: skip
    r = await client.post("/admin/kb", data=form, headers=h)
    assert r.status_code == 303
    article_id = int(re.search(r"/admin/kb/(\d+)/edit", r.headers["location"]).group(1))
    edit = await client.get(r.headers["location"], headers=h)
    assert edit.status_code == 200
    assert 'value="Pay by card"' in edit.text and "<strong>Visa</strong>" in edit.text
    assert f'<option value="{billing.id}" selected>' in edit.text
    assert f"/admin/kb/new?translation_of={article_id}&amp;language=ja" in edit.text

    taken = await client.post(
        f"/admin/kb/{article_id}", data={**form, "slug": "taken", "revision": "1"}, headers=h
    )
    assert taken.status_code == 409
    assert "already used" in taken.text and 'value="taken"' in taken.text  # the input is kept

    saved = await client.post(
        f"/admin/kb/{article_id}",
        data={**form, "slug": "pay-by-card", "body_md": "Use **Mastercard**.", "revision": "1"},
        headers=h,
    )
    assert saved.status_code == 303
    stale = await client.post(
        f"/admin/kb/{article_id}", data={**form, "slug": "pay-by-card", "revision": "1"}, headers=h
    )
    assert stale.status_code == 409 and "revision" in stale.text

    r = await client.post(f"/admin/kb/{article_id}/status", data={"status": "published"}, headers=h)
    assert r.status_code == 303
    assert (await client.get("/help/en/pay-by-card")).status_code == 200

    listing = await client.get("/admin/kb", params={"status": "published"}, headers=h)
    assert "Pay by card" in listing.text and "Taken" in listing.text
    listing = await client.get("/admin/kb", params={"q": "card", "language": "en"}, headers=h)
    assert "Pay by card" in listing.text and "Taken" not in listing.text

    revision = await client.get(f"/admin/kb/{article_id}/revisions/1", headers=h)
    assert revision.status_code == 200 and "Restore revision 1" in revision.text
    r = await client.post(f"/admin/kb/{article_id}/revisions/1/restore", headers=h)
    assert r.status_code == 303
    assert (await _stored(db, article_id)).body_md == "Use **Visa**."

    twin = {
        "title": "カード払い",
        "language": "ja",
        "body_md": "カードで払えます。",
        "translation_of": str(article_id),
        "category_id": str(billing.id),
        "visibility": "public",
    }
    translation = await client.post("/admin/kb", data=twin, headers=h)
    assert translation.status_code == 303
    async with db.unit_of_work() as session:
        source = await articles.get_article(session, article_id)
        twins = await articles.translations(session, source)
    assert [t.title for t in twins] == ["カード払い"]

    empty_title = await client.post("/admin/kb", data={**form, "title": ""}, headers=h)
    assert empty_title.status_code == 422 and "title is required" in empty_title.text


async def test_admin_categories_are_created_renamed_moved_and_deleted(client, supervisor, db):
    h = supervisor.headers
    r = await client.post(
        "/admin/kb/categories", data={"name_ja": "請求", "name_en": "Billing"}, headers=h
    )
    assert r.status_code == 303
    r = await client.post(
        "/admin/kb/categories", data={"name_en": "Invoices", "slug": "invoices"}, headers=h
    )
    async with db.unit_of_work() as session:
        billing = await categories.category_by_slug(session, "billing")
        invoices = await categories.category_by_slug(session, "invoices")
    article = await _article(db, "Invoice PDF", "x", category_id=invoices.id)

    renamed = {
        "name_en": "Invoices and receipts",
        "name_ja": "請求書",
        "slug": "invoices",
        "parent_id": str(billing.id),
        "position": "2",
    }
    r = await client.post(f"/admin/kb/categories/{invoices.id}", data=renamed, headers=h)
    assert r.status_code == 303
    page = await client.get("/admin/kb/categories", headers=h)
    assert "Invoices and receipts" in page.text or "請求書" in page.text
    async with db.unit_of_work() as session:
        moved = await categories.get_category(session, invoices.id)
        assert moved.parent_id == billing.id and moved.names["ja"] == "請求書"

    loop = await client.post(
        f"/admin/kb/categories/{billing.id}",
        data={"name_en": "Billing", "parent_id": str(invoices.id)},
        headers=h,
    )
    assert loop.status_code == 422 and "under itself" in loop.text
    nameless = await client.post("/admin/kb/categories", data={"slug": "x"}, headers=h)
    assert nameless.status_code == 422

    r = await client.post(f"/admin/kb/categories/{invoices.id}/delete", headers=h)
    assert r.status_code == 303
    assert (await _stored(db, article.id)).category_id == billing.id  # moved up
    async with db.unit_of_work() as session:
        left = (await session.scalars(select(categories.KbCategory.slug))).all()
    assert left == ["billing"]
