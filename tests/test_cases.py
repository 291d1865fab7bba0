"""Cases over the API: numbering, enforced transitions, notes, attachments, timelines."""

from __future__ import annotations

import hashlib

from sqlalchemy import func, select

from helpdesk.models import Attachment, Case, Interaction, Team


async def _customer(client, staff, name="山田 太郎", phones=("03-1234-5678",)):
    r = await client.post(
        "/api/customers", json={"name": name, "phones": list(phones)}, headers=staff.headers
    )
    assert r.status_code == 201, r.text
    return r.json()


async def _case(client, staff, customer_id, **extra):
    body = {"customer_id": customer_id, "subject": "請求書が届かない", "channel": "phone", **extra}
    r = await client.post("/api/cases", json=body, headers=staff.headers)
    assert r.status_code == 201, r.text
    return r.json()


async def test_cases_get_human_numbers_from_1001_and_their_first_body_on_the_timeline(
    client, agent
):
    c = await _customer(client, agent)
    first = await _case(client, agent, c["id"], body="電話: 請求書の再送を希望")
    second = await _case(client, agent, c["id"], channel="email", priority="high")
    assert (first["number"], second["number"]) == (1001, 1002)
    assert first["status"] == "new" and first["priority"] == "normal"
    assert second["channel"] == "email" and second["priority"] == "high"

    r = await client.get(f"/api/cases/{first['id']}", headers=agent.headers)
    assert r.status_code == 200
    detail = r.json()
    assert detail["customer"]["name"] == "山田 太郎"
    assert [e["kind"] for e in detail["timeline"]] == ["call"]
    assert detail["timeline"][0]["text"] == "電話: 請求書の再送を希望"


async def test_case_creation_validates_every_field_and_writes_nothing(client, agent, db):
    c = await _customer(client, agent)
    bad = [
        ({"subject": "x", "channel": "phone"}, 422, "customer_id"),
        ({"customer_id": c["id"], "channel": "phone"}, 422, "subject"),
        ({"customer_id": c["id"], "subject": "x", "channel": "fax"}, 422, "channel"),
        ({"customer_id": c["id"], "subject": "x", "priority": "asap"}, 422, "priority"),
        ({"customer_id": c["id"], "subject": "x", "tags": "vip"}, 422, "tags"),
        ({"customer_id": c["id"], "subject": "x" * 301}, 422, "subject"),
        ({"customer_id": "one", "subject": "x"}, 422, "customer_id"),
        ({"customer_id": c["id"], "subject": "x", "assignee_id": 999_999}, 422, "assignee_id"),
        ({"customer_id": 999_999, "subject": "x"}, 422, "customer_id"),
    ]
    for body, status, field in bad:
        r = await client.post("/api/cases", json=body, headers=agent.headers)
        assert r.status_code == status, (body, r.text)
        error = r.json()["error"]
        assert error["message"]
        if field:
            assert error["field"] == field, (body, error)
    async with db.unit_of_work() as session:
        assert await session.scalar(select(func.count()).select_from(Case)) == 0
        assert await session.scalar(select(func.count()).select_from(Interaction)) == 0


async def test_malformed_bodies_get_a_precise_400(client, agent):
    h = {**agent.headers, "Content-Type": "application/json"}
    for raw, words in [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe{}", "not valid UTF-8"),
        (b"[1, 2]", "JSON object"),
    ]:
        r = await client.post("/api/cases", content=raw, headers=h)
        assert r.status_code == 400
        assert words in r.json()["error"]["message"]
    r = await client.post("/api/cases", content=b"subject=x", headers=agent.headers)
    assert r.status_code == 400
    assert "application/json" in r.json()["error"]["message"]
    r = await client.post("/api/cases", content=b"{" + b" " * 2_000_000 + b"}", headers=h)
    assert r.status_code == 413
    assert "larger than" in r.json()["error"]["message"]


async def test_illegal_transition_is_409_listing_the_allowed_ones(client, agent):
    c = await _customer(client, agent)
    case = await _case(client, agent, c["id"])
    url = f"/api/cases/{case['id']}"
    for status in ("open", "solved", "closed"):
        r = await client.patch(url, json={"status": status}, headers=agent.headers)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == status
    assert r.json()["closed_at"] is not None
    r = await client.patch(url, json={"status": "open"}, headers=agent.headers)
    assert r.status_code == 409
    error = r.json()["error"]
    assert error["message"] == "a closed case cannot become open"
    assert error["allowed"] == []

    other = await _case(client, agent, c["id"])
    r = await client.patch(
        f"/api/cases/{other['id']}", json={"status": "closed"}, headers=agent.headers
    )
    assert r.status_code == 409
    assert r.json()["error"]["allowed"] == ["open", "pending", "on_hold", "solved"]


