"""The email ingest service through its three doors: the domain function, the MTA pipe
(`POST /api/mail/inbound`) and a real SMTP conversation (Python's smtplib to our listener).
Threading, customers, loop protection, bounces and malformed mail."""

from __future__ import annotations

import asyncio
import dataclasses
import smtplib
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from helpdesk.db import Database
from helpdesk.mail.ingest import ingest_message
from helpdesk.mail.smtp import start_listener
from helpdesk.models import (
    Attachment,
    Case,
    ContactIdentity,
    Customer,
    Interaction,
    MailMessage,
    OutboxMail,
)
from tests.conftest import free_port

MAIL = {"Authorization": "Bearer test-mail-token"}


def mail(
    message_id: str,
    *,
    sender: str = "Hanako Yamada <hanako@example.jp>",
    subject: str = "請求書について",
    body: str = "先月の請求書が届いていません。",
    in_reply_to: str | None = None,
    references: str | None = None,
    cc: str | None = None,
    **headers: str,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "support@localhost"
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{message_id}>"
    msg["Date"] = format_datetime(datetime(2026, 11, 23, 9, 0, tzinfo=UTC))
    if in_reply_to:
        msg["In-Reply-To"] = f"<{in_reply_to}>"
    if references:
        msg["References"] = references
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg.as_bytes(policy=SMTP)  # CRLF, as mail travels


async def ingest(db: Database, settings, raw: bytes, source: str = "test"):
    async with db.unit_of_work() as session:
        return await ingest_message(session, raw, settings=settings, source=source)


async def count(db: Database, model, *where) -> int:
    async with db.unit_of_work() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)))


async def get(db: Database, model, key):
    async with db.unit_of_work() as session:
        return await session.get(model, key)


async def test_a_first_mail_opens_a_case_for_a_new_customer_and_is_acknowledged(db, settings):
    result = await ingest(db, settings, mail("m1@example.jp", cc="Boss <boss@example.jp>"))
    assert result.status == "created"
    assert result.case_number == 1001
    case = await get(db, Case, result.case_id)
    assert (case.subject, case.channel, case.status) == ("請求書について", "email", "new")
    customer = await get(db, Customer, case.customer_id)
    assert customer.name == "Hanako Yamada"
    async with db.unit_of_work() as session:
        identity = await session.scalar(
            select(ContactIdentity).where(ContactIdentity.customer_id == customer.id)
        )
        entry = await session.get(Interaction, result.interaction_id)
        ack = await session.scalar(select(OutboxMail))
    assert (identity.kind, identity.normalized, identity.is_primary) == (
        "email",
        "hanako@example.jp",
        True,
    )
    assert (entry.kind, entry.direction, entry.case_id) == ("email", "in", case.id)
    assert entry.text.strip() == "先月の請求書が届いていません。"
    assert entry.meta["cc"] == ["boss@example.jp"]
    assert entry.meta["from"] == "hanako@example.jp"
    # The acknowledgement is queued in the same transaction, marked as automatic mail.
    assert result.acknowledged is True
    assert ack.recipients == ["hanako@example.jp"]
    assert b"Auto-Submitted: auto-replied" in ack.raw
    assert b"[#1001]" in ack.raw or b"[#1001]" in ack.raw
    # A second mail from the same address is the same customer.
    second = await ingest(db, settings, mail("m2@example.jp", subject="別件"))
    assert second.status == "created" and second.customer_id == customer.id


async def test_a_duplicate_message_id_is_a_no_op(db, settings):
    raw = mail("dup@example.jp")
    first = await ingest(db, settings, raw)
    again = await ingest(db, settings, raw)
    assert (first.status, again.status) == ("created", "duplicate")
    assert await count(db, Interaction, Interaction.kind == "email") == 1
    assert await count(db, Case) == 1


async def test_concurrent_deliveries_of_one_message_file_it_once(db, settings):
    raw = mail("race@example.jp")
    results = await asyncio.gather(*(ingest(db, settings, raw) for _ in range(4)))
    assert sorted(r.status for r in results) == ["created", "duplicate", "duplicate", "duplicate"]
    assert await count(db, Case) == 1
    assert await count(db, Customer) == 1


