"""Fetch new mail from an IMAP mailbox and hand each raw message to the ingest.

Delivery is at-least-once and in UID order. Messages are tracked by UID, never by flag (a
person may flag or read mail in the shared mailbox): the highest UID handled is saved, per
mailbox and UIDVALIDITY, only after `deliver` returned for that message and the message was
flagged (or deleted), so a crash at any point means a redelivery — which the ingest turns
into a no-op by Message-ID — and never a skipped message.

Between rounds the poller IDLEs when the server can, so mail arrives within a second or so;
otherwise it polls every `poll_seconds`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, unquote, urlsplit

import aioimaplib

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"imap": 143, "imaps": 993}
COMMAND_TIMEOUT = 30.0  # seconds for one IMAP command; a stuck server is treated as a lost one

T = TypeVar("T")
Deliver = Callable[[bytes], Awaitable[None]]
"""Takes one raw RFC 5322 message; raises on failure; must be idempotent (see module doc)."""


class ImapError(Exception):
    """The server refused something (NO/BAD), or the connection is gone."""


class DeliveryFailed(Exception):
    """`deliver` raised for this UID; it was not flagged and will be offered again."""

    def __init__(self, uid: int) -> None:
        super().__init__(f"delivering UID {uid} failed")
        self.uid = uid


@dataclass(frozen=True)
class MailboxUrl:
    """Where to fetch mail from: `imap[s]://user:password@host[:port]/Mailbox`."""

    scheme: str
    host: str
    port: int
    user: str
    password: str = field(repr=False)
    mailbox: str = "INBOX"

    @classmethod
    def parse(cls, url: str) -> MailboxUrl:
        """Parse and validate; user, password and mailbox are percent-decoded.

        Raises ValueError with a message fit to show whoever configured the URL (it never
        contains the password).
        """
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"not a valid IMAP URL: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS:
            found = f", not {parts.scheme}://" if parts.scheme else ""
            raise ValueError(f"IMAP URL must start with imap:// or imaps://{found}")
        if not parts.hostname:
            raise ValueError("IMAP URL has no host")
        if not parts.username:
            raise ValueError("IMAP URL has no user (imaps://user:password@host/INBOX)")
        if parts.password is None or parts.password == "":
            raise ValueError("IMAP URL has no password (imaps://user:password@host/INBOX)")
        if parts.query or parts.fragment:
            raise ValueError("IMAP URL must not have a query (?…) or fragment (#…)")
        mailbox = unquote(parts.path.lstrip("/")) or "INBOX"
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in mailbox):
            raise ValueError("IMAP mailbox name must not contain control characters")
        if port == 0:
            raise ValueError("IMAP URL port must be between 1 and 65535")
        return cls(
            scheme=scheme,
            host=parts.hostname,
            port=port or DEFAULT_PORTS[scheme],
            user=unquote(parts.username),
            password=unquote(parts.password),
            mailbox=mailbox,
        )

    @property
    def key(self) -> str:
        """Identifies the mailbox for UID state: the URL without the password."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        user, mailbox = quote(self.user, safe=""), quote(self.mailbox, safe="/")
        return f"{self.scheme}://{user}@{host}:{self.port}/{mailbox}"


@dataclass
class MailboxState:
    """How far a mailbox has been fetched: UIDs are only comparable within one UIDVALIDITY."""

    uidvalidity: int | None
    last_uid: int


class StateStore(Protocol):
    """Persists MailboxState per `MailboxUrl.key`; `load` of an unknown key gives (None, 0)."""

    async def load(self, key: str) -> MailboxState: ...

    async def save(self, key: str, state: MailboxState) -> None: ...


