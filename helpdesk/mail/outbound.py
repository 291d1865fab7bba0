"""Outbound mail: building replies, queueing them in the outbox, and the worker that sends.

A reply is an interaction, a `mail_outbox` row holding the exact bytes to send and a
`mail_messages` row for its Message-ID, all written in the caller's transaction: they
commit together or not at all. `OutboxWorker` sends committed rows later, so a relay
outage delays mail but never loses it.

Delivery is at least once: a row is marked sent in the transaction that claimed it, after
the relay accepted the message. A crash between the two leaves the row pending and the
message is sent again; a lost reply is worse than a duplicate one.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import html as html_lib
import logging
import random
import re
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import getaddresses
from typing import Any
from urllib.parse import unquote, urlsplit

import aiosmtplib
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from helpdesk import cases, sla
from helpdesk.config import Settings
from helpdesk.db import Database
from helpdesk.errors import Conflict, InvalidInput, NotFound
from helpdesk.identities import normalize_email
from helpdesk.interactions import MAX_TEXT_CHARS, add_interaction
from helpdesk.models import Case, ContactIdentity, Interaction, MailMessage, OutboxMail, User

log = logging.getLogger(__name__)

# Built with the default policy, but never 8-bit bodies: Japanese text goes out as base64
# (or quoted-printable), so a relay without 8BITMIME passes it unchanged.
BUILD_POLICY = email.policy.default.clone(cte_type="7bit")
WIRE_POLICY = email.policy.SMTP.clone(cte_type="7bit")
MAX_REFERENCES = 20
DEFAULT_SENDER_NAME = "Support"
_JAPANESE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff66-\uff9f]")
_REPLY_PREFIX = re.compile(r"^(?:\s*(?:re|fw|fwd|aw|sv|wg|返信|転送)\s*[:：]\s*)+", re.IGNORECASE)


# -- the relay ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmtpRelay:
    """Where outbound mail goes: `HELPDESK_SMTP_URL` parsed.

    `smtp://` upgrades with STARTTLS when the server offers it; `smtps://` speaks TLS from
    the first byte.
    """

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    implicit_tls: bool = False
    timeout: float = 30.0
    local_hostname: str | None = None

    @classmethod
    def parse(cls, url: str) -> SmtpRelay:
        """`smtp://user:pass@host:port` or `smtps://...`; credentials may be percent-encoded."""
        try:
            parts = urlsplit((url or "").strip())
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"invalid SMTP URL {_redacted(url)!r}: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme not in ("smtp", "smtps"):
            raise ValueError(
                f"SMTP URL must start with smtp:// or smtps://, not {_redacted(url)!r}"
            )
        if not parts.hostname:
            raise ValueError(f"SMTP URL has no host: {_redacted(url)!r}")
        if parts.path not in ("", "/"):
            raise ValueError(f"SMTP URL takes no path: {_redacted(url)!r}")
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        if username and password is None:
            raise ValueError(f"SMTP URL names a user but no password: {_redacted(url)!r}")
        implicit_tls = scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=port or (465 if implicit_tls else 25),
            username=username,
            password=password,
            implicit_tls=implicit_tls,
        )

    def client(self, *, local_hostname: str | None = None) -> aiosmtplib.SMTP:
        """An unconnected client; `start_tls=None` means "upgrade when offered"."""
        return aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            use_tls=self.implicit_tls,
            start_tls=False if self.implicit_tls else None,
            timeout=self.timeout,
            local_hostname=self.local_hostname or local_hostname,
        )


def _redacted(url: str) -> str:
    return re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", url or "")


# -- building messages ----------------------------------------------------------------------


def new_message_id(support_address: str) -> str:
    """A fresh, globally unique Message-ID (without <>) in the support address's domain."""
    domain = support_address.rpartition("@")[2].strip().strip("<>").rstrip(".") or "localhost"
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        domain = "localhost"
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    return f"{stamp}.{secrets.token_hex(10)}@{domain.lower()}"


