"""A desk of the previous release, upgraded to this one, keeps its data and works.

The project has no tagged release, so "previous release" is the schema at the end of the
previous milestones (docs/OPERATIONS.md, "What the upgrade test covers"):

- 0007 (chat): every channel (phone, email, chat) live, before the SLA engine (issue 8);
- 0010 (metrics): the end of the SLA milestone, before administration and data governance.

Rows are written with raw SQL exactly as that schema had them (no model of today's code is
used to write them), the database is upgraded to head, and today's domain code then reads and
extends them: the case and its timeline, the customer card and phone lookup, SLA clocks on a
new case, a status change on an old one.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from helpdesk import cases, customers, identities, interactions, migrations, sla
from helpdesk.business_time import BusinessCalendar, parse_weekly
from helpdesk.db import Database
from tests.conftest import PgServer

HEAD = ScriptDirectory.from_config(migrations.alembic_config()).get_current_head()

# The old desk: one team, one agent, two customers; a phone call, an email thread and a chat.
OLD_DESK_SQL = """
INSERT INTO teams (id, name) VALUES (1, 'Billing');
INSERT INTO users (id, email, name, role, password_hash, extension, team_id, language)
VALUES (1, 'sato@example.com', '佐藤 花子', 'agent', '$argon2id$v=19$m=65536,t=3,p=4$x$y',
        '201', 1, 'ja');
INSERT INTO agent_presence (user_id, status, chat_capacity) VALUES (1, 'offline', 3);

INSERT INTO customers (id, name, name_kana, organization, tier, search_text)
VALUES (1, '山田 太郎', 'ヤマダ タロウ', '山田商店', 'gold',
        '山田 太郎 ヤマダ タロウ 山田商店 山田太郎 ヤマダタロウ'),
       (2, 'Alice Smith', NULL, NULL, 'standard', 'alice smith alicesmith');
INSERT INTO contact_identities (customer_id, kind, raw_value, normalized, is_primary)
VALUES (1, 'phone', '03-1234-5678', '+81312345678', true),
       (1, 'email', 'Taro@Example.JP', 'taro@example.jp', false),
       (2, 'email', 'alice@example.com', 'alice@example.com', true),
       (2, 'chat', 'visitor-7f3a', 'visitor-7f3a', false);
SELECT setval('customers_id_seq', 2);
SELECT setval('contact_identities_id_seq', 4);

INSERT INTO cases (id, customer_id, subject, status, priority, channel, assignee_id, team_id,
                   tags, created_at, updated_at)
VALUES (1, 1, '請求書の金額が違う', 'open', 'high', 'phone', 1, 1, '{billing}',
        '2026-10-01 09:00+09', '2026-10-02 10:00+09'),
       (2, 2, 'Cannot log in', 'pending', 'normal', 'chat', 1, 1, '{}',
        '2026-10-03 14:00+09', '2026-10-03 14:30+09');
SELECT setval('cases_id_seq', 2);

INSERT INTO interactions (id, customer_id, case_id, kind, direction, author_user_id, subject,
                          text, meta, occurred_at)
VALUES (1, 1, 1, 'call', 'in', 1, NULL, '', '{"call_id": "pbx-1001"}',
        '2026-10-01 09:00+09'),
       (2, 1, 1, 'note', 'internal', 1, NULL, '先月分と二重請求', '{}', '2026-10-01 09:05+09'),
       (3, 1, 1, 'email', 'out', 1, 'Re: 請求書の金額が違う', '訂正した請求書を送ります。',
        '{"message_id": "<out-1@desk.example>"}', '2026-10-01 11:00+09'),
       (4, 1, 1, 'email', 'in', NULL, 'Re: 請求書の金額が違う', 'ありがとうございます。',
        '{"message_id": "<in-1@example.jp>"}', '2026-10-02 10:00+09'),
       (5, 2, 2, 'chat', 'in', NULL, NULL, 'I cannot log in', '{}', '2026-10-03 14:00+09');
SELECT setval('interactions_id_seq', 5);
INSERT INTO attachments (interaction_id, filename, content_type, size, sha256)
VALUES (3, 'invoice.pdf', 'application/pdf', 4,
        '0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0');

