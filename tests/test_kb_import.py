"""Importing articles from Markdown files and FAQ spreadsheets, and `helpdesk kb`."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import func, select

from helpdesk.errors import InvalidInput
from knowledge_base import articles, categories
from knowledge_base.importer import FrontMatterError, import_path, parse_front_matter
from knowledge_base.models import KbArticle, KbCategory, KbRevision
from tests.conftest import helpdesk_bin

DATA = Path(__file__).parent / "data" / "kb_import"
SITE_REJECTED = [
    ("bad/french.md", "unknown language 'fr': use one of ja, en"),
    ("bad/no-title.md", "title is missing (front matter `title:` or a leading # heading)"),
    ("bad/unclosed.md", "the front matter starts with --- but has no closing ---"),
]


async def _by_slug(db, language: str, slug: str) -> KbArticle:
    async with db.unit_of_work() as s:
        article = await articles.find_article(s, language, slug)
    assert article is not None, f"{language}/{slug}"
    return article


async def test_a_site_of_markdown_files_is_imported_and_bad_files_rejected(db, make_staff):
    editor = await make_staff("supervisor")
    seen: list[tuple[int, int]] = []
    summary = await import_path(
        db, DATA / "site", author_id=editor.user.id, progress=lambda *p: seen.append(p)
    )
    assert (summary.created, summary.updated, summary.unchanged) == (5, 0, 0)
    assert summary.rejected == SITE_REJECTED
    assert seen == [(n, 8) for n in range(1, 9)]
    assert len(summary.article_ids) == 5

    en = await _by_slug(db, "en", "reset-password")
    ja = await _by_slug(db, "ja", "reset-password")
    assert (en.title, en.status, en.visibility, en.tags) == (
        "Resetting your password", "published", "public", ["password", "login"],
    )  # fmt: skip
    assert en.author_id == editor.user.id and en.published_at is not None
    assert "<strong>Forgot password?</strong>" in en.body_html
    assert ja.translation_group == en.translation_group
    assert (ja.title, ja.tags, ja.category_id) == (
        "パスワードの再設定", ["パスワード", "ログイン"], en.category_id,
    )  # fmt: skip
    assert "<td>届いたリンクを30分以内に開く</td>" in ja.body_html
    assert "「パスワードをお忘れですか？」から再設定できます。" in ja.body_text

    internal = await _by_slug(db, "en", "refund-policy")
    assert (internal.title, internal.visibility, internal.status, internal.tags) == (
        "Refunds: what agents may approve", "internal", "draft", ["refunds", "policy"],
    )  # fmt: skip
    heading = await _by_slug(db, "en", "two-factor")
    assert heading.title == "Turning on two-factor authentication"
    assert heading.body_md == "Open **Settings → Security** and follow the steps."

    async with db.unit_of_work() as s:
        [invoice] = (
            await s.scalars(select(KbArticle).where(KbArticle.title == "請求書を再発行するには"))
        ).all()
        assert invoice.slug == f"a-{invoice.translation_group}-ja"
        assert await categories.path(s, invoice.category_id, "ja") == ("請求", "請求書")
        assert await categories.path(s, en.category_id, "en") == ("Account", "Sign-in")
        account = await categories.category_by_slug(s, "account")
        assert heading.category_id == account.id


async def test_importing_the_same_files_again_changes_nothing(db):
    await import_path(db, DATA / "site")
    again = await import_path(db, DATA / "site")
    assert (again.created, again.updated, again.unchanged) == (0, 0, 5)
    assert again.rejected == SITE_REJECTED
    assert again.article_ids == []
    async with db.unit_of_work() as s:
        assert await s.scalar(select(func.count()).select_from(KbRevision)) == 5
        assert await s.scalar(select(func.count()).select_from(KbCategory)) == 4


async def test_a_changed_file_updates_its_article_and_keeps_what_the_file_does_not_say(
    db, tmp_path
):
    site = tmp_path / "site"
    shutil.copytree(DATA / "site", site)
    shutil.rmtree(site / "bad")
    await import_path(db, site)
    policy = await _by_slug(db, "en", "refund-policy")
    async with db.unit_of_work() as s:
        billing = await categories.create_category(s, names={"en": "Billing"})
        await articles.update_article(s, policy.id, {"category_id": billing.id}, editor_id=None)

    page = site / "en" / "reset-password.md"
    page.write_text(
        page.read_text()
        .replace("30 minutes", "one hour")
        .replace("status: published", "status: archived")
    )
    summary = await import_path(db, site)
    assert (summary.created, summary.updated, summary.unchanged, summary.rejected) == (0, 1, 4, [])
    changed = await _by_slug(db, "en", "reset-password")
    assert summary.article_ids == [changed.id]
    assert (changed.revision, changed.status) == (2, "archived")
    assert "one hour" in changed.body_text
    kept = await _by_slug(db, "en", "refund-policy")
    assert kept.category_id == billing.id  # the file names no category: the editor's stays
    async with db.unit_of_work() as s:
        [latest, _] = await articles.revisions(s, changed.id)
    assert latest.note == "imported"


async def test_faq_spreadsheets_in_utf8_with_bom_and_in_cp932(db):
    summary = await import_path(db, DATA / "faq-utf8.csv")
    assert (summary.created, summary.updated, summary.unchanged) == (2, 0, 0)
    assert summary.rejected == [
        ("faq-utf8.csv:6", "broken CSV row: 5 fields where the header has 4"),
        ("faq-utf8.csv:7", "unknown language 'de': use one of ja, en"),
    ]
    email = await _by_slug(db, "en", "how-do-i-change-my-email-address")
    assert (email.status, email.visibility) == ("published", "public")
    assert email.body_md == (
        "Go to **Profile** and edit the address.\n\nWe send a confirmation to the new address."
    )
    assert email.body_text == (
        "Go to Profile and edit the address.\nWe send a confirmation to the new address."
    )

    sjis = await import_path(db, DATA / "faq-cp932.csv")
    assert (sjis.created, sjis.rejected) == (2, [])
    async with db.unit_of_work() as s:
        receipt = await s.scalar(
            select(KbArticle).where(KbArticle.title == "領収書は発行できますか？")
        )
        assert receipt is not None
        assert receipt.body_md == "はい。マイページの「領収書」から発行できます。"
        assert await categories.path(s, receipt.category_id, "ja") == ("請求",)
        # "請求" in both files is one category.
        assert await s.scalar(select(func.count()).select_from(KbCategory)) == 3

    assert (await import_path(db, DATA / "faq-cp932.csv")).unchanged == 2


async def test_each_bad_item_is_rejected_with_its_reason_and_the_rest_imported(db, tmp_path):
    (tmp_path / "long.md").write_text(
        "---\ntitle: Long\nlanguage: en\n---\n" + "x" * 200_001, encoding="utf-8"
    )
    (tmp_path / "one.md").write_text("---\ntitle: One\nslug: same\nlanguage: en\n---\nBody 1.")
    (tmp_path / "two.md").write_text("---\ntitle: Two\nslug: same\nlanguage: en\n---\nBody 2.")
    (tmp_path / "orphan.md").write_text(
        "---\ntitle: 孤児\nlanguage: ja\ntranslation_of: nowhere\n---\n本文"
    )
    (tmp_path / "bad-slug.md").write_text("---\ntitle: S\nslug: Not OK\nlanguage: en\n---\nB")
    (tmp_path / "empty.md").write_text("---\ntitle: Empty\nlanguage: en\n---\n")
    (tmp_path / "binary.md").write_bytes(b"\x00\x01\x02")
    (tmp_path / "quoting.csv").write_text(
        'question,answer,category,lang\nGood,"Fine.",,en\nBad,"unclosed"x,,en\nNever,read,,en\n'
    )
    (tmp_path / "columns.csv").write_text("question,answer\nQ,A\n")
    (tmp_path / "empty-cells.csv").write_text("Question,Answer,Lang\n,Answer,en\nQ,A,\n\n")
    (tmp_path / "not-sjis.csv").write_bytes(b"question,answer,lang\n\x81 ,x,ja\n")
    summary = await import_path(db, tmp_path)
    assert (summary.created, summary.updated, summary.unchanged) == (2, 0, 0)
    assert summary.rejected == [
        ("bad-slug.md", "slug must be lower-case letters a-z, digits and single hyphens between "
                        "them, at most 200 characters"),
        ("binary.md", "cannot read the file: it holds NUL bytes (not a text file)"),
        ("columns.csv", "the header lacks the column(s) lang (expected question,answer,category,lang)"),
        ("empty-cells.csv:2", "the question is empty"),
        ("empty-cells.csv:3", "the lang column is empty"),
        ("empty.md", "an article needs a body before it is published"),
        ("long.md", "body is longer than 200000 characters"),
        ("not-sjis.csv", "cannot read the file: it is neither UTF-8 nor Shift_JIS (cp932) text"),
        ("quoting.csv:3", "broken CSV row (',' expected after '\"'); rest of file skipped"),
        ("two.md", "same slug 'same' (en) as one.md: not imported twice"),
        ("orphan.md", "translation_of: no article with the slug 'nowhere' in another language"),
    ]  # fmt: skip
    assert (await _by_slug(db, "en", "same")).title == "One"
    assert (await _by_slug(db, "en", "good")).body_md == "Fine."


async def test_a_path_with_nothing_to_import_is_an_error(db, tmp_path):
    with pytest.raises(InvalidInput, match="no such file or directory"):
        await import_path(db, tmp_path / "missing")
    with pytest.raises(InvalidInput, match="no Markdown"):
        await import_path(db, tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InvalidInput, match="not a Markdown"):
        await import_path(db, tmp_path / "notes.txt")


def test_front_matter_is_key_value_lines_with_quotes_and_lists():
    meta, body = parse_front_matter(
        "---\n"
        'title: "Refunds: what\'s allowed"\n'
        "# a comment\n"
        "tags: [a, 'b c', d]\n"
        "aliases:\n  - one\n  - 'two'\n"
        "empty:\n"
        "category: Billing/Invoices\n"
        "---\n\n# Body\n"
    )
    assert meta == {
        "title": "Refunds: what's allowed",
        "tags": ["a", "b c", "d"],
        "aliases": ["one", "two"],
        "empty": "",
        "category": "Billing/Invoices",
    }
    assert body == "\n# Body\n"
    assert parse_front_matter("# No front matter\n") == ({}, "# No front matter\n")
    with pytest.raises(FrontMatterError, match="line 2: expected 'key: value'"):
        parse_front_matter("---\njust words\n---\n")
    with pytest.raises(FrontMatterError, match="no closing"):
        parse_front_matter("---\ntitle: x\n")


# -- the command line ----------------------------------------------------------------------


async def _helpdesk(database_url: str, data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(
        subprocess.run,
        [helpdesk_bin(), *args],
        env={
            **os.environ,
            "HELPDESK_DATABASE_URL": database_url,
            "HELPDESK_DATA_DIR": str(data_dir),
            "HELPDESK_SECRET_KEY": "cli-test-secret-key-long-enough-for-hs256",
        },
        capture_output=True,
        text=True,
        timeout=90,
    )


async def test_kb_import_command_shows_progress_and_the_summary(
    db, database_url, make_staff, tmp_path
):
    editor = await make_staff("supervisor", email="writer@example.com")
    done = await _helpdesk(
        database_url, tmp_path, "kb", "import", str(DATA / "site"), "--author", "Writer@Example.com"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "5 created, 0 updated, 0 unchanged, 3 rejected",
        *(f"rejected {source}: {reason}" for source, reason in SITE_REJECTED),
    ]
    assert "[" + "#" * 30 + "] 8/8" in done.stderr
    assert (await _by_slug(db, "ja", "reset-password")).author_id == editor.user.id

    again = await _helpdesk(database_url, tmp_path, "kb", "import", str(DATA / "site"))
    assert again.returncode == 0
    assert again.stdout.splitlines()[0] == "0 created, 0 updated, 5 unchanged, 3 rejected"

    reindexed = await _helpdesk(database_url, tmp_path, "kb", "reindex")
    assert reindexed.returncode == 0, reindexed.stderr
    assert reindexed.stdout.strip() == "reindexed 5 articles (postgres)"
    assert "5/5" in reindexed.stderr


async def test_kb_import_command_fails_when_nothing_could_be_read(db, database_url, tmp_path):
    missing = await _helpdesk(database_url, tmp_path, "kb", "import", str(tmp_path / "nope"))
    assert missing.returncode == 1
    assert "no such file or directory" in missing.stderr
    (tmp_path / "bad.md").write_text("---\nlanguage: en\n---\nNo title.")
    rejected = await _helpdesk(database_url, tmp_path, "kb", "import", str(tmp_path / "bad.md"))
    assert rejected.returncode == 1
    assert rejected.stdout.splitlines() == [
        "0 created, 0 updated, 0 unchanged, 1 rejected",
        "rejected bad.md: title is missing (front matter `title:` or a leading # heading)",
    ]
    unknown = await _helpdesk(
        database_url, tmp_path, "kb", "import", str(DATA / "site"), "--author", "x@example.com"
    )
    assert unknown.returncode == 1
    assert "no user with the email x@example.com" in unknown.stderr
