"""Customer data rights (APPI, GDPR): export what the desk holds about a customer, erase a
customer, and record their consent and contact preferences.

Erasure keeps the rows that statistics are made of (cases, timeline entries, calls, chats,
SLA clocks, ratings, every timestamp) and removes or blanks what identifies or describes
the person: identities, names, addresses, numbers, message bodies, files. A customer that
was merged into another is the same person, so both work on the whole merge tree.
docs/PRIVACY.md says what is removed and what is kept, field by field.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import shutil
import unicodedata
import zipfile
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import (
    Select,
    and_,
    case,
    delete,
    event,
    func,
    literal_column,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from helpdesk import audit
from helpdesk.errors import Conflict, InvalidInput, NotFound
from helpdesk.interactions import attachment_path, safe_filename
from helpdesk.models import (
    LANGUAGES,
    Attachment,
    AuditRecord,
    Call,
    Case,
    ChatConversation,
    ChatFile,
    ChatMessage,
    ContactIdentity,
    Customer,
    Interaction,
    MailMessage,
    OutboxMail,
    SlaClock,
    User,
)

log = logging.getLogger(__name__)

CONSENT_PURPOSES = ("data_processing", "marketing", "recording")
CONSENT_SOURCES = ("agent", "chat", "email", "paper", "phone", "web")
CONTACT_CHANNELS = ("email", "phone", "chat", "sms")
EXPORT_FORMAT = "helpdesk-customer-export/1"
REDACTED = "[削除済み / erased]"
MAX_REASON_CHARS = 1000
BATCH = 500

# Timeline metadata that says nothing about the person: what statistics, SLA and the case
# history are read from. Every other key (from, to, cc, from_name, headers, message ids,
# visitor, messages, csat_comment, error texts, ...) is dropped by erasure.
KEPT_META = frozenset(
    {
        "acknowledgement", "actions", "agent_id", "attempts", "auto_submitted", "call_id",
        "cause", "clock", "closed_by", "conversation_id", "csat", "deadline_at",
        "duration_seconds", "language", "outbox_state", "queue", "reason", "sent_at", "sla",
        "source", "state", "talk_seconds", "transcript", "wait_seconds",
    }
)  # fmt: skip
KEPT_CHANGES = frozenset({"status", "priority", "assignee_id", "team_id", "tags"})
# Keys of earlier audit records (customer.merge) that name or reach the person.
PERSONAL_AUDIT_KEYS = frozenset(
    {"merged_customer_name", "moved_identities", "dropped_duplicate_identities"}
)
_EMAIL = re.compile(r"[^\s@<>()\[\],;:\"']+@[^\s@<>()\[\],;:\"']+")
_PHONE = re.compile(r"\+?\d[\d\s\-().]{5,}\d")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_UNSAFE_IN_ZIP = re.compile(r"[<>:\"|?*\\]")


def erased_name(customer_id: int) -> str:
    """The placeholder an erased customer is shown by, in both desk languages."""
    return f"削除済み顧客 #{customer_id} / Erased customer #{customer_id}"


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, bytes):
        return None  # raw mail is not exported; the timeline entry holds its text
    raise TypeError(f"cannot export {type(value).__name__}")


# -- whose data: the customer and every record merged into it -------------------------------

_MERGE_TREE = text(
    """
    WITH RECURSIVE tree(id) AS (
        SELECT CAST(:id AS integer)
        UNION
        SELECT c.id FROM customers c JOIN tree t ON c.merged_into_id = t.id
    )
    SELECT id FROM tree ORDER BY id
    """
)


async def merge_tree(session: AsyncSession, customer_id: int) -> list[int]:
    """The customer's id and the ids of every customer merged into it, at any depth.

    Merging moves identities, cases and timeline entries but leaves calls and chats on the
    merged-away record, so the person's data is found under all of these ids.
    """
    if await session.get(Customer, customer_id) is None:
        raise NotFound(f"customer {customer_id} not found")
    return list((await session.scalars(_MERGE_TREE, {"id": customer_id})).all())


async def _calls_filter(session: AsyncSession, ids: list[int]) -> Any:
    """The customer's calls: those tied to them, and unmatched calls from a number that
    only they hold (an unknown caller's calls before anyone chose the customer)."""
    phones = set(
        (
            await session.scalars(
                select(ContactIdentity.normalized).where(
                    ContactIdentity.customer_id.in_(ids), ContactIdentity.kind == "phone"
                )
            )
        ).all()
    )
    shared = set()
    if phones:
        shared = set(
            (
                await session.scalars(
                    select(ContactIdentity.normalized).where(
                        ContactIdentity.kind == "phone",
                        ContactIdentity.normalized.in_(phones),
                        ContactIdentity.customer_id.not_in(ids),
                    )
                )
            ).all()
        )
    only_theirs = sorted(phones - shared)
    if not only_theirs:
        return Call.customer_id.in_(ids)
    return or_(
        Call.customer_id.in_(ids),
        and_(Call.customer_id.is_(None), Call.customer_number.in_(only_theirs)),
    )


def _interaction_ids(ids: list[int]) -> Select[tuple[int]]:
    return select(Interaction.id).where(Interaction.customer_id.in_(ids))


def _mail_filter(ids: list[int]) -> Any:
    return or_(
        MailMessage.interaction_id.in_(_interaction_ids(ids)),
        MailMessage.case_id.in_(select(Case.id).where(Case.customer_id.in_(ids))),
    )


async def _count(session: AsyncSession, model: Any, *where: Any) -> int:
    return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


# -- export ---------------------------------------------------------------------------------

README = """\
顧客データのエクスポート / Customer data export
==============================================

このファイルは、サポートデスクが顧客 #{id} について保有するすべての情報です。
This archive holds everything the support desk keeps about customer #{id}.

作成日時 / Created: {at} (UTC)

customer.json
  顧客情報、連絡先(電話番号・メールアドレスなど)、同意と連絡方法の希望、
  案件とそのやり取り(電話・メール・チャット・メモ)、通話記録、チャットの会話と
  メッセージ、メールのメタデータ(Message-ID、送受信日時)、SLA の記録、
  この顧客に関する監査記録。統合された顧客の記録も含みます。
  The customer record, contact identities (phone numbers, email addresses, ...),
  consent and contact preferences, cases with their timeline (calls, emails, chats,
  notes), the call log, chat conversations with their messages, mail metadata
  (Message-IDs, when sent or received), SLA clocks, and audit records about this
  customer. Records merged into this customer are included.
  JSON: keys sorted, times in ISO 8601, UTC.

attachments/interactions/
  メールやメモに添付されたファイル(元のファイル名の前に添付 ID)。
  Files attached to emails and notes, named "<attachment id>-<original name>".

attachments/chat/
  チャットでアップロードされたファイル。
  Files uploaded in chats, named "<file id>-<original name>".

customer.json の "file" は、このアーカイブ内のファイルの場所です。"missing": true の
ファイルは保管場所に見つかりませんでした。
In customer.json, "file" is the path of a file inside this archive; a file marked
"missing": true was not found in storage.
"""


@dataclass
class ExportSummary:
    """What an export wrote: how many records of each kind, and how many files."""

    customer_id: int
    customer_ids: list[int]
    counts: dict[str, int]
    files: int
    missing_files: int

    @property
    def filename(self) -> str:
        return f"customer-{self.customer_id}-export.zip"

    def as_dict(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "customer_ids": self.customer_ids,
            "counts": dict(sorted(self.counts.items())),
            "files": self.files,
            "missing_files": self.missing_files,
        }


@dataclass(frozen=True)
class _Streamed:
    """A JSON array written item by item as `items()` yields them, never held whole;
    `count_as` names the count it adds to in the export's summary."""

    items: Callable[[], AsyncIterator[Any]]
    count_as: str | None = None


class _Export:
    """Writes `customer.json` a record at a time, so a long history never sits in memory;
    remembers which stored files to add once the JSON is complete."""

    def __init__(
        self, session: AsyncSession, ids: list[int], attachments_dir: Path, calls_filter: Any
    ) -> None:
        self.session = session
        self.ids = ids
        self.attachments_dir = attachments_dir
        self.calls_filter = calls_filter
        self.files: list[tuple[str, Path]] = []
        self.missing = 0
        self.counts: dict[str, int] = {}
        self._names: dict[int, str] | None = None

    def add(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n

    async def write_json(self, stream: BinaryIO, document: dict[str, Any]) -> None:
        """`document` as JSON with sorted keys; `_Streamed` values anywhere in its dicts are
        written as they are read."""

        def put(s: str) -> None:
            stream.write(s.encode("utf-8"))

        async def write(value: Any) -> None:
            if isinstance(value, _Streamed):
                put("[")
                n = 0
                async for item in value.items():
                    put(",\n" if n else "\n")
                    await write(item)
                    n += 1
                put("\n]" if n else "]")
                if value.count_as:
                    self.add(value.count_as, n)
            elif isinstance(value, dict) and any(isinstance(v, _Streamed) for v in value.values()):
                put("{")
                for i, key in enumerate(sorted(value)):
                    put((", " if i else "") + json.dumps(key) + ": ")
                    await write(value[key])
                put("}")
            else:
                put(_dumps(value))

        await write(document)
        put("\n")

    def file_entry(self, kind: str, row_id: int, filename: str, digest: str) -> dict[str, Any]:
        path = attachment_path(self.attachments_dir, digest) if _HEX64.match(digest) else None
        if path is None or not path.is_file():
            self.missing += 1
            return {"file": None, "missing": True}
        name = f"attachments/{kind}/{row_id}-{_zip_safe(filename)}"
        self.files.append((name, path))
        return {"file": name}

    async def _rows(
        self, stmt: Select[Any], order: tuple[Any, ...]
    ) -> AsyncIterator[Mapping[str, Any]]:
        """Rows of `stmt` in `order` (unique, last column the primary key), a batch at a
        time by keyset: plain rows, so nothing collects in the session's identity map."""
        last: tuple[Any, ...] | None = None
        while True:
            page = stmt.order_by(*order).limit(BATCH)
            if last is not None:
                page = page.where(tuple_(*order) > tuple_(*last))
            rows = (await self.session.execute(page)).mappings().all()
            for row in rows:
                yield row
            if len(rows) < BATCH:
                return
            last = tuple(rows[-1][c.key] for c in order)

    async def _attachments_by_interaction(self, where: Any) -> dict[int, list[dict[str, Any]]]:
        rows = await self.session.execute(
            select(Attachment.__table__)
            .where(Attachment.interaction_id.in_(select(Interaction.id).where(where)))
            .order_by(Attachment.id)
        )
        found: dict[int, list[dict[str, Any]]] = {}
        for row in rows.mappings():
            found.setdefault(row["interaction_id"], []).append(
                {
                    "id": row["id"],
                    "filename": row["filename"],
                    "content_type": row["content_type"],
                    "size": row["size"],
                    "sha256": row["sha256"],
                    "created_at": _iso(row["created_at"]),
                    **self.file_entry("interactions", row["id"], row["filename"], row["sha256"]),
                }
            )
        self.add("attachments", sum(len(v) for v in found.values()))
        return found

    async def _interactions(self, where: Any) -> AsyncIterator[dict[str, Any]]:
        attachments = await self._attachments_by_interaction(where)
        authors = await self._user_names()
        stmt = select(Interaction.__table__).where(where)
        async for row in self._rows(stmt, (Interaction.occurred_at, Interaction.id)):
            self.add("interactions")
            yield {
                "id": row["id"],
                "customer_id": row["customer_id"],
                "case_id": row["case_id"],
                "kind": row["kind"],
                "direction": row["direction"],
                "author_user_id": row["author_user_id"],
                "author_name": authors.get(row["author_user_id"] or 0),
                "subject": row["subject"],
                "text": row["text"],
                "html": row["html"],
                "meta": row["meta"],
                "occurred_at": _iso(row["occurred_at"]),
                "created_at": _iso(row["created_at"]),
                "attachments": attachments.get(row["id"], []),
            }

    async def _user_names(self) -> dict[int, str]:
        """Staff names by id, read once (there are few staff, and many entries)."""
        if self._names is None:
            rows = await self.session.execute(select(User.id, User.name))
            self._names = {user_id: name for user_id, name in rows.all()}
        return self._names

    async def cases(self) -> AsyncIterator[dict[str, Any]]:
        stmt = select(Case.__table__).where(Case.customer_id.in_(self.ids))
        async for row in self._rows(stmt, (Case.id,)):
            clocks = (
                await self.session.execute(
                    select(SlaClock.__table__)
                    .where(SlaClock.case_id == row["id"])
                    .order_by(SlaClock.id)
                )
            ).mappings()
            on_case = and_(Interaction.case_id == row["id"], Interaction.customer_id.in_(self.ids))
            yield {
                "id": row["id"],
                "number": row["number"],
                "customer_id": row["customer_id"],
                "subject": row["subject"],
                "status": row["status"],
                "priority": row["priority"],
                "channel": row["channel"],
                "assignee_id": row["assignee_id"],
                "team_id": row["team_id"],
                "tags": list(row["tags"] or []),
                "follow_up_of_id": row["follow_up_of_id"],
                "created_at": _iso(row["created_at"]),
                "updated_at": _iso(row["updated_at"]),
                "solved_at": _iso(row["solved_at"]),
                "closed_at": _iso(row["closed_at"]),
                "sla_clocks": [
                    {
                        "kind": c["kind"],
                        "state": c["state"],
                        "target_minutes": c["target_minutes"],
                        "started_at": _iso(c["started_at"]),
                        "deadline_at": _iso(c["deadline_at"]),
                        "met_at": _iso(c["met_at"]),
                        "breached_at": _iso(c["breached_at"]),
                    }
                    for c in clocks
                ],
                "interactions": _Streamed(functools.partial(self._interactions, on_case)),
            }

    def interactions_without_case(self) -> AsyncIterator[dict[str, Any]]:
        """Entries with no case, or on a case of another customer (a call attached there)."""
        own_cases = select(Case.id).where(Case.customer_id.in_(self.ids))
        return self._interactions(
            and_(
                Interaction.customer_id.in_(self.ids),
                or_(Interaction.case_id.is_(None), Interaction.case_id.not_in(own_cases)),
            )
        )

    async def identities(self) -> AsyncIterator[dict[str, Any]]:
        stmt = select(ContactIdentity.__table__).where(ContactIdentity.customer_id.in_(self.ids))
        async for row in self._rows(stmt, (ContactIdentity.id,)):
            yield {
                "id": row["id"],
                "customer_id": row["customer_id"],
                "kind": row["kind"],
                "value": row["raw_value"],
                "normalized": row["normalized"],
                "verified": row["verified"],
                "primary": row["is_primary"],
                "last_seen_at": _iso(row["last_seen_at"]),
                "bouncing_since": _iso(row["bouncing_since"]),
                "bounce_reason": row["bounce_reason"],
                "created_at": _iso(row["created_at"]),
            }

    async def calls(self) -> AsyncIterator[dict[str, Any]]:
        stmt = select(Call.__table__).where(self.calls_filter)
        async for row in self._rows(stmt, (Call.started_at, Call.id)):
            answered, ended, started = row["answered_at"], row["ended_at"], row["started_at"]
            end = answered or ended
            yield {
                "id": row["id"],
                "call_id": row["call_id"],
                "customer_id": row["customer_id"],
                "case_id": row["case_id"],
                "interaction_id": row["interaction_id"],
                "direction": row["direction"],
                "from": row["from_number"],
                "to": row["to_number"],
                "customer_number": row["customer_number"],
                "state": row["state"],
                "cause": row["cause"],
                "queue": row["queue"],
                "agent_id": row["agent_id"],
                "notes": row["notes"],
                "started_at": _iso(started),
                "answered_at": _iso(answered),
                "ended_at": _iso(ended),
                "wait_seconds": max(0, round((end - started).total_seconds())) if end else None,
                "talk_seconds": (
                    max(0, round((ended - answered).total_seconds()))
                    if answered and ended
                    else None
                ),
            }

    async def chats(self) -> AsyncIterator[dict[str, Any]]:
        stmt = select(ChatConversation.__table__).where(ChatConversation.customer_id.in_(self.ids))
        async for row in self._rows(stmt, (ChatConversation.id,)):
            files = (
                await self.session.execute(
                    select(ChatFile.__table__)
                    .where(ChatFile.conversation_id == row["id"])
                    .order_by(ChatFile.id)
                )
            ).mappings()
            file_entries = [
                {
                    "id": f["id"],
                    "filename": f["filename"],
                    "content_type": f["content_type"],
                    "size": f["size"],
                    "sha256": f["sha256"],
                    "created_at": _iso(f["created_at"]),
                    **self.file_entry("chat", f["id"], f["filename"], f["sha256"]),
                }
                for f in files
            ]
            self.add("chat_files", len(file_entries))
            yield {
                "id": row["id"],
                "customer_id": row["customer_id"],
                "case_id": row["case_id"],
                "interaction_id": row["interaction_id"],
                "state": row["state"],
                "visitor_name": row["visitor_name"],
                "visitor_email": row["visitor_email"],
                "visitor_id": row["visitor_id"],
                "language": row["language"],
                "page_url": row["page_url"],
                "team_id": row["team_id"],
                "agent_id": row["agent_id"],
                "closed_by": row["closed_by"],
                "csat_score": row["csat_score"],
                "csat_comment": row["csat_comment"],
                "transcripts_sent": row["transcripts_sent"],
                "created_at": _iso(row["created_at"]),
                "queued_at": _iso(row["queued_at"]),
                "accepted_at": _iso(row["accepted_at"]),
                "closed_at": _iso(row["closed_at"]),
                "messages": _Streamed(
                    functools.partial(self._chat_messages, row["id"]), "chat_messages"
                ),
                "files": file_entries,
            }

    async def _chat_messages(self, conversation_id: int) -> AsyncIterator[dict[str, Any]]:
        stmt = select(ChatMessage.__table__).where(ChatMessage.conversation_id == conversation_id)
        async for m in self._rows(stmt, (ChatMessage.seq,)):
            yield {
                "seq": m["seq"],
                "sender": m["sender"],
                "name": m["name"],
                "body": m["body"],
                "file_id": m["file_id"],
                "created_at": _iso(m["created_at"]),
            }

    async def mail_messages(self) -> AsyncIterator[dict[str, Any]]:
        stmt = select(MailMessage.__table__).where(_mail_filter(self.ids))
        async for row in self._rows(stmt, (MailMessage.id,)):
            yield {
                "message_id": row["message_id"],
                "direction": row["direction"],
                "sender": row["sender"],
                "case_id": row["case_id"],
                "interaction_id": row["interaction_id"],
                "created_at": _iso(row["created_at"]),
            }

    async def outbound_mail(self) -> AsyncIterator[dict[str, Any]]:
        stmt = select(
            OutboxMail.id,
            OutboxMail.message_id,
            OutboxMail.interaction_id,
            OutboxMail.recipients,
            OutboxMail.state,
            OutboxMail.attempts,
            OutboxMail.created_at,
            OutboxMail.sent_at,
        ).where(OutboxMail.interaction_id.in_(_interaction_ids(self.ids)))
        async for row in self._rows(stmt, (OutboxMail.id,)):
            yield {
                "message_id": row["message_id"],
                "interaction_id": row["interaction_id"],
                "recipients": list(row["recipients"] or []),
                "state": row["state"],
                "attempts": row["attempts"],
                "created_at": _iso(row["created_at"]),
                "sent_at": _iso(row["sent_at"]),
            }

    async def audit(self) -> AsyncIterator[dict[str, Any]]:
        stmt = select(AuditRecord.__table__).where(
            AuditRecord.entity_type == "customer", AuditRecord.entity_id.in_(self.ids)
        )
        async for row in self._rows(stmt, (AuditRecord.id,)):
            yield {
                "action": row["action"],
                "customer_id": row["entity_id"],
                "actor_user_id": row["actor_user_id"],
                "details": row["details"],
                "at": _iso(row["at"]),
            }


def customer_record(customer: Customer) -> dict[str, Any]:
    return {
        "id": customer.id,
        "name": customer.name,
        "name_kana": customer.name_kana,
        "organization": customer.organization,
        "language": customer.language,
        "tier": customer.tier,
        "notes": customer.notes,
        "consent": customer.consent or {},
        "contact_preferences": customer.contact_preferences or {},
        "merged_into_id": customer.merged_into_id,
        "erased_at": _iso(customer.erased_at),
        "created_at": _iso(customer.created_at),
        "updated_at": _iso(customer.updated_at),
    }


def _zip_safe(filename: str) -> str:
    """A name any unzip tool accepts on any system: no directories, no reserved characters."""
    name = _UNSAFE_IN_ZIP.sub("_", safe_filename(filename))
    stem, dot, ext = name.rpartition(".")
    if dot and len(ext) <= 16 and len(name) > 120:
        return stem[: 119 - len(ext)] + "." + ext
    return name[:120]


async def export_customer(
    session: AsyncSession,
    customer_id: int,
    attachments_dir: Path,
    out: BinaryIO,
    *,
    actor_user_id: int | None,
    now: datetime | None = None,
) -> ExportSummary:
    """Write a zip of everything the desk holds about a customer to `out` (a writable, binary
    file; a temporary file for a download) and audit the export in the caller's transaction.

    The zip holds README.txt (ja/en), customer.json (sorted keys, ISO times in UTC) and the
    stored files under attachments/. Records are read in batches and files copied in a
    worker thread, so a history of any length takes little memory and does not stall the
    event loop.
    """
    ids = await merge_tree(session, customer_id)
    customers = {
        c.id: c
        for c in (
            await session.scalars(
                select(Customer).where(Customer.id.in_(ids)).order_by(Customer.id)
            )
        ).all()
    }
    at = now or datetime.now(UTC)
    export = _Export(session, ids, attachments_dir, await _calls_filter(session, ids))
    stamp = at.astimezone(UTC).timetuple()[:6]
    stamp = max(stamp, (1980, 1, 1, 0, 0, 0))  # the zip format's epoch

    def entry(name: str) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, date_time=stamp)  # type: ignore[arg-type]
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        return info

    with zipfile.ZipFile(out, "w", allowZip64=True) as archive:
        archive.writestr(entry("README.txt"), README.format(id=customer_id, at=_iso(at)))
        with archive.open(entry("customer.json"), "w", force_zip64=True) as stream:
            await export.write_json(
                stream,  # type: ignore[arg-type]
                {
                    "audit": _Streamed(export.audit, "audit"),
                    "calls": _Streamed(export.calls, "calls"),
                    "cases": _Streamed(export.cases, "cases"),
                    "chats": _Streamed(export.chats, "chats"),
                    "customer": customer_record(customers[customer_id]),
                    "export": {
                        "format": EXPORT_FORMAT,
                        "customer_id": customer_id,
                        "customer_ids": ids,
                        "exported_at": _iso(at),
                    },
                    "identities": _Streamed(export.identities, "identities"),
                    "interactions_without_case": _Streamed(export.interactions_without_case),
                    "mail_messages": _Streamed(export.mail_messages, "mail_messages"),
                    "merged_customers": [
                        customer_record(customers[i]) for i in ids if i != customer_id
                    ],
                    "outbound_mail": _Streamed(export.outbound_mail, "outbound_mail"),
                },
            )
        for name, path in export.files:
            await asyncio.to_thread(_copy_into, archive, entry(name), path)

    summary = ExportSummary(
        customer_id=customer_id,
        customer_ids=ids,
        counts=dict(export.counts),
        files=len(export.files),
        missing_files=export.missing,
    )
    await audit.record(
        session,
        actor_user_id,
        "customer.export",
        "customer",
        customer_id,
        customer_ids=ids,
        counts=summary.as_dict()["counts"],
        files=summary.files,
        missing_files=summary.missing_files,
        at=_iso(at),
    )
    return summary


def _copy_into(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> None:
    with path.open("rb") as source, archive.open(info, "w", force_zip64=True) as target:
        shutil.copyfileobj(source, target, 1 << 20)


# -- erasure --------------------------------------------------------------------------------


@dataclass
class ErasurePreview:
    """What erasing a customer would remove and keep, for the confirmation step."""

    customer_id: int
    customer_ids: list[int]
    removed: dict[str, int]
    kept: dict[str, int]
    open_chats: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "customer_ids": self.customer_ids,
            "removed": self.removed,
            "kept": self.kept,
            "open_chats": self.open_chats,
        }


@dataclass
class ErasureReport:
    """What an erasure did. `files_deleted` is set when the transaction commits: the files
    go only then, so a rollback leaves every file in place."""

    customer_id: int
    customer_ids: list[int]
    erased_at: datetime
    removed: dict[str, int]
    kept: dict[str, int]
    files_to_delete: int
    files_deleted: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "customer_ids": self.customer_ids,
            "erased_at": _iso(self.erased_at),
            "removed": self.removed,
            "kept": self.kept,
            "files_to_delete": self.files_to_delete,
            "files_deleted": self.files_deleted,
        }