INSERT INTO calls (call_id, direction, from_number, to_number, customer_number, state,
                   agent_id, customer_id, case_id, interaction_id, cause, notes,
                   started_at, answered_at, ended_at)
VALUES ('pbx-1001', 'in', '0312345678', '201', '+81312345678', 'completed', 1, 1, 1, 1,
        'normalClearing', '請求の件', '2026-10-01 09:00+09', '2026-10-01 09:00:12+09',
        '2026-10-01 09:04:40+09');
INSERT INTO call_events_seen (call_id, event, agents)
VALUES ('pbx-1001', 'ring', '201'), ('pbx-1001', 'answer', '201'),
       ('pbx-1001', 'hangup', '');

INSERT INTO mail_messages (message_id, direction, case_id, interaction_id, sender)
VALUES ('<out-1@desk.example>', 'out', 1, 3, 'support@desk.example'),
       ('<in-1@example.jp>', 'in', 1, 4, 'taro@example.jp');
INSERT INTO mail_outbox (message_id, interaction_id, sender, recipients, raw, state, sent_at)
VALUES ('<out-1@desk.example>', 3, 'support@desk.example', '{taro@example.jp}',
        convert_to('Subject: Re: invoice', 'UTF8'), 'sent', '2026-10-01 11:00:03+09');

INSERT INTO chat_conversations (id, token_hash, state, customer_id, case_id, interaction_id,
                                team_id, agent_id, visitor_name, visitor_email, visitor_id,
                                language, last_seq, closed_by, csat_score, created_at,
                                queued_at, accepted_at, closed_at, last_message_at)
VALUES (1, repeat('a', 64), 'closed', 2, 2, 5, 1, 1, 'Alice', 'alice@example.com',
        'visitor-7f3a', 'en', 2, 'agent', 5, '2026-10-03 14:00+09', '2026-10-03 14:00+09',
        '2026-10-03 14:00:20+09', '2026-10-03 14:30+09', '2026-10-03 14:10+09');
SELECT setval('chat_conversations_id_seq', 1);
INSERT INTO chat_messages (conversation_id, seq, client_id, sender, author_user_id, name, body)
VALUES (1, 1, 'c-1', 'visitor', NULL, 'Alice', 'I cannot log in'),
       (1, 2, NULL, 'agent', 1, '佐藤', 'Let me reset your password.');
"""

# What the SLA milestone (0008-0010) added, written at 0010 as that schema had it.
SLA_DESK_SQL = """
INSERT INTO business_calendars (id, name, timezone, weekly, holiday_region)
VALUES (1, 'Tokyo office', 'Asia/Tokyo',
        '{"0": [["09:00", "18:00"]], "1": [["09:00", "18:00"]], "2": [["09:00", "18:00"]],
          "3": [["09:00", "18:00"]], "4": [["09:00", "18:00"]]}', 'JP');
SELECT setval('business_calendars_id_seq', 1);
INSERT INTO sla_policies (id, name, position, conditions, first_response_minutes,
                          resolution_minutes, calendar_id)
