"""The desk in a real browser: Debian's Chromium (never a downloaded one) driven by Playwright
against a real `helpdesk serve` process on demo data.

Every page is watched: no request may leave the desk's own origin (it works offline, htmx
is vendored) and nothing may log a console error (e.g. a CSP violation).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest
from babel.dates import format_datetime
from playwright.sync_api import expect, sync_playwright
from sqlalchemy import func, select, text

from helpdesk import auth, cases, demo
from helpdesk.i18n import load_catalogs
from helpdesk.interactions import add_interaction
from helpdesk.models import Case, ContactIdentity, Interaction
from tests.conftest import PASSWORD, TABLES, serve_process

CHROMIUM = Path("/usr/bin/chromium")
CTI_TOKEN = "browser-test-cti-token"
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt-get install chromium)"
)
expect.set_options(timeout=10_000)

AGENT = "tanaka@example.com"  # a demo agent whose own language setting is Japanese
YAMADA = "山田 太郎"
PLAIN_AGENT = "browser-agent@example.com"
LONG_HISTORY_NOTES = 45  # with the demo entries, more than two pages of 20


@dataclass(frozen=True)
class DemoDesk:
    base_url: str
    yamada_id: int
    long_history_id: int  # a customer with more entries than one timeline page
    long_history_total: int


@pytest.fixture(scope="module")
async def demo_data(session_db) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """The demo data, once for the module, in the emptied test database.

    Module-scoped (seeding and starting a server per test would cost seconds each), so the
    tests here only add to the data (a case, a note, a failed login) and never rely on what
    another test did or did not add. Everything asynchronous is set up here, before Chromium
    starts: Playwright's sync API marks its own event loop as running in this thread, so no
    async fixture (e.g. `db` or `make_staff`) can be set up while the browser is open.
    """
    async with session_db.engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
        await conn.execute(text("ALTER SEQUENCE case_number_seq RESTART WITH 1001"))
    async with session_db.unit_of_work() as session:
        await demo.seed(session)
        yamada = await session.scalar(
            select(ContactIdentity.customer_id).where(
                ContactIdentity.kind == "external", ContactIdentity.normalized == "demo-customer-0"
            )
        )
        open_cases = await session.scalar(
            select(func.count())
            .select_from(Case)
            .where(Case.customer_id == yamada, Case.status.in_(cases.OPEN_STATUSES))
        )
        assert open_cases, "the demo gives 山田 太郎 open cases; the tests open one"
        # an agent with no language or timezone setting of their own
        await auth.create_user(session, PLAIN_AGENT, "Browser Agent", "agent", PASSWORD)
        # a long history, longer than one timeline page, for the infinite scroll
        long_history = await session.scalar(
            select(ContactIdentity.customer_id).where(
                ContactIdentity.kind == "external", ContactIdentity.normalized == "demo-customer-1"
            )
        )
        start = datetime(2020, 1, 1, tzinfo=UTC)
        for n in range(LONG_HISTORY_NOTES):
            await add_interaction(
                session,
                customer_id=long_history,
                kind="note",
                direction="internal",
                text=f"古いメモ {n:02d}",
                occurred_at=start + timedelta(hours=n),
            )
        total = await session.scalar(
            select(func.count())
            .select_from(Interaction)
            .where(Interaction.customer_id == long_history)
        )
    return {"yamada": int(yamada), "long_history": int(long_history), "long_total": int(total)}


@pytest.fixture(scope="module")
def desk(database_url, demo_data, tmp_path_factory) -> Iterator[DemoDesk]:  # type: ignore[no-untyped-def]
    """`helpdesk serve` in its own process on the demo data (as conftest's `live_server`,
    but once for the module)."""
    with serve_process(
        database_url,
        tmp_path_factory.mktemp("browser-data"),
        HELPDESK_SECRET_KEY="browser-test-secret-key-long-enough-for-hs256",
        HELPDESK_CTI_TOKEN=CTI_TOKEN,
    ) as base:
        yield DemoDesk(
            base, demo_data["yamada"], demo_data["long_history"], demo_data["long_total"]
        )


@pytest.fixture(scope="module")
def browser(desk: DemoDesk) -> Iterator[object]:
    # Through `desk`, every async fixture of the module is set up before Playwright starts.
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-background-networking"],
            headless=True,
        )
        yield browser
        browser.close()


@dataclass
class Watch:
    """What the pages of one test did that they must not: leave the origin, log errors."""

    origin: str
    foreign: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    allowed_errors: list[re.Pattern[str]] = field(default_factory=list)

    def on_request(self, request) -> None:  # type: ignore[no-untyped-def]
        parts = urlsplit(request.url)
        if parts.scheme in ("data", "blob", "about"):
            return
        if f"{parts.scheme}://{parts.netloc}" != self.origin:
            self.foreign.append(request.url)

    def on_console(self, message) -> None:  # type: ignore[no-untyped-def]
        if message.type == "error":
            self.errors.append(f"console: {message.text} ({message.location.get('url')})")

    def on_page_error(self, error) -> None:  # type: ignore[no-untyped-def]
        self.errors.append(f"page error: {error}")

    def assert_clean(self) -> None:
        assert self.foreign == [], "the desk must not load anything from another host"
        unexpected = [e for e in self.errors if not any(p.search(e) for p in self.allowed_errors)]
        assert unexpected == [], "the pages logged errors"


@pytest.fixture
def open_page(browser, desk: DemoDesk) -> Iterator[Callable[..., tuple[object, Watch]]]:
    """`open_page(locale=..., timezone_id=...)`: a fresh browser context and page on the live
    server, watched for foreign requests and console errors."""
    contexts = []

    def open_(**options: object) -> tuple[object, Watch]:
        options.setdefault("locale", "en-US")
        options.setdefault("timezone_id", "Asia/Tokyo")
        context = browser.new_context(base_url=desk.base_url, **options)  # type: ignore[attr-defined]
        context.set_default_timeout(10_000)
        contexts.append(context)
        watch = Watch(desk.base_url)
        context.on("request", watch.on_request)
        page = context.new_page()
        page.on("console", watch.on_console)
        page.on("pageerror", watch.on_page_error)
        return page, watch

    yield open_
    for context in contexts:
        context.close()


def log_in(page, email: str, password: str) -> None:  # type: ignore[no-untyped-def]
    page.goto("/agent")
    expect(page).to_have_url(re.compile(r"/login\?next=/agent$"))
    page.locator("input[name=email]").fill(email)
    page.locator("input[name=password]").fill(password)
    page.locator("form[action='/login'] button[type=submit]").click()


def mark_document(page) -> None:  # type: ignore[no-untyped-def]
    """Tag the current document; a full page load would lose the tag."""
    page.evaluate("window.__sameDocument = true")


def assert_same_document(page) -> None:  # type: ignore[no-untyped-def]
    assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"


def test_agent_logs_in_finds_yamada_by_phone_and_sees_one_history(desk, open_page):
    page, watch = open_page()
    log_in(page, AGENT, demo.DEMO_PASSWORD)
    expect(page).to_have_url(f"{desk.base_url}/agent")
    expect(page.locator(".topbar .me")).to_contain_text("田中 健")

    page.locator(".topbar nav a[href='/customers']").click()
    expect(page).to_have_url(f"{desk.base_url}/customers")
    search = page.locator("#customer-search")
    expect(search).to_be_focused()
    mark_document(page)
    search.press_sequentially("03-1234-5678")
    results = page.locator("#results li.result")
    expect(results).to_have_count(1)
    expect(results.first).to_contain_text(YAMADA)
    expect(results.first).to_contain_text("03-1234-5678")
    expect(page).to_have_url(re.compile(r"/customers\?q=03-1234-5678$"))  # hx-push-url
    assert_same_document(page)

    results.first.locator("a.customer-link").click()
    expect(page).to_have_url(f"{desk.base_url}/customers/{desk.yamada_id}")
    card = page.locator("#customer-card")
    expect(card.locator("h1.customer-name")).to_have_text(YAMADA)
    expect(card).to_contain_text("ヤマダ タロウ")
    expect(card).to_contain_text("株式会社サンプル商事")
    expect(card.locator(".identity-phone")).to_have_count(2)
    expect(card.locator(".identity-phone").first).to_contain_text("03-1234-5678")
    expect(card.locator(".identity-email")).to_contain_text("taro.yamada@example.co.jp")

    timeline = page.locator("#timeline")
    for kind in ("call", "email", "chat"):
        expect(timeline.locator(f"li.entry.kind-{kind}").first).to_be_visible()
    assert timeline.locator("li.entry").count() >= 3 + 2 + 3  # call, mail + reply, chat
    stamps = timeline.locator("li.entry time").evaluate_all(
        "els => els.map(e => e.getAttribute('datetime'))"
    )
    parsed = [datetime.fromisoformat(s) for s in stamps]
    assert parsed == sorted(parsed, reverse=True), "the timeline is newest first"
    watch.assert_clean()


def test_wrong_password_shows_an_error_and_opens_no_session(desk, open_page):
    page, watch = open_page()
    # the browser reports the login page's 401 answer itself; that is the expected answer
    watch.allowed_errors.append(re.compile(r"status of 401"))
    log_in(page, AGENT, "not-the-password")
    error = load_catalogs()["en"].gettext("wrong email or password")
    expect(page.locator("p.error[role=alert]")).to_have_text(error)
    expect(page.locator("input[name=email]")).to_have_value(AGENT)
    expect(page.locator("input[name=password]")).to_have_value("")
    assert "helpdesk_session" not in {c["name"] for c in page.context.cookies()}
    page.goto("/agent")
    expect(page).to_have_url(re.compile(r"/login\?next=/agent$"))
    watch.assert_clean()


def test_japanese_browser_gets_japanese_ui_and_times_in_its_own_timezone(desk, open_page):
    """With no language setting of their own, a ja-JP browser gets the Japanese desk; times
    are in the browser's timezone, whatever the server's default (Asia/Tokyo) is."""
    ja = load_catalogs()["ja"]

    page, watch = open_page(locale="ja-JP", timezone_id="America/New_York")
    page.goto("/login")
    expect(page.locator("html")).to_have_attribute("lang", "ja")
    expect(page.locator("form[action='/login'] button[type=submit]")).to_have_text(
        ja.gettext("Log in")
    )
    log_in(page, PLAIN_AGENT, PASSWORD)
    expect(page).to_have_url(f"{desk.base_url}/agent")
    expect(page.locator("html")).to_have_attribute("lang", "ja")

    page.goto(f"/customers/{desk.yamada_id}")
    first = page.locator("#timeline li.entry time").first
    stamp = datetime.fromisoformat(first.get_attribute("datetime"))
    expect(first).to_have_text(
        format_datetime(stamp, "medium", tzinfo=ZoneInfo("America/New_York"), locale="ja")
    )
    tokyo = format_datetime(stamp, "medium", tzinfo=ZoneInfo("Asia/Tokyo"), locale="ja")
    assert first.inner_text() != tokyo

    badge = page.locator("#customer-card .open-cases .badge").first
    status = re.search(r"status-(\w+)", badge.get_attribute("class")).group(1)
    label = ja.gettext(status)
    assert label != status, f"helpdesk/locale/ja has no translation for the status {status!r}"
    expect(badge).to_have_text(label)

    # The user's own setting beats Accept-Language: switch to English in the header.
    page.locator(".topbar select[name=language]").select_option("en")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page).to_have_url(f"{desk.base_url}/customers/{desk.yamada_id}")
    page.goto("/agent")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    watch.assert_clean()


def test_slash_focuses_search_but_not_while_typing(desk, open_page):
    page, watch = open_page()
    log_in(page, AGENT, demo.DEMO_PASSWORD)
    expect(page).to_have_url(f"{desk.base_url}/agent")
    box = page.locator("#global-search")
    expect(box).not_to_be_focused()
    page.keyboard.press("/")
    expect(box).to_be_focused()
    expect(box).to_have_value("")  # the "/" itself is not typed into the box
    page.keyboard.type("03-1234-5678")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/customers\?q=03-1234-5678$"))
    expect(page.locator("#results li.result")).to_have_count(1)
    expect(page.locator("#results li.result")).to_contain_text(YAMADA)

    page.locator("#results a.customer-link").click()
    page.locator("#customer-card .open-cases a").first.click()
    note = page.locator("#note-body")
    note.click()
    page.keyboard.type("a/b")
    expect(note).to_be_focused()
    expect(note).to_have_value("a/b")
    watch.assert_clean()


def test_agent_creates_a_case_and_changes_its_status_in_place(desk, open_page):
    page, watch = open_page()
    log_in(page, AGENT, demo.DEMO_PASSWORD)
    page.goto(f"/customers/{desk.yamada_id}")
    open_before = page.locator("#customer-card .open-cases li:not(.empty)").count()

    page.locator(f"#customer-card a[href='/cases/new?customer_id={desk.yamada_id}']").click()
    form = page.locator("form[action='/cases']")
    form.locator("input[name=subject]").fill("ブラウザからの問い合わせ")
    form.locator("select[name=channel]").select_option("chat")
    form.locator("select[name=priority]").select_option("high")
    form.locator("textarea[name=body]").fill("チャットで返品について質問")
    form.locator("button[type=submit]").click()

    expect(page).to_have_url(re.compile(r"/cases/\d+$"))
    expect(page.locator("h1")).to_have_text(re.compile(r"^#\d+ ブラウザからの問い合わせ$"))
    expect(page.locator("#case-timeline li.entry.kind-chat")).to_contain_text("返品")
    fields = page.locator("#case-fields")
    status = fields.locator("select[name=status]")
    expect(status).to_have_value("new")
    expect(fields.locator("select[name=priority]")).to_have_value("high")
    system_entries = page.locator("#case-timeline li.entry.kind-system")
    expect(system_entries).to_have_count(0)

    mark_document(page)
    status.select_option("pending")
    # the fields come back from the server with only the moves allowed from "pending"
    expect(status).to_have_value("pending")
    expect(status.locator("option")).to_have_count(4)  # pending, open, on_hold, solved
    expect(status.locator("option[value=closed]")).to_have_count(0)
    # ... and the timeline refreshes itself with the change
    expect(system_entries).to_have_count(1)
    expect(system_entries.first).to_contain_text("pending")

    # A note being typed survives the timeline's live refresh (a colleague changes the case).
    page.locator("#note-body").fill("折り返し電話の予定")
    case_id = page.url.rsplit("/", 1)[1]
    changed = httpx.patch(
        f"{desk.base_url}/api/cases/{case_id}",
        json={"priority": "urgent"},
        headers=_api_token(desk, AGENT),
    )
    assert changed.status_code == 200
    expect(system_entries).to_have_count(2)
    expect(page.locator("#note-body")).to_have_value("折り返し電話の予定")
    page.locator("#case-timeline form.note-form button[type=submit]").click()
    expect(page.locator("#case-timeline li.entry.kind-note").first).to_contain_text(
        "折り返し電話の予定"
    )
    expect(page.locator("#note-body")).to_have_value("")  # sent, so emptied
    assert_same_document(page)

    page.reload()
    expect(page.locator("#case-fields select[name=status]")).to_have_value("pending")
    page.locator("main a[href^='/customers/']").first.click()
    open_cases = page.locator("#customer-card .open-cases li:not(.empty)")
    expect(open_cases).to_have_count(open_before + 1)
    expect(page.locator("#customer-card .open-cases")).to_contain_text("ブラウザからの問い合わせ")
    expect(page.locator("#timeline li.entry.kind-note").first).to_contain_text("折り返し電話の予定")
    watch.assert_clean()


def test_customer_timeline_loads_older_entries_as_the_agent_scrolls(desk, open_page):
    page, watch = open_page()
    log_in(page, AGENT, demo.DEMO_PASSWORD)
    page.goto(f"/customers/{desk.long_history_id}")
    entries = page.locator("#timeline li.entry")
    expect(entries).to_have_count(20)  # the first page
    mark_document(page)
    while entries.count() < desk.long_history_total:
        before = entries.count()
        page.locator("#timeline li.loading").scroll_into_view_if_needed()
        expect(entries).not_to_have_count(before)
    expect(entries).to_have_count(desk.long_history_total)
    expect(page.locator("#timeline li.loading")).to_have_count(0)
    expect(entries.last).to_contain_text("古いメモ 00")  # the oldest entry comes last
    ids = entries.evaluate_all("els => els.map(e => e.id)")
    assert len(set(ids)) == len(ids), "no entry is loaded twice"
    assert_same_document(page)
    watch.assert_clean()


def _api_token(desk: DemoDesk, email: str) -> dict[str, str]:
    r = httpx.post(
        f"{desk.base_url}/api/auth/token", json={"email": email, "password": demo.DEMO_PASSWORD}
    )
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def test_a_case_assigned_by_someone_else_pops_a_toast_and_refreshes_the_queue(desk, open_page):
    page, watch = open_page()
    log_in(page, AGENT, demo.DEMO_PASSWORD)
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    mark_document(page)

    tanaka = httpx.get(f"{desk.base_url}/api/me", headers=_api_token(desk, AGENT)).json()
    subject = f"折り返し電話の依頼 {os.urandom(3).hex()}"
    r = httpx.post(
        f"{desk.base_url}/api/cases",
        json={"customer_id": desk.yamada_id, "subject": subject, "assignee_id": tanaka["id"]},
        headers=_api_token(desk, "suzuki@example.com"),
    )
    assert r.status_code == 201, r.text

    toast = page.locator("#toasts .toast").filter(has_text=subject)
    expect(toast).to_be_visible()
    expect(toast).to_have_attribute("href", f"/cases/{r.json()['id']}")
    expect(page.locator("#agent-queues")).to_contain_text(subject)  # the list, refreshed
    assert_same_document(page)
    toast.click()
    expect(page).to_have_url(f"{desk.base_url}/cases/{r.json()['id']}")
    watch.assert_clean()


def test_a_supervisor_sees_an_agents_presence_change_live(desk, open_page):
    boss, boss_watch = open_page()
    log_in(boss, "sato@example.com", demo.DEMO_PASSWORD)
    expect(boss.locator("#live-status")).to_have_attribute("data-state", "live")
    agent_page, agent_watch = open_page()
    log_in(agent_page, "emma@example.com", demo.DEMO_PASSWORD)
    expect(agent_page.locator("#live-status")).to_have_attribute("data-state", "live")
    emma = httpx.get(f"{desk.base_url}/api/me", headers=_api_token(desk, "emma@example.com")).json()
    row = boss.locator(f"[data-presence-of='{emma['id']}']")
    expect(row).to_have_attribute("data-status", "available")

    agent_page.locator("#presence").select_option("away")
    expect(row).to_have_attribute("data-status", "away")
    agent_page.locator("#presence").select_option("available")
    expect(row).to_have_attribute("data-status", "available")
    boss_watch.assert_clean()
    agent_watch.assert_clean()


def test_keyboard_shortcuts_open_help_and_move_between_pages(desk, open_page):
    page, watch = open_page()
    log_in(page, AGENT, demo.DEMO_PASSWORD)
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    page.keyboard.press("?")
    expect(page.locator("#shortcuts")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#shortcuts")).to_be_hidden()
    # Shortcuts are off while typing in a field; start from the page, not a control.
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.keyboard.press("g")
    page.keyboard.press("c")
    expect(page).to_have_url(f"{desk.base_url}/cases")
    expect(page.locator("#case-list table.cases")).to_be_visible()
    page.keyboard.press("g")
    page.keyboard.press("q")
    expect(page).to_have_url(f"{desk.base_url}/agent")
    watch.assert_clean()


def _cti(desk: DemoDesk, **event: object) -> dict:
    r = httpx.post(
        f"{desk.base_url}/api/cti/events",
        json=event,
        headers={"Authorization": f"Bearer {CTI_TOKEN}"},
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_a_ringing_call_pops_the_callers_card_and_becomes_the_active_call_panel(desk, open_page):
    page, watch = open_page()
    log_in(page, AGENT, demo.DEMO_PASSWORD)  # 田中 健, extension 201
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    mark_document(page)
    call_id = f"browser-{os.urandom(4).hex()}"
    ring = _cti(
        desk,
        event="ring",
        call_id=call_id,
        **{"from": "+81 3-1234-5678"},
        to="0501234",
        agent="201",
    )
    pop = page.locator(f"#pop-{ring['call']['id']}")
    expect(pop).to_be_visible()
    expect(pop.locator(".pop-name")).to_have_text(YAMADA)
    expect(pop).to_contain_text("03-1234-5678")
    expect(pop.locator(".pop-cases li").first).to_contain_text("#")
    expect(pop).to_have_attribute("data-state", "ringing")

    _cti(desk, event="answer", call_id=call_id, agent="201")
    expect(pop).to_have_attribute("data-state", "answered")
    pop.locator("input[name=new_case_subject]").fill("電話での住所変更")
    pop.locator("form:has(input[name=new_case_subject]) button").click()
    expect(pop.locator(".pop-active a[href^='/cases/']")).to_be_visible()
    # htmx binds the swapped-in card's triggers when it settles (a timer after the swap): a
    # browser as quick as Playwright could otherwise type into a textarea not yet listened to.
    expect(page.locator(".htmx-settling")).to_have_count(0)
    with page.expect_response(
        lambda r: r.url.endswith(f"/calls/{ring['call']['id']}/notes")
    ) as saved:
        pop.locator("textarea[name=notes]").fill("新住所は大阪市")
        pop.locator("textarea[name=notes]").blur()
    assert saved.value.status == 204

    _cti(desk, event="hangup", call_id=call_id, cause="normalClearing")
    expect(pop).to_have_attribute("data-state", "completed")
    assert_same_document(page)
    call = httpx.get(
        f"{desk.base_url}/api/calls/{ring['call']['id']}", headers=_api_token(desk, AGENT)
    ).json()
    assert call["notes"] == "新住所は大阪市" and call["case_id"] is not None
    pop.locator("[data-dismiss-pop]").click()
    expect(pop).to_have_count(0)
    watch.assert_clean()


def test_an_unknown_caller_gets_a_create_customer_card(desk, open_page):
    page, watch = open_page()
    log_in(page, AGENT, demo.DEMO_PASSWORD)
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    ring = _cti(
        desk,
        event="ring",
        call_id=f"unknown-{os.urandom(4).hex()}",
        **{"from": "090-8765-4321"},
        agent="201",
    )
    pop = page.locator(f"#pop-{ring['call']['id']}")
    expect(pop).to_contain_text("090-8765-4321")
    link = pop.locator("a[href^='/customers/new?phone=']")
    expect(link).to_be_visible()
    link.click()
    expect(page.locator("input[name=phone]")).to_have_value("+819087654321")
    watch.assert_clean()


def test_case_page_suggests_an_article_and_inserts_its_link_into_the_reply(desk, open_page):
    """The case sidebar finds a KB article from the case text; "Insert link" puts the
    article's public address into the reply at the cursor (by mouse and by keyboard)."""
    tag = os.urandom(3).hex()
    slug = f"receipt-reissue-{tag}"
    r = httpx.post(
        f"{desk.base_url}/api/kb/articles",
        json={
            "title": "領収書の再発行方法",
            "language": "ja",
            "slug": slug,
            "status": "published",
            "body_md": "マイページの「領収書」から再発行できます。",
        },
        headers=_api_token(desk, "sato@example.com"),
    )
    assert r.status_code == 201, r.text
    r = httpx.post(
        f"{desk.base_url}/api/cases",
        json={
            "customer_id": desk.yamada_id,
            "subject": "領収書を再発行してほしい",
            "channel": "email",
        },
        headers=_api_token(desk, AGENT),
    )
    assert r.status_code == 201, r.text
    url = f"{desk.base_url}/help/ja/{slug}"

    page, watch = open_page()
    log_in(page, AGENT, demo.DEMO_PASSWORD)
    expect(page).to_have_url(f"{desk.base_url}/agent")
    page.goto(f"/cases/{r.json()['id']}")
    suggestion = page.locator("#kb-suggestions .kb-suggestion").filter(
        has_text="領収書の再発行方法"
    )
    expect(suggestion).to_be_visible()
    insert = suggestion.locator("button.kb-insert")
    expect(insert).to_have_attribute("data-insert-link", url)

    reply = page.locator("#reply-body")
    reply.fill("こちらをご覧ください:")
    insert.click()
    expect(reply).to_have_value(f"こちらをご覧ください: {url}")
    expect(reply).to_be_focused()

    insert.focus()
    page.keyboard.press("Enter")
    expect(reply).to_have_value(f"こちらをご覧ください: {url} {url}")
    watch.assert_clean()


