"""The website chat widget (`static/chat-widget.js`) and the demo company site (`/demo/site`).

None of this needs the chat server: the static checks read the file, the demo page tests use
the app, and the browser tests run the widget in Debian's Chromium on a page of *another*
origin under a strict CSP, with the desk's side of `/ws/chat` and its HTTP API played by the
test (Playwright's `route_web_socket` and `route`), following docs/CHAT.md.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
WIDGET = ROOT / "static" / "chat-widget.js"
CHROMIUM = Path("/usr/bin/chromium")
SCRIPT_TAG = re.compile(r'<script src="/static/chat-widget\.js"[^>]*></script>')


# -- the file --------------------------------------------------------------------------------


def test_widget_is_one_small_file() -> None:
    assert WIDGET.stat().st_size < 30_000


@pytest.mark.skipif(not shutil.which("node"), reason="node is not installed")
def test_widget_is_valid_javascript() -> None:
    done = subprocess.run(
        [shutil.which("node") or "node", "--check", str(WIDGET)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_widget_needs_nothing_a_strict_csp_forbids() -> None:
    source = WIDGET.read_text(encoding="utf-8")
    for forbidden in (
        "eval(",
        "new Function",
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        ".style.",
        "setAttribute('style'",
        "setTimeout('",
    ):
        assert forbidden not in source, forbidden
    assert "attachShadow({ mode: 'open' })" in source
    assert "adoptedStyleSheets" in source


# -- the demo company site -------------------------------------------------------------------


async def test_demo_site_is_japanese_by_default_with_the_widget_tag(client) -> None:  # type: ignore[no-untyped-def]
    r = await client.get("/demo/site")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    html = r.text
    assert '<html lang="ja">' in html
    assert "サンプルストア" in html
    tags = SCRIPT_TAG.findall(html)
    assert len(tags) == 1
    assert 'data-team=""' in tags[0] and 'data-lang="ja"' in tags[0] and " defer" in tags[0]
    assert 'data-title="' in tags[0]
    # nothing inline: the desk's own CSP (script-src/style-src 'self') must not block the page
    assert "<style" not in html
    assert len(re.findall(r"<script", html)) == 1
    assert not re.search(r"\son[a-z]+=", html)
    assert '<link rel="stylesheet" href="/static/demo-site.css">' in html


async def test_demo_site_in_english_for_a_team(client) -> None:  # type: ignore[no-untyped-def]
    r = await client.get("/demo/site", params={"lang": "en", "team": 'Sales "B" <x>'})
    assert r.status_code == 200
    assert '<html lang="en">' in r.text
    assert "Example Store" in r.text
    tag = SCRIPT_TAG.findall(r.text)[0]
    assert 'data-lang="en"' in tag
    assert 'data-team="Sales &#34;B&#34; &lt;x&gt;"' in tag  # escaped, never raw
    assert "lang=ja&amp;team=Sales" in r.text  # the language switch keeps the team


async def test_demo_site_language_from_accept_language(client) -> None:  # type: ignore[no-untyped-def]
    english = await client.get("/demo/site", headers={"Accept-Language": "en-US,en;q=0.9"})
    assert 'data-lang="en"' in english.text
    weighted = await client.get("/demo/site", headers={"Accept-Language": "en;q=0.4,ja;q=0.8"})
    assert 'data-lang="ja"' in weighted.text
    other = await client.get("/demo/site", headers={"Accept-Language": "fr-FR,fr"})
    assert 'data-lang="ja"' in other.text
    asked = await client.get("/demo/site?lang=zz", headers={"Accept-Language": "en"})
    assert 'data-lang="en"' in asked.text


async def test_demo_site_assets_are_served(client) -> None:  # type: ignore[no-untyped-def]
    for path in ("/static/chat-widget.js", "/static/demo-site.css"):
        r = await client.get(path)
        assert r.status_code == 200, path


# -- the widget in a browser, against a played desk -----------------------------------------

SHOP = "http://shop.test"
DESK = "http://desk.test"
KEY = "helpdesk.chat:" + DESK
# what a strict customer site would send: only the desk may be contacted, no inline anything
SHOP_CSP = (
    "default-src 'none'; script-src http://desk.test; style-src 'self'; "
    "connect-src http://desk.test ws://desk.test; img-src http://desk.test"
)
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
)


def shop_page(lang: str = "en", team: str = "Support") -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Shop</title></head>'
        '<body><h1>A shop</h1><a id="elsewhere" href="#x">elsewhere</a>'
        f'<script src="{DESK}/static/chat-widget.js" data-team="{team}" data-lang="{lang}" '
        'data-title="Shop chat" defer></script></body></html>'
    )


class FakeDesk:
    """The desk's side of one conversation, as docs/CHAT.md describes it: hello/resume,
    stored messages with seqs, acks, a resend with a known client_id stored once."""

    def __init__(self, context: Any, lang: str = "en") -> None:
        self.context = context
        self.lang = lang
        self.sockets: list[Any] = []
        self.open: list[Any] = []
        self.frames: list[dict[str, Any]] = []  # every frame the widget sent, in order
        self.messages: list[dict[str, Any]] = []  # the stored conversation, seq 1..n
        self.token = "tok-42"
        self.state = "new"
        self.offline: str | None = None
        self.limits = {"max_chars": 2000, "max_upload_bytes": 5_242_880, "messages_per_10s": 10}
        self.ack = True  # answer `message` frames (else: drop them on the floor)
        self.store_silently = False  # store a message but send neither ack nor echo
        self.messy_replay = False  # replay out of order and with a duplicate
        self.searches: list[str] = []
        self.search_status = 200
        self.uploads: list[dict[str, Any]] = []
        self.errors: list[str] = []
        context.route_web_socket(re.compile(r"^ws://desk\.test/ws/chat$"), self._connect)
        context.route(f"{DESK}/static/chat-widget.js", self._widget)
        context.route(re.compile(r"^http://shop\.test/.*"), self._shop)
        context.route(re.compile(r"^http://desk\.test/api/kb/search\?.*"), self._search)
        context.route(f"{DESK}/api/chat/uploads", self._upload)
        context.route(re.compile(r"^http://desk\.test/chat/files/.*"), self._file)

    # -- HTTP
    def _widget(self, route: Any) -> None:
        route.fulfill(body=WIDGET.read_bytes(), content_type="text/javascript")

    def _shop(self, route: Any) -> None:
        route.fulfill(
            body=shop_page(self.lang),
            content_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": SHOP_CSP},
        )

    def _search(self, route: Any) -> None:
        self.searches.append(route.request.url)
        cors = {"Access-Control-Allow-Origin": "*"}
        if self.search_status == 429:
            error = {"error": {"code": "rate_limited", "message": "slow down"}}
            route.fulfill(status=429, json=error, headers={**cors, "Retry-After": "10"})
            return
        results = [
            {
                "id": 1,
                "title": "Returns & refunds",
                "title_html": "<mark>Returns</mark> &amp; refunds",
                "snippet_html": 'Send it <mark>back</mark> within 30 days &lt;b&gt; <img src="x">',
                "url": f"{DESK}/help/en/returns",
                "language": "en",
            },
            {
                "id": 2,
                "title": "Bad link",
                "title_html": "Bad link",
                "snippet_html": "never shown",
                "url": "javascript:alert(1)",
                "language": "en",
            },
            {
                "id": 3,
                "title": "Shipping times",
                "title_html": "Shipping times",
                "snippet_html": "Two to three days.",
                "url": f"{DESK}/help/en/shipping",
                "language": "en",
            },
        ]
        route.fulfill(json={"results": results, "total": 3, "degraded": False}, headers=cors)

    def _upload(self, route: Any) -> None:
        request = route.request
        cors = {"Access-Control-Allow-Origin": "*"}
        if request.method == "OPTIONS":
            route.fulfill(
                status=204, headers={**cors, "Access-Control-Allow-Headers": "X-Chat-Token"}
            )
            return
        self.uploads.append(
            {"token": request.headers.get("x-chat-token"), "body": request.post_data_buffer}
        )
        attachment = {
            "id": 7,
            "filename": "photo.png",
            "content_type": "image/png",
            "size": len(PNG),
            "url": f"/chat/files/7?token={self.token}",
        }
        route.fulfill(json=attachment, headers=cors)

    def _file(self, route: Any) -> None:
        route.fulfill(body=PNG, content_type="image/png")

    # -- the socket
    def _connect(self, ws: Any) -> None:
        self.sockets.append(ws)
        self.open.append(ws)
        ws.on_close(lambda code, reason: ws in self.open and self.open.remove(ws))
        ws.on_message(lambda text: self._frame(ws, json.loads(text)))

    def push(self, frame: dict[str, Any], ws: Any = None) -> None:
        for s in [ws] if ws else list(self.open):
            s.send(json.dumps(frame))

    def welcome(self) -> dict[str, Any]:
        return {
            "type": "welcome",
            "conversation": 42,
            "token": self.token,
            "state": self.state,
            "seq": len(self.messages),
            "agent": None,
            "position": None,
            "wait_seconds": None,
            "limits": self.limits,
            "visitor": {"name": "山田", "email": "yamada@example.com"},
        }

    def add(
        self, sender: str, body: str, client_id: str | None = None, attachment: Any = None
    ) -> dict:
        message = {
            "type": "chat_message",
            "conversation": 42,
            "seq": len(self.messages) + 1,
            "from": sender,
            "name": {"agent": "佐藤", "visitor": "山田"}.get(sender, ""),
            "body": body,
            "client_id": client_id,
            "attachment": attachment,
            "at": "2026-12-07T09:00:00+00:00",
        }
        self.messages.append(message)
        return message

    def agent_says(self, body: str) -> None:
        self.push(self.add("agent", body))

    def _frame(self, ws: Any, frame: dict[str, Any]) -> None:
        self.frames.append(frame)
        kind = frame.get("type")
        if kind == "hello":
            if self.offline:
                self.push({"type": "offline", "reason": self.offline}, ws)
            else:
                self.push(self.welcome(), ws)
        elif kind == "resume":
            if frame["token"] != self.token:
                ws.close(code=4404, reason="unknown token")
                return
            self.push(self.welcome(), ws)
            replay = [m for m in self.messages if m["seq"] > frame["after"]]
            if self.messy_replay and len(replay) > 1:
                replay = [replay[1], replay[0], *replay[1:]]
            for message in replay:
                self.push(message, ws)
            self.push({"type": "synced", "seq": len(self.messages)}, ws)
        elif kind == "message":
            known = next((m for m in self.messages if m["client_id"] == frame["client_id"]), None)
            if known:
                ack = {"type": "ack", "client_id": known["client_id"], "seq": known["seq"]}
                self.push({**ack, "duplicate": True}, ws)
                return
            if not self.ack:
                return
            attachment = None
            if frame.get("attachment"):
                attachment = {
                    "id": frame["attachment"],
                    "filename": "photo.png",
                    "content_type": "image/png",
                    "size": len(PNG),
                    "url": f"/chat/files/{frame['attachment']}?token={self.token}",
                }
            message = self.add("visitor", frame["body"], frame["client_id"], attachment)
            if self.store_silently:
                return
            self.push(
                {
                    "type": "ack",
                    "client_id": frame["client_id"],
                    "seq": message["seq"],
                    "duplicate": False,
                },
                ws,
            )
            self.push(message)
            if self.state == "new":
                self.state = "queued"
                self.push(
                    {"type": "chat_queue", "conversation": 42, "position": 2, "wait_seconds": 150}
                )
        elif kind == "close":
            self.end("visitor")
        elif kind == "leave_message":
            self.push({"type": "message_left", "case_number": 1042}, ws)
        elif kind == "rate":
            self.push({"type": "rated", "score": frame["score"]}, ws)
        elif kind == "transcript":
            self.push({"type": "transcript_queued", "email": frame["email"]}, ws)
        elif kind == "ping":
            self.push({"type": "pong"}, ws)

    def end(self, by: str = "agent") -> None:
        self.state = "closed"
        self.push(
            {"type": "chat_state", "conversation": 42, "state": "closed", "agent": None, "by": by}
        )

    def sent(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("type") == kind]


def wait_until(page: Any, check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll (letting Playwright deliver frames and routes meanwhile) until `check()` is truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        page.wait_for_timeout(25)
    raise AssertionError("timed out waiting for the widget")


@pytest.fixture
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import BrowserContext, expect, sync_playwright

    if not hasattr(BrowserContext, "route_web_socket"):
        pytest.skip("Playwright >= 1.48 is needed to play the desk's WebSocket")
    expect.set_options(timeout=10_000)
    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-background-networking"],
            headless=True,
        )
        yield launched
        launched.close()


class Shop:
    """A browser context on the customer's site with a FakeDesk behind the widget."""

    def __init__(self, browser: Any, lang: str = "en") -> None:
        self.context = browser.new_context(locale="en-US")
        self.desk = FakeDesk(self.context, lang)
        self.problems: list[str] = []
        self.expected: list[str] = []  # console errors a test provokes on purpose
        self.page = self.new_page()

    def new_page(self) -> Any:
        page = self.context.new_page()
        page.on("pageerror", lambda exc: self.problems.append(f"pageerror: {exc}"))
        page.on("console", lambda m: m.type == "error" and self.problems.append(m.text))
        page.goto(SHOP + "/")
        page.wait_for_selector("button.hd-launcher")
        return page

    def start_chat(
        self, page: Any = None, name: str = "山田", email: str = "yamada@example.com"
    ) -> None:
        page = page or self.page
        page.click("button.hd-launcher")
        page.fill("form.hd-prechat input[name=name]", name)
        page.fill("form.hd-prechat input[name=email]", email)
        page.click("form.hd-prechat button[type=submit]")

    def seqs(self, page: Any = None) -> list[int]:
        items = (page or self.page).locator(".hd-messages .hd-msg[data-seq]")
        return [int(s) for s in items.evaluate_all("els => els.map(e => e.dataset.seq)")]

    def stored(self, page: Any = None) -> Any:
        raw = (page or self.page).evaluate("k => localStorage.getItem(k)", KEY)
        return json.loads(raw) if raw else None


