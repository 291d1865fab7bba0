"""Demo data: teams, staff with extensions, ~50 Japanese and English customers, and cases
with calls, emails, chats, notes and system entries.

Idempotent: every record is keyed (users by email, teams by name, customers by an
`external` identity `demo-customer-N`), so a second run finds everything and creates nothing.
Generated from a fixed seed, so every install shows the same desk.

`seed_knowledge_base` adds the help center that goes with it: the Markdown articles in
`knowledge_base/demo_articles/` (Japanese originals with English translations), imported like
`helpdesk kb import` does, so a second run finds them unchanged.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

import knowledge_base
from helpdesk import auth, cases, customers, sla
from helpdesk.business_time import BusinessCalendar, parse_weekly
from helpdesk.db import Database
from helpdesk.interactions import add_interaction
from helpdesk.models import (
    BusinessCalendarRecord,
    CannedResponse,
    ContactIdentity,
    SlaPolicy,
    Team,
    User,
)
from knowledge_base import categories, importer
from knowledge_base.models import KbCategory

log = logging.getLogger(__name__)

DEMO_PASSWORD = "helpdesk-demo"
TEAMS = ("Front line / 一次受付", "Billing / 請求")
STAFF = (
    # email, name, role, extension, team index, language
    ("admin@example.com", "Admin 管理者", "admin", None, None, "en"),
    ("sato@example.com", "佐藤 美和 (Supervisor)", "supervisor", "200", 0, "ja"),
    ("tanaka@example.com", "田中 健", "agent", "201", 0, "ja"),
    ("suzuki@example.com", "鈴木 彩", "agent", "202", 0, "ja"),
    ("emma@example.com", "Emma Clarke", "agent", "203", 1, "en"),
    ("kobayashi@example.com", "小林 翼", "agent", "204", 1, "ja"),
)
SURNAMES = (
    ("佐藤", "サトウ"), ("鈴木", "スズキ"), ("高橋", "タカハシ"), ("田中", "タナカ"),
    ("伊藤", "イトウ"), ("渡辺", "ワタナベ"), ("中村", "ナカムラ"), ("小林", "コバヤシ"),
    ("加藤", "カトウ"), ("吉田", "ヨシダ"), ("山本", "ヤマモト"), ("松本", "マツモト"),
    ("井上", "イノウエ"), ("木村", "キムラ"), ("林", "ハヤシ"), ("清水", "シミズ"),
)  # fmt: skip
GIVEN = (
    ("翔太", "ショウタ"), ("美咲", "ミサキ"), ("健一", "ケンイチ"), ("陽子", "ヨウコ"),
    ("大輔", "ダイスケ"), ("由美", "ユミ"), ("直樹", "ナオキ"), ("恵", "メグミ"),
    ("拓也", "タクヤ"), ("さくら", "サクラ"),
)  # fmt: skip
ENGLISH = (
    "Emily Carter", "James Wilson", "Olivia Brown", "Noah Thompson", "Sophie Martin",
    "Liam O'Connor", "Grace Lee", "Daniel Evans", "Chloe Walker", "Ethan Hughes",
    "Hannah Scott", "Lucas Green",
)  # fmt: skip
ORGS = (
    "株式会社サンプル商事",
    "東都物産株式会社",
    "みなと電機株式会社",
    None,
    None,
    "Acme Japan K.K.",
)
SUBJECTS_JA = (
    "請求書の金額が違う", "ログインできません", "配送状況を教えてください", "解約の手続きについて",
    "商品が破損して届いた", "支払い方法を変更したい", "領収書の再発行", "パスワードの再設定",
)  # fmt: skip
SUBJECTS_EN = (
    "Invoice shows the wrong amount", "Cannot log in", "Where is my order?",
    "How do I cancel my plan?", "Item arrived damaged", "Change payment method",
)  # fmt: skip
N_CUSTOMERS = 50
DEMO_ARTICLES = Path(knowledge_base.__file__).parent / "demo_articles"
# The categories the demo articles name by slug, made first so they have a name in each
# language (an import names the categories it creates in the importing language only).
KB_CATEGORIES = (
    ("orders-delivery", {"en": "Orders & delivery", "ja": "注文・配送"}),
    ("billing", {"en": "Billing", "ja": "請求・お支払い"}),
    ("account", {"en": "Account", "ja": "アカウント"}),
)


@dataclass
class DemoReport:
    created_users: list[str] = field(default_factory=list)
    created_customers: int = 0
    created_cases: int = 0
    staff: list[tuple[str, str, str | None]] = field(default_factory=list)
    # Set by the caller from `seed_knowledge_base`, which needs a Database, not a session.
    knowledge_base: importer.ImportSummary | None = None


def describe(report: DemoReport) -> str:
    lines = [
        f"demo data: {len(report.created_users)} users, {report.created_customers} customers, "
        f"{report.created_cases} cases created (existing records left as they were)",
    ]
    kb = report.knowledge_base
    if kb is not None:
        lines.append(
            f"demo knowledge base: {kb.created} articles created, {kb.updated} updated, "
            f"{kb.unchanged} unchanged, {len(kb.rejected)} rejected"
        )
        lines += [f"  rejected {source}: {reason}" for source, reason in kb.rejected]
    lines.append(f"demo logins (password for all: {DEMO_PASSWORD}):")
    for email, role, ext in report.staff:
        lines.append(f"  {role:<10} {email:<24} {'ext ' + ext if ext else ''}")
    lines.append("try: search for 03-1234-5678 to open 山田 太郎's history")
    if kb is not None:
        lines.append("try: /help for the help center, or search the knowledge base for 領収書")
    return "\n".join(lines)


async def seed_knowledge_base(
    database: Database,
    *,
    index: Callable[[list[int]], Awaitable[None]] | None = None,
) -> importer.ImportSummary:
    """Import the demo articles (16: 8 topics in Japanese and English, 2 of them internal
    agent procedures), after making their three categories if missing.

    Articles are matched by language and slug, so a second run reports them unchanged and
    leaves any edits made since to fields the files do not state. `index(article_ids)` hands
    the created or updated articles to the search backend (needed for Elasticsearch; the
    PostgreSQL backend indexes on save); if it fails the articles stay and a warning says
    how to catch up.
    """
    async with database.unit_of_work() as session:
        for position, (slug, names) in enumerate(KB_CATEGORIES):
            exists = await session.scalar(select(KbCategory.id).where(KbCategory.slug == slug))
            if exists is None:
                await categories.create_category(session, names=names, slug=slug, position=position)
    summary = await importer.import_path(database, DEMO_ARTICLES)
    if index is not None and summary.article_ids:
        try:
            await index(summary.article_ids)
        except Exception as exc:  # the articles are committed: say how to catch up
            log.warning(
                "demo articles imported, but the search index was not updated (%s); "
                "run `helpdesk kb reindex`",
                exc,
            )
    return summary


def _customer_spec(i: int, rng: random.Random) -> dict[str, object]:
    if i == 0:
        return {
            "name": "山田 太郎",
            "name_kana": "ヤマダ タロウ",
            "organization": "株式会社サンプル商事",
            "language": "ja",
            "tier": "gold",
            "phones": ["03-1234-5678", "090-1111-2222"],
            "emails": ["taro.yamada@example.co.jp"],
        }
    if i in (1, 2):
        # Two people behind one Osaka office number: the screen-pop offers both.
        given = ("花子", "ハナコ") if i == 1 else ("一郎", "イチロウ")
        return {
            "name": f"大阪 {given[0]}",
            "name_kana": f"オオサカ {given[1]}",
            "organization": "みなと電機株式会社",
            "language": "ja",
            "tier": "silver",
            "phones": ["06-6123-4567", f"080-2000-{3000 + i:04d}"],
            "emails": [f"osaka{i}@minato-denki.example.jp"],
        }
    if i % 4 == 3:
        name = ENGLISH[(i // 4) % len(ENGLISH)]
        slug = name.lower().replace(" ", ".").replace("'", "")
        phone = f"+1 415 555 {1000 + i:04d}" if i % 8 == 3 else f"+44 20 7946 {i:04d}"
        return {
            "name": name,
            "name_kana": None,
            "organization": None if i % 3 else "Acme Japan K.K.",
            "language": "en",
            "tier": rng.choice(("standard", "standard", "silver", "platinum")),
            "phones": [phone],
            "emails": [f"{slug}{i}@example.com"],
        }
    sur = SURNAMES[i % len(SURNAMES)]
    giv = GIVEN[(i * 7) % len(GIVEN)]
    landline = i % 2 == 0
    phone = (
        f"03-5{i:03d}-{rng.randrange(1000, 9999)}"
        if landline
        else f"090-{1000 + i}-{rng.randrange(1000, 9999)}"
    )
    return {
        "name": f"{sur[0]} {giv[0]}",
        "name_kana": f"{sur[1]} {giv[1]}",
        "organization": ORGS[i % len(ORGS)],
        "language": "ja",
        "tier": rng.choice(("standard", "standard", "standard", "silver", "gold")),
        "phones": [phone],
        "emails": [f"customer{i}@example.jp"],
    }


# Canned responses for chats and replies, keyed by shortcut (`/hello` in the composer).
CANNED = (
    ("hello", "ご挨拶", "ja", "{name}様、お問い合わせありがとうございます。担当の者が承ります。"),
    ("wait", "少々お待ちください", "ja", "確認いたしますので、少々お待ちいただけますでしょうか。"),
    ("order", "注文番号の確認", "ja", "恐れ入りますが、ご注文番号を教えていただけますでしょうか。"),
    ("thanks", "お礼", "ja", "ほかにご不明な点はございますか。本日はありがとうございました。"),
    ("hi", "Greeting", "en", "Hello {name}, thanks for reaching out. How can I help?"),
    ("moment", "One moment", "en", "Let me check that for you; it will take a moment."),
    ("orderno", "Order number", "en", "Could you tell me your order number, please?"),
    ("bye", "Closing", "en", "Is there anything else I can help with? Thank you for chatting."),
)


async def seed(
    session: AsyncSession, *, region: str = "JP", now: datetime | None = None
) -> DemoReport:
    now = now or datetime.now(UTC)
    rng = random.Random(20261122)
    report = DemoReport()

    teams: list[Team] = []
    for name in TEAMS:
        team = await session.scalar(select(Team).where(Team.name == name))
        if team is None:
            team = Team(name=name)
            session.add(team)
            await session.flush()
        teams.append(team)

    staff: list[User] = []
    for email, name, role, ext, team_i, lang in STAFF:
        user = await session.scalar(select(User).where(User.email == email))
        if user is None:
            user = await auth.create_user(
                session,
                email,
                name,
                role,
                DEMO_PASSWORD,
                extension=ext,
                team_name=TEAMS[team_i] if team_i is not None else None,
                language=lang,
            )
            report.created_users.append(email)
        staff.append(user)
        report.staff.append((email, role, ext))
    agents = [u for u in staff if u.role == "agent"]

    for shortcut, title, lang, body in CANNED:
        if await session.scalar(
            select(CannedResponse.id).where(CannedResponse.shortcut == shortcut)
        ):
            continue
        session.add(CannedResponse(shortcut=shortcut, title=title, language=lang, body=body))
    await session.flush()

    await _seed_sla(session)

    for i in range(N_CUSTOMERS):
        spec = _customer_spec(i, rng)
        key = f"demo-customer-{i}"
        exists = await session.scalar(
            select(ContactIdentity.id).where(
                ContactIdentity.kind == "external", ContactIdentity.normalized == key
            )
        )
        if exists:
            continue
        identities = [customers.IdentityInput("external", key)]
        identities += [
            customers.IdentityInput("phone", p, is_primary=(n == 0))  # type: ignore[arg-type]
            for n, p in enumerate(spec["phones"])  # type: ignore[arg-type]
        ]
        identities += [
            customers.IdentityInput("email", e, is_primary=True)  # type: ignore[arg-type]
            for e in spec["emails"]  # type: ignore[union-attr]
        ]
        customer = await customers.create_customer(
            session,
            customers.CustomerInput(
                name=str(spec["name"]),
                name_kana=spec["name_kana"],  # type: ignore[arg-type]
                organization=spec["organization"],  # type: ignore[arg-type]
                language=str(spec["language"]),
                tier=str(spec["tier"]),
                identities=identities,
            ),
            region=region,
        )
        report.created_customers += 1
        n_cases = 3 if i == 0 else rng.choice((0, 1, 1, 2))
        for c in range(n_cases):
            report.created_cases += 1
            await _demo_case(session, rng, customer.id, spec, c, i, agents, teams, now)
    return report


# A Tokyo office's hours and three policies, first match wins: the demo's cases get clocks,
# and the board has timers to show.
DEMO_CALENDAR = ("Tokyo office / 東京オフィス", "mon-fri 09:00-12:00 13:00-18:00")
DEMO_POLICIES = (
    # name, conditions, first response, next response, resolution (business minutes)
    ("Urgent and high / 緊急・高", {"priority": ["urgent", "high"]}, 30, 60, 480),
    ("Gold and platinum / ゴールド・プラチナ", {"tier": ["gold", "platinum"]}, 60, 120, 960),
    ("Standard / 標準", {}, 240, 480, 2400),
)


async def _seed_sla(session: AsyncSession) -> None:
    name, hours = DEMO_CALENDAR
    calendar = await session.scalar(
        select(BusinessCalendarRecord).where(BusinessCalendarRecord.name == name)
    )
    if calendar is None:
        calendar = await sla.create_calendar(
            session,
            name,
            BusinessCalendar(
                timezone="Asia/Tokyo", weekly=parse_weekly(hours), holiday_region="JP"
            ),
        )
    for position, (title, conditions, first, following, resolution) in enumerate(DEMO_POLICIES):
        if await session.scalar(select(SlaPolicy.id).where(SlaPolicy.name == title)):
            continue
        await sla.create_policy(
            session,
            name=title,
            calendar_id=calendar.id,
            conditions=conditions,
            first_response_minutes=first,
            next_response_minutes=following,
            resolution_minutes=resolution,
            position=(position + 1) * 10,
        )


async def _demo_case(
    session: AsyncSession,
    rng: random.Random,
    customer_id: int,
    spec: dict[str, object],
    c: int,
    i: int,
    agents: list[User],
    teams: list[Team],
    now: datetime,
) -> None:
    ja = spec["language"] == "ja"
    channel = ("phone", "email", "chat")[(i + c) % 3]
    subject = rng.choice(SUBJECTS_JA if ja else SUBJECTS_EN)
    agent = rng.choice(agents)
    start = now - timedelta(days=rng.randrange(1, 45), minutes=rng.randrange(0, 600))
    assigned = rng.random() < 0.6
    case = await cases.create_case(
        session,
        cases.CaseInput(
            customer_id=customer_id,
            subject=subject,
            channel=channel,
            priority=rng.choice(("low", "normal", "normal", "high", "urgent")),
            team_id=teams[0].id if ja else teams[1].id,
            assignee_id=agent.id if assigned else None,
            tags=["demo"],
        ),
        author_user_id=None,
    )
    case.created_at = start
    at = start
    phone = str(spec["phones"][0])  # type: ignore[index]
    email = str(spec["emails"][0])  # type: ignore[index]
    if channel == "phone":
        talk = rng.randrange(60, 900)
        await add_interaction(
            session, customer_id=customer_id, case_id=case.id, kind="call", direction="in",
            text=("お電話: " if ja else "Call: ") + subject, author_user_id=agent.id,
            meta={"from": phone, "to": agent.extension, "talk_seconds": talk, "wait_seconds": rng.randrange(3, 90)},
            occurred_at=at,
        )  # fmt: skip
    elif channel == "email":
        body = (
            f"お世話になっております。\n{subject}の件でご連絡しました。\nよろしくお願いいたします。"
            if ja
            else f"Hello,\nI am writing about: {subject}.\nThanks"
        )
        await add_interaction(
            session, customer_id=customer_id, case_id=case.id, kind="email", direction="in",
            subject=subject, text=body, html="<p>" + body.replace("\n", "<br>") + "</p>",
            meta={"from": email, "to": "support@localhost", "cc": []}, occurred_at=at,
        )  # fmt: skip
        at += timedelta(minutes=rng.randrange(10, 240))
        reply = (
            "ご連絡ありがとうございます。確認いたします。"
            if ja
            else "Thanks, we are looking into it."
        )
        await add_interaction(
            session, customer_id=customer_id, case_id=case.id, kind="email", direction="out",
            subject=f"Re: {subject} [#{case.number}]", text=reply, author_user_id=agent.id,
            meta={"from": "support@localhost", "to": email}, occurred_at=at,
        )  # fmt: skip
    else:
        lines = (
            [("in", "すみません、" + subject), ("out", "お問い合わせありがとうございます。"), ("in", "よろしくお願いします")]
            if ja
            else [("in", "Hi, " + subject), ("out", "Happy to help! One moment."), ("in", "Thanks!")]
        )  # fmt: skip
        for n, (direction, text) in enumerate(lines):
            await add_interaction(
                session, customer_id=customer_id, case_id=case.id, kind="chat", direction=direction,
                text=text, author_user_id=agent.id if direction == "out" else None,
                meta={"seq": n + 1}, occurred_at=at + timedelta(seconds=40 * n),
            )  # fmt: skip
    at += timedelta(minutes=rng.randrange(5, 120))
    await add_interaction(
        session, customer_id=customer_id, case_id=case.id, kind="note", direction="internal",
        text="顧客へ折り返し予定" if ja else "Call back tomorrow morning", author_user_id=agent.id,
        occurred_at=at,
    )  # fmt: skip
    final = rng.choice(("open", "pending", "solved", "new")) if assigned else "new"
    if final != "new":
        await cases.update_case(session, case.id, {"status": final}, actor_user_id=agent.id)
    case.updated_at = at + timedelta(minutes=5)