def _bare_id(message_id: str) -> str:
    return message_id.strip().strip("<>").strip()


def _one_line(value: str) -> str:
    return re.sub(r"[\r\n\t]+", " ", value).strip()


def case_subject(subject: str, case_number: int) -> str:
    """The subject with the case token `[#number]` in it exactly once.

    The token goes after any "Re:"/"Fwd:" prefixes, so "Re: x" becomes "Re: [#1001] x".
    """
    subject = _one_line(subject)
    token = f"[#{case_number}]"
    if token in subject:
        return subject
    prefix = _REPLY_PREFIX.match(subject)
    head = prefix.group(0) if prefix else ""
    rest = subject[len(head) :].strip()
    return f"{head}{token} {rest}".strip()


def reply_subject(subject: str) -> str:
    subject = _one_line(subject)
    return subject if _REPLY_PREFIX.match(subject) else f"Re: {subject}"


def text_to_html(text: str) -> str:
    """The HTML part for a plain-text body: escaped, line breaks kept."""
    body = html_lib.escape(text).replace("\r\n", "\n").replace("\n", "<br>\n")
    return f"<!DOCTYPE html>\n<html><body><div>{body}</div></body></html>\n"


def _references(references: Sequence[str], in_reply_to: str | None) -> list[str]:
    """RFC 5322 References: the parent's chain then the parent, deduplicated, capped to the
    first id (the thread's root) plus the most recent ones."""
    ids: list[str] = []
    for raw in [*references, *([in_reply_to] if in_reply_to else [])]:
        mid = _bare_id(raw)
        if mid and mid not in ids:
            ids.append(mid)
    if len(ids) > MAX_REFERENCES:
        ids = [ids[0], *ids[-(MAX_REFERENCES - 1) :]]
    return ids


def build_message(
    *,
    sender_name: str,
    sender_address: str,
    to: list[str],
    subject: str,
    case_number: int,
    text: str,
    html: str | None,
    message_id: str,
    in_reply_to: str | None,
    references: list[str],
    auto_submitted: str | None = None,
) -> EmailMessage:
    """A complete multipart/alternative message, threaded onto the conversation.

    Non-ASCII headers (a Japanese subject or name) are RFC 2047 encoded by the policy;
    bodies are UTF-8. With `html` None, the HTML part is the escaped text.
    """
    if not to:
        raise ValueError("a message needs at least one recipient")
    msg = EmailMessage(policy=BUILD_POLICY)
    msg["From"] = Address(display_name=_one_line(sender_name), addr_spec=sender_address)
    msg["To"] = ", ".join(_one_line(t) for t in to)
    msg["Subject"] = case_subject(subject, case_number)
    msg["Date"] = datetime.now(UTC)
    msg["Message-ID"] = f"<{_bare_id(message_id)}>"
    if in_reply_to:
        msg["In-Reply-To"] = f"<{_bare_id(in_reply_to)}>"
    chain = _references(references, in_reply_to)
    if chain:
        msg["References"] = " ".join(f"<{mid}>" for mid in chain)
    if auto_submitted:
        # RFC 3834, and what Exchange/Outlook honour, so their auto-replies stay quiet.
        msg["Auto-Submitted"] = auto_submitted
        msg["X-Auto-Response-Suppress"] = "All"
    msg.set_content(text)
    msg.add_alternative(html if html is not None else text_to_html(text), subtype="html")
    for part in msg.iter_parts():
        del part["MIME-Version"]  # only the top level carries it
    return msg


def message_bytes(message: EmailMessage) -> bytes:
    """The bytes as they go on the wire (CRLF line ends, 7-bit)."""
    return message.as_bytes(policy=WIRE_POLICY)


# -- queueing -------------------------------------------------------------------------------


def _addresses(message: EmailMessage, *names: str) -> list[str]:
    values = [str(v) for name in names for v in message.get_all(name, [])]
    seen: list[str] = []
    for _, addr in getaddresses(values):
        if addr and addr.lower() not in (s.lower() for s in seen):
            seen.append(addr)
    return seen