OPEN_CHAT_STATES = ("new", "queued", "offered", "active")


async def _kept_counts(session: AsyncSession, ids: list[int], calls_filter: Any) -> dict[str, int]:
    own_cases = select(Case.id).where(Case.customer_id.in_(ids))
    return {
        "cases": await _count(session, Case, Case.customer_id.in_(ids)),
        "interactions": await _count(session, Interaction, Interaction.customer_id.in_(ids)),
        "calls": await _count(session, Call, calls_filter),
        "chats": await _count(session, ChatConversation, ChatConversation.customer_id.in_(ids)),
        "sla_clocks": await _count(session, SlaClock, SlaClock.case_id.in_(own_cases)),
    }


async def erasure_preview(session: AsyncSession, customer_id: int) -> ErasurePreview:
    """Counts for the confirmation page: what erasure removes, what it keeps, and whether an
    open chat stands in the way."""
    ids = await merge_tree(session, customer_id)
    calls_filter = await _calls_filter(session, ids)
    chats = select(ChatConversation.id).where(ChatConversation.customer_id.in_(ids))
    removed = {
        "identities": await _count(session, ContactIdentity, ContactIdentity.customer_id.in_(ids)),
        "attachments": await _count(
            session, Attachment, Attachment.interaction_id.in_(_interaction_ids(ids))
        ),
        "chat_files": await _count(session, ChatFile, ChatFile.conversation_id.in_(chats)),
        "chat_messages": await _count(
            session,
            ChatMessage,
            ChatMessage.conversation_id.in_(chats),
            ChatMessage.sender != "system",
        ),
        "mail_messages": await _count(session, MailMessage, _mail_filter(ids)),
    }
    return ErasurePreview(
        customer_id=customer_id,
        customer_ids=ids,
        removed=removed,
        kept=await _kept_counts(session, ids, calls_filter),
        open_chats=await _count(
            session,
            ChatConversation,
            ChatConversation.customer_id.in_(ids),
            ChatConversation.state.in_(OPEN_CHAT_STATES),
        ),
    )


