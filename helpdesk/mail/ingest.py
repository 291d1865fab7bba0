"""The one ingest service behind SMTP, IMAP and the MTA pipe: a raw message in, a case out.

Every inbound path calls `ingest_message` inside a transaction and acknowledges the message
to its sender (SMTP 250, IMAP flag, HTTP 200) only after that transaction committed, so a
crash between the two means a redelivery — which the Message-ID makes a no-op.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from helpdesk import cases as cases_service
from helpdesk import sla
from helpdesk.config import Settings
from helpdesk.customers import CustomerInput, IdentityInput, create_customer
from helpdesk.errors import InvalidInput
from helpdesk.identities import normalize_email
from helpdesk.interactions import add_interaction, store_attachment
from helpdesk.mail.parsing import ParsedMail, parse_message
from helpdesk.models import Case, ContactIdentity, Customer, Interaction, MailMessage

log = logging.getLogger(__name__)

SUBJECT_TOKEN = re.compile(r"\[#(\d{1,12})\]")
MAX_META_IDS = 20


@dataclass(frozen=True)
class IngestResult:
    """What happened to one message; `status` is one of

    created, appended, reopened, follow_up (a new case linked to a closed one),
    duplicate (Message-ID seen before: nothing written), ignored (our own mail),
    bounce (a delivery-status notification: the identity is marked, no case opened).
    """

    status: str
    message_id: str
    case_id: int | None = None
    case_number: int | None = None
    interaction_id: int | None = None
    customer_id: int | None = None
    parse_errors: tuple[str, ...] = ()
    acknowledged: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)

    def as_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "message_id": self.message_id,
            "case_id": self.case_id,
            "case_number": self.case_number,
            "interaction_id": self.interaction_id,
            "customer_id": self.customer_id,
            "parse_errors": list(self.parse_errors),
            "acknowledged": self.acknowledged,
        }


def _own_addresses(settings: Settings) -> set[str]:
    # `support@localhost` (the default) is no customer address, but it is ours.
    return {_address(settings.support_address) or settings.support_address.strip().lower()}


async def ingest_message(
    session: AsyncSession, raw: bytes, *, settings: Settings, source: str
) -> IngestResult:
    """File one raw RFC 822 message; the caller commits.

    Never raises for bad mail — malformed messages are stored raw and flagged — only for
    an empty body or database trouble, so that the delivering side retries the latter.
    """
    if not raw or not raw.strip():
        raise InvalidInput("the message is empty", field="message")
    mail = parse_message(raw)
    sender = _address(mail.from_address)
    if sender and sender in _own_addresses(settings):
        return IngestResult("ignored", mail.message_id, notes=("mail from our own address",))

    # The unique Message-ID is the idempotency key: a second delivery waits here for the
    # first one's transaction and then finds the row.
    row_id = await session.scalar(
        insert(MailMessage)
        .values(message_id=mail.message_id, direction="in", sender=sender)
        .on_conflict_do_nothing(index_elements=["message_id"])
        .returning(MailMessage.id)
    )
    if row_id is None:
        return IngestResult("duplicate", mail.message_id)

    if mail.bounce is not None:
        return await _record_bounce(session, mail, row_id)
    if sender:
        # Mail from an address proves it alive again, whatever bounced before.
        await session.execute(
            update(ContactIdentity)
            .where(
                ContactIdentity.kind == "email",
                ContactIdentity.normalized == sender,
                # Only when there is something to change: a busy sender's every mail would
                # otherwise rewrite the row (and its index entries) for nothing.
                or_(
                    ContactIdentity.bouncing_since.is_not(None),
                    ContactIdentity.last_seen_at.is_(None),
                    ContactIdentity.last_seen_at < func.now() - timedelta(hours=1),
                ),
            )
            .values(last_seen_at=func.now(), bouncing_since=None, bounce_reason=None)
        )

    case, status = await _thread(session, mail, sender)
    if case is None:
        customer = await _customer_for(session, mail, sender, settings)
        case = await cases_service.create_case(
            session,
            cases_service.CaseInput(
                customer_id=customer.id,
                subject=_case_subject(mail.subject),
                channel="email",
            ),
            author_user_id=None,
        )
        status = "created"
    elif status == "follow_up":
        previous = case
        case = await cases_service.create_case(
            session,
            cases_service.CaseInput(
                customer_id=previous.customer_id,
                subject=_case_subject(mail.subject or previous.subject),
                channel="email",
                priority=previous.priority,
                team_id=previous.team_id,
            ),
            author_user_id=None,
        )
        case.follow_up_of_id = previous.id
    interaction = await _add_email(session, mail, raw, case, source=source, settings=settings)
    await session.execute(
        update(MailMessage)
        .where(MailMessage.id == row_id)
        .values(case_id=case.id, interaction_id=interaction.id)
    )
    if status in ("appended", "reopened"):
        await _wake_case(session, case, reopened=status == "reopened")

    acknowledged = False
    if status in ("created", "follow_up") and _may_auto_reply(mail, sender, settings):
        acknowledged = await _acknowledge(session, settings, case, mail, sender)
    return IngestResult(
        status,
        mail.message_id,
        case_id=case.id,
        case_number=case.number,
        interaction_id=interaction.id,
        customer_id=case.customer_id,
        parse_errors=mail.parse_errors,
        acknowledged=acknowledged,
    )


def _address(raw: str) -> str:
    if not raw:
        return ""
    try:
        return normalize_email(raw)
    except InvalidInput:
        return raw.strip().lower() if "@" in raw and " " not in raw.strip() else ""


def _case_subject(subject: str) -> str:
    subject = SUBJECT_TOKEN.sub("", subject or "").strip()
    subject = re.sub(
        r"^((re|fwd?|aw|wg|sv|tr|回答|返信|転送)\s*[:：]\s*)+", "", subject, flags=re.I
    )
    return (subject.strip() or "(no subject)")[:300]


async def _thread(session: AsyncSession, mail: ParsedMail, sender: str) -> tuple[Case | None, str]:
    """The case this message continues, by In-Reply-To, then References, then a subject
    token from a sender already known on that case; and what joining it means."""
    case = await _case_by_ids(session, mail.in_reply_to)
    if case is None:
        case = await _case_by_ids(session, tuple(reversed(mail.references)))
    if case is None:
        case = await _case_by_subject(session, mail.subject, sender)
    if case is None:
        return None, "created"
    if case.status == "closed":
        return case, "follow_up"
    if case.status == "solved":
        return case, "reopened"
    return case, "appended"


async def _case_by_ids(session: AsyncSession, ids: tuple[str, ...]) -> Case | None:
    """The case of the first id we know, in the order given (most relevant first)."""
    ids = tuple(i for i in ids if i)[:100]
    if not ids:
        return None
    rows = (
        await session.execute(
            select(MailMessage.message_id, MailMessage.case_id).where(
                MailMessage.message_id.in_(ids), MailMessage.case_id.is_not(None)
            )
        )
    ).all()
    known = dict(rows)
    for message_id in ids:
        if message_id in known:
            return await session.get(Case, known[message_id], with_for_update=True)
    return None


async def _case_by_subject(session: AsyncSession, subject: str, sender: str) -> Case | None:
    """Only a sender the case already knows may thread by `[#number]`, so guessing a case
    number cannot put mail into someone else's case."""
    match = SUBJECT_TOKEN.search(subject or "")
    if match is None or not sender:
        return None
    case = await session.scalar(
        select(Case).where(Case.number == int(match.group(1))).with_for_update()
    )
    if case is None:
        return None
    known = await session.scalar(
        select(
            or_(
                select(MailMessage.id)
                .where(MailMessage.case_id == case.id, MailMessage.sender == sender)
                .exists(),
                select(ContactIdentity.id)
                .where(
                    ContactIdentity.customer_id == case.customer_id,
                    ContactIdentity.kind == "email",
                    ContactIdentity.normalized == sender,
                )
                .exists(),
            )
        )
    )
    return case if known else None