async def enqueue(
    session: AsyncSession,
    *,
    message: EmailMessage,
    interaction_id: int | None,
    case_id: int | None,
) -> OutboxMail:
    """Queue a built message for sending, in the caller's transaction.

    Writes the outbox row (the exact bytes to send; envelope recipients from To, Cc and Bcc,
    Bcc then removed from the bytes) and the `mail_messages` row that lets the customer's
    answer thread back onto the case.
    """
    message_id = _bare_id(str(message.get("Message-ID", "")))
    if not message_id:
        raise ValueError("the message has no Message-ID")
    senders = _addresses(message, "From")
    if not senders:
        raise ValueError("the message has no From address")
    recipients = _addresses(message, "To", "Cc", "Bcc")
    if not recipients:
        raise ValueError("the message has no recipients")
    del message["Bcc"]
    sender = senders[0]
    outbox = OutboxMail(
        message_id=message_id,
        interaction_id=interaction_id,
        sender=sender,
        recipients=recipients,
        raw=message_bytes(message),
        state="pending",
        attempts=0,
        next_attempt_at=datetime.now(UTC),
    )
    session.add(outbox)
    session.add(
        MailMessage(
            message_id=message_id,
            direction="out",
            case_id=case_id,
            interaction_id=interaction_id,
            sender=sender.lower(),
        )
    )
    await session.flush()
    return outbox


def _sender_name(settings: Settings) -> str:
    # Until Settings has a display name for the desk (HELPDESK_SUPPORT_NAME).
    return settings.support_name or DEFAULT_SENDER_NAME


async def _bouncing(session: AsyncSession, addresses: Sequence[str]) -> ContactIdentity | None:
    normalized = [normalize_email(a) for a in addresses]
    return await session.scalar(
        select(ContactIdentity)
        .where(
            ContactIdentity.kind == "email",
            ContactIdentity.normalized.in_(normalized),
            ContactIdentity.bouncing_since.is_not(None),
        )
        .order_by(ContactIdentity.id)
        .limit(1)
    )


def _first_address(value: Any) -> str | None:
    values = value if isinstance(value, list) else [value]
    for _, addr in getaddresses([v for v in values if isinstance(v, str)]):
        if "@" in addr:
            return addr
    return None


async def _reply_recipient(session: AsyncSession, case: Case, support_address: str) -> str | None:
    """Who a reply on the case goes to: the latest inbound mail's Reply-To or From, else
    the customer's primary email address."""
    own = support_address.lower()
    latest = await session.scalar(
        select(Interaction)
        .where(
            Interaction.case_id == case.id,
            Interaction.kind == "email",
            Interaction.direction == "in",
        )
        .order_by(Interaction.occurred_at.desc(), Interaction.id.desc())
        .limit(1)
    )
    if latest is not None:
        for key in ("reply_to", "from"):
            addr = _first_address(latest.meta.get(key))
            if addr and addr.lower() != own:
                return addr
    sender = await session.scalar(
        select(MailMessage.sender)
        .where(
            MailMessage.case_id == case.id,
            MailMessage.direction == "in",
            MailMessage.sender != "",
        )
        .order_by(MailMessage.id.desc())
        .limit(1)
    )
    if sender and sender.lower() != own:
        return sender
    return await session.scalar(
        select(ContactIdentity.raw_value)
        .where(ContactIdentity.customer_id == case.customer_id, ContactIdentity.kind == "email")
        .order_by(ContactIdentity.is_primary.desc(), ContactIdentity.id)
        .limit(1)
    )


async def _thread(session: AsyncSession, case_id: int) -> tuple[str | None, list[str]]:
    """(In-Reply-To, References) for a new message on the case: the latest inbound
    Message-ID, and every Message-ID of the case, oldest first."""
    rows = (
        await session.execute(
            select(MailMessage.message_id, MailMessage.direction)
            .where(MailMessage.case_id == case_id)
            .order_by(MailMessage.created_at, MailMessage.id)
        )
    ).all()
    inbound = [mid for mid, direction in rows if direction == "in"]
    return (inbound[-1] if inbound else None), [mid for mid, _ in rows]


