"""Where each IMAP mailbox was left, kept in PostgreSQL next to the mail it produced."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from helpdesk.db import Database
from helpdesk.mail.imap import MailboxState
from helpdesk.models import MailboxCursor


class DatabaseCursorStore:
    """The poller's StateStore: one row per mailbox key (URL without the password)."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def load(self, key: str) -> MailboxState:
        async with self.database.unit_of_work() as session:
            row = await session.scalar(select(MailboxCursor).where(MailboxCursor.key == key))
        if row is None:
            return MailboxState(uidvalidity=None, last_uid=0)
        return MailboxState(uidvalidity=row.uidvalidity, last_uid=row.last_uid)

    async def save(self, key: str, state: MailboxState) -> None:
        async with self.database.unit_of_work() as session:
            values = {"uidvalidity": state.uidvalidity, "last_uid": state.last_uid}
            await session.execute(
                insert(MailboxCursor)
                .values(key=key, **values)
                .on_conflict_do_update(index_elements=["key"], set_=values)
            )