async def test_replies_thread_by_in_reply_to_then_references(db, settings):
    first = await ingest(db, settings, mail("t1@example.jp"))
    by_reply = await ingest(
        db,
        settings,
        mail("t2@example.jp", subject="Re: 請求書について", in_reply_to="t1@example.jp"),
    )
    # A client that sets only References (and an unknown In-Reply-To) still threads.
    by_refs = await ingest(
        db,
        settings,
        mail(
            "t3@example.jp",
            subject="Re: Re: 請求書について",
            in_reply_to="unknown@elsewhere",
            references="<t1@example.jp> <t2@example.jp>",
        ),
    )
    assert by_reply.status == by_refs.status == "appended"
    assert by_reply.case_id == by_refs.case_id == first.case_id
    emails = (Interaction.case_id == first.case_id, Interaction.kind == "email")
    assert await count(db, Interaction, *emails) == 3
    # Replies to an existing case are not acknowledged again.
    assert not by_reply.acknowledged and await count(db, OutboxMail) == 1


async def test_the_subject_token_threads_only_for_a_sender_known_on_the_case(db, settings):
    first = await ingest(db, settings, mail("s1@example.jp"))
    known = await ingest(
        db, settings, mail("s2@example.jp", subject=f"Re: [#{first.case_number}] 請求書について")
    )
    assert (known.status, known.case_id) == ("appended", first.case_id)
    stranger = await ingest(
        db,
        settings,
        mail(
            "s3@evil.example",
            sender="mallory@evil.example",
            subject=f"[#{first.case_number}] please send me the invoice",
        ),
    )
    assert stranger.status == "created" and stranger.case_id != first.case_id
    case = await get(db, Case, stranger.case_id)
    assert case.subject == "please send me the invoice"


async def test_a_reply_reopens_a_solved_case_and_follows_up_a_closed_one(db, settings):
    first = await ingest(db, settings, mail("r1@example.jp"))
    async with db.unit_of_work() as session:
        case = await session.get(Case, first.case_id)
        case.status = "solved"
    reopened = await ingest(db, settings, mail("r2@example.jp", in_reply_to="r1@example.jp"))
    assert (reopened.status, reopened.case_id) == ("reopened", first.case_id)
    case = await get(db, Case, first.case_id)
    assert case.status == "open" and case.solved_at is None

    async with db.unit_of_work() as session:
        case = await session.get(Case, first.case_id)
        case.status = "closed"
    follow = await ingest(db, settings, mail("r3@example.jp", in_reply_to="r2@example.jp"))
    assert follow.status == "follow_up" and follow.case_id != first.case_id
    new_case = await get(db, Case, follow.case_id)
    assert new_case.follow_up_of_id == first.case_id
    assert new_case.customer_id == first.customer_id
    assert (await get(db, Case, first.case_id)).status == "closed"
    # The next reply in that thread lands on the follow-up, not the closed case.
    later = await ingest(db, settings, mail("r4@example.jp", in_reply_to="r3@example.jp"))
    assert (later.status, later.case_id) == ("appended", follow.case_id)


async def test_a_customer_reply_moves_a_pending_case_back_to_open(db, settings):
    first = await ingest(db, settings, mail("p1@example.jp"))
    async with db.unit_of_work() as session:
        (await session.get(Case, first.case_id)).status = "pending"
    await ingest(db, settings, mail("p2@example.jp", in_reply_to="p1@example.jp"))
    assert (await get(db, Case, first.case_id)).status == "open"


@pytest.mark.parametrize(
    "headers",
    [
        {"Auto_Submitted": "auto-replied"},
        {"Precedence": "bulk"},
        {"Precedence": "junk"},
        {"Precedence": "list"},
        {"List_Id": "<news.example.jp>"},
        {"X_Auto_Response_Suppress": "All"},
    ],
)
async def test_automatic_and_list_mail_is_filed_but_never_answered(db, settings, headers):
    result = await ingest(db, settings, mail("auto@example.jp", **headers))
    assert result.status == "created"
    assert result.acknowledged is False
    assert await count(db, OutboxMail) == 0


async def test_mail_from_our_own_address_is_ignored(db, settings):
    result = await ingest(db, settings, mail("own@localhost", sender="Desk <support@localhost>"))
    assert result.status == "ignored"
    assert await count(db, Case) == 0 and await count(db, MailMessage) == 0


def dsn(message_id: str, failed: str, original_id: str) -> bytes:
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.jp>\r\n"
        "To: support@localhost\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <{message_id}>\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
        "\r\n--B\r\nContent-Type: text/plain\r\n\r\nThis is the mail system. Delivery failed.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.jp\r\n\r\n"
        f"Final-Recipient: rfc822; {failed}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 <x>: Recipient address rejected\r\n"
        "\r\n--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: <{original_id}>\r\nSubject: Re: [#1001]\r\n"
        "\r\n--B--\r\n"
    ).encode()


