"""Knowledge-base articles and categories: writing, revising, translating, voting, linking."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from sqlalchemy import select

from helpdesk.errors import Conflict, InvalidInput, NotFound
from helpdesk.models import AuditRecord
from knowledge_base import articles, categories
from knowledge_base.articles import ArticleInput
from knowledge_base.markdown import render
from knowledge_base.models import KbVote

# -- rendering -----------------------------------------------------------------------------


def test_markdown_renders_tables_code_and_images_and_shows_raw_html_as_text():
    out = render(
        "# 見出し\n\n<script>alert(1)</script> <b>bold?</b>\n\n"
        "| 手順 | 内容 |\n|:--|--:|\n| 1 | 入力 |\n\n"
        "```python\nprint('hi')\n```\n\n![図](https://example.com/a.png)"
    )
    assert "<h1>見出し</h1>" in out.html
    assert "<script" not in out.html and "<b>" not in out.html
    assert "&lt;script&gt;" in out.html
    assert '<td style="text-align:left">1</td>' in out.html
    assert '<code class="language-python">' in out.html
    assert '<img src="https://example.com/a.png" alt="図">' in out.html


def test_links_get_nofollow_and_unsafe_urls_are_dropped():
    out = render(
        '[docs](https://example.com/x "t") [bad](javascript:alert(1)) '
        "![pixel](data:image/png;base64,AAAA) [article](/kb/en/reset-password)"
    )
    assert '<a href="https://example.com/x" title="t" rel="nofollow noopener">docs</a>' in out.html
    assert '<a href="/kb/en/reset-password" rel="nofollow noopener">article</a>' in out.html
    assert 'href="javascript' not in out.html
    assert '<img alt="pixel">' in out.html  # data: URLs are not loaded


def test_plain_text_has_no_markup_and_keeps_japanese_lines_whole():
    out = render(
        "## パスワード\n\nログイン画面の「パスワードを忘れた」から\n再設定できます。\n\n"
        "- **first** step\n- `code` and [a link](https://example.com)\n\n| a | b |\n|---|---|\n| 1 | 2 |"
    )
    assert out.text == (
        "パスワード\nログイン画面の「パスワードを忘れた」から再設定できます。\n"
        "first step\ncode and a link\na b\n1 2"
    )


# -- creating and slugs --------------------------------------------------------------------


async def test_create_article_renders_the_body_and_saves_revision_one(db, make_staff):
    editor = await make_staff("supervisor")
    async with db.unit_of_work() as s:
        a = await articles.create_article(
            s,
            ArticleInput(
                title="  Resetting   your password ",
                language="en",
                body_md="Choose **Forgot password?**\r\n",
                tags=["Password", " two  words ", "password", "ＰＷ"],
            ),
            author_id=editor.user.id,
        )
        assert (a.title, a.slug, a.status, a.visibility) == (
            "Resetting your password", "resetting-your-password", "draft", "public",
        )  # fmt: skip
        assert a.body_md == "Choose **Forgot password?**"
        assert a.body_html == "<p>Choose <strong>Forgot password?</strong></p>\n"
        assert a.body_text == "Choose Forgot password?"
        assert a.tags == ["password", "two-words", "pw"]
        assert a.revision == 1 and a.published_at is None
        [rev] = await articles.revisions(s, a.id)
    assert (rev.number, rev.title, rev.body_md, rev.changed_by_id) == (
        1, "Resetting your password", "Choose **Forgot password?**", editor.user.id,
    )  # fmt: skip
    assert rev.fields["tags"] == ["password", "two-words", "pw"]
    assert rev.fields["status"] == "draft" and rev.fields["slug"] == "resetting-your-password"


async def test_automatic_slugs_are_numbered_when_taken_and_japanese_titles_use_the_group(db):
    async with db.unit_of_work() as s:
        first = await articles.create_article(
            s, ArticleInput(title="Can't log in?", language="en"), author_id=None
        )
        second = await articles.create_article(
            s, ArticleInput(title="Can’t log in", language="en"), author_id=None
        )
        same_in_ja = await articles.create_article(
            s, ArticleInput(title="Can't log in?", language="ja"), author_id=None
        )
        ja = await articles.create_article(
            s, ArticleInput(title="ログインできない", language="ja", body_md="本文"), author_id=None
        )
        mixed = await articles.create_article(
            s, ArticleInput(title="iPhoneの設定", language="ja"), author_id=None
        )
    assert first.slug == "cant-log-in"
    assert second.slug == "cant-log-in-2"
    assert same_in_ja.slug == "cant-log-in"  # unique per language only
    assert ja.slug == f"a-{ja.translation_group}-ja"
    assert mixed.slug == f"a-{mixed.translation_group}-ja"
    assert len({first.translation_group, second.translation_group, ja.translation_group}) == 3
    assert ja.title == "ログインできない" and ja.body_text == "本文"


def test_slugify():
    assert articles.slugify("Café & Crème: 2 Steps!") == "cafe-creme-2-steps"
    assert articles.slugify("ＡＢＣ　１２３") == "abc-123"  # full-width folds to ASCII
    assert articles.slugify("請求書") is None
    assert articles.slugify("!!!") is None
    long = articles.slugify("word " * 40)
    assert long is not None and len(long) <= 80 and not long.endswith("-")


async def test_a_slug_already_used_in_the_language_is_a_conflict(db):
    async with db.unit_of_work() as s:
        a = await articles.create_article(
            s, ArticleInput(title="A", language="en", slug="billing"), author_id=None
        )
        b = await articles.create_article(
            s, ArticleInput(title="B", language="en", slug="Billing-2"), author_id=None
        )
        assert b.slug == "billing-2"
        with pytest.raises(Conflict) as caught:
            await articles.create_article(
                s, ArticleInput(title="C", language="en", slug="billing"), author_id=None
            )
        assert caught.value.field == "slug"
        assert caught.value.message == (
            f"the slug 'billing' is already used by another en article (#{a.id})"
        )
        with pytest.raises(Conflict, match="already used"):
            await articles.update_article(s, b.id, {"slug": "billing"}, editor_id=None)


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"title": "  "}, "title", "title is required"),
        ({"title": "x" * 301}, "title", "title is longer than 300 characters"),
        ({"language": "fr"}, "language", "language must be one of ja, en, not 'fr'"),
        ({"visibility": "secret"}, "visibility", "visibility must be one of public, internal"),
        ({"status": "live"}, "status", "status must be one of draft, published, archived"),
        ({"body_md": "x" * 200_001}, "body_md", "body is longer than 200000 characters"),
        ({"tags": [f"t{i}" for i in range(31)]}, "tags", "at most 30 tags"),
        ({"tags": ["x" * 51]}, "tags", None),
        ({"tags": "a,b"}, "tags", "tags must be a list of text"),
        ({"slug": "Not A Slug!"}, "slug", None),
        ({"category_id": 999}, "category_id", "no category 999"),
        ({"status": "published", "body_md": ""}, "body_md", None),
    ],
)
async def test_invalid_articles_are_refused_naming_the_field(db, overrides, field, message):
    data = {"title": "Valid title", "language": "en", "body_md": "Body.", **overrides}
    async with db.unit_of_work() as s:
        with pytest.raises(InvalidInput) as caught:
            await articles.create_article(s, ArticleInput(**data), author_id=None)
    assert caught.value.field == field
    if message:
        assert caught.value.message == message


# -- revisions and status ------------------------------------------------------------------


async def _article(db, **fields):
    data = {"title": "Resetting your password", "language": "en", "body_md": "Old body."}
    async with db.unit_of_work() as s:
        return await articles.create_article(s, ArticleInput(**{**data, **fields}), author_id=None)


async def test_only_real_changes_make_a_revision(db, make_staff):
    editor = await make_staff("supervisor")
    a = await _article(db, tags=["password"])
    async with db.unit_of_work() as s:
        same = await articles.update_article(
            s,
            a.id,
            {
                "title": " Resetting your  password",
                "body_md": "Old body.\n\n",
                "tags": ["PASSWORD"],
            },
            editor_id=editor.user.id,
        )
        assert same.revision == 1
        changed = await articles.update_article(
            s,
            a.id,
            {"body_md": "New **body**.", "visibility": "internal"},
            editor_id=editor.user.id,
            note="clearer",
        )
        assert changed.revision == 2
        assert changed.body_html == "<p>New <strong>body</strong>.</p>\n"
        assert changed.body_text == "New body."
        assert changed.updated_by_id == editor.user.id
        revs = await articles.revisions(s, a.id)
    assert [(r.number, r.body_md, r.note, r.fields["visibility"]) for r in revs] == [
        (2, "New **body**.", "clearer", "internal"),
        (1, "Old body.", "", "public"),
    ]


async def test_an_edit_based_on_an_old_revision_is_a_conflict(db):
    a = await _article(db)
    async with db.unit_of_work() as s:
        await articles.update_article(
            s, a.id, {"title": "New"}, editor_id=None, expected_revision=1
        )
    async with db.unit_of_work() as s:
        with pytest.raises(Conflict, match="now at revision 2") as caught:
            await articles.update_article(
                s, a.id, {"title": "Newer"}, editor_id=None, expected_revision=1
            )
    assert caught.value.field == "revision"


async def test_update_refuses_unknown_fields_and_status(db):
    a = await _article(db)
    async with db.unit_of_work() as s:
        with pytest.raises(InvalidInput, match="set_status") as caught:
            await articles.update_article(s, a.id, {"status": "published"}, editor_id=None)
        assert caught.value.field == "status"
        with pytest.raises(InvalidInput, match="unknown field: view_count"):
            await articles.update_article(s, a.id, {"view_count": 5}, editor_id=None)
        with pytest.raises(NotFound, match="article 999 not found"):
            await articles.update_article(s, 999, {"title": "x"}, editor_id=None)


async def test_empty_slug_on_update_makes_one_from_the_new_title(db):
    a = await _article(db, slug="custom")
    async with db.unit_of_work() as s:
        b = await articles.update_article(
            s, a.id, {"title": "Changing your email", "slug": ""}, editor_id=None
        )
    assert b.slug == "changing-your-email" and b.revision == 2


async def test_publish_stamps_published_at_and_archive_is_audited(db, make_staff):
    editor = await make_staff("supervisor")
    a = await _article(db)
    async with db.unit_of_work() as s:
        published = await articles.set_status(s, a.id, "published", editor_id=editor.user.id)
        assert published.published_at is not None and published.revision == 1
        again = await articles.set_status(s, a.id, "published", editor_id=editor.user.id)
        assert again.published_at == published.published_at
        with pytest.raises(InvalidInput, match="status must be one of"):
            await articles.set_status(s, a.id, "gone", editor_id=None)
    async with db.unit_of_work() as s:
        archived = await articles.set_status(s, a.id, "archived", editor_id=editor.user.id)
        assert archived.status == "archived"
        [record] = (await s.scalars(select(AuditRecord))).all()
    assert (record.action, record.entity_type, record.entity_id, record.actor_user_id) == (
        "kb_article.archive", "kb_article", a.id, editor.user.id,
    )  # fmt: skip
    assert record.details["previous_status"] == "published"
    assert record.details["slug"] == "resetting-your-password"


async def test_a_published_article_cannot_lose_its_body(db):
    a = await _article(db, status="published")
    async with db.unit_of_work() as s:
        with pytest.raises(InvalidInput, match="needs a body") as caught:
            await articles.update_article(s, a.id, {"body_md": "  "}, editor_id=None)
    assert caught.value.field == "body_md"


async def test_restoring_a_revision_saves_its_content_as_a_new_revision(db, make_staff):
    editor = await make_staff("supervisor")
    async with db.unit_of_work() as s:
        billing = await categories.create_category(s, names={"en": "Billing"})
    a = await _article(db, category_id=billing.id, tags=["old"])
    async with db.unit_of_work() as s:
        await articles.update_article(
            s,
            a.id,
            {"title": "New title", "body_md": "New body.", "tags": ["new"], "category_id": None},
            editor_id=None,
        )
        await articles.set_status(s, a.id, "published", editor_id=None)
    async with db.unit_of_work() as s:
        restored = await articles.restore_revision(s, a.id, 1, editor_id=editor.user.id)
        assert (restored.title, restored.body_md, restored.tags, restored.category_id) == (
            "Resetting your password", "Old body.", ["old"], billing.id,
        )  # fmt: skip
        assert restored.revision == 3 and restored.status == "published"
        revs = await articles.revisions(s, a.id)
        [record] = (await s.scalars(select(AuditRecord))).all()
        with pytest.raises(NotFound, match="has no revision 9"):
            await articles.restore_revision(s, a.id, 9, editor_id=None)
    assert [r.number for r in revs] == [3, 2, 1]
    assert revs[0].note == "restored revision 1" and revs[0].changed_by_id == editor.user.id
    assert record.action == "kb_article.restore_revision"
    assert record.details == {"restored_revision": 1, "previous_revision": 2, "new_revision": 3}


async def test_diff_shows_title_fields_and_body_lines(db):
    a = await _article(db, body_md="line one\nline two")
    async with db.unit_of_work() as s:
        await articles.update_article(
            s, a.id, {"title": "New", "body_md": "line one\nline 2", "tags": ["x"]}, editor_id=None
        )
        new, old = await articles.revisions(s, a.id)
    d = articles.diff(old, new)
    assert d.title == ("Resetting your password", "New")
    assert d.fields == {"tags": ([], ["x"])}
    assert d.body == ["@@ -1,2 +1,2 @@", " line one", "-line two", "+line 2"]


# -- translations --------------------------------------------------------------------------


async def test_a_translation_joins_the_group_and_each_language_appears_once(db):
    async with db.unit_of_work() as s:
        cat = await categories.create_category(s, names={"en": "Account", "ja": "アカウント"})
    en = await _article(db, category_id=cat.id, visibility="internal", tags=["password"])
    async with db.unit_of_work() as s:
        ja = await articles.create_translation(
            s, en.id, "ja", "パスワードの再設定", "「パスワードを忘れた」から再設定できます。",
            author_id=None,
        )  # fmt: skip
        assert ja.translation_group == en.translation_group
        assert (ja.category_id, ja.visibility, ja.tags) == (cat.id, "internal", ["password"])
        assert ja.slug == f"a-{en.translation_group}-ja"
        assert ja.body_text == "「パスワードを忘れた」から再設定できます。"
        assert [t.id for t in await articles.translations(s, en)] == [ja.id]
        assert [t.id for t in await articles.translations(s, ja)] == [en.id]
        assert await articles.translations(s, en, published_only=True) == []
        with pytest.raises(Conflict) as caught:
            await articles.create_translation(s, en.id, "ja", "別の訳", "本文", author_id=None)
        assert caught.value.message == f"article {en.id} already has a ja version (article {ja.id})"
        with pytest.raises(Conflict):
            await articles.create_translation(s, ja.id, "en", "Another", "Body", author_id=None)


async def test_an_existing_article_can_become_a_translation(db):
    en = await _article(db)
    ja = await _article(db, title="パスワード", language="ja")
    other_ja = await _article(db, title="別の記事", language="ja")
    async with db.unit_of_work() as s:
        linked = await articles.link_translation(s, ja.id, en.id, editor_id=None)
        assert linked.translation_group == en.translation_group
        with pytest.raises(Conflict, match="already has a ja version"):
            await articles.link_translation(s, other_ja.id, en.id, editor_id=None)


async def test_get_published_shows_internal_articles_to_staff_only(db):
    public = await _article(db, status="published", slug="public")
    await _article(db, status="published", slug="internal", visibility="internal")
    await _article(db, slug="draft")
    async with db.unit_of_work() as s:
        assert (await articles.get_published(s, "en", "public")).id == public.id
        assert (await articles.get_published(s, "en", "internal", include_internal=True)).slug
        with pytest.raises(NotFound, match="no published article en/internal"):
            await articles.get_published(s, "en", "internal")
        with pytest.raises(NotFound):
            await articles.get_published(s, "en", "draft", include_internal=True)
        with pytest.raises(NotFound):
            await articles.get_published(s, "ja", "public")


# -- votes and views -----------------------------------------------------------------------


async def test_one_vote_per_voter_and_a_new_vote_replaces_the_old(db):
    a = await _article(db, status="published")
    async with db.unit_of_work() as s:
        before = (await articles.get_article(s, a.id)).updated_at
    for voter, helpful in [("cookie-1", True), ("cookie-2", False), ("cookie-1", True)]:
        async with db.unit_of_work() as s:
            await articles.vote(s, a.id, voter, helpful)
    async with db.unit_of_work() as s:
        counted = await articles.vote(s, a.id, "cookie-2", True)  # changes their mind
        assert (counted.helpful_count, counted.unhelpful_count) == (2, 0)
    async with db.unit_of_work() as s:
        again = await articles.get_article(s, a.id)
        await s.refresh(again)
        assert (again.helpful_count, again.unhelpful_count) == (2, 0)
        assert again.updated_at == before  # a vote is not an edit
        voters = set((await s.scalars(select(KbVote.voter))).all())
    assert voters == {hashlib.sha256(k.encode()).hexdigest() for k in ("cookie-1", "cookie-2")}


async def test_concurrent_votes_keep_the_counters_equal_to_the_votes(db):
    a = await _article(db, status="published")

    async def cast(n: int) -> None:
        async with db.unit_of_work() as s:
            await articles.vote(s, a.id, f"voter-{n % 7}", n % 2 == 0)

    await asyncio.gather(*(cast(n) for n in range(20)))
    async with db.unit_of_work() as s:
        article = await articles.get_article(s, a.id)
        await s.refresh(article)
        votes = (await s.scalars(select(KbVote.helpful))).all()
    assert len(votes) == 7
    assert article.helpful_count == sum(votes)
    assert article.unhelpful_count == len(votes) - sum(votes)


async def test_only_published_articles_take_votes(db):
    a = await _article(db)
    async with db.unit_of_work() as s:
        with pytest.raises(NotFound, match=f"no published article {a.id}"):
            await articles.vote(s, a.id, "cookie", True)
        with pytest.raises(InvalidInput) as caught:
            await articles.vote(s, a.id, "", True)
    assert caught.value.field == "voter"


async def test_views_are_counted_atomically(db):
    a = await _article(db, status="published")

    async def view() -> int:
        async with db.unit_of_work() as s:
            return await articles.record_view(s, a.id)

    counts = await asyncio.gather(*(view() for _ in range(10)))
    assert sorted(counts) == list(range(1, 11))
    async with db.unit_of_work() as s:
        with pytest.raises(NotFound):
            await articles.record_view(s, 999)
        assert await articles.popular(s, "en") == [await articles.get_article(s, a.id)]


# -- related articles ----------------------------------------------------------------------


async def test_related_lists_editor_links_first_then_shared_tags_and_category(db):
    async with db.unit_of_work() as s:
        account = await categories.create_category(s, names={"en": "Account"})
    published = {"status": "published"}
    base = await _article(
        db, slug="base", tags=["login", "password"], category_id=account.id, **published
    )
    chosen = await _article(db, slug="chosen", title="Zebra", **published)
    await _article(db, slug="two-tags", tags=["password", "login"], **published)
    await _article(db, slug="tag-and-category", tags=["login"], category_id=account.id, **published)
    await _article(db, slug="one-tag", tags=["login"], visibility="internal", **published)
    await _article(db, slug="category", category_id=account.id, **published)
    await _article(db, slug="draft", tags=["login", "password"])
    await _article(db, slug="ja", title="ログイン", language="ja", tags=["login"], **published)
    await _article(db, slug="unrelated", tags=["billing"], **published)
    async with db.unit_of_work() as s:
        linked = await articles.set_related(s, base.id, [chosen.id], editor_id=None)
        assert [a.id for a in linked] == [chosen.id]
    async with db.unit_of_work() as s:
        article = await articles.get_article(s, base.id)
        public = [a.slug for a in await articles.related(s, article)]
        staff = [a.slug for a in await articles.related(s, article, 10, include_internal=True)]
        first_two = [a.slug for a in await articles.related(s, article, 2)]
    assert public == ["chosen", "two-tags", "tag-and-category", "category"]
    assert staff == ["chosen", "two-tags", "tag-and-category", "one-tag", "category"]
    assert first_two == ["chosen", "two-tags"]


async def test_set_related_checks_its_targets(db):
    en = await _article(db, slug="en")
    other = await _article(db, slug="other")
    ja = await _article(db, title="日本語", language="ja")
    async with db.unit_of_work() as s:
        for ids, message in [
            ([en.id], "cannot be related to itself"),
            ([ja.id], f"article {ja.id} is in ja, not en"),
            ([999], "no article 999"),
            (list(range(1, 30)), "at most 20"),
        ]:
            with pytest.raises(InvalidInput, match=message) as caught:
                await articles.set_related(s, en.id, ids, editor_id=None)
            assert caught.value.field == "related_ids"
        await articles.set_related(s, en.id, [other.id, other.id], editor_id=None)
        assert await articles.set_related(s, en.id, [], editor_id=None) == []


# -- the editors' list ---------------------------------------------------------------------


async def test_list_articles_filters_and_pages_newest_change_first(db):
    made = [await _article(db, title=f"Article {n}", slug=f"article-{n}") for n in range(5)]
    await _article(db, title="Password help", slug="pw", status="published")
    await _article(db, title="日本語の記事", language="ja")
    async with db.unit_of_work() as s:
        await articles.update_article(s, made[0].id, {"body_md": "changed"}, editor_id=None)
        first = await articles.list_articles(s, language="en", status="draft", limit=3)
        assert [a.slug for a in first.items] == ["article-0", "article-4", "article-3"]
        rest = await articles.list_articles(
            s, language="en", status="draft", limit=3, cursor=first.next_cursor
        )
        assert [a.slug for a in rest.items] == ["article-2", "article-1"]
        assert rest.next_cursor is None
        found = await articles.list_articles(s, q="PASSWORD")
        assert [a.slug for a in found.items] == ["pw"]
        assert [a.title for a in (await articles.list_articles(s, language="ja")).items] == [
            "日本語の記事"
        ]
        assert (await articles.list_articles(s, q="100%")).items == []
        with pytest.raises(InvalidInput, match="malformed cursor"):
            await articles.list_articles(s, cursor="nonsense")
        with pytest.raises(InvalidInput) as caught:
            await articles.list_articles(s, status="gone")
        assert caught.value.field == "status"


# -- categories ----------------------------------------------------------------------------


async def test_category_tree_is_nested_ordered_and_counts_published_public_articles(db):
    async with db.unit_of_work() as s:
        billing = await categories.create_category(
            s, names={"en": "Billing", "ja": "請求"}, position=2
        )
        account = await categories.create_category(
            s, names={"en": "Account", "ja": "アカウント"}, position=1
        )
        invoices = await categories.create_category(
            s, names={"en": "Invoices", "ja": "請求書"}, parent_id=billing.id
        )
        only_ja = await categories.create_category(s, names={"ja": "その他"}, position=3)
    assert (billing.slug, invoices.slug, only_ja.slug) == ("billing", "invoices", f"c-{only_ja.id}")
    for slug, category, language, status, visibility in [
        ("a", invoices, "ja", "published", "public"),
        ("b", invoices, "ja", "published", "public"),
        ("c", billing, "ja", "published", "public"),
        ("d", billing, "ja", "draft", "public"),
        ("e", billing, "ja", "published", "internal"),
        ("f", billing, "en", "published", "public"),
    ]:
        await _article(
            db, slug=slug, category_id=category.id, language=language, status=status,
            visibility=visibility,
        )  # fmt: skip
    async with db.unit_of_work() as s:
        ja = await categories.tree(s, "ja")
        staff = await categories.tree(s, "ja", include_internal=True)
        en = await categories.tree(s, "en")
        assert await categories.path(s, invoices.id, "ja") == ("請求", "請求書")
        assert await categories.path(s, invoices.id, "en") == ("Billing", "Invoices")
        assert await categories.path(s, None) == ()
        assert (await categories.paths(s, "en"))[invoices.id] == ("Billing", "Invoices")
    assert [(n.name, n.article_count, n.total_count) for n in ja] == [
        ("アカウント", 0, 0), ("請求", 1, 3), ("その他", 0, 0),
    ]  # fmt: skip
    assert [(n.name, n.article_count) for n in ja[1].children] == [("請求書", 2)]
    assert staff[1].total_count == 4
    assert [(n.name, n.total_count) for n in en] == [("Account", 0), ("Billing", 1), ("その他", 0)]
    assert account.id == ja[0].id


async def test_deleting_a_category_moves_its_articles_and_children_up_and_is_audited(
    db, make_staff
):
    admin = await make_staff("admin")
    async with db.unit_of_work() as s:
        billing = await categories.create_category(s, names={"en": "Billing"})
        invoices = await categories.create_category(
            s, names={"en": "Invoices"}, parent_id=billing.id
        )
        pdf = await categories.create_category(s, names={"en": "PDF"}, parent_id=invoices.id)
    in_invoices = await _article(db, slug="in-invoices", category_id=invoices.id)
    in_billing = await _article(db, slug="in-billing", category_id=billing.id)
    async with db.unit_of_work() as s:
        await categories.delete_category(s, invoices.id, actor_id=admin.user.id)
    async with db.unit_of_work() as s:
        await categories.delete_category(s, billing.id, actor_id=admin.user.id)
    async with db.unit_of_work() as s:
        moved = await articles.get_article(s, in_invoices.id)
        await s.refresh(moved)
        top = await articles.get_article(s, in_billing.id)
        await s.refresh(top)
        pdf_now = await categories.get_category(s, pdf.id)
        await s.refresh(pdf_now)
        records = (await s.scalars(select(AuditRecord).order_by(AuditRecord.id))).all()
        with pytest.raises(NotFound):
            await categories.get_category(s, invoices.id)
    assert moved.category_id is None and top.category_id is None  # via billing, then gone
    assert pdf_now.parent_id is None
    assert [r.action for r in records] == ["kb_category.delete", "kb_category.delete"]
    assert records[0].details["moved_article_ids"] == [in_invoices.id]
    assert records[0].details["moved_category_ids"] == [pdf.id]
    assert records[0].details["parent_id"] == billing.id
    assert records[0].actor_user_id == admin.user.id
    assert sorted(records[1].details["moved_article_ids"]) == sorted(
        [in_invoices.id, in_billing.id]
    )


async def test_category_edits_are_validated(db):
    async with db.unit_of_work() as s:
        top = await categories.create_category(s, names={"en": "Top"})
        child = await categories.create_category(s, names={"en": "Child"}, parent_id=top.id)
        with pytest.raises(InvalidInput, match="under itself") as caught:
            await categories.update_category(s, top.id, {"parent_id": child.id})
        assert caught.value.field == "parent_id"
        with pytest.raises(Conflict, match="already used by category"):
            await categories.update_category(s, child.id, {"slug": "top"})
        with pytest.raises(Conflict):
            await categories.create_category(s, names={"en": "Again"}, slug="top")
        with pytest.raises(InvalidInput, match="at least one language"):
            await categories.create_category(s, names={"en": " "})
        with pytest.raises(InvalidInput) as caught:
            await categories.create_category(s, names={"fr": "Haut"})
        assert caught.value.field == "names"
        again = await categories.create_category(s, names={"en": "Top"})
        assert again.slug == "top-2"
        moved = await categories.update_category(
            s, child.id, {"parent_id": None, "names": {"ja": "子"}, "position": 4}
        )
        assert (moved.parent_id, moved.names, moved.position) == (None, {"ja": "子"}, 4)


async def test_resolve_path_finds_by_slug_or_names_and_creates_what_is_missing(db):
    async with db.unit_of_work() as s:
        billing = await categories.create_category(s, names={"en": "Billing", "ja": "請求"})
        assert (await categories.resolve_path(s, "billing", language="en")).id == billing.id
        assert (await categories.resolve_path(s, "請求", language="ja")).id == billing.id
        invoices = await categories.resolve_path(s, "BILLING / Invoices", language="en")
        assert (invoices.parent_id, invoices.slug, invoices.names) == (
            billing.id, "invoices", {"en": "Invoices"},
        )  # fmt: skip
        other = await categories.resolve_path(s, "Shop/Invoices", language="en")
        assert other.slug == "shop-invoices"
        ja = await categories.resolve_path(s, "請求/領収書", language="ja")
        assert ja.parent_id == billing.id and ja.slug == f"c-{ja.id}"
        assert (await categories.resolve_path(s, "Billing/Invoices", language="ja")).id == (
            invoices.id
        )
        with pytest.raises(NotFound):
            await categories.resolve_path(s, "Nowhere", language="en", create=False)