async def _customer_for(
    session: AsyncSession, mail: ParsedMail, sender: str, settings: Settings
) -> Customer:
    """The customer behind the From address, created on first contact.

    An advisory lock per address keeps two simultaneous first mails from creating the
    same customer twice.
    """
    if sender:
        await session.execute(select(func.pg_advisory_xact_lock(func.hashtext("mail:" + sender))))
        customer = await session.scalar(
            select(Customer)
            .join(ContactIdentity, ContactIdentity.customer_id == Customer.id)
            .where(
                ContactIdentity.kind == "email",
                ContactIdentity.normalized == sender,
                Customer.merged_into_id.is_(None),
            )
            .order_by(Customer.id)
            .limit(1)
        )
        if customer is not None:
            return customer
    name = (mail.from_name or sender.split("@")[0] or "Unknown sender").strip()[:200]
    identities = [IdentityInput("email", sender, is_primary=True)] if sender else []
    return await create_customer(
        session,
        CustomerInput(name=name, identities=identities),
        region=settings.default_region,
    )


async def _add_email(
    session: AsyncSession,
    mail: ParsedMail,
    raw: bytes,
    case: Case,
    *,
    source: str,
    settings: Settings,
) -> Interaction:
    meta: dict[str, Any] = {
        "from": mail.from_address,
        "from_name": mail.from_name,
        "to": list(mail.to),
        "cc": list(mail.cc),
        "reply_to": list(mail.reply_to),
        "message_id": mail.message_id,
        "in_reply_to": list(mail.in_reply_to[:MAX_META_IDS]),
        "references": list(mail.references[-MAX_META_IDS:]),
        "date": mail.date.isoformat() if mail.date else None,
        "headers": mail.headers,
        "auto_submitted": mail.auto_submitted,
        "source": source,
    }
    if mail.parse_errors:
        meta["parse_errors"] = list(mail.parse_errors)
    interaction = await add_interaction(
        session,
        customer_id=case.customer_id,
        case_id=case.id,
        kind="email",
        direction="in",
        text=mail.text[:200_000],
        html=mail.html[:1_000_000] if mail.html else None,
        subject=(mail.subject or "")[:300] or None,
        meta=meta,
        occurred_at=datetime.now(UTC),
    )
    skipped: list[str] = []
    by_cid: dict[str, int] = {}
    for part in mail.attachments:
        if len(part.data) > settings.max_attachment_bytes:
            skipped.append(
                f"{part.filename} ({len(part.data)} bytes) is over the "
                f"{settings.max_attachment_bytes}-byte limit; it stays in the original message"
            )
            continue
        stored = await store_attachment(
            session,
            attachments_dir=settings.attachments_dir,
            interaction_id=interaction.id,
            filename=part.filename,
            content_type=part.content_type,
            data=part.data,
            max_bytes=settings.max_attachment_bytes,
        )
        if part.content_id:
            by_cid[part.content_id] = stored.id
    # A message we could not read cleanly (or whose parts we had to leave out) is kept
    # byte for byte, so an agent can always open exactly what was sent.
    if mail.parse_errors or skipped:
        original = await store_attachment(
            session,
            attachments_dir=settings.attachments_dir,
            interaction_id=interaction.id,
            filename="original.eml",
            content_type="message/rfc822",
            data=raw,
            max_bytes=max(len(raw), settings.max_attachment_bytes),
        )
        meta = dict(interaction.meta)
        meta["original_attachment_id"] = original.id
        if skipped:
            meta["skipped_attachments"] = skipped
        interaction.meta = meta
    if by_cid and interaction.html:
        interaction.html = _rewrite_cids(interaction.html, by_cid)
    await session.flush()
    return interaction