@pytest.fixture
def shop(browser: Any) -> Iterator[Shop]:
    s = Shop(browser)
    yield s
    s.context.close()
    problems = [p for p in s.problems if not any(e in p for e in s.expected)]
    assert problems == [], problems  # e.g. a CSP violation or a script error


def test_prechat_hello_send_ack_and_agent_reply(shop: Shop) -> None:
    from playwright.sync_api import expect

    page, desk = shop.page, shop.desk
    expect(page.locator(".hd-panel")).to_be_hidden()
    expect(page.locator("form.hd-prechat")).to_be_hidden()
    shop.start_chat()
    hello = wait_until(page, lambda: desk.sent("hello"))[0]
    assert hello["visitor"]["name"] == "山田"
    assert hello["visitor"]["email"] == "yamada@example.com"
    assert hello["visitor"]["language"] == "en"
    assert hello["visitor"]["id"].startswith("v-")
    assert hello["visitor"]["id"] == page.evaluate("localStorage.getItem('helpdesk.chat.visitor')")
    assert hello["team"] == "Support"
    assert hello["page"] == SHOP + "/"
    expect(page.locator(".hd-ask")).to_have_text(
        "Ask your question and we will connect you with an agent."
    )
    wait_until(page, lambda: (shop.stored() or {}).get("token") == desk.token)

    box = page.locator("textarea.hd-input")
    expect(box).to_be_focused()
    box.fill("Where is my order?")
    box.press("Enter")
    sent = wait_until(page, lambda: desk.sent("message"))[0]
    assert sent["body"] == "Where is my order?" and sent["client_id"]
    mine = page.locator('.hd-msg[data-seq="1"]')
    expect(mine).to_have_attribute("data-from", "visitor")
    expect(mine.locator(".hd-body")).to_have_text("Where is my order?")
    expect(mine).not_to_have_class(re.compile("hd-pending"))
    assert page.locator(".hd-msg").count() == 1  # the ack and the echo are one message
    expect(page.locator(".hd-ask")).to_be_hidden()
    expect(box).to_have_value("")
    assert wait_until(page, lambda: desk.sent("ack"))[-1]["seq"] == 1
    expect(page.locator(".hd-queue")).to_contain_text("2")
    expect(page.locator(".hd-queue")).to_contain_text("3 min")

    box.fill("line one")
    box.press("Shift+Enter")
    box.press_sequentially("line two")
    expect(box).to_have_value("line one\nline two")
    assert len(desk.sent("message")) == 1
    box.fill("")

    desk.push(
        {
            "type": "chat_state",
            "conversation": 42,
            "state": "active",
            "agent": {"name": "佐藤"},
            "by": "agent",
        }
    )
    expect(page.locator(".hd-queue")).to_be_hidden()
    expect(page.locator(".hd-panel")).to_contain_text("佐藤")
    desk.push({"type": "chat_typing", "conversation": 42, "from": "agent", "on": True})
    expect(page.locator(".hd-typing")).to_be_visible()
    desk.agent_says("It ships <b>today</b>.")
    expect(page.locator(".hd-typing")).to_be_hidden()
    reply = page.locator('.hd-msg[data-seq="2"]')
    expect(reply).to_have_attribute("data-from", "agent")
    expect(reply.locator(".hd-body")).to_have_text("It ships <b>today</b>.")  # text, not markup
    expect(page.locator("[aria-live=polite]")).to_contain_text("It ships")
    assert wait_until(page, lambda: desk.sent("ack") and desk.sent("ack")[-1]["seq"] == 2)

    desk.push({"type": "ping"})
    wait_until(page, lambda: desk.sent("pong"))
    desk.push({"type": "error", "code": "rate_limited", "message": "slow", "retry_after": 3})
    expect(page.locator(".hd-error")).to_be_visible()
    assert shop.seqs() == [1, 2]