def confirmation_matches(customer: Customer, confirm: str) -> bool:
    """The confirmation an erasure needs: the customer's id (`42` or `#42`) or exact name,
    ignoring width, case and surrounding spaces."""

    def fold(value: str) -> str:
        return " ".join(unicodedata.normalize("NFKC", value).casefold().split())

    typed = fold(confirm or "")
    return bool(typed) and typed in {str(customer.id), f"#{customer.id}", fold(customer.name)}


def redacted_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """A timeline entry's metadata with only what statistics and SLA read from it."""
    kept: dict[str, Any] = {k: v for k, v in meta.items() if k in KEPT_META}
    changes = meta.get("changes")
    if isinstance(changes, dict):
        kept["changes"] = {k: v for k, v in changes.items() if k in KEPT_CHANGES}
    bounce = meta.get("bounce")
    if isinstance(bounce, dict):
        kept["bounce"] = {"status": bounce.get("status")}
    messages = meta.get("messages")
    if isinstance(messages, list):
        kept["message_count"] = len(messages)
    kept["redacted"] = True
    return kept


def redacted_text(kind: str, value: str) -> str:
    """What is left of a timeline entry's text.

    System entries are the desk's own words ("status solved → open", "SLA breach: ...";
    the service level counts reopens by them) with, at most, an address or number of the
    customer in them: those are blanked and the words kept. Everything else a person
    wrote (mail, chat, call notes, agents' notes) goes.
    """
    if kind == "system":
        return _PHONE.sub(REDACTED, _EMAIL.sub(REDACTED, value))
    return REDACTED if value else ""