async def test_patch_changes_fields_and_records_each_change_on_the_timeline(
    client, agent, make_staff, db
):
    async with db.unit_of_work() as session:
        team = Team(name="Billing")
        session.add(team)
        await session.flush()
        team_id = team.id
    other = await make_staff("agent", extension="202")
    c = await _customer(client, agent)
    case = await _case(client, agent, c["id"])
    r = await client.patch(
        f"/api/cases/{case['id']}",
        json={
            "priority": "urgent",
            "assignee_id": other.user.id,
            "team_id": team_id,
            "tags": ["VIP", "請求", "vip", " "],
        },
        headers=agent.headers,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["priority"] == "urgent"
    assert body["assignee_id"] == other.user.id
    assert body["team_id"] == team_id
    assert body["tags"] == ["vip", "請求"]
    assert body["status"] == "open"  # assigning a new case opens it

    r = await client.get(f"/api/cases/{case['id']}", headers=agent.headers)
    system = [e for e in r.json()["timeline"] if e["kind"] == "system"]
    assert len(system) == 1
    assert "priority normal → urgent" in system[0]["text"]
    assert system[0]["author"]["id"] == agent.user.id

    # A patch that changes nothing adds nothing.
    r = await client.patch(
        f"/api/cases/{case['id']}", json={"priority": "urgent"}, headers=agent.headers
    )
    assert r.status_code == 200
    r = await client.get(f"/api/cases/{case['id']}", headers=agent.headers)
    assert len([e for e in r.json()["timeline"] if e["kind"] == "system"]) == 1


async def test_patch_rejects_unknown_fields_bad_values_and_missing_cases(client, agent):
    c = await _customer(client, agent)
    case = await _case(client, agent, c["id"])
    url = f"/api/cases/{case['id']}"
    for body, status, field in [
        ({"subject": "renamed"}, 422, "subject"),
        ({}, 422, "status"),
        ({"status": "archived"}, 422, "status"),
        ({"priority": "asap"}, 422, "priority"),
        ({"team_id": 424242}, 422, "team_id"),
        ({"tags": ["x" * 51]}, 422, "tags"),
    ]:
        r = await client.patch(url, json=body, headers=agent.headers)
        assert r.status_code == status, (body, r.text)
        assert r.json()["error"]["field"] == field
    r = await client.patch("/api/cases/987654", json={"status": "open"}, headers=agent.headers)
    assert r.status_code == 404
    r = await client.get("/api/cases/987654", headers=agent.headers)
    assert r.status_code == 404
    r = await client.get(url, headers=agent.headers)
    assert r.json()["status"] == "new" and r.json()["priority"] == "normal"


async def test_case_list_filters_and_pages(client, agent, make_staff):
    other = await make_staff("agent")
    c = await _customer(client, agent)
    ids = [(await _case(client, agent, c["id"], subject=f"件名 {n}"))["id"] for n in range(7)]
    await client.patch(
        f"/api/cases/{ids[0]}", json={"assignee_id": agent.user.id}, headers=agent.headers
    )
    await client.patch(
        f"/api/cases/{ids[1]}", json={"assignee_id": other.user.id}, headers=agent.headers
    )

    async def listed(**params):
        r = await client.get("/api/cases", params=params, headers=agent.headers)
        assert r.status_code == 200, r.text
        return r.json()

    assert [x["id"] for x in (await listed(assignee="me"))["items"]] == [ids[0]]
    assert len((await listed(assignee="unassigned"))["items"]) == 5
    assert [
        x["id"] for x in (await listed(status="open", assignee=str(other.user.id)))["items"]
    ] == [ids[1]]
    assert [x["id"] for x in (await listed(q="件名 3"))["items"]] == [ids[3]]

    seen, cursor = [], None
    while True:
        page = await listed(limit=3, **({"cursor": cursor} if cursor else {}))
        seen += [x["id"] for x in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == len(set(seen))

    for params, field in [
        ({"status": "lost"}, "status"),
        ({"limit": "0"}, "limit"),
        ({"cursor": "zz"}, "cursor"),
    ]:
        r = await client.get("/api/cases", params=params, headers=agent.headers)
        assert r.status_code == 422, (params, r.text)
        assert r.json()["error"]["field"] == field


async def test_notes_with_attachments_are_stored_by_content_hash_and_downloadable(
    client, agent, settings, db
):
    c = await _customer(client, agent)
    case = await _case(client, agent, c["id"])
    pdf = b"%PDF-1.4 invoice " + bytes(range(256)) * 10
    r = await client.post(
        f"/api/cases/{case['id']}/notes",
        data={"body": "<b>請求書</b>を添付<script>alert(1)</script>"},
        files=[
            ("files", ("請求書.pdf", pdf, "application/pdf")),
            ("files", ("../../etc/passwd", b"same bytes twice", "text/plain")),
        ],
        headers=agent.headers,
    )
    assert r.status_code == 201, r.text
    note = r.json()
    assert note["kind"] == "note" and note["direction"] == "internal"
    # A note is plain text, kept verbatim; only email HTML bodies are sanitized (and pages
    # escape text, see test_pages).
    assert note["text"] == "<b>請求書</b>を添付<script>alert(1)</script>"
    assert not note["html"]
    names = [a["filename"] for a in note["attachments"]]
    assert names[0] == "請求書.pdf"
    assert "/" not in names[1] and ".." not in names[1]

    digest = hashlib.sha256(pdf).hexdigest()
    stored = list(settings.attachments_dir.rglob(digest + "*"))
    assert len(stored) == 1 and stored[0].read_bytes() == pdf

    r = await client.get(note["attachments"][0]["url"], headers=agent.headers)
    assert r.status_code == 200
    assert r.content == pdf
    assert r.headers["content-type"] == "application/pdf"
    assert r.headers["content-disposition"].startswith("attachment")
    r = await client.get(note["attachments"][0]["url"])
    assert r.status_code == 401
    r = await client.get("/api/attachments/999999", headers=agent.headers)
    assert r.status_code == 404

    # JSON notes too; an empty one is refused.
    r = await client.post(
        f"/api/cases/{case['id']}/notes", json={"body": "折り返し済み"}, headers=agent.headers
    )
    assert r.status_code == 201
    r = await client.post(
        f"/api/cases/{case['id']}/notes", json={"body": "   "}, headers=agent.headers
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "body"
    r = await client.post("/api/cases/999999/notes", json={"body": "x"}, headers=agent.headers)
    assert r.status_code == 404


async def test_an_oversized_attachment_is_refused_and_the_note_rolled_back(
    client, agent, settings, db
):
    c = await _customer(client, agent)
    case = await _case(client, agent, c["id"])
    big = b"x" * (settings.max_attachment_bytes + 1)
    r = await client.post(
        f"/api/cases/{case['id']}/notes",
        data={"body": "大きすぎる添付"},
        files=[("files", ("big.bin", big, "application/octet-stream"))],
        headers=agent.headers,
    )
    assert r.status_code == 422
    assert (
        r.json()["error"]["message"]
        == "attachment 'big.bin' is 1000001 bytes; the limit is 1000000"
    )
    async with db.unit_of_work() as session:
        notes = await session.scalar(
            select(func.count()).select_from(Interaction).where(Interaction.kind == "note")
        )
        assert notes == 0
        assert await session.scalar(select(func.count()).select_from(Attachment)) == 0


async def test_customer_timeline_merges_every_case_and_channel_newest_first_with_cursor_paging(
    client, agent
):
    c = await _customer(client, agent)
    a = await _case(client, agent, c["id"], channel="phone", body="call 1")
    b = await _case(client, agent, c["id"], channel="email", body="mail 1")
    await _case(client, agent, c["id"], channel="chat", body="chat 1")
    for n in range(4):
        await client.post(
            f"/api/cases/{a['id']}/notes", json={"body": f"note a{n}"}, headers=agent.headers
        )
    await client.post(f"/api/cases/{b['id']}/notes", json={"body": "note b"}, headers=agent.headers)

    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        r = await client.get(
            f"/api/customers/{c['id']}/timeline", params=params, headers=agent.headers
        )
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["items"]) <= 3
        seen += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 8 and len({e["id"] for e in seen}) == 8
    assert {e["kind"] for e in seen} == {"call", "email", "chat", "note"}
    times = [e["occurred_at"] for e in seen]
    assert times == sorted(times, reverse=True)
    assert seen[0]["text"] == "note b"

    r = await client.get(
        f"/api/customers/{c['id']}/timeline", params={"cursor": "!!"}, headers=agent.headers
    )
    assert r.status_code == 422
    r = await client.get("/api/customers/999999/timeline", headers=agent.headers)
    assert r.status_code == 404


async def test_html_bodies_are_sanitized_before_they_are_stored(client, agent, db):
    from helpdesk.interactions import add_interaction

    c = await _customer(client, agent)
    async with db.unit_of_work() as session:
        entry = await add_interaction(
            session,
            customer_id=c["id"],
            kind="email",
            direction="in",
            text="hello",
            html=(
                '<p onclick="steal()">Hi <a href="javascript:alert(1)">x</a>'
                '<a href="https://example.com">ok</a><script>alert(1)</script>'
                '<img src="https://tracker.example/p.gif" onerror="x()"></p>'
            ),
        )
        html = entry.html
    assert "<script" not in html and "onclick" not in html and "onerror" not in html
    assert "javascript:" not in html
    assert '<a href="https://example.com" rel="noopener noreferrer">ok</a>' in html
    r = await client.get(f"/api/customers/{c['id']}/timeline", headers=agent.headers)
    assert r.json()["items"][0]["html"] == html
