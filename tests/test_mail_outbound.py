"""Outbound mail: message building, replies queued with their interaction in one
transaction, threading from the case's Message-IDs, and the outbox worker delivering to a
real SMTP server (aiosmtpd) through outages, rejections and concurrent workers."""

from __future__ import annotations

import asyncio
import dataclasses
import email
import email.policy
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import func, select, update

from helpdesk.errors import Conflict, InvalidInput, NotFound
from helpdesk.mail import outbound
from helpdesk.mail.outbound import OutboxWorker, SmtpRelay
from helpdesk.models import (
    Case,
    ContactIdentity,
    Customer,
    Interaction,
    MailMessage,
    OutboxMail,
)
from tests.conftest import free_port


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


class Sink:
    """An SMTP server's handler that keeps every accepted envelope and refuses some
    recipients with a permanent error."""

    def __init__(self, refuse: tuple[str, ...] = ()) -> None:
        self.refuse = set(refuse)
        self.received: list[tuple[str, list[str], bytes]] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # type: ignore[no-untyped-def]
        if address in self.refuse:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        self.received.append(
            (envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
        )
        return "250 2.0.0 queued"

    def message_ids(self) -> list[str]:
        return [parse(raw)["Message-ID"].strip("<>") for _, _, raw in self.received]


@contextmanager
def smtp_sink(port: int, sink: Sink) -> Iterator[Sink]:
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def relay(port: int) -> SmtpRelay:
    return SmtpRelay("127.0.0.1", port, timeout=5.0, local_hostname="desk.test")


@pytest.fixture
def mail_settings(settings):  # type: ignore[no-untyped-def]
    return dataclasses.replace(settings, support_address="support@desk.example")


async def _case(db, *, email_address="taro@example.jp", bouncing=False, subject="印刷できない"):  # type: ignore[no-untyped-def]
    async with db.unit_of_work() as session:
        customer = Customer(name="山田 太郎", search_text="山田 太郎")
        session.add(customer)
        await session.flush()
        if email_address:
            session.add(
                ContactIdentity(
                    customer_id=customer.id,
                    kind="email",
                    raw_value=email_address,
                    normalized=email_address.lower(),
                    is_primary=True,
                    bouncing_since=datetime(2026, 11, 1, tzinfo=UTC) if bouncing else None,
                    bounce_reason="550 5.1.1 user unknown" if bouncing else None,
                )
            )
        case = Case(customer_id=customer.id, subject=subject, channel="email", status="new")
        session.add(case)
        await session.flush()
        await session.refresh(case)
        return case


async def _inbound(db, case, message_id, *, sender="taro@example.jp", at=None):  # type: ignore[no-untyped-def]
    """An inbound mail on the case as ingest leaves it: the interaction and its Message-ID."""
    async with db.unit_of_work() as session:
        entry = Interaction(
            customer_id=case.customer_id,
            case_id=case.id,
            kind="email",
            direction="in",
            text="hello",
            meta={"from": sender, "message_id": message_id, "reply_to": []},
            occurred_at=at or datetime.now(UTC),
        )
        session.add(entry)
        await session.flush()
        session.add(
            MailMessage(
                message_id=message_id,
                direction="in",
                case_id=case.id,
                interaction_id=entry.id,
                sender=sender,
            )
        )


async def _reply(db, settings, case, text="ご連絡ありがとうございます。", **kw):  # type: ignore[no-untyped-def]
    async with db.unit_of_work() as session:
        return await outbound.reply_to_case(
            session, settings, case_id=case.id, author_id=None, text=text, **kw
        )


async def _outbox(db) -> list[OutboxMail]:  # type: ignore[no-untyped-def]
    async with db.unit_of_work() as session:
        return list((await session.scalars(select(OutboxMail).order_by(OutboxMail.id))).all())


async def _make_due(db) -> None:  # type: ignore[no-untyped-def]
    async with db.unit_of_work() as session:
        await session.execute(
            update(OutboxMail)
            .where(OutboxMail.state == "pending")
            .values(next_attempt_at=func.now() - timedelta(seconds=1))
        )


# -- the relay URL ------------------------------------------------------------------------


def test_relay_urls_give_host_port_tls_mode_and_decoded_credentials():
    relay = SmtpRelay.parse("smtp://desk%40example.com:p%40ss%2Fw0rd@mail.example.com:587")
    assert (relay.host, relay.port, relay.implicit_tls) == ("mail.example.com", 587, False)
    assert (relay.username, relay.password) == ("desk@example.com", "p@ss/w0rd")
    assert "p@ss" not in repr(relay)
    assert SmtpRelay.parse("smtps://relay.example.com").port == 465
    assert SmtpRelay.parse("smtps://relay.example.com").implicit_tls is True
    assert SmtpRelay.parse("smtp://localhost").username is None
    assert SmtpRelay.parse("smtp://localhost").port == 25


@pytest.mark.parametrize(
    "url",
    ["", "http://mail.example.com", "smtp://", "smtp://host:99999", "smtp://host:x", "smtp://u@h"],
)
def test_bad_relay_urls_are_refused_clearly(url):
    with pytest.raises(ValueError, match="SMTP URL"):
        SmtpRelay.parse(url)


def test_a_bad_relay_url_error_never_shows_the_password():
    with pytest.raises(ValueError) as info:
        SmtpRelay.parse("http://user:secret@host")
    assert "secret" not in str(info.value)


# -- building messages --------------------------------------------------------------------


def test_message_ids_are_unique_and_in_the_support_domain():
    ids = {outbound.new_message_id("Support@Desk.Example") for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.endswith("@desk.example") and "<" not in i for i in ids)


def _built(**kw):  # type: ignore[no-untyped-def]
    args = {
        "sender_name": "サポート窓口",
        "sender_address": "support@desk.example",
        "to": ["taro@example.jp"],
        "subject": "Re: 印刷できない",
        "case_number": 1001,
        "text": "ご連絡ありがとうございます。\n<b>再起動</b>をお試しください。",
        "html": None,
        "message_id": "m2@desk.example",
        "in_reply_to": "m1@example.jp",
        "references": ["m0@example.jp"],
        **kw,
    }
    return outbound.build_message(**args)


def test_a_reply_carries_threading_headers_and_both_parts_and_round_trips_japanese():
    msg = parse(outbound.message_bytes(_built()))
    assert msg["Message-ID"] == "<m2@desk.example>"
    assert msg["In-Reply-To"] == "<m1@example.jp>"
    assert msg["References"] == "<m0@example.jp> <m1@example.jp>"
    assert msg["Subject"] == "Re: [#1001] 印刷できない"
    assert msg["From"].addresses[0].display_name == "サポート窓口"
    assert msg["MIME-Version"] == "1.0" and msg["Date"].datetime is not None
    assert msg.get_content_type() == "multipart/alternative"
    assert msg.get_body(("plain",)).get_content().startswith("ご連絡ありがとうございます。")
    html = msg.get_body(("html",)).get_content()
    assert "&lt;b&gt;再起動&lt;/b&gt;" in html and "<br>" in html
    assert "Auto-Submitted" not in msg
    raw = outbound.message_bytes(_built())
    assert raw.isascii(), "headers RFC 2047, bodies base64: nothing 8-bit on the wire"
    assert "サポート" not in raw.decode() and b"\r\n" in raw


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Re: [#1001] 印刷できない", "Re: [#1001] 印刷できない"),
        ("印刷できない [#1001]", "印刷できない [#1001]"),
        ("Re: RE: 印刷できない", "Re: RE: [#1001] 印刷できない"),
        ("Order [#999] late", "[#1001] Order [#999] late"),
    ],
)
def test_the_case_token_is_in_the_subject_exactly_once(subject, expected):
    msg = parse(outbound.message_bytes(_built(subject=subject)))
    assert msg["Subject"] == expected
    assert msg["Subject"].count("[#1001]") == 1