@dataclass
class _Erasure:
    session: AsyncSession
    ids: list[int]
    root: Customer
    now: datetime
    calls_filter: Any
    removed: dict[str, int] = field(default_factory=dict)
    digests: set[str] = field(default_factory=set)


async def _delete_attachments(job: _Erasure) -> None:
    rows = (
        await job.session.execute(
            delete(Attachment)
            .where(Attachment.interaction_id.in_(_interaction_ids(job.ids)))
            .returning(Attachment.sha256)
        )
    ).all()
    job.digests.update(r[0] for r in rows)
    job.removed["attachments"] = len(rows)


async def _delete_chat_files(job: _Erasure) -> None:
    chats = select(ChatConversation.id).where(ChatConversation.customer_id.in_(job.ids))
    # chat_messages.file_id is ON DELETE SET NULL: the messages stay, without their file.
    rows = (
        await job.session.execute(
            delete(ChatFile).where(ChatFile.conversation_id.in_(chats)).returning(ChatFile.sha256)
        )
    ).all()
    job.digests.update(r[0] for r in rows)
    job.removed["chat_files"] = len(rows)


async def _redact_interactions(job: _Erasure) -> None:
    """Texts, HTML, subjects and personal metadata of every timeline entry, a batch at a
    time; the entries themselves (kind, direction, case, author, times) stay."""
    last_id, done = 0, 0
    while True:
        rows = (
            await job.session.execute(
                select(Interaction.id, Interaction.kind, Interaction.text, Interaction.meta)
                .where(Interaction.customer_id.in_(job.ids), Interaction.id > last_id)
                .order_by(Interaction.id)
                .limit(BATCH)
            )
        ).all()
        if not rows:
            break
        await job.session.execute(
            update(Interaction),
            [
                {
                    "id": row.id,
                    "text": redacted_text(row.kind, row.text or ""),
                    "html": None,
                    "subject": None,
                    "meta": redacted_meta(row.meta or {}),
                }
                for row in rows
            ],
        )
        done += len(rows)
        last_id = rows[-1].id
    job.removed["interaction_texts"] = done


