"""Email on the agent's screen: replying (API and the case page's composer), who may reply,
and the timeline's folded quotes, original message and attachment list."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from helpdesk.models import Case, Interaction, OutboxMail

MAIL = {"Authorization": "Bearer test-mail-token"}
HX = {"HX-Request": "true"}

GMAIL_REPLY = (
    b"From: Hanako Yamada <hanako@example.jp>\r\n"
    b"To: support@localhost\r\n"
    b"Subject: Re: invoice\r\n"
    b"Message-ID: <reply-1@mail.gmail.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="M"\r\n'
    b"\r\n--M\r\n"
    b"Content-Type: text/plain; charset=UTF-8\r\n\r\n"
    b"Thanks, the invoice arrived now.\r\n"
    b"\r\n"
    b"On Mon, Nov 23, 2026 at 9:00 AM Support <support@localhost> wrote:\r\n"
    b"> Could you check again?\r\n"
    b"> Best regards\r\n"
    b"\r\n--M\r\n"
    b"Content-Type: application/pdf\r\n"
    b'Content-Disposition: attachment; filename="scan.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\n"
    b"JVBERi0xLjQKJcfsj6IK\r\n"
    b"--M--\r\n"
)


async def _inbound(client, raw: bytes) -> dict:
    r = await client.post("/api/mail/inbound", content=raw, headers=MAIL)
    assert r.status_code in (200, 201), r.text
    return r.json()


async def test_an_agent_replies_by_api_and_the_case_becomes_theirs(client, agent, db):
    case = await _inbound(client, GMAIL_REPLY)
    r = await client.post(
        f"/api/cases/{case['case_id']}/replies",
        json={"body": "ご確認ありがとうございます。", "channel": "email"},
        headers=agent.headers,
    )
    assert r.status_code == 201, r.text
    reply = r.json()
    assert reply["to"] == ["hanako@example.jp"]
    assert reply["outbox_state"] == "pending"
    async with db.unit_of_work() as session:
        row = await session.scalar(
            select(OutboxMail).where(OutboxMail.message_id == reply["message_id"])
        )
        stored = await session.get(Case, case["case_id"])
    assert b"In-Reply-To: <reply-1@mail.gmail.com>" in row.raw
    assert f"[#{case['case_number']}]".encode() in row.raw
    # An unassigned case becomes the replying agent's, so no colleague answers it twice.
    assert stored.assignee_id == agent.user.id and stored.status == "open"


async def test_an_agent_cannot_answer_a_colleagues_case_but_a_supervisor_can(
    client, agent, make_staff
):
    case = await _inbound(client, GMAIL_REPLY)
    colleague = await make_staff("agent", name="Colleague")
    supervisor = await make_staff("supervisor")
    r = await client.post(
        f"/api/cases/{case['case_id']}/replies", json={"body": "mine"}, headers=agent.headers
    )
    assert r.status_code == 201
    r = await client.post(
        f"/api/cases/{case['case_id']}/replies", json={"body": "me too"}, headers=colleague.headers
    )
    assert r.status_code == 403
    assert r.json()["error"]["message"].startswith(f"case #{case['case_number']} is assigned to")
    r = await client.post(
        f"/api/cases/{case['case_id']}/replies", json={"body": "ok"}, headers=supervisor.headers
    )
    assert r.status_code == 201


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"channel": "email"}, 422, "body is required"),
        ({"body": "hi", "channel": "fax"}, 422, "channel must be email"),
        ({"body": "hi", "to": "someone@example.jp"}, 422, "to must be a list"),
        ({"body": "hi", "to": ["not an address"]}, 422, "not an email address"),
    ],
)
async def test_bad_replies_get_precise_errors(client, agent, body, status, message):
    case = await _inbound(client, GMAIL_REPLY)
    r = await client.post(f"/api/cases/{case['case_id']}/replies", json=body, headers=agent.headers)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]["message"]


async def test_replying_to_a_missing_case_or_without_login_fails(client, agent):
    r = await client.post("/api/cases/999999/replies", json={"body": "x"}, headers=agent.headers)
    assert r.status_code == 404
    r = await client.post("/api/cases/1/replies", json={"body": "x"})
    assert r.status_code == 401


async def test_the_case_page_folds_quotes_and_lists_attachments(client, signed_in, db):
    case = await _inbound(client, GMAIL_REPLY)
    page = await client.get(f"/cases/{case['case_id']}")
    assert page.status_code == 200
    html = page.text
    timeline = html.partition('<ol class="timeline">')[2]
    visible, _, folded = timeline.partition('<details class="folded">')
    assert "Thanks, the invoice arrived now." in visible
    assert "Could you check again?" in folded and "Could you check again?" not in visible
    assert re.search(r"scan\.pdf</a> <small>application/pdf · \d+ B</small>", html)
    # The composer addresses the sender and offers the quote, folded.
    assert "hanako@example.jp" in html
    assert 'name="include_quote"' in html


async def test_the_composer_sends_with_the_quote_and_refreshes_the_timeline(client, signed_in, db):
    case = await _inbound(client, GMAIL_REPLY)
    r = await client.post(
        f"/cases/{case['case_id']}/replies",
        data={"csrf_token": signed_in, "body": "届いてよかったです。", "include_quote": "1"},
        headers=HX,
    )
    assert r.status_code == 200, r.text
    assert "届いてよかったです。" in r.text
    async with db.unit_of_work() as session:
        out = await session.scalar(
            select(Interaction).where(Interaction.kind == "email", Interaction.direction == "out")
        )
    assert out.text.startswith("届いてよかったです。")
    assert "> Thanks, the invoice arrived now." in out.text
    # Without the CSRF token the form is refused.
    r = await client.post(f"/cases/{case['case_id']}/replies", data={"body": "x"}, headers=HX)
    assert r.status_code == 403


async def test_a_malformed_message_is_shown_with_its_original(client, signed_in):
    raw = (
        b"From: broken@example.jp\r\nSubject: broken\r\nMessage-ID: <bad@example.jp>\r\n"
        b'Content-Type: multipart/mixed; boundary="never"\r\n\r\nbody \xff\xfe here\r\n'
    )
    case = await _inbound(client, raw)
    html = (await client.get(f"/cases/{case['case_id']}")).text
    assert "Could not be read cleanly" in html
    assert "Download the original message" in html