def _rewrite_cids(html: str, by_cid: dict[str, int]) -> str:
    def swap(match: re.Match[str]) -> str:
        attachment_id = by_cid.get(match.group(2))
        if attachment_id is None:
            return match.group(0)
        return f"{match.group(1)}/api/attachments/{attachment_id}"

    return re.sub(r"""(src=["']?)cid:([^"'\s>]+)""", swap, html, flags=re.I)


async def _wake_case(session: AsyncSession, case: Case, *, reopened: bool) -> None:
    """A customer's reply makes the case theirs to answer again: solved reopens, pending
    (waiting for the customer) becomes open."""
    change = "email"
    now = datetime.now(UTC)
    if reopened or case.status == "pending":
        note = f"status {case.status} → open (customer replied by email)"
        await sla.on_status_change(session, case.id, case.status, "open", now)
        case.status = "open"
        case.solved_at = None
        change = "reopened" if reopened else "updated"
        await add_interaction(
            session,
            customer_id=case.customer_id,
            case_id=case.id,
            kind="system",
            direction="internal",
            text=note,
            meta={"changes": {"status": "open"}, "reason": "email"},
        )
    case.updated_at = now
    await session.flush()
    await sla.on_customer_message(session, case.id, now)
    await cases_service.announce(session, case, change, actor_user_id=None)


