"""Demo data: idempotent, and it shows what the foundation promises — 山田 太郎 found by
03-1234-5678 with one history across phone, email and chat, a shared office number that
offers two customers, staff who log in with the printed password, and a help center whose
articles are published, paired across Japanese and English, and found by search."""

from __future__ import annotations

import os
import re
import subprocess

from sqlalchemy import func, select

from helpdesk import customers, demo, identities, interactions
from helpdesk.models import (
    AuditRecord,
    Case,
    ContactIdentity,
    Customer,
    Interaction,
    Team,
    User,
)
from knowledge_base.models import KbArticle, KbCategory, KbRevision
from knowledge_base.search import AGENT_FILTERS, Filters
from knowledge_base.search.postgres import PostgresSearch
from tests.conftest import helpdesk_bin

COUNTED = (
    Customer,
    ContactIdentity,
    Case,
    Interaction,
    User,
    Team,
    AuditRecord,
    KbArticle,
    KbCategory,
    KbRevision,
)
N_ARTICLES = 16  # 8 topics, each in Japanese and English


async def _counts(db) -> dict[str, int]:
    async with db.unit_of_work() as session:
        return {
            model.__name__: int(await session.scalar(select(func.count()).select_from(model)))
            for model in COUNTED
        }


async def _fingerprint(db) -> tuple[list[tuple], list[tuple]]:
    """What a second run must not touch either: case states and users' password hashes."""
    async with db.unit_of_work() as session:
        case_rows = (
            await session.execute(select(Case.id, Case.status, Case.updated_at).order_by(Case.id))
        ).all()
        user_rows = (
            await session.execute(select(User.id, User.password_hash).order_by(User.id))
        ).all()
    return [tuple(r) for r in case_rows], [tuple(r) for r in user_rows]


async def _seed(db) -> demo.DemoReport:
    async with db.unit_of_work() as session:
        return await demo.seed(session)


async def test_seeding_twice_changes_nothing_the_second_time_and_covers_every_kind(db):
    first = await _seed(db)
    after_first = await _counts(db)
    assert after_first["Customer"] == demo.N_CUSTOMERS == first.created_customers
    assert after_first["User"] == len(demo.STAFF) == len(first.created_users)
    assert after_first["Team"] == len(demo.TEAMS)
    assert after_first["Case"] == first.created_cases > 0
    assert after_first["Interaction"] > after_first["Case"]
    # every customer has its demo key plus at least one phone and one email
    assert after_first["ContactIdentity"] >= 3 * demo.N_CUSTOMERS

    fingerprint = await _fingerprint(db)

    second = await _seed(db)
    assert (second.created_users, second.created_customers, second.created_cases) == ([], 0, 0)
    assert await _counts(db) == after_first
    assert await _fingerprint(db) == fingerprint
    # the credentials are listed either way, so a second `make run` still prints them
    assert second.staff == first.staff

    async with db.unit_of_work() as session:
        kinds = set((await session.scalars(select(Interaction.kind).distinct())).all())
        roles = set((await session.scalars(select(User.role).distinct())).all())
        languages = set((await session.scalars(select(Customer.language).distinct())).all())
        extensions = (
            await session.scalars(select(User.extension).where(User.role == "agent"))
        ).all()
    assert {"call", "email", "chat", "note", "system"} <= kinds
    assert roles == {"agent", "supervisor", "admin"}
    assert {"ja", "en"} <= languages
    assert extensions and all(extensions)


async def test_yamada_is_found_by_phone_with_one_history_across_channels(db):
    await _seed(db)
    async with db.unit_of_work() as session:
        for raw in ("03-1234-5678", "+81 3 1234 5678", "(03)1234-5678", "0081312345678"):
            page = await customers.search_customers(session, raw)
            assert [c.name for c in page.items] == ["山田 太郎"], raw
        yamada = page.items[0]
        assert yamada.name_kana == "ヤマダ タロウ"
        timeline = await interactions.customer_timeline(session, yamada.id, limit=100)
    assert timeline.next_cursor is None
    entries = timeline.items
    assert {e.customer_id for e in entries} == {yamada.id}
    assert {"call", "email", "chat"} <= {e.kind for e in entries}
    assert len({e.case_id for e in entries if e.case_id}) == 3  # three cases, one history
    stamps = [(e.occurred_at, e.id) for e in entries]
    assert stamps == sorted(stamps, reverse=True)  # newest first


async def test_the_shared_office_number_resolves_to_two_customers(db):
    await _seed(db)
    async with db.unit_of_work() as session:
        matches = await identities.customers_for_phone(session, "06-6123-4567")
        page = await customers.search_customers(session, "+81 6 6123 4567")
    assert sorted(m.name for m in matches) == ["大阪 一郎", "大阪 花子"]
    assert {m.organization for m in matches} == {"みなと電機株式会社"}
    assert sorted(c.name for c in page.items) == ["大阪 一郎", "大阪 花子"]