def test_references_keep_the_root_and_the_latest_ids():
    refs = [f"r{i}@x" for i in range(40)]
    msg = _built(references=refs, in_reply_to="r39@x")
    ids = str(msg["References"]).split()
    assert len(ids) == outbound.MAX_REFERENCES
    assert ids[0] == "<r0@x>" and ids[-1] == "<r39@x>" and ids[1] == "<r21@x>"


def test_an_acknowledgement_style_message_suppresses_auto_responses():
    msg = _built(auto_submitted="auto-replied", html="<p>hi</p>")
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["X-Auto-Response-Suppress"] == "All"
    assert msg.get_body(("html",)).get_content() == "<p>hi</p>\n"


# -- replies ------------------------------------------------------------------------------


async def test_a_reply_writes_interaction_outbox_and_message_id_together(db, mail_settings):
    case = await _case(db)
    reply = await _reply(
        db, mail_settings, case, html="<p onclick='x()'>ご連絡<script>1</script></p>"
    )
    assert (reply.kind, reply.direction, reply.case_id) == ("email", "out", case.id)
    assert reply.html == "<p>ご連絡</p>"
    assert reply.meta["to"] == ["taro@example.jp"] and reply.meta["outbox_state"] == "pending"
    [row] = await _outbox(db)
    assert row.message_id == reply.meta["message_id"]
    assert (row.interaction_id, row.sender, row.recipients) == (
        reply.id,
        "support@desk.example",
        ["taro@example.jp"],
    )
    assert (row.state, row.attempts) == ("pending", 0)
    msg = parse(row.raw)
    assert msg["Subject"] == "Re: [#1001] 印刷できない"
    assert msg["To"].addresses[0].addr_spec == "taro@example.jp"
    assert "<p>ご連絡</p>" in msg.get_body(("html",)).get_content()
    async with db.unit_of_work() as session:
        sent = await session.scalar(select(MailMessage).where(MailMessage.direction == "out"))
        stored = await session.get(Case, case.id)
    assert (sent.message_id, sent.case_id, sent.interaction_id) == (
        row.message_id,
        case.id,
        reply.id,
    )
    assert stored.status == "new", "a reply leaves the status to the SLA rules"
    assert stored.updated_at > case.updated_at