async def _redact_cases(job: _Erasure) -> None:
    # A subject is usually the customer's own words (a mail's subject, a chat's first line).
    result = await job.session.execute(
        update(Case).where(Case.customer_id.in_(job.ids)).values(subject=REDACTED)
    )
    job.removed["case_subjects"] = int(result.rowcount or 0)  # type: ignore[attr-defined]


async def _redact_chats(job: _Erasure) -> None:
    chats = select(ChatConversation.id).where(ChatConversation.customer_id.in_(job.ids))
    result = await job.session.execute(
        update(ChatConversation)
        .where(ChatConversation.customer_id.in_(job.ids))
        .values(
            visitor_name=erased_name(job.root.id)[:100],
            visitor_email=None,
            visitor_id=None,
            page_url=None,
            csat_comment=None,
            # A new random value: the visitor's old token no longer opens the conversation.
            token_hash=literal_column(
                "md5(random()::text) || md5(id::text || clock_timestamp()::text)"
            ),
        )
    )
    job.removed["chats_redacted"] = int(result.rowcount or 0)  # type: ignore[attr-defined]
    result = await job.session.execute(
        update(ChatMessage)
        .where(ChatMessage.conversation_id.in_(chats), ChatMessage.sender != "system")
        .values(
            body=REDACTED,
            name=case((ChatMessage.sender == "visitor", ""), else_=ChatMessage.name),
        )
    )
    job.removed["chat_messages"] = int(result.rowcount or 0)  # type: ignore[attr-defined]