def test_a_customer_and_an_agent_chat_both_ways_and_a_reload_keeps_the_history(desk, open_page):
    agent, agent_watch = open_page(locale="ja-JP")
    log_in(agent, AGENT, demo.DEMO_PASSWORD)
    expect(agent).to_have_url(re.compile(r"/agent$"))
    expect(agent.locator("#live-status")).to_have_attribute("data-state", "live")

    customer, customer_watch = open_page(locale="ja-JP")
    customer.goto("/demo/site?lang=ja")
    customer.locator("button.hd-launcher").click()
    prechat = customer.locator("form.hd-prechat")
    prechat.locator("input[name=name]").fill("ブラウザ 花子")
    prechat.locator("input[name=email]").fill("hanako.browser@example.jp")
    prechat.locator("button[type=submit]").click()
    box = customer.locator("textarea.hd-input")
    box.fill("注文した商品が届きません")
    customer.locator("button.hd-send").click()
    mine = customer.locator('.hd-msg[data-from="visitor"] .hd-body')
    expect(mine).to_have_text(["注文した商品が届きません"])

    # The offer reaches the only agent online; they accept it.
    offer = agent.locator("[data-chat-offer]")
    expect(offer).to_have_count(1)
    expect(offer).to_contain_text("ブラウザ 花子")
    offer.locator("button.chat-accept").click()
    view = agent.locator("#chat-view")
    expect(view.locator('.chat-msg[data-from="visitor"] .chat-body')).to_have_text(
        ["注文した商品が届きません"]
    )
    expect(customer.locator('.hd-msg[data-from="system"]')).to_have_count(1)

    # agent -> customer
    agent.locator("#chat-input").fill("ご注文番号を教えていただけますか？")
    agent.locator("#chat-input").press("Enter")
    theirs = customer.locator('.hd-msg[data-from="agent"] .hd-body')
    expect(theirs).to_have_text(["ご注文番号を教えていただけますか？"])

    # customer -> agent
    box.fill("A-1234 です")
    box.press("Enter")
    expect(view.locator('.chat-msg[data-from="visitor"] .chat-body')).to_have_text(
        ["注文した商品が届きません", "A-1234 です"]
    )

    # The customer reloads: the same conversation, the whole history, in order, once.
    customer.reload()
    if not customer.locator(".hd-panel").is_visible():
        customer.locator("button.hd-launcher").click()
    bodies = customer.locator(".hd-msg .hd-body")
    expect(customer.locator('.hd-msg[data-from="visitor"] .hd-body')).to_have_text(
        ["注文した商品が届きません", "A-1234 です"]
    )
    expect(customer.locator('.hd-msg[data-from="agent"] .hd-body')).to_have_text(
        ["ご注文番号を教えていただけますか？"]
    )
    seqs = [
        int(s)
        for s in customer.locator(".hd-msg").evaluate_all(
            "els => els.map(e => e.getAttribute('data-seq'))"
        )
    ]
    assert seqs == sorted(set(seqs)) and seqs == list(range(1, len(seqs) + 1))
    assert bodies.count() == len(seqs)

    # and the conversation goes on after the reload
    agent.locator("#chat-input").fill("確認いたします。")
    agent.locator("#chat-input").press("Enter")
    expect(customer.locator('.hd-msg[data-from="agent"] .hd-body')).to_have_text(
        ["ご注文番号を教えていただけますか？", "確認いたします。"]
    )
    agent_watch.assert_clean()
    customer_watch.assert_clean()
