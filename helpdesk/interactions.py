"""Timeline entries and their attachments: the one history of a customer across channels."""

from __future__ import annotations

import hashlib
import mimetypes
import os
import re
import unicodedata
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nh3
from sqlalchemy import Select, and_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from helpdesk import visibility
from helpdesk.errors import InvalidInput, NotFound
from helpdesk.models import DIRECTIONS, INTERACTION_KINDS, Attachment, Case, Customer, Interaction
from helpdesk.pagination import Page, newest_first

MAX_TEXT_CHARS = 200_000
ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "div", "em", "h1", "h2", "h3", "h4", "hr", "i",
    "img", "li", "ol", "p", "pre", "q", "s", "small", "span", "strong", "sub", "sup", "table",
    "tbody", "td", "tfoot", "th", "thead", "tr", "u", "ul",
}  # fmt: skip


def sanitize_html(html: str) -> str:
    """HTML safe to show inside an agent's page: no script, no handlers, no remote styles.

    Links get rel="noopener noreferrer"; only http(s), mailto, tel and cid URLs survive.
    """
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes={
            "a": {"href", "title"},
            "img": {"src", "alt", "width", "height"},
            "td": {"colspan", "rowspan"},
            "th": {"colspan", "rowspan"},
        },
        url_schemes={"http", "https", "mailto", "tel", "cid"},
        link_rel="noopener noreferrer",
    )


async def add_interaction(
    session: AsyncSession,
    *,
    customer_id: int,
    kind: str,
    direction: str,
    text: str = "",
    html: str | None = None,
    case_id: int | None = None,
    author_user_id: int | None = None,
    subject: str | None = None,
    meta: dict[str, Any] | None = None,
    occurred_at: datetime | None = None,
) -> Interaction:
    """Append an entry to a customer's (and optionally a case's) timeline."""
    if kind not in INTERACTION_KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(INTERACTION_KINDS)}", field="kind")
    if direction not in DIRECTIONS:
        raise InvalidInput(f"direction must be one of {', '.join(DIRECTIONS)}", field="direction")
    if len(text) > MAX_TEXT_CHARS or (html and len(html) > MAX_TEXT_CHARS * 5):
        raise InvalidInput(f"body is longer than {MAX_TEXT_CHARS} characters", field="body")
    entry = Interaction(
        customer_id=customer_id,
        case_id=case_id,
        kind=kind,
        direction=direction,
        text=text,
        html=sanitize_html(html) if html else None,
        author_user_id=author_user_id,
        subject=subject,
        meta=meta or {},
        occurred_at=occurred_at or datetime.now(UTC),
    )
    session.add(entry)
    await session.flush()
    return entry


def _timeline_query(where: Any) -> Select[tuple[Interaction]]:
    return (
        select(Interaction)
        .where(where)
        .options(selectinload(Interaction.attachments), selectinload(Interaction.author))
    )


async def customer_timeline(
    session: AsyncSession,
    customer_id: int,
    *,
    limit: int = 50,
    cursor: str | None = None,
    scope: visibility.Scope | None = None,
) -> Page[Interaction]:
    """Everything that happened with a customer, on every channel, newest first (without
    the cases of teams `scope` may not see)."""
    if await session.get(Customer, customer_id) is None:
        raise NotFound(f"customer {customer_id} not found")
    where = Interaction.customer_id == customer_id
    if scope is not None:
        where = and_(where, visibility.interactions_clause(scope))
    return await _page(session, _timeline_query(where), limit, cursor)


async def case_timeline(
    session: AsyncSession,
    case_id: int,
    *,
    limit: int = 50,
    cursor: str | None = None,
    scope: visibility.Scope | None = None,
) -> Page[Interaction]:
    if await session.get(Case, case_id) is None:
        raise NotFound(f"case {case_id} not found")
    await visibility.check_case_id(session, scope, case_id)
    return await _page(session, _timeline_query(Interaction.case_id == case_id), limit, cursor)


def safe_filename(name: str) -> str:
    name = unicodedata.normalize("NFC", os.path.basename(name or "").replace("\\", "/"))
    name = os.path.basename(name)
    name = re.sub(r"[\x00-\x1f\x7f/]", "", name).strip(" .")
    return name[:255] or "attachment"


def write_file(attachments_dir: Path, data: bytes) -> str:
    """Store bytes under their SHA-256 (once, however often they come) and return it."""
    digest = hashlib.sha256(data).hexdigest()
    path = attachment_path(attachments_dir, digest)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}-{uuid.uuid4().hex[:8]}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return digest


def clean_content_type(content_type: str | None, filename: str) -> str:
    """The sender's type when it is a plain `type/subtype`, else a guess from the name."""
    ctype = (content_type or "").split(";")[0].strip().lower()
    if re.fullmatch(r"[a-z0-9.+-]+/[a-z0-9.+-]+", ctype):
        return ctype
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


async def store_attachment(
    session: AsyncSession,
    *,
    attachments_dir: Path,
    interaction_id: int,
    filename: str,
    content_type: str | None,
    data: bytes,
    max_bytes: int,
) -> Attachment:
    """Keep a file by its SHA-256 under the data dir, so identical files are stored once.

    The file is written before the row; a rollback leaves at most an orphan file that the
    next identical upload reuses, never a row without its bytes.
    """
    if len(data) > max_bytes:
        raise InvalidInput(
            f"attachment {filename!r} is {len(data)} bytes; the limit is {max_bytes}",
            field="attachments",
        )
    digest = write_file(attachments_dir, data)
    name = safe_filename(filename)
    ctype = clean_content_type(content_type, name)
    attachment = Attachment(
        interaction_id=interaction_id,
        filename=name,
        content_type=ctype,
        size=len(data),
        sha256=digest,
    )
    session.add(attachment)
    await session.flush()
    return attachment


def attachment_path(attachments_dir: Path, digest: str) -> Path:
    return attachments_dir / digest[:2] / digest[2:4] / digest


async def get_attachment(
    session: AsyncSession, attachment_id: int, *, scope: visibility.Scope | None = None
) -> Attachment:
    attachment = await session.get(
        Attachment, attachment_id, options=[selectinload(Attachment.interaction)]
    )
    if attachment is None:
        raise NotFound(f"attachment {attachment_id} not found")
    if attachment.interaction is not None and attachment.interaction.case_id is not None:
        await visibility.check_case_id(session, scope, attachment.interaction.case_id)
    return attachment


async def _page(
    session: AsyncSession, stmt: Select[tuple[Interaction]], limit: int, cursor: str | None
) -> Page[Interaction]:
    return await newest_first(
        session, stmt, Interaction.occurred_at, Interaction.id, limit=limit, cursor=cursor
    )