async def _redact_calls(job: _Erasure) -> None:
    """The customer's side of each call goes (the caller inbound, the callee outbound); our
    own line, the agent, the queue and every time stay for wait and talk times."""
    result = await job.session.execute(
        update(Call)
        .where(job.calls_filter)
        .values(
            customer_number=None,
            from_number=case((Call.direction == "in", ""), else_=Call.from_number),
            to_number=case((Call.direction == "out", ""), else_=Call.to_number),
            notes="",
        )
        .execution_options(synchronize_session=False)
    )
    job.removed["call_numbers"] = int(result.rowcount or 0)  # type: ignore[attr-defined]


async def _redact_mail(job: _Erasure) -> None:
    """Raw outgoing mail and recipients go; Message-IDs are replaced by their hash, so that
    a later reply from the old address cannot thread into the erased case."""
    result = await job.session.execute(
        update(MailMessage)
        .where(_mail_filter(job.ids))
        .values(
            message_id=literal_column(
                "'erased:' || encode(sha256(convert_to(message_id, 'UTF8')), 'hex')"
            ),
            sender="",
        )
        .execution_options(synchronize_session=False)
    )
    job.removed["mail_messages"] = int(result.rowcount or 0)  # type: ignore[attr-defined]
    result = await job.session.execute(
        update(OutboxMail)
        .where(OutboxMail.interaction_id.in_(_interaction_ids(job.ids)))
        .values(
            raw=b"",
            recipients=[],
            # Mail not sent yet is never sent now: it has neither body nor recipient.
            state=case((OutboxMail.state == "pending", "failed"), else_=OutboxMail.state),
            last_error=case(
                (OutboxMail.state == "pending", "cancelled: the customer was erased"),
                else_=None,
            ),
        )
        .execution_options(synchronize_session=False)
    )
    job.removed["outbound_mail_bodies"] = int(result.rowcount or 0)  # type: ignore[attr-defined]