async def _refuse_bouncing(session: AsyncSession, recipients: Sequence[str]) -> None:
    bouncing = await _bouncing(session, recipients)
    if bouncing is not None:
        since = bouncing.bouncing_since.date().isoformat() if bouncing.bouncing_since else ""
        reason = f" ({bouncing.bounce_reason})" if bouncing.bounce_reason else ""
        raise Conflict(
            f"mail to {bouncing.raw_value} has been bouncing since {since}{reason}; "
            "correct the address or reply to another one",
            field="to",
        )


def _valid_recipients(to: Sequence[str]) -> list[str]:
    recipients: list[str] = []
    for value in to:
        if not isinstance(value, str):
            raise InvalidInput("to must be a list of email addresses", field="to")
        parsed = [addr for _, addr in getaddresses([value]) if addr]
        if not parsed:
            raise InvalidInput(f"not an email address: {value!r}", field="to")
        for addr in parsed:
            try:
                normalize_email(addr)
            except InvalidInput as exc:
                raise InvalidInput(exc.message, field="to") from None
            if addr.lower() not in (r.lower() for r in recipients):
                recipients.append(addr)
    return recipients


async def reply_to_case(
    session: AsyncSession,
    settings: Settings,
    *,
    case_id: int,
    author_id: int | None,
    text: str,
    html: str | None = None,
    to: list[str] | None = None,
) -> Interaction:
    """Answer the customer by email on a case: the timeline entry plus the queued message.

    The recipient is `to`, else whoever wrote the latest inbound mail on the case, else
    the customer's primary email address; bouncing addresses are refused. The message
    threads onto the case's mail (In-Reply-To, References, `[#number]` in the subject).
    The case's status is left alone; only its `updated_at` moves.
    """
    body = (text or "").strip("\r\n")
    if not body.strip():
        raise InvalidInput("reply is empty", field="body")
    if len(body) > MAX_TEXT_CHARS:
        raise InvalidInput(f"reply is longer than {MAX_TEXT_CHARS} characters", field="body")
    if html is not None and len(html) > MAX_TEXT_CHARS * 5:
        raise InvalidInput(f"reply is longer than {MAX_TEXT_CHARS} characters", field="body")
    case = await session.get(Case, case_id)
    if case is None:
        raise NotFound(f"case {case_id} not found")
    if author_id is not None and await session.get(User, author_id) is None:
        raise InvalidInput(f"no user {author_id}", field="author_id")
    if to:
        recipients = _valid_recipients(to)
    else:
        found = await _reply_recipient(session, case, settings.support_address)
        if not found:
            raise InvalidInput(
                f"case #{case.number} has no email address to reply to: "
                "the customer has none and never wrote in; give one in 'to'",
                field="to",
            )
        recipients = _valid_recipients([found])
    await _refuse_bouncing(session, recipients)

    in_reply_to, references = await _thread(session, case.id)
    message_id = new_message_id(settings.support_address)
    subject = case_subject(reply_subject(case.subject), case.number)
    interaction = await add_interaction(
        session,
        customer_id=case.customer_id,
        case_id=case.id,
        kind="email",
        direction="out",
        text=body,
        html=html,
        author_user_id=author_id,
        subject=subject[:300],
        meta={"to": recipients, "cc": [], "message_id": message_id, "outbox_state": "pending"},
    )
    message = build_message(
        sender_name=_sender_name(settings),
        sender_address=settings.support_address,
        to=recipients,
        subject=subject,
        case_number=case.number,
        text=body,
        html=interaction.html,  # sanitized by add_interaction
        message_id=message_id,
        in_reply_to=in_reply_to,
        references=references,
    )
    await enqueue(session, message=message, interaction_id=interaction.id, case_id=case.id)
    case.updated_at = datetime.now(UTC)
    await session.flush()
    if author_id is not None:  # a person answered (not an automatic mail): SLA response met
        await sla.on_agent_public_reply(session, case.id, case.updated_at)
    await cases.announce(session, case, "email_reply", actor_user_id=author_id)
    return interaction


