"""Alembic environment: async, and pointed at whichever database the caller chose.

`helpdesk.migrations` passes the URL in `config.attributes["url"]`; run from the command line,
`HELPDESK_DATABASE_URL` is used.
"""

from __future__ import annotations

import asyncio
import os

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from alembic import context
from helpdesk.migrations import COMPARE_OPTIONS
from helpdesk.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("url") or os.environ.get("HELPDESK_DATABASE_URL")
    if not url:
        raise RuntimeError("no database URL: use `helpdesk migrate` or set HELPDESK_DATABASE_URL")
    return url


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, **COMPARE_OPTIONS)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_async_engine(_url())
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


connection = config.attributes.get("connection")
if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif connection is not None:
    _run(connection)
else:
    asyncio.run(_run_async())