def test_typing_frames_are_throttled_and_stop_when_idle(shop: Shop) -> None:
    page, desk = shop.page, shop.desk
    shop.start_chat()
    wait_until(page, lambda: desk.sent("hello") and shop.stored())
    page.locator("textarea.hd-input").press_sequentially("abcdefgh", delay=50)
    wait_until(page, lambda: desk.sent("typing"))
    assert [f["on"] for f in desk.sent("typing")] == [True]  # 0.4 s of typing: one frame
    wait_until(page, lambda: len(desk.sent("typing")) == 2, timeout=8)
    assert desk.sent("typing")[-1]["on"] is False


def test_a_reload_replays_the_whole_history_once_in_order(shop: Shop) -> None:
    from playwright.sync_api import expect

    page, desk = shop.page, shop.desk
    for i, sender in enumerate(["visitor", "agent", "visitor", "agent"], start=1):
        desk.add(sender, f"message {i}", client_id=f"c-{i}" if sender == "visitor" else None)
    desk.state = "active"
    desk.messy_replay = True
    page.evaluate(
        "([k, t]) => localStorage.setItem(k, JSON.stringify({token: t, seq: 4}))", [KEY, desk.token]
    )
    for _ in range(2):
        page.reload()
        page.click("button.hd-launcher")
        expect(page.locator(".hd-msg")).to_have_count(4)
        assert shop.seqs() == [1, 2, 3, 4]
        resume = wait_until(page, lambda: desk.sent("resume"))[-1]
        assert resume == {"type": "resume", "token": desk.token, "after": 0}
        wait_until(page, lambda: desk.sent("ack") and desk.sent("ack")[-1]["seq"] == 4)
        expect(page.locator(".hd-msg").nth(3).locator(".hd-body")).to_have_text("message 4")
        expect(page.locator("form.hd-prechat")).to_be_hidden()
        desk.frames.clear()