async def _record_bounce(session: AsyncSession, mail: ParsedMail, row_id: int) -> IngestResult:
    """A delivery-status notification marks the address as bouncing and notes the failure
    on the case of the mail that bounced; it never opens a case of its own."""
    bounce = mail.bounce
    assert bounce is not None
    reason = " ".join(p for p in (bounce.status, bounce.diagnostic) if p)[:300] or "bounced"
    recipients = [a for a in (_address(r) for r in bounce.recipients) if a]
    if recipients and bounce.permanent:
        await session.execute(
            update(ContactIdentity)
            .where(ContactIdentity.kind == "email", ContactIdentity.normalized.in_(recipients))
            .values(bouncing_since=func.now(), bounce_reason=reason)
        )
    # Bounces rarely thread: the returned copy's Message-ID is what names our mail.
    returned = (bounce.original_message_id,) if bounce.original_message_id else ()
    case = await _case_by_ids(session, (*returned, *mail.in_reply_to, *reversed(mail.references)))
    interaction_id = None
    if case is not None:
        note = await add_interaction(
            session,
            customer_id=case.customer_id,
            case_id=case.id,
            kind="system",
            direction="internal",
            text=f"mail to {', '.join(recipients) or 'the customer'} bounced: {reason}",
            meta={"bounce": {"recipients": recipients, "status": bounce.status}},
        )
        interaction_id = note.id
        await session.execute(
            update(MailMessage)
            .where(MailMessage.id == row_id)
            .values(case_id=None, interaction_id=note.id)
        )
        await cases_service.announce(session, case, "bounce", actor_user_id=None)
    return IngestResult(
        "bounce",
        mail.message_id,
        case_id=case.id if case else None,
        case_number=case.number if case else None,
        interaction_id=interaction_id,
        parse_errors=mail.parse_errors,
        notes=tuple(recipients),
    )


def _may_auto_reply(mail: ParsedMail, sender: str, settings: Settings) -> bool:
    """No automatic answer to automatic mail, lists, or ourselves: that is how mail loops
    between two auto-responders start."""
    if not sender or mail.auto_submitted or mail.bounce is not None:
        return False
    local = sender.split("@")[0]
    if local in ("mailer-daemon", "postmaster", "noreply", "no-reply", "donotreply"):
        return False
    return sender not in _own_addresses(settings)


async def _acknowledge(
    session: AsyncSession, settings: Settings, case: Case, mail: ParsedMail, sender: str
) -> bool:
    if not settings.mail_ack:
        return False
    from helpdesk.mail import outbound

    customer = await session.get(Customer, case.customer_id)  # usually in the identity map
    customer_language = customer.language if customer else None
    sent = await outbound.acknowledge(
        session,
        settings,
        case=case,
        customer_address=sender,
        inbound_message_id=mail.message_id,
        inbound_subject=mail.subject,
        language=customer_language,
        enabled=True,
    )
    return sent is not None