async def _delete_identities(job: _Erasure) -> None:
    result = await job.session.execute(
        delete(ContactIdentity).where(ContactIdentity.customer_id.in_(job.ids))
    )
    job.removed["identities"] = int(result.rowcount or 0)  # type: ignore[attr-defined]


async def _redact_audit(job: _Erasure) -> None:
    """Earlier audit records about the customer keep what happened, not who it was."""
    records = (
        await job.session.scalars(
            select(AuditRecord).where(
                AuditRecord.entity_type == "customer", AuditRecord.entity_id.in_(job.ids)
            )
        )
    ).all()
    changed = 0
    for record in records:
        personal = PERSONAL_AUDIT_KEYS & set(record.details or {})
        if personal:
            record.details = {
                **record.details,
                **{key: REDACTED for key in personal},
            }
            changed += 1
    job.removed["audit_details"] = changed


async def _anonymize_customers(job: _Erasure) -> None:
    for customer in (
        await job.session.scalars(select(Customer).where(Customer.id.in_(job.ids)))
    ).all():
        customer.name = erased_name(customer.id)
        customer.name_kana = None
        customer.organization = None
        customer.language = None
        customer.notes = None
        customer.search_text = ""  # found by no name search
        customer.consent = {}
        customer.contact_preferences = {}
        customer.erased_at = job.now
    await job.session.flush()


async def _unreferenced(session: AsyncSession, digests: set[str]) -> list[str]:
    """Of the files just unlinked from their rows, those no other row still uses (the store
    keeps identical files once, whoever sent them)."""
    wanted = sorted(d for d in digests if _HEX64.match(d))
    if not wanted:
        return []
    used = set(
        await session.scalars(select(Attachment.sha256).where(Attachment.sha256.in_(wanted)))
    ) | set(await session.scalars(select(ChatFile.sha256).where(ChatFile.sha256.in_(wanted))))
    return [d for d in wanted if d not in used]


def _delete_files_on_commit(
    session: AsyncSession, paths: list[Path], report: ErasureReport
) -> None:
    """Unlink `paths` once the session's transaction commits; forget them if it rolls back.

    A savepoint's release fires `after_commit` too: only the outermost commit counts.
    """
    sync: Session = session.sync_session
    settled = False

    def committed(s: Session) -> None:
        nonlocal settled
        if settled or s.in_nested_transaction():
            return
        settled = True
        report.files_deleted = _unlink(paths)

    def rolled_back(s: Session) -> None:
        nonlocal settled
        settled = True

    event.listen(sync, "after_commit", committed)
    event.listen(sync, "after_rollback", rolled_back)


def _unlink(paths: list[Path]) -> int:
    deleted = 0
    for path in paths:
        try:
            path.unlink()
            deleted += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            # The digest names no one; the row that pointed at the file is gone already.
            log.warning("erasure: could not delete stored file %s: %s", path.name, exc)
    return deleted


async def erase_customer(
    session: AsyncSession,
    customer_id: int,
    attachments_dir: Path,
    *,
    actor_user_id: int | None,
    reason: str,
    confirm: str,
    now: datetime | None = None,
) -> ErasureReport:
    """Erase a customer (and every record merged into it) in the caller's transaction.

    `confirm` must be the customer's id or name (InvalidInput otherwise), `reason` says why
    (for the audit record; it must not itself hold personal data). An erased customer
    cannot be erased again (Conflict), nor a merged-away one (erase the survivor), nor one
    with a chat still open (end it first). Stored files are deleted after the commit, and
    only those no other row references.
    """
    # The customer's row first: a concurrent erasure or merge finishes before the rest is
    # read, so the merge tree below is complete and the row is as that one left it.
    root = await session.get(Customer, customer_id, with_for_update=True, populate_existing=True)
    if root is None:
        raise NotFound(f"customer {customer_id} not found")
    ids = await merge_tree(session, customer_id)
    await session.execute(
        select(Customer.id)
        .where(Customer.id.in_(ids), Customer.id != customer_id)
        .order_by(Customer.id)
        .with_for_update()
    )
    if root.erased_at is not None:
        raise Conflict(f"customer {customer_id} was already erased on {_iso(root.erased_at)}")
    if root.merged_into_id is not None:
        raise Conflict(
            f"customer {customer_id} was merged into {root.merged_into_id}; "
            "erase that customer instead (this record is erased with it)"
        )
    if not confirmation_matches(root, confirm):
        raise InvalidInput(
            "type the customer's id or name exactly to confirm the erasure", field="confirm"
        )
    reason = " ".join((reason or "").split())
    if not reason:
        raise InvalidInput("say why the customer is erased", field="reason")
    if len(reason) > MAX_REASON_CHARS:
        raise InvalidInput(
            f"the reason is longer than {MAX_REASON_CHARS} characters", field="reason"
        )
    open_chats = await _count(
        session,
        ChatConversation,
        ChatConversation.customer_id.in_(ids),
        ChatConversation.state.in_(OPEN_CHAT_STATES),
    )
    if open_chats:
        raise Conflict("the customer has a chat still open; end it before erasing")

    calls_filter = await _calls_filter(session, ids)  # while the phone numbers are known
    kept = await _kept_counts(session, ids, calls_filter)  # erasure deletes none of these
    job = _Erasure(
        session=session, ids=ids, root=root, now=now or datetime.now(UTC), calls_filter=calls_filter
    )
    for step in (
        _delete_attachments,
        _delete_chat_files,
        _redact_interactions,
        _redact_cases,
        _redact_chats,
        _redact_calls,
        _redact_mail,
        _delete_identities,
        _redact_audit,
        _anonymize_customers,
    ):
        await step(job)
    digests = await _unreferenced(session, job.digests)
    report = ErasureReport(
        customer_id=customer_id,
        customer_ids=ids,
        erased_at=job.now,
        removed=dict(sorted(job.removed.items())),
        kept=kept,
        files_to_delete=len(digests),
    )
    await audit.record(
        session,
        actor_user_id,
        "customer.erase",
        "customer",
        customer_id,
        reason=reason,
        customer_ids=ids,
        removed=report.removed,
        kept=kept,
        files_to_delete=len(digests),
        at=_iso(job.now),
    )
    _delete_files_on_commit(session, [attachment_path(attachments_dir, d) for d in digests], report)
    return report


