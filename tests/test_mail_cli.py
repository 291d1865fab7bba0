"""The mail commands as an operator runs them: `helpdesk mail smtp` and `helpdesk mail imap`
in their own processes, on the test database, with the outbox worker of `helpdesk serve`
delivering to a real SMTP sink."""

from __future__ import annotations

import asyncio
import smtplib
import socket
import subprocess
import time

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import func, select

from helpdesk.models import Case, Interaction, MailboxCursor, OutboxMail
from tests.conftest import free_port, helpdesk_process, process_output, serve_process
from tests.imap_server import DovecotServer, is_installed
from tests.mailcorpus import load


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}: {process_output(proc)}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


async def eventually(check, within: float = 20.0):
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.2)


async def test_helpdesk_mail_smtp_files_what_an_mta_delivers(database_url, db, tmp_path):
    port = free_port()
    with helpdesk_process(database_url, tmp_path, "mail", "smtp", "--port", str(port)) as proc:
        wait_port(port, proc)

        def send() -> dict:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
                return smtp.sendmail(
                    "sender@example.jp", ["support@localhost"], load("iso2022jp.eml")
                )

        assert await asyncio.to_thread(send) == {}
    async with db.unit_of_work() as session:
        case = await session.scalar(select(Case))
    assert case is not None and case.channel == "email"
    assert case.subject == "お問い合わせ：請求書について"


@pytest.mark.skipif(not is_installed(), reason="dovecot-imapd is not installed")
async def test_helpdesk_mail_imap_polls_and_remembers_where_it_stopped(database_url, db, tmp_path):
    with DovecotServer(tmp_path / "imap") as dovecot:
        dovecot.append(load("gmail_reply.eml"))
        dovecot.append(load("shift_jis.eml"))
        url = dovecot.url()

        async def emails() -> int:
            async with db.unit_of_work() as session:
                return int(
                    await session.scalar(
                        select(func.count())
                        .select_from(Interaction)
                        .where(Interaction.kind == "email")
                    )
                )

        with helpdesk_process(
            database_url, tmp_path, "mail", "imap", "--poll-seconds", "0.5", HELPDESK_IMAP_URL=url
        ):
            assert await eventually(lambda: _at_least(emails, 2)) == 2
        async with db.unit_of_work() as session:
            cursor = await session.scalar(select(MailboxCursor))
        assert cursor.last_uid == 2 and "password" not in cursor.key
        assert all("\\Flagged" in dovecot.flags(uid) for uid in dovecot.uids())
        # A restart fetches only what is new, although the old mail is still there.
        dovecot.append(load("euc_jp.eml"))
        with helpdesk_process(
            database_url, tmp_path, "mail", "imap", "--poll-seconds", "0.5", HELPDESK_IMAP_URL=url
        ):
            assert await eventually(lambda: _at_least(emails, 3)) == 3
        assert await emails() == 3


async def _at_least(counter, n: int) -> int | None:
    value = await counter()
    return value if value >= n else None


class Sink:
    def __init__(self) -> None:
        self.received: list[bytes] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.received.append(envelope.original_content or envelope.content)
        return "250 OK"


async def test_serve_runs_the_outbox_worker_that_sends_acknowledgements(database_url, db, tmp_path):
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        with serve_process(
            database_url,
            tmp_path,
            HELPDESK_SMTP_URL=f"smtp://127.0.0.1:{controller.port}",
            HELPDESK_MAIL_TOKEN="cli-mail-token",
            HELPDESK_OUTBOX_POLL_SECONDS="0.2",
        ) as base:
            import httpx

            async with httpx.AsyncClient() as client:
                r = await client.post(
                    base + "/api/mail/inbound",
                    content=load("gmail_reply.eml"),
                    headers={"Authorization": "Bearer cli-mail-token"},
                )
            assert r.status_code == 201, r.text

            async def sent() -> bool:
                async with db.unit_of_work() as session:
                    row = await session.scalar(select(OutboxMail))
                return row is not None and row.state == "sent"

            assert await eventually(sent)
    finally:
        controller.stop()
    assert len(sink.received) == 1
    assert b"Auto-Submitted: auto-replied" in sink.received[0]
    assert f"[#{r.json()['case_number']}]".encode() in sink.received[0]
