"""The database: engine and sessions (the CLI starts the embedded server; see cli.py)."""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


def make_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        # asyncpg's statement cache keeps each connection's prepared lookups hot.
        connect_args={"server_settings": {"application_name": "helpdesk"}},
    )


@dataclass
class Database:
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]

    @classmethod
    def from_url(cls, url: str, *, pool_size: int = 10) -> Database:
        engine = make_engine(url, pool_size=pool_size)
        return cls(engine, async_sessionmaker(engine, expire_on_commit=False))

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[AsyncSession]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        async with self.sessionmaker() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()


# SQLSTATE classes that mean "the server is not there for us now": connection exceptions
# (08...) and an administrator's or a crash's shutdown / startup (57P01..57P03).
_UNREACHABLE_STATES = ("08", "57P01", "57P02", "57P03")
_GONE_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.ENOENT, errno.EPIPE, errno.ETIMEDOUT}


def unreachable(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) says the database cannot be reached right now:
    restarting, down, or the connection cut mid-statement, as opposed to a bug or bad data.

    Such a request is answered 503 and may be retried: the pool (pre-ping) reconnects once
    the server is back.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        # A connect to a unix socket that is gone is ENOENT without a file name; a file the
        # app itself failed to open names its file and is not an outage.
        if (
            isinstance(current, OSError)
            and current.filename is None
            and (current.errno in _GONE_ERRNOS or isinstance(current, ConnectionError))
        ):
            return True
        # The connection's protocol broke under a statement (the server went away mid-way).
        if isinstance(current, asyncpg.InterfaceError | asyncpg.InternalClientError):
            return True
        state = getattr(current, "sqlstate", None)
        if isinstance(state, str) and state.startswith(_UNREACHABLE_STATES):
            return True
        current = current.__cause__ or current.__context__
    return False