def test_reconnect_resumes_after_the_last_seq_and_resends_the_outbox(shop: Shop) -> None:
    from playwright.sync_api import expect

    page, desk = shop.page, shop.desk
    shop.start_chat()
    box = page.locator("textarea.hd-input")
    box.fill("first")
    box.press("Enter")
    expect(page.locator('.hd-msg[data-seq="1"]')).to_be_visible()
    desk.agent_says("hello")
    expect(page.locator('.hd-msg[data-seq="2"]')).to_be_visible()

    desk.ack = False  # the network drops: the message never arrives
    box.fill("lost in transit")
    box.press("Enter")
    expect(page.locator(".hd-msg.hd-pending")).to_have_count(1)
    lost = desk.sent("message")[-1]
    desk.ack = True
    desk.sockets[-1].close(code=1011)
    wait_until(page, lambda: len(desk.sockets) == 2, timeout=6)
    resume = wait_until(page, lambda: desk.sent("resume"))[-1]
    assert resume["after"] == 2
    expect(page.locator('.hd-msg[data-seq="3"] .hd-body')).to_have_text("lost in transit")
    assert desk.sent("message")[-1]["client_id"] == lost["client_id"]
    expect(page.locator(".hd-msg.hd-pending")).to_have_count(0)

    desk.store_silently = True  # stored, but the ack is lost with the connection
    box.fill("stored, not acked")
    box.press("Enter")
    wait_until(page, lambda: len(desk.messages) == 4)
    desk.store_silently = False
    desk.sockets[-1].close(code=1011)
    wait_until(page, lambda: len(desk.sent("resume")) == 2, timeout=6)
    assert desk.sent("resume")[-1]["after"] == 3
    expect(page.locator('.hd-msg[data-seq="4"] .hd-body')).to_have_text("stored, not acked")
    expect(page.locator(".hd-msg.hd-pending")).to_have_count(0)
    assert shop.seqs() == [1, 2, 3, 4]
    assert len(desk.messages) == 4  # a resend, if any, was stored once


