"""Server-rendered pages and their htmx fragments, in the viewer's language and timezone."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from helpdesk.interactions import add_interaction
from tests.conftest import PASSWORD


async def _customer(client, agent, **body):
    body = {"name": "山田 太郎", "name_kana": "ヤマダ タロウ", "phones": ["03-1234-5678"], **body}
    r = await client.post("/api/customers", json=body, headers=agent.headers)
    assert r.status_code == 201, r.text
    return r.json()


async def _case(client, agent, customer_id, **extra):
    body = {"customer_id": customer_id, "subject": "請求書が届かない", "channel": "phone", **extra}
    r = await client.post("/api/cases", json=body, headers=agent.headers)
    assert r.status_code == 201, r.text
    return r.json()


HX = {"HX-Request": "true"}


async def test_agent_home_lists_my_cases_and_the_unassigned_queue(client, agent, signed_in):
    r = await client.get("/agent")
    assert r.status_code == 200
    assert "Nothing assigned to you" in r.text and "The queue is empty." in r.text

    c = await _customer(client, agent)
    mine = await _case(client, agent, c["id"], subject="私の案件")
    await _case(client, agent, c["id"], subject="誰かの案件")
    await client.patch(
        f"/api/cases/{mine['id']}", json={"assignee_id": agent.user.id}, headers=agent.headers
    )
    r = await client.get("/agent")
    mine_section, queue_section = r.text.split("Unassigned queue", 1)
    assert "私の案件" in mine_section
    assert "誰かの案件" in queue_section


async def test_customer_search_renders_a_page_and_an_htmx_fragment(client, agent, signed_in):
    c = await _customer(client, agent)
    full = await client.get("/customers", params={"q": "03-1234-5678"})
    assert full.status_code == 200
    assert "<html" in full.text and f'href="/customers/{c["id"]}"' in full.text
    frag = await client.get("/customers", params={"q": "やまだ"}, headers=HX)
    assert frag.status_code == 200
    assert "<html" not in frag.text and "山田 太郎" in frag.text
    none = await client.get("/customers", params={"q": "存在しない名前"}, headers=HX)
    assert "山田" not in none.text
    assert "/customers/new" in none.text  # the empty state offers to create the customer


async def test_customer_search_fragment_pages_with_a_more_link(client, agent, signed_in):
    for n in range(30):
        await _customer(client, agent, name=f"佐藤 {n:02d}", phones=[f"03-5555-{n:04d}"])
    r = await client.get("/customers", params={"q": "佐藤"}, headers=HX)
    assert r.text.count('class="result') >= 25 or r.text.count("/customers/") >= 25
    cursor = re.search(r"cursor=([\w\-=%]+)", r.text)
    assert cursor, "a next-page link is rendered"
    more = await client.get(f"/customers?q=%E4%BD%90%E8%97%A4&cursor={cursor.group(1)}", headers=HX)
    assert more.status_code == 200
    assert "佐藤 00" in more.text or "佐藤 04" in more.text


async def test_customer_page_shows_card_open_cases_and_one_timeline(client, agent, signed_in, db):
    c = await _customer(client, agent, emails=["taro@example.jp"])
    case = await _case(client, agent, c["id"], body="電話で問い合わせ")
    async with db.unit_of_work() as session:
        await add_interaction(
            session, customer_id=c["id"], kind="email", direction="in", text="メール本文",
            subject="請求書について",
        )  # fmt: skip
        await add_interaction(
            session,
            customer_id=c["id"],
            kind="chat",
            direction="in",
            text="<script>x()</script>チャット",
        )
    r = await client.get(f"/customers/{c['id']}")
    assert r.status_code == 200
    html = r.text
    assert "山田 太郎" in html and "ヤマダ タロウ" in html
    assert "03-1234-5678" in html and "taro@example.jp" in html
    assert f"#{case['number']}" in html
    assert "電話で問い合わせ" in html and "メール本文" in html
    assert "&lt;script&gt;x()&lt;/script&gt;チャット" in html and "<script>x()" not in html
    for kind in ("call", "email", "chat"):
        assert f"kind-{kind}" in html
    # newest first: the chat, then the email, then the call
    assert html.index("kind-chat") < html.index("kind-email") < html.index("kind-call")

    r = await client.get("/customers/999999")
    assert r.status_code == 404
    assert "<html" in r.text  # a page, not JSON


async def test_timeline_scrolls_in_pages_of_twenty(client, agent, signed_in, db):
    c = await _customer(client, agent)
    async with db.unit_of_work() as session:
        for n in range(45):
            await add_interaction(
                session,
                customer_id=c["id"],
                kind="note",
                direction="internal",
                text=f"entry {n:02d}",
            )
    page = await client.get(f"/customers/{c['id']}")
    assert page.text.count('class="entry ') == 20
    link = re.search(r'hx-get="(/customers/\d+/timeline\?cursor=[^"]+)"', page.text)
    assert link and 'hx-trigger="revealed"' in page.text
    second = await client.get(link.group(1).replace("&amp;", "&"), headers=HX)
    assert second.text.count('class="entry ') == 20
    assert "entry 24" in second.text and "entry 44" not in second.text
    link = re.search(r'hx-get="(/customers/\d+/timeline\?cursor=[^"]+)"', second.text)
    third = await client.get(link.group(1).replace("&amp;", "&"), headers=HX)
    assert third.text.count('class="entry ') == 5
    assert "hx-get" not in third.text


async def test_case_page_changes_fields_in_place_and_adds_notes(client, agent, signed_in):
    c = await _customer(client, agent)
    case = await _case(client, agent, c["id"])
    page = await client.get(f"/cases/{case['id']}")
    assert page.status_code == 200 and "請求書が届かない" in page.text

    headers = {**HX, "X-CSRF-Token": signed_in}
    r = await client.post(f"/cases/{case['id']}/fields", data={"status": "open"}, headers=headers)
    assert r.status_code == 200 and "<html" not in r.text
    assert r.headers["HX-Trigger"] == "timeline-changed"
    r = await client.post(
        f"/cases/{case['id']}/fields",
        data={"priority": "urgent", "tags": "VIP, 請求"},
        headers=headers,
    )
    assert r.status_code == 200
    api = (await client.get(f"/api/cases/{case['id']}", headers=agent.headers)).json()
    assert (api["status"], api["priority"], api["tags"]) == ("open", "urgent", ["vip", "請求"])

    # An illegal transition is explained in the fragment, and nothing changes.
    r = await client.post(f"/cases/{case['id']}/fields", data={"status": "closed"}, headers=headers)
    assert r.status_code == 200
    assert "cannot become closed" in r.text
    assert "HX-Trigger" not in r.headers

    r = await client.post(
        f"/cases/{case['id']}/notes", data={"body": "<b>折り返し</b>"}, headers=headers
    )
    assert r.status_code == 200 and "&lt;b&gt;折り返し&lt;/b&gt;" in r.text
    r = await client.post(f"/cases/{case['id']}/notes", data={"body": ""}, headers=headers)
    assert r.status_code == 422 and "note is empty" in r.text

    # Without the CSRF token, nothing is accepted.
    r = await client.post(f"/cases/{case['id']}/fields", data={"status": "pending"}, headers=HX)
    assert r.status_code == 403


async def test_new_customer_and_new_case_forms(client, agent, signed_in):
    r = await client.get("/customers/new", params={"phone": "0312345678"})
    assert r.status_code == 200 and 'value="0312345678"' in r.text
    r = await client.post("/customers", data={"csrf_token": signed_in, "name": "", "phone": "03"})
    assert r.status_code == 422 and "name is required" in r.text
    r = await client.post(
        "/customers", data={"csrf_token": signed_in, "name": "鈴木 花子", "phone": "090-1111-2222"}
    )
    assert r.status_code == 303
    customer_path = r.headers["location"]
    customer_id = int(customer_path.rsplit("/", 1)[1])
    r = await client.post(
        "/cases", data={"csrf_token": signed_in, "customer_id": str(customer_id), "subject": ""}
    )
    assert r.status_code == 422 and "subject is required" in r.text
    r = await client.post(
        "/cases",
        data={
            "csrf_token": signed_in,
            "customer_id": str(customer_id),
            "subject": "解約の相談",
            "channel": "phone",
        },
    )
    assert r.status_code == 303
    case = await client.get(r.headers["location"])
    assert "解約の相談" in case.text and "鈴木 花子" in case.text


async def test_japanese_ui_from_accept_language_or_the_users_setting(client, agent, signed_in):
    c = await _customer(client, agent)
    await _case(client, agent, c["id"])
    en = await client.get(f"/customers/{c['id']}", headers={"Accept-Language": "en-US,en;q=0.9"})
    ja = await client.get(f"/customers/{c['id']}", headers={"Accept-Language": "ja-JP,ja;q=0.9"})
    assert '<html lang="en">' in en.text and '<html lang="ja">' in ja.text
    assert "Open cases" in en.text and "Open cases" not in ja.text
    assert "新規" in ja.text  # the status "new"

    r = await client.post(
        "/preferences", data={"csrf_token": signed_in, "language": "ja", "next": "/agent"}
    )
    assert r.status_code == 303 and r.headers["location"] == "/agent"
    ja = await client.get(f"/customers/{c['id']}", headers={"Accept-Language": "en"})
    assert '<html lang="ja">' in ja.text
    r = await client.post(
        "/preferences", data={"csrf_token": signed_in, "timezone": "Mars/Olympus"}
    )
    assert r.status_code == 422


async def test_times_are_shown_in_the_viewers_timezone(client, agent, signed_in, db):
    c = await _customer(client, agent)
    async with db.unit_of_work() as session:
        await add_interaction(
            session, customer_id=c["id"], kind="call", direction="in", text="call",
            occurred_at=datetime(2026, 1, 15, 1, 30, tzinfo=UTC),
        )  # fmt: skip
    en = {"Accept-Language": "en"}
    client.cookies.set("helpdesk_tz", "Asia/Tokyo")
    tokyo = await client.get(f"/customers/{c['id']}", headers=en)
    assert "10:30" in tokyo.text  # 01:30 UTC is 10:30 in Tokyo
    client.cookies.set("helpdesk_tz", "America/New_York")
    ny = await client.get(f"/customers/{c['id']}", headers=en)
    assert "8:30" in ny.text and "Jan 14, 2026" in ny.text  # the evening before, in New York
    # A saved preference wins over the browser's zone.
    await client.post("/preferences", data={"csrf_token": signed_in, "timezone": "Europe/London"})
    london = await client.get(f"/customers/{c['id']}", headers=en)
    assert "1:30" in london.text and "Jan 15, 2026" in london.text


async def test_static_files_and_vendored_htmx_are_served_without_any_cdn(client, db):
    r = await client.get("/static/vendor/htmx-2.0.11.min.js")
    assert r.status_code == 200 and "htmx" in r.text
    r = await client.get("/login")
    assert "https://" not in r.text and "http://" not in r.text.replace('xmlns="http://', "")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"


async def test_case_list_page_filters_by_status_and_mine(client, agent, signed_in):
    c = await _customer(client, agent)
    a = await _case(client, agent, c["id"], subject="自分の案件")
    b = await _case(client, agent, c["id"], subject="解決済みの案件")
    await client.patch(
        f"/api/cases/{a['id']}", json={"assignee_id": agent.user.id}, headers=agent.headers
    )
    await client.patch(f"/api/cases/{b['id']}", json={"status": "solved"}, headers=agent.headers)
    page = await client.get("/cases")
    assert "自分の案件" in page.text and "解決済みの案件" not in page.text
    page = await client.get("/cases", params={"status": "solved"})
    assert "解決済みの案件" in page.text and "自分の案件" not in page.text
    page = await client.get("/cases", params={"status": "", "assignee": "me"})
    assert "自分の案件" in page.text and "解決済みの案件" not in page.text
    page = await client.get("/cases", params={"status": "lost"})
    assert page.status_code == 422 and "status must be open or one of" in page.text
    page = await client.get("/cases", params={"q": "存在しない"})
    assert "No cases match." in page.text


async def test_live_regions_and_the_watch_list_are_in_the_pages(client, agent, signed_in):
    c = await _customer(client, agent)
    case = await _case(client, agent, c["id"])
    home = await client.get("/agent")
    assert 'data-watch="queue"' in home.text and 'id="agent-queues"' in home.text
    assert 'id="team-presence"' not in home.text  # agents do not see the wall
    page = await client.get(f"/cases/{case['id']}")
    assert f'data-watch="case:{case["id"]}"' in page.text
    assert "case-changed from:body" in page.text
    page = await client.get(f"/customers/{c['id']}")
    assert f'data-watch="customer:{c["id"]}"' in page.text


async def test_supervisors_see_team_presence_on_their_home(client, supervisor, agent):
    page = await client.get("/login")
    csrf = page.cookies["helpdesk_csrf"]
    await client.post(
        "/login", data={"email": supervisor.user.email, "password": PASSWORD, "csrf_token": csrf}
    )
    home = await client.get("/agent", headers={"Accept-Language": "ja"})
    assert 'id="team-presence"' in home.text
    assert f'data-presence-of="{agent.user.id}" data-status="offline"' in home.text
    assert "オフライン" in home.text


async def test_a_form_post_over_the_limit_or_without_a_length_is_refused_unread(
    client, agent, signed_in
):
    from helpdesk.web.app import FORM_BYTES

    huge = {"csrf_token": signed_in, "body": "x" * (FORM_BYTES + 1)}
    r = await client.post("/cases/1/notes", data=huge)
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"

    async def chunks():
        yield b"csrf_token=" + signed_in.encode() + b"&body=hello"

    r = await client.post(
        "/cases/1/notes",
        content=chunks(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 411 and r.json()["error"]["code"] == "length_required"