async def test_a_failure_later_in_the_transaction_leaves_no_reply_no_mail_no_message_id(
    db, mail_settings
):
    case = await _case(db)
    with pytest.raises(RuntimeError):
        async with db.unit_of_work() as session:
            await outbound.reply_to_case(
                session, mail_settings, case_id=case.id, author_id=None, text="hi"
            )
            raise RuntimeError("boom")
    async with db.unit_of_work() as session:
        for model in (Interaction, OutboxMail, MailMessage):
            assert await session.scalar(select(func.count()).select_from(model)) == 0


async def test_a_reply_threads_onto_the_latest_inbound_mail_and_goes_to_its_sender(
    db, mail_settings
):
    case = await _case(db)
    t0 = datetime.now(UTC) - timedelta(hours=2)
    await _inbound(db, case, "first@example.jp", at=t0)
    await _reply(db, mail_settings, case, text="one")
    await _inbound(
        db,
        case,
        "second@example.jp",
        sender="Taro Work <taro@work.example>",
        at=t0 + timedelta(hours=1),
    )
    reply = await _reply(db, mail_settings, case, text="two")
    first_reply, second_reply = await _outbox(db)
    msg = parse(second_reply.raw)
    assert msg["In-Reply-To"] == "<second@example.jp>"
    assert str(msg["References"]).split() == [
        "<first@example.jp>",
        f"<{first_reply.message_id}>",
        "<second@example.jp>",
    ]
    assert second_reply.recipients == ["taro@work.example"] == reply.meta["to"]


async def test_explicit_recipients_win_and_are_validated(db, mail_settings):
    case = await _case(db)
    reply = await _reply(db, mail_settings, case, to=["Hanako <hanako@example.jp>"])
    assert reply.meta["to"] == ["hanako@example.jp"]
    with pytest.raises(InvalidInput) as info:
        await _reply(db, mail_settings, case, to=["not an address"])
    assert info.value.field == "to"


async def test_a_bouncing_address_is_refused_with_the_reason(db, mail_settings):
    case = await _case(db, bouncing=True)
    with pytest.raises(Conflict, match=r"taro@example.jp .*bouncing.*user unknown"):
        await _reply(db, mail_settings, case)
    assert await _outbox(db) == []