def test_an_unknown_token_starts_over(shop: Shop) -> None:
    from playwright.sync_api import expect

    page, desk = shop.page, shop.desk
    page.evaluate("k => localStorage.setItem(k, JSON.stringify({token: 'expired', seq: 9}))", KEY)
    page.reload()
    page.click("button.hd-launcher")
    expect(page.locator("form.hd-prechat")).to_be_visible()
    assert shop.stored() is None
    page.wait_for_timeout(1200)
    assert len(desk.sockets) == 1  # no reconnect after 4404


def test_a_second_tab_shows_the_same_conversation(shop: Shop) -> None:
    from playwright.sync_api import expect

    page, desk = shop.page, shop.desk
    shop.start_chat()
    page.locator("textarea.hd-input").fill("from tab one")
    page.locator("textarea.hd-input").press("Enter")
    expect(page.locator('.hd-msg[data-seq="1"]')).to_be_visible()

    other = shop.new_page()
    other.click("button.hd-launcher")
    expect(other.locator('.hd-msg[data-seq="1"] .hd-body')).to_have_text("from tab one")
    desk.agent_says("to both tabs")
    for p in (page, other):
        expect(p.locator('.hd-msg[data-seq="2"] .hd-body')).to_have_text("to both tabs")
        assert shop.seqs(p) == [1, 2]