async def test_demo_users_log_in_with_the_printed_password(db, client):
    report = await _seed(db)
    printed = demo.describe(report)
    password = re.search(r"password for all: (\S+?)\)", printed).group(1)
    emails = re.findall(r"\S+@example\.com", printed)
    assert sorted(emails) == sorted(email for email, *_ in demo.STAFF)
    for email in emails:
        r = await client.post("/api/auth/token", json={"email": email, "password": password})
        assert r.status_code == 200, (email, r.text)
        me = await client.get(
            "/api/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"}
        )
        assert me.json()["email"] == email
    r = await client.post("/api/auth/token", json={"email": emails[0], "password": "wrong-pw-1"})
    assert r.status_code == 401


async def test_cli_demo_data_prints_working_credentials_and_is_idempotent(
    db, client, database_url, tmp_path
):
    env = {**os.environ, "HELPDESK_DATABASE_URL": database_url, "HELPDESK_DATA_DIR": str(tmp_path)}

    def run() -> str:
        done = subprocess.run(
            [helpdesk_bin(), "demo-data"], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    first = run()
    assert f"{demo.N_CUSTOMERS} customers" in first
    assert f"demo knowledge base: {N_ARTICLES} articles created, 0 updated" in first
    counts = await _counts(db)
    assert counts["KbArticle"] == N_ARTICLES
    second = run()
    assert "0 users, 0 customers, 0 cases created" in second
    assert f"0 articles created, 0 updated, {N_ARTICLES} unchanged, 0 rejected" in second
    assert await _counts(db) == counts

    password = re.search(r"password for all: (\S+?)\)", second).group(1)
    agent_line = next(line for line in second.splitlines() if line.strip().startswith("agent"))
    email = agent_line.split()[1]
    r = await client.post("/api/auth/token", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    assert "03-1234-5678" in second  # and it tells the new user what to try


async def test_the_demo_knowledge_base_is_imported_once_published_and_paired(db):
    indexed: list[list[int]] = []

    async def index(ids: list[int]) -> None:
        indexed.append(ids)

    first = await demo.seed_knowledge_base(db, index=index)
    assert first.rejected == []
    assert first.created == N_ARTICLES == len(list(demo.DEMO_ARTICLES.glob("*.md")))
    assert indexed == [first.article_ids]
    counts = await _counts(db)

    second = await demo.seed_knowledge_base(db, index=index)
    assert (second.created, second.updated, second.unchanged) == (0, 0, N_ARTICLES)
    assert second.rejected == second.article_ids == []
    assert len(indexed) == 1  # nothing changed, nothing to index
    assert await _counts(db) == counts

    async with db.unit_of_work() as session:
        found = (await session.scalars(select(KbArticle))).all()
        cats = {c.id: c for c in (await session.scalars(select(KbCategory))).all()}
    assert {a.status for a in found} == {"published"}
    by_language = {lang: {a.slug: a for a in found if a.language == lang} for lang in ("ja", "en")}
    # every topic in both languages, under the same slug, in one translation group
    assert by_language["ja"].keys() == by_language["en"].keys()
    assert len(by_language["ja"]) == N_ARTICLES // 2
    for slug, ja in by_language["ja"].items():
        en = by_language["en"][slug]
        assert ja.translation_group == en.translation_group, slug
        assert ja.category_id == en.category_id is not None, slug
        assert ja.visibility == en.visibility, slug
    assert sorted((a.language, a.slug) for a in found if a.visibility == "internal") == [
        ("en", "issue-refund"),
        ("ja", "issue-refund"),
    ]
    assert {(c.slug, c.names["en"], c.names["ja"]) for c in cats.values()} == {
        (slug, names["en"], names["ja"]) for slug, names in demo.KB_CATEGORIES
    }
    assert {cats[a.category_id].slug for a in found} == {s for s, _ in demo.KB_CATEGORIES}

    report = demo.DemoReport(knowledge_base=second)
    assert f"0 articles created, 0 updated, {N_ARTICLES} unchanged" in demo.describe(report)


async def test_demo_articles_are_found_by_search_and_internal_ones_only_by_agents(db):
    await demo.seed_knowledge_base(db)
    search = PostgresSearch(db)

    hits = (await search.search("領収書", Filters(language="ja"))).hits
    assert hits and hits[0].slug == "reissue-receipt", [h.slug for h in hits]
    assert {h.language for h in hits} == {"ja"}
    hits = (await search.search("receipt", Filters(language="en"))).hits
    assert hits and hits[0].slug == "reissue-receipt", [h.slug for h in hits]
    hits = (await search.search("パスワードを忘れた", Filters(language="ja"))).hits
    assert hits and hits[0].slug == "cannot-log-in", [h.slug for h in hits]

    public = (await search.search("返金", Filters(language="ja"))).hits
    assert public and "issue-refund" not in {h.slug for h in public}
    agents = (await search.search("返金", AGENT_FILTERS)).hits
    assert {("ja", "issue-refund"), ("en", "issue-refund")} & {(h.language, h.slug) for h in agents}


async def test_a_failing_search_index_leaves_the_demo_articles_in_place(db, caplog):
    async def index(ids: list[int]) -> None:
        raise ConnectionError("search cluster down")

    summary = await demo.seed_knowledge_base(db, index=index)
    assert summary.created == N_ARTICLES
    assert "helpdesk kb reindex" in caplog.text
    assert (await _counts(db))["KbArticle"] == N_ARTICLES