async def test_a_case_with_no_address_to_reply_to_is_refused(db, mail_settings):
    case = await _case(db, email_address=None)
    with pytest.raises(InvalidInput, match="no email address") as info:
        await _reply(db, mail_settings, case)
    assert info.value.field == "to"


async def test_empty_or_oversized_replies_and_unknown_cases_are_refused(db, mail_settings):
    case = await _case(db)
    with pytest.raises(InvalidInput, match="empty"):
        await _reply(db, mail_settings, case, text=" \n ")
    with pytest.raises(InvalidInput, match="longer"):
        await _reply(db, mail_settings, case, text="x" * 200_001)
    with pytest.raises(NotFound):
        async with db.unit_of_work() as session:
            await outbound.reply_to_case(
                session, mail_settings, case_id=999_999, author_id=None, text="hi"
            )


# -- acknowledgements ---------------------------------------------------------------------


async def _ack(db, settings, case, subject, language=None, enabled=True):  # type: ignore[no-untyped-def]
    async with db.unit_of_work() as session:
        return await outbound.acknowledge(
            session,
            settings,
            case=case,
            customer_address="taro@example.jp",
            inbound_message_id="in1@example.jp",
            inbound_subject=subject,
            language=language,
            enabled=enabled,
        )


async def test_a_new_email_case_is_acknowledged_in_the_customers_language(db, mail_settings):
    case = await _case(db)
    row = await _ack(db, mail_settings, case, "プリンターが動かない")
    msg = parse(row.raw)
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["X-Auto-Response-Suppress"] == "All"
    assert msg["Subject"] == "Re: [#1001] プリンターが動かない"
    assert msg["In-Reply-To"] == "<in1@example.jp>"
    assert "受付番号: #1001" in msg.get_body(("plain",)).get_content()

    english = await _ack(db, mail_settings, case, "Printer broken")
    assert "case #1001" in parse(english.raw).get_body(("plain",)).get_content()
    japanese = await _ack(db, mail_settings, case, "Printer broken", language="ja")
    assert "受付番号" in parse(japanese.raw).get_body(("plain",)).get_content()


async def test_acknowledgements_switched_off_or_to_bouncing_addresses_send_nothing(
    db, mail_settings
):
    case = await _case(db)
    assert await _ack(db, mail_settings, case, "hi", enabled=False) is None
    bouncing = await _case(db, email_address="jiro@example.jp", bouncing=True)
    async with db.unit_of_work() as session:
        none = await outbound.acknowledge(
            session,
            mail_settings,
            case=bouncing,
            customer_address="Jiro@Example.jp",
            inbound_message_id="x@y",
            inbound_subject="hi",
            language=None,
        )
    assert none is None
    assert await _outbox(db) == []


# -- the worker ---------------------------------------------------------------------------


async def test_the_worker_delivers_the_exact_bytes_and_marks_them_sent(db, mail_settings, relay):
    case = await _case(db)
    reply = await _reply(db, mail_settings, case)
    [queued] = await _outbox(db)
    with smtp_sink(relay.port, Sink()) as sink:
        assert await OutboxWorker(db, relay).send_due() == 1
        assert await OutboxWorker(db, relay).send_due() == 0
    assert sink.received == [("support@desk.example", ["taro@example.jp"], queued.raw)]
    [row] = await _outbox(db)
    assert (row.state, row.attempts, row.last_error) == ("sent", 1, None)
    assert row.sent_at is not None
    async with db.unit_of_work() as session:
        entry = await session.get(Interaction, reply.id)
    assert entry.meta["outbox_state"] == "sent" and "error" not in entry.meta