# -- consent and contact preferences --------------------------------------------------------


async def _living_customer(session: AsyncSession, customer_id: int) -> Customer:
    customer = await session.get(
        Customer, customer_id, with_for_update=True, populate_existing=True
    )
    if customer is None:
        raise NotFound(f"customer {customer_id} not found")
    if customer.erased_at is not None:
        raise Conflict(f"customer {customer_id} was erased")
    if customer.merged_into_id is not None:
        raise Conflict(
            f"customer {customer_id} was merged into {customer.merged_into_id}; record it there"
        )
    return customer


async def set_consent(
    session: AsyncSession,
    customer_id: int,
    changes: Mapping[str, object],
    *,
    source: str,
    actor_user_id: int | None,
    at: datetime | None = None,
) -> Customer:
    """Record the customer's consent, granted or not, for the purposes named in `changes`
    (`{"marketing": False}`); purposes not named keep what they had. Each purpose keeps
    when and through what `source` it was last given or withdrawn. Audited."""
    if not isinstance(changes, Mapping) or not changes:
        raise InvalidInput("name at least one purpose", field="consent")
    for purpose, granted in changes.items():
        if purpose not in CONSENT_PURPOSES:
            raise InvalidInput(
                f"purpose must be one of {', '.join(CONSENT_PURPOSES)}", field="consent"
            )
        if not isinstance(granted, bool):
            raise InvalidInput(f"consent for {purpose} must be true or false", field="consent")
    if source not in CONSENT_SOURCES:
        raise InvalidInput(f"source must be one of {', '.join(CONSENT_SOURCES)}", field="source")
    customer = await _living_customer(session, customer_id)
    when = _iso(at or datetime.now(UTC))
    consent = dict(customer.consent or {})
    for purpose, granted in changes.items():
        consent[purpose] = {"granted": granted, "at": when, "source": source}
    customer.consent = consent  # a new dict, so the JSONB change is seen
    await session.flush()
    await audit.record(
        session,
        actor_user_id,
        "customer.consent",
        "customer",
        customer_id,
        changes=dict(sorted(changes.items())),
        source=source,
        at=when,
    )
    return customer


async def set_contact_preferences(
    session: AsyncSession,
    customer_id: int,
    preferences: Mapping[str, object],
    *,
    actor_user_id: int | None,
) -> Customer:
    """Replace how the customer wants to be reached: `channels` (subset of email, phone,
    chat, sms; omitted means all), `language` (ja, en or null) and `do_not_contact`
    (no contact we start, on any channel). Audited with before and after."""
    if not isinstance(preferences, Mapping):
        raise InvalidInput("preferences must be an object", field="contact_preferences")
    unknown = sorted(set(preferences) - {"channels", "language", "do_not_contact"})
    if unknown:
        raise InvalidInput(f"unknown field: {unknown[0]}", field=unknown[0])
    channels = preferences.get("channels", list(CONTACT_CHANNELS))
    if not isinstance(channels, list) or not all(c in CONTACT_CHANNELS for c in channels):
        raise InvalidInput(
            f"channels must be a list of {', '.join(CONTACT_CHANNELS)}", field="channels"
        )
    language = preferences.get("language")
    if language is not None and language not in LANGUAGES:
        raise InvalidInput(f"language must be one of {', '.join(LANGUAGES)}", field="language")
    do_not_contact = preferences.get("do_not_contact", False)
    if not isinstance(do_not_contact, bool):
        raise InvalidInput("do_not_contact must be true or false", field="do_not_contact")
    customer = await _living_customer(session, customer_id)
    before = dict(customer.contact_preferences or {})
    after = {
        "channels": [c for c in CONTACT_CHANNELS if c in channels],
        "language": language,
        "do_not_contact": do_not_contact,
    }
    customer.contact_preferences = after
    await session.flush()
    await audit.record(
        session,
        actor_user_id,
        "customer.contact_preferences",
        "customer",
        customer_id,
        before=before,
        after=after,
    )
    return customer


def may_contact(customer: Customer, channel: str) -> bool:
    """Whether the desk may start a contact with the customer on `channel` (a call-back, a
    campaign). Answering the customer where they wrote in is not restricted by this."""
    if customer.erased_at is not None:
        return False
    prefs = customer.contact_preferences or {}
    if prefs.get("do_not_contact"):
        return False
    return channel in prefs.get("channels", CONTACT_CHANNELS)


def privacy_json(customer: Customer) -> dict[str, Any]:
    return {
        "customer_id": customer.id,
        "consent": customer.consent or {},
        "contact_preferences": customer.contact_preferences or {},
        "erased_at": _iso(customer.erased_at),
    }