def test_offline_leave_a_message(shop: Shop) -> None:
    from playwright.sync_api import expect

    page, desk = shop.page, shop.desk
    desk.offline = "closed_hours"
    shop.start_chat(email="")
    form = page.locator("form.hd-offline")
    expect(form).to_be_visible()
    expect(form.locator("input[name=name]")).to_have_value("山田")
    form.locator("textarea").fill("Please call me back.")
    form.locator("button[type=submit]").click()
    page.wait_for_timeout(300)
    assert desk.sent("leave_message") == []  # the email is required
    form.locator("input[name=email]").fill("yamada@example.com")
    form.locator("button[type=submit]").click()
    left = wait_until(page, lambda: desk.sent("leave_message"))[0]
    assert left == {
        "type": "leave_message",
        "name": "山田",
        "email": "yamada@example.com",
        "body": "Please call me back.",
    }
    expect(page.locator(".hd-panel")).to_contain_text("#1042")
    expect(form).to_be_hidden()
    assert shop.stored() is None


def test_csat_transcript_and_a_new_chat(shop: Shop) -> None:
    from playwright.sync_api import expect

    page, desk = shop.page, shop.desk
    shop.start_chat()
    page.locator("textarea.hd-input").fill("hi")
    page.locator("textarea.hd-input").press("Enter")
    expect(page.locator('.hd-msg[data-seq="1"]')).to_be_visible()
    page.click("button.hd-end")
    wait_until(page, lambda: desk.sent("close"))
    expect(page.locator(".hd-csat")).to_be_visible()
    expect(page.locator("textarea.hd-input")).to_be_hidden()
    expect(page.locator("button.hd-end")).to_be_hidden()
    expect(page.locator(".hd-csat button[data-score]")).to_have_count(5)

    transcript = page.locator("form.hd-transcript")
    expect(transcript.locator("input[name=email]")).to_have_value("yamada@example.com")
    transcript.locator("input[name=email]").fill("other@example.com")
    transcript.locator("button[type=submit]").click()
    assert wait_until(page, lambda: desk.sent("transcript"))[0]["email"] == "other@example.com"
    expect(transcript).to_contain_text("other@example.com")

    page.locator(".hd-csat textarea").fill("Quick and kind")
    page.click('.hd-csat button[data-score="5"]')
    rate = wait_until(page, lambda: desk.sent("rate"))[0]
    assert rate == {"type": "rate", "score": 5, "comment": "Quick and kind"}
    expect(page.locator(".hd-csat")).to_be_hidden()
    new = page.locator("button.hd-new")
    expect(new).to_be_visible()
    new.click()
    expect(page.locator("form.hd-prechat")).to_be_visible()
    assert shop.stored() is None
    expect(page.locator(".hd-msg")).to_have_count(0)