async def test_a_relay_outage_delays_mail_and_it_is_delivered_once_when_the_relay_returns(
    db, mail_settings, relay
):
    case = await _case(db)
    reply = await _reply(db, mail_settings, case)
    worker = OutboxWorker(db, relay, base_delay=60.0)
    before = datetime.now(UTC)
    assert await worker.send_due() == 0  # nothing listens on the port
    [row] = await _outbox(db)
    assert (row.state, row.attempts) == ("pending", 1)
    assert row.next_attempt_at >= before + timedelta(seconds=60)
    assert "127.0.0.1" in row.last_error
    async with db.unit_of_work() as session:
        entry = await session.get(Interaction, reply.id)
    assert entry.meta["outbox_state"] == "pending" and entry.meta["error"]

    with smtp_sink(relay.port, Sink()) as sink:
        assert await worker.send_due() == 0, "not due yet: the backoff holds"
        await _make_due(db)
        assert await worker.send_due() == 1
        await _make_due(db)
        assert await worker.send_due() == 0
    assert sink.message_ids() == [row.message_id]
    [row] = await _outbox(db)
    assert (row.state, row.attempts, row.last_error) == ("sent", 2, None)


async def test_a_permanent_rejection_fails_the_mail_and_tells_the_agent(db, mail_settings, relay):
    case = await _case(db)
    reply = await _reply(db, mail_settings, case, to=["nobody@example.jp"])
    with smtp_sink(relay.port, Sink(refuse=("nobody@example.jp",))) as sink:
        assert await OutboxWorker(db, relay).send_due() == 0
    assert sink.received == []
    [row] = await _outbox(db)
    assert (row.state, row.attempts) == ("failed", 1)
    assert "550 5.1.1 no such user" in row.last_error
    async with db.unit_of_work() as session:
        entry = await session.get(Interaction, reply.id)
    assert entry.meta["outbox_state"] == "failed" and "no such user" in entry.meta["error"]


async def test_temporary_failures_give_up_after_max_attempts(db, mail_settings, relay):
    case = await _case(db)
    await _reply(db, mail_settings, case)
    worker = OutboxWorker(db, relay, max_attempts=3)
    for _ in range(3):
        await _make_due(db)
        await worker.send_due()
    [row] = await _outbox(db)
    assert (row.state, row.attempts) == ("failed", 3)


async def test_one_rejected_mail_does_not_hold_up_the_rest_of_the_batch(db, mail_settings, relay):
    case = await _case(db)
    await _reply(db, mail_settings, case, to=["nobody@example.jp"])
    await _reply(db, mail_settings, case)
    with smtp_sink(relay.port, Sink(refuse=("nobody@example.jp",))) as sink:
        assert await OutboxWorker(db, relay).send_due() == 1
    assert [r.state for r in await _outbox(db)] == ["failed", "sent"]
    assert len(sink.received) == 1


async def test_concurrent_workers_deliver_every_message_exactly_once(db, mail_settings, relay):
    case = await _case(db)
    for i in range(12):
        await _reply(db, mail_settings, case, text=f"reply {i}")
    workers = [OutboxWorker(db, relay, batch=3) for _ in range(2)]
    totals = [0, 0]
    with smtp_sink(relay.port, Sink()) as sink:
        for _ in range(10):
            counts = await asyncio.gather(*(w.send_due() for w in workers))
            totals = [t + c for t, c in zip(totals, counts, strict=True)]
            if sum(counts) == 0:
                break
    assert all(totals), "both workers took part"
    rows = await _outbox(db)
    assert {r.state for r in rows} == {"sent"}
    assert sorted(sink.message_ids()) == sorted(r.message_id for r in rows)
    assert len(sink.received) == 12


async def test_without_a_relay_mail_stays_queued(db, mail_settings, caplog):
    case = await _case(db)
    await _reply(db, mail_settings, case)
    worker = OutboxWorker(db, None)
    assert await worker.send_due() == 0
    assert await worker.send_due() == 0
    assert caplog.text.count("HELPDESK_SMTP_URL") == 1
    [row] = await _outbox(db)
    assert (row.state, row.attempts) == ("pending", 0)


async def test_the_running_worker_sends_until_stopped(db, mail_settings, relay):
    case = await _case(db)
    await _reply(db, mail_settings, case)
    stop = asyncio.Event()
    with smtp_sink(relay.port, Sink()) as sink:
        task = asyncio.create_task(OutboxWorker(db, relay, poll_seconds=0.05).run(stop))
        for _ in range(100):
            if sink.received:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 5)
    assert len(sink.received) == 1
