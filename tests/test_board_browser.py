"""The supervisor's wall board in a real browser (Debian's Chromium, never a downloaded one)
against a real `helpdesk serve` process, whose SLA worker announces warnings and breaches:
a clock going at risk and then breaching changes the board's tiles live, without a reload,
and the board fits a 1920×1080 screen without scrolling."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from playwright.sync_api import expect, sync_playwright
from sqlalchemy import text

from helpdesk import auth
from helpdesk.hub import asyncpg_dsn
from helpdesk.models import AgentPresence, Call, ChatConversation, Team
from tests.conftest import PASSWORD, TABLES, serve_process
from tests.test_browser import CHROMIUM, Watch, assert_same_document, log_in, mark_document
from tests.test_metrics import a_case, a_customer, breach, catch_all_policy

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt-get install chromium)"
)
BOSS = "board-boss@example.com"
# Long enough to need ellipses on the wall; the lists must still fit.
SUBJECT = "請求書の金額が注文時の見積もりと違うので至急確認して折り返し連絡してほしい"


@pytest.fixture(scope="module")
async def desk_data(session_db) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """A busy desk: four teams, twenty agents, clocks at risk and breached, a ringing call,
    chats waiting; and the case whose clock the test moves. Made before Chromium starts
    (Playwright's sync API runs its own loop in this thread)."""
    async with session_db.engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
        await conn.execute(text("ALTER SEQUENCE case_number_seq RESTART WITH 1001"))
    now = datetime.now(UTC)
    async with session_db.unit_of_work() as session:
        await catch_all_policy(session)  # first response 60 minutes, warned at 48
        # The floor's supervisor belongs to no team, so the wall board may show all four
        # (a team's supervisor watches their own team only: helpdesk/visibility.py).
        await auth.create_user(session, BOSS, "Board Boss", "supervisor", PASSWORD)
        teams = []
        for name in ("東京サポート", "大阪サポート", "Billing", "VIP desk"):
            team = Team(name=name)
            session.add(team)
            teams.append(team)
        await session.flush()
        agents = []
        for n in range(20):
            agent = await auth.create_user(
                session, f"agent{n}@example.com", f"オペレーター {n:02d}", "agent", PASSWORD
            )
            agent.team_id = teams[n % 4].id
            session.add(AgentPresence(user_id=agent.id, status=("available", "busy", "away", "offline")[n % 4]))  # fmt: skip
            agents.append(agent)
        for n in range(8):
            at_risk = await a_case(
                session, team=teams[n % 4], started=now - timedelta(minutes=50), assignee=agents[n]
            )
            at_risk.subject = f"{SUBJECT} {n}"
            breached = await a_case(session, team=teams[n % 4], started=now - timedelta(hours=3))
            breached.subject = f"{SUBJECT} {n}"
            await breach(session, breached)
        target = await a_case(session, team=teams[0], started=now, assignee=agents[0])
        target.subject = "配送状況を教えてください"
        customer = await a_customer(session)
        session.add(
            Call(
                call_id="board-ringing",
                direction="in",
                state="ringing",
                started_at=now,
                ringing_user_ids=[agents[0].id],
            )
        )
        for n in range(2):
            session.add(
                ChatConversation(
                    token_hash=f"board-chat-{n}",
                    state="queued",
                    customer_id=customer.id,
                    team_id=teams[0].id,
                    visitor_name="訪問者",
                    queued_at=now,
                )
            )
    return {"case_id": target.id, "case_number": target.number, "team_id": teams[0].id}


@pytest.fixture(scope="module")
def base_url(database_url, desk_data, tmp_path_factory) -> Iterator[str]:  # type: ignore[no-untyped-def]
    with serve_process(
        database_url,
        tmp_path_factory.mktemp("board-data"),
        HELPDESK_SECRET_KEY="board-test-secret-key-long-enough-for-hs256",
    ) as base:
        yield base


@pytest.fixture(scope="module")
def browser(base_url: str) -> Iterator[Any]:
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-background-networking"],
            headless=True,
        )
        yield browser
        browser.close()


def run_sql(database_url: str, statement: str, *args: object) -> None:
    """One statement, from a thread of its own: this thread's loop belongs to Playwright."""

    async def run() -> None:
        conn = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            await conn.execute(statement, *args)
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


def test_a_clock_at_risk_then_breached_changes_the_wall_board_live(
    browser, base_url, database_url, desk_data
):
    context = browser.new_context(
        base_url=base_url,
        locale="en-US",
        timezone_id="Asia/Tokyo",
        viewport={"width": 1920, "height": 1080},
    )
    context.set_default_timeout(10_000)
    watch = Watch(base_url)
    context.on("request", watch.on_request)
    page = context.new_page()
    page.on("console", watch.on_console)
    page.on("pageerror", watch.on_page_error)
    try:
        log_in(page, BOSS, PASSWORD)
        expect(page.locator("nav a[href='/board']")).to_be_visible()
        page.goto("/board?team=all")
        expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
        tiles = page.locator(".tiles")
        expect(tiles.locator("[data-metric=at_risk] .value")).to_have_text("8")
        expect(tiles.locator("[data-metric=breached] .value")).to_have_text("8")
        expect(tiles.locator("[data-metric=calls_ringing] .value")).to_have_text("1")
        expect(tiles.locator("[data-metric=chats_waiting] .value")).to_have_text("2")
        expect(page.locator(".team-table tbody tr")).to_have_count(4)
        mark_document(page)

        # The page re-fetches by itself only every 15 s, and each step below must show
        # within 6 s of the one before: what the tiles show comes from the socket's events.
        case_id = desk_data["case_id"]
        run_sql(
            database_url,
            "UPDATE sla_clocks SET warning_at = now() WHERE case_id = $1 AND kind = 'first_response'",
            case_id,
        )
        expect(tiles.locator("[data-metric=at_risk] .value")).to_have_text("9", timeout=6_000)
        # two of the eight were Tokyo's; the list shows the soonest six, not this one
        tokyo = page.locator(f".team-table tr[data-team='{desk_data['team_id']}']")
        expect(tokyo.locator("[data-metric=at_risk]")).to_have_text("3")

        run_sql(
            database_url,
            "UPDATE sla_clocks SET deadline_at = now() + interval '1 second' "
            "WHERE case_id = $1 AND kind = 'first_response'",
            case_id,
        )
        expect(tiles.locator("[data-metric=breached] .value")).to_have_text("9", timeout=6_000)
        expect(tiles.locator("[data-metric=breached]")).to_have_class("tile bad")
        expect(tiles.locator("[data-metric=at_risk] .value")).to_have_text("8")
        latest = page.locator("#breached-cases li").first
        expect(latest).to_contain_text(f"#{desk_data['case_number']}")
        expect(latest.locator("a")).to_have_attribute("href", f"/cases/{case_id}")
        assert_same_document(page)

        # A wall screen: everything on one 1920×1080 screen, nothing to scroll.
        size = page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.scrollHeight,"
            " window.innerWidth, window.innerHeight]"
        )
        assert size[0] <= size[2] and size[1] <= size[3], size
        for panel in (".teams", ".alerts", ".service", ".agents"):
            box = page.locator(panel).bounding_box()
            assert box is not None and box["y"] + box["height"] <= 1080, panel
        watch.assert_clean()
    finally:
        context.close()
