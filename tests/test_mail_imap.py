"""The IMAP poller against a real Dovecot (tests/imap_server.py) with the real aioimaplib.

What matters is that no message is skipped and none is fetched twice across rounds,
restarts, delivery failures and a recreated mailbox, and that new mail is noticed promptly.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpdesk.mail.imap import (
    DeliveryFailed,
    ImapError,
    ImapPoller,
    MailboxState,
    MailboxUrl,
)
from tests.imap_server import DovecotServer, is_installed

LOGGER = "helpdesk.mail.imap"


@pytest.fixture
def dovecot(tmp_path: Path) -> Iterator[DovecotServer]:
    if not is_installed():
        pytest.skip("dovecot-imapd is not installed: apt-get install dovecot-imapd")
    with DovecotServer(tmp_path) as server:
        yield server


class MemoryStore:
    """StateStore in a dict; copies on the way in and out, as a database would."""

    def __init__(self) -> None:
        self.states: dict[str, MailboxState] = {}
        self.saves = 0

    async def load(self, key: str) -> MailboxState:
        state = self.states.get(key)
        return MailboxState(state.uidvalidity, state.last_uid) if state else MailboxState(None, 0)

    async def save(self, key: str, state: MailboxState) -> None:
        self.states[key] = MailboxState(state.uidvalidity, state.last_uid)
        self.saves += 1


class Inbox:
    """A deliver() that keeps what it got; `fail_on` makes it raise once for that message."""

    def __init__(self, fail_on: bytes | None = None) -> None:
        self.received: list[bytes] = []
        self.fail_on = fail_on
        self.arrived = asyncio.Event()

    async def __call__(self, raw: bytes) -> None:
        if self.fail_on is not None and self.fail_on in raw:
            self.fail_on = None
            raise RuntimeError("database is down")
        self.received.append(raw)
        self.arrived.set()

    async def wait_for(self, count: int, seconds: float) -> None:
        async with asyncio.timeout(seconds):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()


def message(n: int) -> bytes:
    # 8-bit UTF-8, a line that looks like an IMAP literal and a lone ")" — bytes the client
    # must pass through untouched rather than parse.
    return (
        f"From: Kundin {n} <kundin{n}@example.com>\r\n"
        f"To: support@example.test\r\n"
        f"Subject: Bestellung {n} – Lieferung?\r\n"
        f"Message-ID: <msg-{n}@example.com>\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Transfer-Encoding: 8bit\r\n"
        f"\r\n"
        f"Grüße, wo bleibt {{5}} die Ware?\r\n"
        f")\r\n"
    ).encode()


def poller(
    server: DovecotServer,
    inbox: Inbox,
    store: MemoryStore,
    mailbox: str = "INBOX",
    **options: Any,
) -> ImapPoller:
    return ImapPoller(MailboxUrl.parse(server.url(mailbox)), inbox, store, **options)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- one round at a time -----------------------------------------------------------------------


async def test_new_messages_are_delivered_in_order_byte_for_byte(dovecot: DovecotServer) -> None:
    raws = [message(n) for n in range(1, 4)]
    for raw in raws:
        dovecot.append(raw)
    inbox, store = Inbox(), MemoryStore()
    p = poller(dovecot, inbox, store)
    try:
        assert await p.poll_once() == 3
        assert inbox.received == raws
        assert await p.poll_once() == 0
    finally:
        await p.close()
    state = store.states[p.url.key]
    assert state.last_uid == 3 and state.uidvalidity is not None


async def test_messages_are_flagged_not_deleted_and_tracked_by_uid_not_flag(
    dovecot: DovecotServer,
) -> None:
    # Someone already read and flagged this one in their mail client: it is still new to us.
    first = dovecot.append(message(1), flags=(r"\Seen", r"\Flagged"))
    second = dovecot.append(message(2))
    inbox = Inbox()
    p = poller(dovecot, inbox, MemoryStore())
    try:
        assert await p.poll_once() == 2
    finally:
        await p.close()
    assert dovecot.count() == 2
    assert {r"\Flagged", r"\Seen"} <= dovecot.flags(first)
    assert {r"\Flagged", r"\Seen"} <= dovecot.flags(second)


async def test_delete_expunges_delivered_messages(dovecot: DovecotServer) -> None:
    for n in (1, 2):
        dovecot.append(message(n))
    inbox = Inbox()
    p = poller(dovecot, inbox, MemoryStore(), delete=True)
    try:
        assert await p.poll_once() == 2
        dovecot.append(message(3))
        assert await p.poll_once() == 1
    finally:
        await p.close()
    assert inbox.received == [message(1), message(2), message(3)]
    assert dovecot.count() == 0


async def test_a_restart_neither_refetches_nor_skips(dovecot: DovecotServer) -> None:
    store = MemoryStore()
    dovecot.append(message(1))
    dovecot.append(message(2))
    first = Inbox()
    p = poller(dovecot, first, store)
    try:
        assert await p.poll_once() == 2
    finally:
        await p.close()

    # People mark mail unread and unflag it while the helpdesk is down: UIDs still decide.
    with dovecot.session() as imap:
        imap.select("INBOX")
        imap.uid("STORE", "1:*", "-FLAGS", r"(\Seen \Flagged)")
    dovecot.append(message(3))
    dovecot.append(message(4))

    second = Inbox()
    p = poller(dovecot, second, store)
    try:
        assert await p.poll_once() == 2
        assert await p.poll_once() == 0
    finally:
        await p.close()
    assert second.received == [message(3), message(4)]


async def test_a_failed_delivery_is_not_skipped_and_is_retried(dovecot: DovecotServer) -> None:
    for n in (1, 2, 3):
        dovecot.append(message(n))
    store = MemoryStore()
    inbox = Inbox(fail_on=b"<msg-2@example.com>")
    p = poller(dovecot, inbox, store)
    try:
        with pytest.raises(DeliveryFailed) as failed:
            await p.poll_once()
        assert failed.value.uid == 2
        assert inbox.received == [message(1)]
        assert store.states[p.url.key].last_uid == 1
        assert r"\Flagged" not in dovecot.flags(2)

        assert await p.poll_once() == 2
    finally:
        await p.close()
    assert inbox.received == [message(1), message(2), message(3)]
    assert r"\Flagged" in dovecot.flags(2)


async def test_batch_limits_one_round(dovecot: DovecotServer) -> None:
    for n in range(1, 6):
        dovecot.append(message(n))
    inbox = Inbox()
    p = poller(dovecot, inbox, MemoryStore(), batch=2)
    try:
        assert [await p.poll_once() for _ in range(4)] == [2, 2, 1, 0]
    finally:
        await p.close()
    assert inbox.received == [message(n) for n in range(1, 6)]


async def test_mail_expunged_before_we_saw_it_is_skipped_not_refetched(
    dovecot: DovecotServer,
) -> None:
    for n in (1, 2):
        dovecot.append(message(n))
    store, inbox = MemoryStore(), Inbox()
    p = poller(dovecot, inbox, store)
    try:
        assert await p.poll_once() == 2
        # Another client files UID 3 away before the helpdesk looks. `UID SEARCH UID 3:*`
        # now answers with UID 2, the highest there is, which must not be fetched again.
        gone = dovecot.append(message(3))
        with dovecot.session() as imap:
            imap.select("INBOX")
            imap.uid("STORE", str(gone), "+FLAGS", r"(\Deleted)")
            imap.expunge()
        assert await p.poll_once() == 0
        assert store.states[p.url.key].last_uid == gone
        dovecot.append(message(4))
        assert await p.poll_once() == 1
    finally:
        await p.close()
    assert inbox.received == [message(1), message(2), message(4)]


async def test_a_recreated_mailbox_is_fetched_from_the_start(
    dovecot: DovecotServer, caplog: pytest.LogCaptureFixture
) -> None:
    dovecot.create("Support")
    dovecot.append(message(1), mailbox="Support")
    dovecot.append(message(2), mailbox="Support")
    store = MemoryStore()
    inbox = Inbox()
    p = poller(dovecot, inbox, store, mailbox="Support")
    try:
        assert await p.poll_once() == 2
        old_validity = store.states[p.url.key].uidvalidity
        await p.close()

        # Same name, new mailbox: UIDs start at 1 again under a new UIDVALIDITY. Had the
        # poller kept last_uid=2, it would skip the first two.
        dovecot.delete("Support")
        dovecot.create("Support")
        for n in (3, 4, 5):
            dovecot.append(message(n), mailbox="Support")
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            assert await p.poll_once() == 3
    finally:
        await p.close()
    assert inbox.received[2:] == [message(3), message(4), message(5)]
    assert store.states[p.url.key].uidvalidity != old_validity
    assert store.states[p.url.key].last_uid == 3
    assert "UIDVALIDITY changed" in caplog.text


async def test_non_ascii_mailbox_names_are_sent_in_modified_utf7(dovecot: DovecotServer) -> None:
    dovecot.create("Entw&APw-rfe")  # "Entwürfe", as IMAP spells it on the wire
    dovecot.append(message(1), mailbox="Entw&APw-rfe")
    inbox = Inbox()
    p = poller(dovecot, inbox, MemoryStore(), mailbox="Entwürfe")
    try:
        assert await p.poll_once() == 1
    finally:
        await p.close()


async def test_a_wrong_password_is_an_imap_error(dovecot: DovecotServer) -> None:
    url = MailboxUrl.parse(dovecot.url().replace("w0rd", "wrong"))
    p = ImapPoller(url, Inbox(), MemoryStore())
    try:
        with pytest.raises(ImapError, match="LOGIN"):
            await p.poll_once()
    finally:
        await p.close()


# -- the loop ------------------------------------------------------------------------------------


async def stop_within(task: asyncio.Task[None], stop: asyncio.Event, seconds: float) -> None:
    stop.set()
    async with asyncio.timeout(seconds):
        await task


async def test_run_idles_and_picks_up_new_mail_at_once(dovecot: DovecotServer) -> None:
    dovecot.append(message(1))
    inbox, stop = Inbox(), asyncio.Event()
    # Polling every 60 s: only IDLE can bring the second message within the timeout.
    p = poller(dovecot, inbox, MemoryStore(), poll_seconds=60, idle_seconds=60)
    task = asyncio.create_task(p.run(stop))
    try:
        await inbox.wait_for(1, seconds=5)
        await asyncio.sleep(0.3)  # let it settle into IDLE
        await asyncio.to_thread(dovecot.append, message(2))
        await inbox.wait_for(2, seconds=3)
    finally:
        await stop_within(task, stop, 3)
    assert inbox.received == [message(1), message(2)]
    assert r"\Flagged" in dovecot.flags(2)


async def test_run_drains_a_backlog_bigger_than_a_batch(dovecot: DovecotServer) -> None:
    for n in range(1, 6):
        dovecot.append(message(n))
    inbox, stop = Inbox(), asyncio.Event()
    p = poller(dovecot, inbox, MemoryStore(), batch=2, poll_seconds=60, idle_seconds=60)
    task = asyncio.create_task(p.run(stop))
    try:
        await inbox.wait_for(5, seconds=3)  # not after an IDLE or poll interval
    finally:
        await stop_within(task, stop, 3)
    assert inbox.received == [message(n) for n in range(1, 6)]


async def test_run_polls_a_server_without_idle(tmp_path: Path) -> None:
    if not is_installed():
        pytest.skip("dovecot-imapd is not installed: apt-get install dovecot-imapd")
    with DovecotServer(tmp_path, idle=False) as server:
        with server.session() as imap:
            assert "IDLE" not in imap.capability()[1][0].decode().split()
        inbox, stop = Inbox(), asyncio.Event()
        p = poller(server, inbox, MemoryStore(), poll_seconds=0.2)
        task = asyncio.create_task(p.run(stop))
        try:
            await asyncio.to_thread(server.append, message(1))
            await inbox.wait_for(1, seconds=3)
            await asyncio.to_thread(server.append, message(2))
            await inbox.wait_for(2, seconds=3)
        finally:
            await stop_within(task, stop, 3)
    assert inbox.received == [message(1), message(2)]


async def test_run_reconnects_after_the_server_restarts(dovecot: DovecotServer) -> None:
    dovecot.append(message(1))
    inbox, stop = Inbox(), asyncio.Event()
    p = poller(dovecot, inbox, MemoryStore(), idle_seconds=60, backoff_max=0.2)
    task = asyncio.create_task(p.run(stop))
    try:
        await inbox.wait_for(1, seconds=5)
        await asyncio.sleep(0.3)
        await asyncio.to_thread(dovecot.restart)  # drops the idling connection
        await asyncio.to_thread(dovecot.append, message(2))
        await inbox.wait_for(2, seconds=5)
    finally:
        await stop_within(task, stop, 3)
    assert inbox.received == [message(1), message(2)]


async def test_run_retries_a_failed_delivery(dovecot: DovecotServer) -> None:
    dovecot.append(message(1))
    inbox, stop = Inbox(fail_on=b"<msg-1@example.com>"), asyncio.Event()
    p = poller(dovecot, inbox, MemoryStore(), idle_seconds=60, backoff_max=0.1)
    task = asyncio.create_task(p.run(stop))
    try:
        await inbox.wait_for(1, seconds=5)
    finally:
        await stop_within(task, stop, 3)
    assert inbox.received == [message(1)]


async def test_run_backs_off_while_the_server_is_unreachable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = MailboxUrl.parse(f"imap://u:p@127.0.0.1:{free_port()}/INBOX")
    p = ImapPoller(url, Inbox(), MemoryStore(), backoff_max=0.05)
    stop = asyncio.Event()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        task = asyncio.create_task(p.run(stop))
        await asyncio.sleep(0.5)
        assert not task.done()
        await stop_within(task, stop, 1)
    attempts = [r for r in caplog.records if "reconnecting in" in r.getMessage()]
    assert 3 <= len(attempts) <= 15  # kept trying, but with pauses in between
    assert all("u:p@" not in r.getMessage() for r in caplog.records)


async def test_backoff_doubles_up_to_its_maximum(caplog: pytest.LogCaptureFixture) -> None:
    url = MailboxUrl.parse(f"imap://u:p@127.0.0.1:{free_port()}/INBOX")
    p = ImapPoller(url, Inbox(), MemoryStore(), backoff_max=4.0)
    stop = asyncio.Event()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        task = asyncio.create_task(p.run(stop))
        await asyncio.sleep(2.0)  # attempts at 0 s, 1 s and 3 s: two delays logged by then
        await stop_within(task, stop, 1)
    delays = [r.args[-1] for r in caplog.records if "reconnecting in" in r.getMessage()]
    assert delays == [1.0, 2.0]


# -- MailboxUrl ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "imaps://support%40example.com:p%40ss%2Fw0rd@imap.example.com/INBOX",
            ("imaps", "imap.example.com", 993, "support@example.com", "p@ss/w0rd", "INBOX"),
        ),
        ("imap://u:p@Mail.Example.COM", ("imap", "mail.example.com", 143, "u", "p", "INBOX")),
        ("imaps://u:p@host:1993/", ("imaps", "host", 1993, "u", "p", "INBOX")),
        (
            "IMAPS://u:p@host/Support/Tickets%20DE",
            ("imaps", "host", 993, "u", "p", "Support/Tickets DE"),
        ),
        ("imap://u:p@[::1]:1143/INBOX", ("imap", "::1", 1143, "u", "p", "INBOX")),
        ("imap://u:p:q@host", ("imap", "host", 143, "u", "p:q", "INBOX")),
    ],
)
def test_mailbox_url_parses(url: str, expected: tuple[object, ...]) -> None:
    parsed = MailboxUrl.parse(url)
    assert (
        parsed.scheme,
        parsed.host,
        parsed.port,
        parsed.user,
        parsed.password,
        parsed.mailbox,
    ) == expected


def test_mailbox_url_key_and_repr_leave_out_the_password() -> None:
    url = MailboxUrl.parse("imaps://support%40example.com:s3cret@imap.example.com/INBOX")
    assert url.key == "imaps://support%40example.com@imap.example.com:993/INBOX"
    assert "s3cret" not in repr(url)
    assert MailboxUrl.parse("imap://u:p@[::1]/INBOX").key == "imap://u@[::1]:143/INBOX"
    # Spelled differently, same mailbox: same key, so the same UID state.
    assert MailboxUrl.parse("imaps://u:x@HOST:993").key == MailboxUrl.parse("imaps://u:y@host").key


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("", "imap:// or imaps://"),
        ("imap.example.com", "imap:// or imaps://"),
        ("https://u:p@host/INBOX", "imap:// or imaps://"),
        ("imaps://host/INBOX", "no user"),
        ("imaps://u@host/INBOX", "no password"),
        ("imaps://u:@host/INBOX", "no password"),
        ("imaps://u:p@/INBOX", "no host"),
        ("imaps://u:p@host:99999/INBOX", "not a valid IMAP URL"),
        ("imaps://u:p@host:abc/INBOX", "not a valid IMAP URL"),
        ("imaps://u:p@host:0/INBOX", "port"),
        ("imaps://u:p@host/INBOX?fetch=all", "query"),
        ("imaps://u:p@host/IN%0D%0ABOX", "control characters"),
    ],
)
def test_mailbox_url_rejects(url: str, error: str) -> None:
    with pytest.raises(ValueError, match=error) as raised:
        MailboxUrl.parse(url)
    assert "p@" not in str(raised.value)