class ImapPoller:
    """Delivers every message that arrives in one mailbox, once it has been seen."""

    def __init__(
        self,
        url: MailboxUrl,
        deliver: Deliver,
        state: StateStore,
        *,
        delete: bool = False,
        poll_seconds: float = 60.0,
        idle_seconds: float = 25 * 60,
        backoff_max: float = 300.0,
        batch: int = 50,
    ) -> None:
        self.url = url
        self.deliver = deliver
        self.state = state
        self.delete = delete
        self.poll_seconds = poll_seconds
        # RFC 2177: servers may drop an IDLE after 30 minutes, so re-issue it before that.
        self.idle_seconds = idle_seconds
        self.backoff_max = backoff_max
        self.batch = batch
        self._client: aioimaplib.IMAP4 | None = None
        self._lost = asyncio.Event()
        self._caught_up = False
        self._stop: asyncio.Event | None = None

    # -- one round ---------------------------------------------------------------------------

    async def poll_once(self) -> int:
        """Deliver up to `batch` new messages in UID order; returns how many were delivered.

        Connects if needed; call `close()` when done with it. Raises DeliveryFailed (state
        saved up to the message before) when `deliver` raises; ImapError, OSError,
        TimeoutError or an aioimaplib error when the server or the connection fails. A full
        batch means more may be waiting.
        """
        self._caught_up = False
        client = await self._connected()
        key = self.url.key
        state = await self.state.load(key)
        uidvalidity, uidnext = await self._select(client)
        if uidvalidity is not None and state.uidvalidity != uidvalidity:
            if state.uidvalidity is not None:
                # The mailbox was recreated: old UIDs mean nothing. Refetching all of it is
                # safe because the ingest drops Message-IDs it has seen.
                log.warning(
                    "IMAP %s: UIDVALIDITY changed from %s to %s; fetching the mailbox again",
                    key,
                    state.uidvalidity,
                    uidvalidity,
                )
                state.last_uid = 0
            state.uidvalidity = uidvalidity
            await self.state.save(key, state)

        if uidnext is not None and uidnext - 1 <= state.last_uid:
            # Nothing new, and SELECT was the only command since the server last reported
            # the mailbox, so an IDLE started now cannot miss an arrival (see _wait_for_mail).
            self._caught_up = True
            return 0

        uids = await self._new_uids(client, state.last_uid)
        delivered = 0
        for uid in uids[: self.batch]:
            if self._stop is not None and self._stop.is_set():
                return delivered
            raw = await self._fetch(client, uid)
            if raw is not None:
                try:
                    await self.deliver(raw)
                except Exception as exc:
                    raise DeliveryFailed(uid) from exc
                await self._acknowledge(client, uid)
                delivered += 1
            # else: expunged by someone between SEARCH and FETCH; nothing to deliver.
            state.last_uid = uid
            await self.state.save(key, state)

        if uidnext is None:
            # A server without UIDNEXT: idle once a round finds nothing (a message arriving
            # during that round's SEARCH then waits for the next round).
            self._caught_up = not uids
        elif len(uids) <= self.batch and uidnext - 1 > state.last_uid:
            # UIDs below UIDNEXT that SEARCH did not return were expunged before we saw them
            # and will never exist again; skip past them so the next round can IDLE.
            state.last_uid = uidnext - 1
            await self.state.save(key, state)
        return delivered

    async def _select(self, client: aioimaplib.IMAP4) -> tuple[int | None, int | None]:
        response = await self._command(client.select(aioimaplib.quoted(_mutf7(self.url.mailbox))))
        _check(response, f"SELECT {self.url.mailbox}")
        text = b"\n".join(line for line in response.lines if isinstance(line, bytes))
        return _code(text, b"UIDVALIDITY"), _code(text, b"UIDNEXT")

    async def _new_uids(self, client: aioimaplib.IMAP4, last_uid: int) -> list[int]:
        response = await self._command(client.uid_search(f"UID {last_uid + 1}:*", charset=None))
        _check(response, "UID SEARCH")
        uids: set[int] = set()
        for line in response.lines[:-1]:
            if isinstance(line, bytes) and re.fullmatch(rb"[\d ]*", line):
                uids.update(int(uid) for uid in line.split())
        # `n:*` always matches the highest UID, even when it is below n.
        return sorted(uid for uid in uids if uid > last_uid)

    async def _fetch(self, client: aioimaplib.IMAP4, uid: int) -> bytes | None:
        # BODY.PEEK so fetching does not mark the message \Seen before it was delivered.
        response = await self._command(client.uid("FETCH", str(uid), "(UID BODY.PEEK[])"))
        _check(response, f"UID FETCH {uid}")
        lines = response.lines
        for index, item in enumerate(lines):
            if not isinstance(item, bytearray) or index == 0:
                continue
            header = lines[index - 1]
            trailer = lines[index + 1] if index + 1 < len(lines) else b""
            if not isinstance(header, bytes) or b"BODY[]" not in header:
                continue
            found = _code(header + b" " + bytes(trailer), b"UID")
            if found == uid:
                return bytes(item)
        return None

    async def _acknowledge(self, client: aioimaplib.IMAP4, uid: int) -> None:
        if self.delete:
            response = await self._command(
                client.uid("STORE", str(uid), "+FLAGS.SILENT", r"(\Deleted)")
            )
            _check(response, f"UID STORE {uid} \\Deleted")
            if client.has_capability("UIDPLUS"):
                # Only our message: another client's \Deleted mail is not ours to expunge.
                response = await self._command(client.uid("EXPUNGE", str(uid)))
            else:
                response = await self._command(client.expunge())
            _check(response, "EXPUNGE")
        else:
            # \Flagged tells people looking at the mailbox that the helpdesk has it.
            response = await self._command(
                client.uid("STORE", str(uid), "+FLAGS.SILENT", r"(\Flagged \Seen)")
            )
            _check(response, f"UID STORE {uid} \\Flagged")

    # -- the loop ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Poll, then IDLE (or sleep) until new mail, forever; returns soon after `stop` is set.

        Never raises for server, connection or delivery failures: they are logged and
        retried with exponential backoff (1 s doubling up to `backoff_max`).
        """
        self._stop = stop
        first_delay = min(1.0, self.backoff_max)
        delay = first_delay
        try:
            while not stop.is_set():
                try:
                    await self.poll_once()
                    delay = first_delay
                    if not self._caught_up:
                        continue  # a full batch, or mail arrived meanwhile: go again now
                    await self._wait_for_mail(stop)
                    continue
                except DeliveryFailed as exc:
                    # The connection is fine; whatever failed behind deliver() may recover.
                    log.warning(
                        "IMAP %s: %s, retrying in %.1f s: %r",
                        self.url.key,
                        exc,
                        delay,
                        exc.__cause__,
                    )
                except (OSError, TimeoutError, ImapError, aioimaplib.AioImapException) as exc:
                    log.warning(
                        "IMAP %s: %s, reconnecting in %.1f s",
                        self.url.key,
                        _describe(exc),
                        delay,
                    )
                    await self._disconnect()
                except Exception:
                    log.exception("IMAP %s: unexpected error, reconnecting", self.url.key)
                    await self._disconnect()
                await _sleep_unless(stop, delay)
                delay = min(delay * 2, self.backoff_max)
        finally:
            await self._disconnect()
            self._stop = None

    async def _wait_for_mail(self, stop: asyncio.Event) -> None:
        client = self._client
        assert client is not None
        if not client.has_capability("IDLE"):
            await _sleep_unless(stop, self.poll_seconds)
            return
        queue: asyncio.Queue[Any] = client.protocol.idle_queue
        while not queue.empty():  # pushes from an earlier IDLE were already acted on
            queue.get_nowait()
        idle = await self._command(
            asyncio.wait_for(client.idle_start(timeout=self.idle_seconds), COMMAND_TIMEOUT)
        )
        try:
            while True:
                push = asyncio.ensure_future(queue.get())
                stopping = asyncio.ensure_future(stop.wait())
                lost = asyncio.ensure_future(self._lost.wait())
                try:
                    await asyncio.wait(
                        {push, stopping, lost, idle}, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    for task in (push, stopping, lost):
                        task.cancel()
                if self._lost.is_set():
                    raise ImapError("connection lost while idling")
                if stop.is_set() or idle.done():
                    return
                lines = push.result() if push.done() and not push.cancelled() else []
                if lines == aioimaplib.STOP_WAIT_SERVER_PUSH:
                    return  # idle_seconds are up: DONE, poll, IDLE again
                if any(isinstance(line, bytes) and line.endswith(b" EXISTS") for line in lines):
                    return
                # Anything else ("OK Still here", flag changes) is no reason to poll.
        finally:
            if not self._lost.is_set() and not idle.done():
                client.idle_done()
                await self._command(asyncio.wait_for(asyncio.shield(idle), COMMAND_TIMEOUT))

    # -- connection --------------------------------------------------------------------------

    async def close(self) -> None:
        """Log out, for a caller of `poll_once`; `run` does this itself when it returns."""
        await self._disconnect()

    async def _connected(self) -> aioimaplib.IMAP4:
        if self._client is not None and not self._lost.is_set():
            return self._client
        await self._disconnect()
        lost = asyncio.Event()
        context = ssl.create_default_context() if self.url.scheme == "imaps" else None
        client = aioimaplib.IMAP4(
            self.url.host,
            self.url.port,
            timeout=COMMAND_TIMEOUT,
            conn_lost_cb=lambda exc: lost.set(),
            ssl_context=context,
        )
        self._client, self._lost = client, lost
        await client.wait_hello_from_server()
        # The user is quoted here; aioimaplib sends it as given (and quotes the password).
        response = await self._command(
            client.login(aioimaplib.quoted(self.url.user), self.url.password)
        )
        if response.result != "OK":
            raise ImapError(f"LOGIN as {self.url.user} failed: {_last_text(response)}")
        # Capabilities may change after login (RFC 3501 §6.2.3); IDLE is decided on these.
        await self._command(asyncio.wait_for(client.protocol.capability(), COMMAND_TIMEOUT))
        log.info("IMAP %s: connected", self.url.key)
        return client

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        if not self._lost.is_set() and client.get_state() in ("AUTH", "SELECTED"):
            try:
                await asyncio.wait_for(client.logout(), 2.0)
            except Exception as exc:  # best effort: the socket is closed below anyway
                log.debug("IMAP %s: LOGOUT failed: %s", self.url.key, _describe(exc))
        transport = client.protocol.transport
        if transport is not None:
            transport.close()
        for task in list(client.tasks) + list(client.protocol.tasks):
            task.cancel()

    async def _command(self, awaitable: Awaitable[T]) -> T:
        """Await one IMAP command, but fail at once if the connection drops.

        aioimaplib does not fail pending commands when the socket closes; they would hang
        until their timeout.
        """
        command = asyncio.ensure_future(awaitable)
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            await asyncio.wait({command, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            if not command.done():
                command.cancel()
        if command.cancelled():
            raise ImapError("connection lost")
        return command.result()


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def _check(response: aioimaplib.Response, what: str) -> None:
    if response.result != "OK":
        raise ImapError(f"{what} failed: {response.result} {_last_text(response)}")


def _last_text(response: aioimaplib.Response) -> str:
    last = response.lines[-1] if response.lines else b""
    return bytes(last).decode(errors="replace")


def _code(text: bytes, name: bytes) -> int | None:
    match = re.search(rb"\b" + name + rb" (\d+)", text)
    return int(match.group(1)) if match else None


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _mutf7(name: str) -> str:
    """Encode a mailbox name in IMAP's modified UTF-7 (RFC 3501 §5.1.3)."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            encoded = base64.b64encode("".join(pending).encode("utf-16-be")).decode()
            out.append("&" + encoded.rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)