VALUES (1, 'Everyone', 10, '{}', 60, 480, 1);
SELECT setval('sla_policies_id_seq', 1);
"""

COUNTED = [
    "customers",
    "contact_identities",
    "cases",
    "interactions",
    "attachments",
    "calls",
    "mail_messages",
    "mail_outbox",
    "chat_conversations",
    "chat_messages",
]


@pytest.fixture
async def old_db(pg_server: PgServer) -> AsyncIterator[Database]:
    name = f"helpdesk_upgrade_{uuid.uuid4().hex[:8]}"
    url = await pg_server.create_database(name)
    db = Database.from_url(url, pool_size=2)
    yield db
    await db.dispose()
    await pg_server.drop_database(name)


async def run_script(conn: AsyncConnection, script: str) -> None:
    # asyncpg runs one statement per execute; the scripts hold no `;` inside a literal.
    for statement in script.split(";\n"):
        if statement.strip():
            await conn.execute(text(statement))


async def counts(db: Database) -> dict[str, int]:
    async with db.engine.connect() as conn:
        return {t: int(await conn.scalar(text(f"SELECT count(*) FROM {t}")) or 0) for t in COUNTED}


async def check_the_old_desk_works(db: Database) -> None:
    """Today's domain code on yesterday's rows."""
    async with db.unit_of_work() as session:
        case = await cases.get_case(session, 1)
        assert (case.subject, case.status, case.priority) == ("請求書の金額が違う", "open", "high")
        assert case.customer.name == "山田 太郎" and case.assignee and case.team
        assert case.number == 1001  # numbered by case_number_seq back then

        timeline = await interactions.case_timeline(session, 1)
        assert [i.kind for i in timeline.items] == ["email", "email", "note", "call"]

        card = await customers.customer_card(session, 1)
        assert {i.normalized for i in card.identities} == {"+81312345678", "taro@example.jp"}
        assert [c.id for c in card.open_cases] == [1]
        matches = await identities.customers_for_phone(session, "03-1234-5678")
        assert [m.customer_id for m in matches] == [1]
        found = await customers.search_customers(session, "山田")
        assert 1 in [c.id for c in found.items]

        chat_timeline = await interactions.customer_timeline(session, 2)
        assert [i.kind for i in chat_timeline.items] == ["chat"]

        # A new case on an old customer: numbered after the old ones, its SLA clocks start
        # (a catch-all policy is made here when the old desk had none).
        if not (await session.execute(text("SELECT 1 FROM sla_policies"))).first():
            calendar = await sla.create_calendar(
                session,
                "Tokyo office",
                BusinessCalendar(
                    timezone="Asia/Tokyo",
                    weekly=parse_weekly("mon-fri 09:00-18:00"),
                    holiday_region="JP",
                ),
            )
            await sla.create_policy(
                session,
                name="Everyone",
                calendar_id=calendar.id,
                first_response_minutes=60,
                resolution_minutes=480,
            )
        new = await cases.create_case(
            session,
            cases.CaseInput(customer_id=1, subject="再請求の確認", channel="email", body="確認"),
            author_user_id=None,
        )
        assert new.number == 1003 and new.id == 3
        clocks = await sla.case_clocks(session, new.id)
        assert {c.kind for c in clocks} == {"first_response", "resolution"}

        # An old case has no clocks and still moves through its lifecycle.
        assert await sla.case_clocks(session, 2) == []
        moved = await cases.update_case(session, 2, {"status": "solved"}, actor_user_id=1)
        assert moved.status == "solved"
        await sla.recompute(session, await cases.get_case(session, 1), datetime.now(UTC))


@pytest.mark.parametrize("previous", ["0007", "0010"])
async def test_a_desk_of_the_previous_release_upgrades_with_its_data_intact(
    old_db: Database, previous: str
) -> None:
    await migrations.upgrade(old_db.engine, "0007")
    async with old_db.engine.begin() as conn:
        await run_script(conn, OLD_DESK_SQL)
        # The old desk's next case number would have been 1003 (1001 and 1002 used).
        await conn.execute(text("SELECT setval('case_number_seq', 1002)"))
    if previous == "0010":
        await migrations.upgrade(old_db.engine, "0010")
        async with old_db.engine.begin() as conn:
            await run_script(conn, SLA_DESK_SQL)
    before = await counts(old_db)
    assert before["cases"] == 2 and before["chat_messages"] == 2

    await migrations.upgrade(old_db.engine)

    async with old_db.engine.connect() as conn:
        assert await conn.scalar(text("SELECT version_num FROM alembic_version")) == HEAD
        # Nothing lost or changed in the old rows.
        assert await counts(old_db) == before
        row = (
            await conn.execute(
                text(
                    "SELECT c.subject, c.tags, i.text, m.sender, ch.body "
                    "FROM cases c JOIN interactions i ON i.case_id = c.id AND i.id = 2 "
                    "JOIN mail_messages m ON m.interaction_id = 4 "
                    "JOIN chat_messages ch ON ch.conversation_id = 1 AND ch.seq = 2 "
                    "WHERE c.id = 1"
                )
            )
        ).one()
        assert tuple(row) == (
            "請求書の金額が違う",
            ["billing"],
            "先月分と二重請求",
            "taro@example.jp",
            "Let me reset your password.",
        )

    await check_the_old_desk_works(old_db)