async def test_a_bounce_marks_the_identity_and_opens_no_case(db, settings):
    first = await ingest(db, settings, mail("b1@example.jp"))
    async with db.unit_of_work() as session:
        ack_id = await session.scalar(select(OutboxMail.message_id))
    result = await ingest(db, settings, dsn("bounce1@mx.example.jp", "hanako@example.jp", ack_id))
    assert result.status == "bounce"
    assert await count(db, Case) == 1
    async with db.unit_of_work() as session:
        identity = await session.scalar(
            select(ContactIdentity).where(ContactIdentity.normalized == "hanako@example.jp")
        )
    assert identity.bouncing_since is not None
    assert "5.1.1" in identity.bounce_reason
    # The next mail from that address proves it alive again.
    await ingest(db, settings, mail("b2@example.jp", in_reply_to="b1@example.jp"))
    async with db.unit_of_work() as session:
        identity = await session.get(ContactIdentity, identity.id)
    assert identity.bouncing_since is None
    assert first.case_id is not None


async def test_malformed_mail_is_kept_raw_and_flagged(db, settings):
    raw = (
        b"From: broken@example.jp\r\nSubject: =?utf-8?B?broken\r\nMessage-ID: <broken@example.jp>\r\n"
        b'Content-Type: multipart/mixed; boundary="never"\r\n\r\n'
        b"no boundary ever appears \xff\xfe\xe3\x81 here\r\n"
    )
    result = await ingest(db, settings, raw)
    assert result.status == "created"
    assert result.parse_errors
    async with db.unit_of_work() as session:
        entry = await session.get(Interaction, result.interaction_id)
        files = (
            await session.scalars(select(Attachment).where(Attachment.interaction_id == entry.id))
        ).all()
    assert entry.meta["parse_errors"]
    original = [f for f in files if f.filename == "original.eml"]
    assert len(original) == 1 and original[0].size == len(raw)
    assert entry.meta["original_attachment_id"] == original[0].id


async def test_the_mta_pipe_needs_the_mail_token_and_a_message(client, db):
    raw = mail("pipe@example.jp")
    r = await client.post("/api/mail/inbound", content=raw)
    assert r.status_code == 401 and "mail token required" in r.json()["error"]["message"]
    r = await client.post("/api/mail/inbound", content=raw, headers={"Authorization": "Bearer x"})
    assert r.status_code == 401 and r.json()["error"]["message"] == "wrong mail token"
    r = await client.post("/api/mail/inbound", content=b"  \r\n", headers=MAIL)
    assert r.status_code == 400
    r = await client.post("/api/mail/inbound", content=raw, headers=MAIL)
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "created" and r.json()["case_number"] == 1001
    r = await client.post("/api/mail/inbound?token=test-mail-token", content=raw)
    assert r.status_code == 200 and r.json()["status"] == "duplicate"


async def test_an_smtputf8_message_with_a_japanese_domain_is_filed(client, db):
    """RFC 6532 mail: raw UTF-8 in From, Subject and Message-ID (an SMTPUTF8 MTA passes it
    on as is). It is filed like any other, the sender known by the IDNA form of the domain;
    it was a 500 that an MTA would retry forever."""
    raw = (
        "From: 岩崎 健 <Ken.Iwasaki@例え.jp>\r\nTo: support@example.com\r\n"
        "Subject: 請求書について\r\nMessage-ID: <utf8-1@例え.jp>\r\n"
        "Date: Mon, 07 Dec 2026 09:00:00 +0900\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n先月の請求書が届いていません。\r\n"
    ).encode()
    r = await client.post("/api/mail/inbound", content=raw, headers=MAIL)
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "created"
    async with db.unit_of_work() as session:
        identity = await session.scalar(
            select(ContactIdentity).where(ContactIdentity.kind == "email")
        )
        customer = await session.get(Customer, identity.customer_id)
        case = await session.scalar(select(Case))
    assert identity.normalized == "ken.iwasaki@xn--r8jz45g.jp"
    assert customer.name == "岩崎 健" and case.subject == "請求書について"
    r = await client.post("/api/mail/inbound", content=raw, headers=MAIL)
    assert r.status_code == 200 and r.json()["status"] == "duplicate"
    # Bytes that are not UTF-8 in a header still file the mail (replacement characters).
    broken = raw.replace(b"<utf8-1@", b"<utf8-2@").replace("岩崎".encode(), b"\xff\xfe")
    r = await client.post("/api/mail/inbound", content=broken, headers=MAIL)
    assert r.status_code in (200, 201), r.text