def test_faq_suggestions_are_plain_text_links_and_stop_on_429(shop: Shop) -> None:
    from playwright.sync_api import expect

    page, desk = shop.page, shop.desk
    shop.start_chat()
    box = page.locator("textarea.hd-input")
    box.press_sequentially("return policy", delay=20)
    links = page.locator(".hd-suggestions a")
    expect(links).to_have_count(2)  # the javascript: link is dropped
    assert len(desk.searches) == 1  # debounced
    assert "q=return%20policy" in desk.searches[0]
    assert "lang=en" in desk.searches[0] and "limit=3" in desk.searches[0]
    expect(links.first).to_have_text("Returns & refunds")
    expect(links.first).to_have_attribute("href", f"{DESK}/help/en/returns")
    expect(links.first).to_have_attribute("target", "_blank")
    suggestions = page.locator(".hd-suggestions")
    expect(suggestions).to_contain_text("Send it back within 30 days <b>")
    assert suggestions.locator("mark, img, b").count() == 0

    desk.search_status = 429
    shop.expected.append("status of 429")
    box.press_sequentially(" please", delay=20)
    wait_until(page, lambda: len(desk.searches) == 2)
    expect(links).to_have_count(0)
    box.press_sequentially(" now", delay=20)
    page.wait_for_timeout(600)
    assert len(desk.searches) == 2  # paused after the 429
    box.press("Enter")
    expect(page.locator(".hd-suggestions")).to_be_hidden()


def test_upload_an_image_and_refuse_a_large_file(shop: Shop) -> None:
    from playwright.sync_api import expect

    page, desk = shop.page, shop.desk
    desk.limits = {**desk.limits, "max_upload_bytes": 1000}
    shop.start_chat()
    wait_until(page, lambda: shop.stored())
    picker = page.locator(".hd-compose input[type=file]")
    picker.set_input_files(
        {"name": "big.bin", "mimeType": "application/octet-stream", "buffer": b"x" * 2000}
    )
    expect(page.locator(".hd-error")).to_be_visible()
    assert desk.uploads == []

    picker.set_input_files({"name": "photo.png", "mimeType": "image/png", "buffer": PNG})
    wait_until(page, lambda: desk.uploads)
    assert desk.uploads[0]["token"] == desk.token
    assert b'name="file"' in desk.uploads[0]["body"]
    sent = wait_until(page, lambda: desk.sent("message"))[0]
    assert sent["attachment"] == 7 and sent["body"] == ""
    image = page.locator('.hd-msg[data-seq="1"] img')
    expect(image).to_have_attribute("src", f"{DESK}/chat/files/7?token={desk.token}")


def test_max_chars_from_welcome(shop: Shop) -> None:
    from playwright.sync_api import expect

    shop.desk.limits = {**shop.desk.limits, "max_chars": 10}
    shop.start_chat()
    expect(shop.page.locator("textarea.hd-input")).to_have_attribute("maxlength", "10")


def test_keyboard_dialog_and_escape(shop: Shop) -> None:
    from playwright.sync_api import expect

    page = shop.page
    launcher = page.locator("button.hd-launcher")
    expect(launcher).to_have_attribute("aria-expanded", "false")
    launcher.focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Shop chat")
    expect(dialog).to_be_visible()
    expect(page.locator("form.hd-prechat input[name=name]")).to_be_focused()
    page.keyboard.type("Yamada")
    page.keyboard.press("Tab")
    expect(page.locator("form.hd-prechat input[name=email]")).to_be_focused()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(launcher).to_be_focused()
    expect(launcher).to_have_attribute("aria-expanded", "false")
    assert page.evaluate("document.getElementById('helpdesk-chat').shadowRoot !== null")


def test_japanese_text(browser: Any) -> None:
    from playwright.sync_api import expect

    shop = Shop(browser, lang="ja")
    try:
        page = shop.page
        expect(page.locator("button.hd-launcher")).to_have_attribute("aria-label", "チャットを開く")
        shop.start_chat()
        expect(page.locator(".hd-ask")).to_contain_text("担当者におつなぎします")
        assert wait_until(page, lambda: shop.desk.sent("hello"))[0]["visitor"]["language"] == "ja"
        assert shop.problems == []
    finally:
        shop.context.close()