@dataclass(frozen=True)
class ReplyDraft:
    """What the composer shows before an agent writes: where the reply goes, and the
    latest customer message to quote (folded away until asked for)."""

    to: str | None
    bouncing: str | None  # the bounce reason when the address is known to bounce
    quote: str  # "> "-quoted text of the latest inbound email, "" when none


async def reply_draft(session: AsyncSession, settings: Settings, case: Case) -> ReplyDraft:
    to = await _reply_recipient(session, case, settings.support_address)
    bouncing = None
    if to:
        bouncing = await session.scalar(
            select(ContactIdentity.bounce_reason).where(
                ContactIdentity.kind == "email",
                ContactIdentity.normalized == to.lower(),
                ContactIdentity.bouncing_since.is_not(None),
            )
        )
    latest = await session.scalar(
        select(Interaction)
        .where(
            Interaction.case_id == case.id,
            Interaction.kind == "email",
            Interaction.direction == "in",
        )
        .order_by(Interaction.occurred_at.desc(), Interaction.id.desc())
        .limit(1)
    )
    return ReplyDraft(to=to, bouncing=bouncing, quote=quote_message(latest) if latest else "")


def quote_message(entry: Interaction) -> str:
    """The classic attribution line and `> ` quoting that every mail client understands."""
    sender = entry.meta.get("from_name") or entry.meta.get("from") or ""
    when = entry.occurred_at.strftime("%Y-%m-%d %H:%M %Z")
    lines = (entry.text or "").strip("\n").splitlines()
    quoted = "\n".join(f"> {line}" if line else ">" for line in lines)
    return f"On {when}, {sender} wrote:\n{quoted}"


# -- the acknowledgement --------------------------------------------------------------------

ACK_TEXT = {
    "en": (
        "Thank you for contacting us.\n"
        "\n"
        "We have received your message and registered it as case #{number}:\n"
        "  {subject}\n"
        "\n"
        "A member of our team will reply as soon as possible. If you write to us about this "
        "matter again, please reply to this email or keep [#{number}] in the subject.\n"
        "\n"
        "This is an automatic reply.\n"
    ),
    "ja": (
        "お問い合わせいただき、ありがとうございます。\n"
        "\n"
        "以下の内容で受け付けました。\n"
        "  受付番号: #{number}\n"
        "  件名: {subject}\n"
        "\n"
        "担当者より改めてご連絡いたします。本件について追加でご連絡いただく際は、"
        "このメールに返信するか、件名の [#{number}] を残したままお送りください。\n"
        "\n"
        "※このメールは自動送信されています。\n"
    ),
}


def ack_language(language: str | None, subject: str | None) -> str:
    """Japanese for a Japanese-speaking customer or a Japanese subject, else English."""
    if (language or "").lower().startswith("ja") or _JAPANESE.search(subject or ""):
        return "ja"
    return "en"


async def acknowledge(
    session: AsyncSession,
    settings: Settings,
    *,
    case: Case,
    customer_address: str,
    inbound_message_id: str,
    inbound_subject: str,
    language: str | None,
    enabled: bool = True,
) -> OutboxMail | None:
    """Tell the customer their new email case was received, with its number.

    Marked `Auto-Submitted: auto-replied` so well-behaved responders never answer it.
    Returns None and queues nothing when acknowledgements are off, or the address is
    ours or bouncing. The caller decides whether the inbound mail deserves an answer at
    all (no replies to auto-replies). A system entry on the case records the sending.
    """
    if not enabled or not customer_address:
        return None
    try:
        normalize_email(customer_address)
    except InvalidInput:
        return None
    if customer_address.lower() == settings.support_address.lower():
        return None
    if await _bouncing(session, [customer_address]) is not None:
        return None
    lang = ack_language(language, inbound_subject)
    original = _one_line(inbound_subject or case.subject)
    text = ACK_TEXT[lang].format(number=case.number, subject=original)
    message_id = new_message_id(settings.support_address)
    note = await add_interaction(
        session,
        customer_id=case.customer_id,
        case_id=case.id,
        kind="system",
        direction="internal",
        text=f"acknowledgement sent to {customer_address}",
        meta={
            "acknowledgement": True,
            "to": [customer_address],
            "message_id": message_id,
            "outbox_state": "pending",
            "language": lang,
        },
    )
    message = build_message(
        sender_name=_sender_name(settings),
        sender_address=settings.support_address,
        to=[customer_address],
        subject=reply_subject(original or case.subject),
        case_number=case.number,
        text=text,
        html=None,
        message_id=message_id,
        in_reply_to=inbound_message_id or None,
        references=[inbound_message_id] if inbound_message_id else [],
        auto_submitted="auto-replied",
    )
    return await enqueue(session, message=message, interaction_id=note.id, case_id=case.id)