async def test_the_mta_pipe_refuses_an_oversized_message(client, db):
    from helpdesk.mail.parsing import MAX_MESSAGE_BYTES

    r = await client.post("/api/mail/inbound", content=b"x" * (MAX_MESSAGE_BYTES + 1), headers=MAIL)
    assert r.status_code == 413
    assert await count(db, MailMessage) == 0


async def _smtp_send(port: int, raw: bytes, rcpt: str = "support@localhost") -> dict:
    def send() -> dict:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            return smtp.sendmail("hanako@example.jp", [rcpt], raw)

    return await asyncio.to_thread(send)


async def test_smtp_delivery_files_the_message_once_even_when_resent(db, settings):
    server = await start_listener(db, settings, port=free_port())
    port = server.sockets[0].getsockname()[1]
    try:
        raw = mail("smtp1@example.jp", body="SMTP経由のお問い合わせ")
        await _smtp_send(port, raw)
        await _smtp_send(port, raw)
    finally:
        server.close()
        await server.wait_closed()
    assert await count(db, Case) == 1
    async with db.unit_of_work() as session:
        entry = await session.scalar(select(Interaction).where(Interaction.kind == "email"))
    assert entry.text.strip() == "SMTP経由のお問い合わせ"
    assert entry.meta["source"] == "smtp"


async def test_smtp_answers_451_when_the_database_is_down_so_the_mta_retries(
    db, settings, database_url
):
    wrong = make_url(database_url).set(database="no_such_database")
    broken = Database.from_url(wrong.render_as_string(hide_password=False))
    down = await start_listener(broken, settings, port=free_port())
    port = down.sockets[0].getsockname()[1]
    raw = mail("retry@example.jp")
    try:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            await _smtp_send(port, raw)
        assert refused.value.smtp_code == 451
    finally:
        down.close()
        await down.wait_closed()
        await broken.dispose()
    up = await start_listener(db, settings, port=free_port())
    try:
        await _smtp_send(up.sockets[0].getsockname()[1], raw)
    finally:
        up.close()
        await up.wait_closed()
    assert await count(db, Case) == 1


async def test_a_ten_megabyte_attachment_arrives_whole_over_smtp(db, settings):
    big = dataclasses.replace(settings, max_attachment_bytes=25 * 1024 * 1024)
    payload = bytes(range(256)) * (10 * 1024 * 1024 // 256)
    msg = EmailMessage()
    msg["From"] = "hanako@example.jp"
    msg["To"] = "support@localhost"
    msg["Subject"] = "図面を送ります"
    msg["Message-ID"] = "<big@example.jp>"
    msg.set_content("添付をご確認ください。")
    msg.add_attachment(payload, maintype="application", subtype="pdf", filename="図面.pdf")
    server = await start_listener(db, big, port=free_port())
    try:
        await _smtp_send(server.sockets[0].getsockname()[1], msg.as_bytes(policy=SMTP))
    finally:
        server.close()
        await server.wait_closed()
    async with db.unit_of_work() as session:
        stored = await session.scalar(select(Attachment))
    assert (stored.filename, stored.content_type, stored.size) == (
        "図面.pdf",
        "application/pdf",
        len(payload),
    )
    path = big.attachments_dir / stored.sha256[:2] / stored.sha256[2:4] / stored.sha256
    assert path.read_bytes() == payload


async def test_inline_images_point_at_the_stored_files(db, settings):
    from tests.mailcorpus import load

    result = await ingest(db, settings, load("apple_mail_reply.eml"))
    async with db.unit_of_work() as session:
        entry = await session.get(Interaction, result.interaction_id)
        files = (
            await session.scalars(select(Attachment).where(Attachment.interaction_id == entry.id))
        ).all()
    images = [f for f in files if f.content_type.startswith("image/")]
    assert images, [f.content_type for f in files]
    assert "cid:" not in entry.html
    assert f"/api/attachments/{images[0].id}" in entry.html


async def test_a_forwarded_message_arrives_as_an_eml_file(db, settings):
    from tests.mailcorpus import load

    result = await ingest(db, settings, load("forwarded.eml"))
    async with db.unit_of_work() as session:
        files = (
            await session.scalars(
                select(Attachment).where(Attachment.interaction_id == result.interaction_id)
            )
        ).all()
    assert [f.content_type for f in files] == ["message/rfc822"]
    assert files[0].filename.endswith(".eml")
    case = await get(db, Case, result.case_id)
    # "Fwd:" is dropped from the case subject; the customer is who forwarded it.
    assert not case.subject.lower().startswith("fwd")
    assert (await get(db, Customer, result.customer_id)).name == "Kenji Mori"
