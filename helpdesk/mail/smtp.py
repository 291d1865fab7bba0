"""The inbound SMTP listener (`helpdesk mail smtp`): an MTA hands us mail, we file it.

It runs aiosmtpd's protocol on our own event loop, so the ingest shares the app's
database pool. `250` is answered only after the message's transaction committed; any
trouble on our side answers `451`, so the sending MTA keeps the message and retries.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from helpdesk.config import Settings
from helpdesk.db import Database
from helpdesk.errors import InvalidInput
from helpdesk.mail.ingest import ingest_message
from helpdesk.mail.parsing import MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)


class IngestHandler:
    """aiosmtpd handler: every accepted message goes through the one ingest service."""

    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.settings = settings

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        if not raw:
            return "554 5.6.0 empty message"
        try:
            async with self.database.unit_of_work() as db_session:
                result = await ingest_message(
                    db_session, raw, settings=self.settings, source="smtp"
                )
        except InvalidInput as exc:
            return f"554 5.6.0 {exc}"
        except Exception:
            log.exception("could not file an inbound message of %d bytes", len(raw))
            return "451 4.3.0 temporary failure, please try again later"
        log.info("smtp %s %s -> %s", result.message_id, result.status, result.case_number)
        return f"250 2.0.0 {result.status} {result.case_number or ''}".rstrip()


async def start_listener(
    database: Database, settings: Settings, *, host: str = "127.0.0.1", port: int = 2525
) -> asyncio.base_events.Server:
    """Listen for SMTP on our loop; the returned server is closed by the caller."""
    loop = asyncio.get_running_loop()
    factory: Any = partial(
        SMTP,
        IngestHandler(database, settings),
        data_size_limit=MAX_MESSAGE_BYTES,
        enable_SMTPUTF8=True,
        decode_data=False,
        hostname=settings.support_address.rpartition("@")[2] or "localhost",
        ident="helpdesk",
    )
    return await loop.create_server(factory, host=host, port=port)