# -- the worker -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Outcome:
    state: str  # sent | pending | failed
    error: str | None = None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"{exc.code} {exc.message}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _is_permanent(exc: BaseException) -> bool:
    """A rejection of this message that retrying cannot fix.

    5xx for every recipient or for the content is permanent. A refused sender, a failed
    login or a broken greeting is the relay's or our configuration's fault, not the
    message's: those are retried (and fail only after max_attempts).
    """
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return all(500 <= r.code < 600 for r in exc.recipients)
    if isinstance(
        exc,
        aiosmtplib.SMTPSenderRefused
        | aiosmtplib.SMTPAuthenticationError
        | aiosmtplib.SMTPHeloError
        | aiosmtplib.SMTPConnectResponseError,
    ):
        return False
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return 500 <= exc.code < 600
    # aiosmtplib refuses an address it cannot put on the wire before sending anything.
    return isinstance(exc, ValueError)


_RELAY_ERRORS = (aiosmtplib.SMTPException, OSError, TimeoutError)


class OutboxWorker:
    """Sends due outbox rows; any number of workers, in any processes, may run at once.

    Rows are claimed with `FOR UPDATE SKIP LOCKED`, so each is sent by one worker; a
    temporary failure (no connection, timeout, 4xx) is retried with exponential backoff,
    a permanent one (5xx) or the last allowed attempt marks the row failed.
    """

    def __init__(
        self,
        database: Database,
        relay: SmtpRelay | None,
        *,
        poll_seconds: float = 1.0,
        max_attempts: int = 12,
        base_delay: float = 5.0,
        max_delay: float = 3600.0,
        batch: int = 20,
    ) -> None:
        self.database = database
        self.relay = relay
        self.poll_seconds = poll_seconds
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.batch = batch
        self._warned_no_relay = False
        self._claimed = 0
        self._helo_name: str | None = None

    def backoff(self, attempts: int) -> timedelta:
        """Delay before attempt `attempts + 1`: doubling from base_delay, capped, plus up
        to 10 % jitter so a crowd of failed messages does not retry in lockstep."""
        delay = min(self.max_delay, self.base_delay * 2 ** max(0, attempts - 1))
        return timedelta(seconds=delay * (1 + random.uniform(0, 0.1)))

    async def send_due(self) -> int:
        """Send one batch of due mail over one connection; returns how many were sent."""
        self._claimed = 0
        if self.relay is None:
            if not self._warned_no_relay:
                log.warning("HELPDESK_SMTP_URL is not set: outbound mail stays queued")
                self._warned_no_relay = True
            return 0
        async with self.database.unit_of_work() as session:
            rows = list(
                (
                    await session.scalars(
                        select(OutboxMail)
                        .where(
                            OutboxMail.state == "pending",
                            OutboxMail.next_attempt_at <= func.now(),
                        )
                        .order_by(OutboxMail.next_attempt_at, OutboxMail.id)
                        .limit(self.batch)
                        .with_for_update(skip_locked=True)
                    )
                ).all()
            )
            self._claimed = len(rows)
            if not rows:
                return 0
            outcomes = await self._deliver(rows)
            sent = 0
            for row, outcome in zip(rows, outcomes, strict=True):
                await self._record(session, row, outcome)
                sent += outcome.state == "sent"
            return sent

    async def _deliver(self, rows: Sequence[OutboxMail]) -> list[_Outcome]:
        assert self.relay is not None
        if self._helo_name is None and self.relay.local_hostname is None:
            # aiosmtplib would call the blocking getfqdn() for every new client.
            self._helo_name = await asyncio.to_thread(socket.getfqdn)
        outcomes: list[_Outcome] = []
        smtp: aiosmtplib.SMTP | None = None
        relay_down: str | None = None
        try:
            for row in rows:
                if relay_down is not None:
                    outcomes.append(_Outcome("pending", relay_down))
                    continue
                if smtp is None:
                    smtp = self.relay.client(local_hostname=self._helo_name)
                    try:
                        await smtp.connect()
                    except _RELAY_ERRORS as exc:
                        # One unreachable relay fails the whole batch the same way, without
                        # waiting out a timeout per message.
                        relay_down = f"relay {self.relay.host}:{self.relay.port}: {_describe(exc)}"
                        smtp.close()
                        smtp = None
                        outcomes.append(_Outcome("pending", relay_down))
                        continue
                try:
                    refused, _ = await smtp.sendmail(row.sender, list(row.recipients), row.raw)
                except (*_RELAY_ERRORS, ValueError) as exc:
                    state = "failed" if _is_permanent(exc) else "pending"
                    outcomes.append(_Outcome(state, _describe(exc)))
                    if not smtp.is_connected:
                        smtp = None
                    continue
                error = None
                if refused:
                    error = "some recipients refused: " + "; ".join(
                        f"{addr}: {r.code} {r.message}" for addr, r in refused.items()
                    )
                outcomes.append(_Outcome("sent", error))
        finally:
            if smtp is not None:
                try:
                    await smtp.quit()
                except _RELAY_ERRORS:
                    smtp.close()
        return outcomes

    async def _record(self, session: AsyncSession, row: OutboxMail, outcome: _Outcome) -> None:
        now = datetime.now(UTC)
        row.attempts += 1
        row.last_error = outcome.error
        if outcome.state == "sent":
            row.state, row.sent_at = "sent", now
        elif outcome.state == "failed" or row.attempts >= self.max_attempts:
            row.state = "failed"
            log.warning("giving up on mail %s: %s", row.message_id, outcome.error)
        else:
            row.next_attempt_at = now + self.backoff(row.attempts)
            log.info(
                "mail %s not sent (attempt %d), retrying at %s: %s",
                row.message_id,
                row.attempts,
                row.next_attempt_at.isoformat(timespec="seconds"),
                outcome.error,
            )
        await self._show_state(session, row)

    async def _show_state(self, session: AsyncSession, row: OutboxMail) -> None:
        """Copy the delivery state onto the interaction, so the agent sees it."""
        if row.interaction_id is None:
            return
        interaction = await session.get(Interaction, row.interaction_id)
        if interaction is None:
            return
        meta = {**interaction.meta, "outbox_state": row.state, "attempts": row.attempts}
        meta.pop("error", None)
        if row.last_error:
            meta["error"] = row.last_error
        if row.sent_at is not None:
            meta["sent_at"] = row.sent_at.isoformat()
        interaction.meta = meta  # a new dict, so the JSONB change is seen
        await session.flush()
        if interaction.case_id is not None:
            case = await session.get(Case, interaction.case_id)
            if case is not None:
                await cases.announce(session, case, f"email_{row.state}", actor_user_id=None)

    async def run(self, stop: asyncio.Event) -> None:
        """Send due mail until `stop` is set; a full batch is followed at once by the next."""
        while not stop.is_set():
            try:
                await self.send_due()
            except Exception:
                log.exception("outbox worker: sending failed; trying again")
                self._claimed = 0
            if self._claimed >= self.batch:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_seconds)
