"""Fixtures: a real PostgreSQL for the whole session, a clean schema per test, the app, users.

The server is the embedded one (started once, in a temp dir) unless
HELPDESK_TEST_DATABASE_URL names a server; there a fresh database is created for the session
and dropped at the end, so no existing data is touched.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from helpdesk import auth, migrations
from helpdesk.config import Settings
from helpdesk.db import Database
from helpdesk.embedded_pg import EmbeddedPostgres
from helpdesk.models import Base, User
from helpdesk.web.app import create_app

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct-horse-battery"
FAST_SERVER = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


@dataclass
class PgServer:
    """Where tests may create databases: `url(name)` gives an asyncpg URL for one."""

    base_url: str
    embedded: EmbeddedPostgres | None

    def url(self, database: str) -> str:
        return make_url(self.base_url).set(database=database).render_as_string(False)

    async def create_database(self, name: str) -> str:
        conn = await _admin_connect(self.base_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.url(name)

    async def drop_database(self, name: str) -> None:
        conn = await _admin_connect(self.base_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def _admin_connect(url: str) -> asyncpg.Connection:
    u = make_url(url)
    host = u.query.get("host") or u.host
    port = int(u.query.get("port") or u.port or 5432)
    return await asyncpg.connect(
        host=host, port=port, user=u.username, password=u.password, database=u.database
    )


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    external = os.environ.get("HELPDESK_TEST_DATABASE_URL")
    if external:
        yield PgServer(external, None)
        return
    server = EmbeddedPostgres(
        tmp_path_factory.mktemp("pg"), database="postgres", server_options=FAST_SERVER
    )
    server.start()
    try:
        yield PgServer(server.url("postgres"), server)
    finally:
        server.stop()


@pytest.fixture(scope="session")
async def database_url(pg_server: PgServer) -> AsyncIterator[str]:
    name = f"helpdesk_test_{uuid.uuid4().hex[:8]}"
    url = await pg_server.create_database(name)
    db = Database.from_url(url, pool_size=2)
    await migrations.upgrade(db.engine)
    await db.dispose()
    yield url
    await pg_server.drop_database(name)


@pytest.fixture(scope="session")
async def session_db(database_url: str) -> AsyncIterator[Database]:
    database = Database.from_url(database_url, pool_size=5)
    yield database
    await database.dispose()


TABLES = ", ".join(t.name for t in reversed(Base.metadata.sorted_tables))


@pytest.fixture
async def db(session_db: Database) -> Database:
    """The test database, emptied first: every test starts from empty tables (the schema
    is made once per session, by the migrations)."""
    async with session_db.engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
        await conn.execute(text("ALTER SEQUENCE case_number_seq RESTART WITH 1001"))
    return session_db


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def settings(database_url: str, data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        secret_key="test-secret-key-that-is-long-enough-for-hs256",
        cti_token="test-cti-token",
        mail_token="test-mail-token",
        max_attachment_bytes=1_000_000,
        # The in-process app's loop stands still between tests: a router pass paused inside
        # its transaction would hold the router lock from the servers other tests start.
        chat_router=False,
        sla_worker=False,
    )


@pytest.fixture(scope="session")
async def app(settings: Settings, database_url: str) -> AsyncIterator[object]:
    application = create_app(settings, database_url, pool_size=5)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: object, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@dataclass
class Staff:
    user: User
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def make_staff(db: Database, settings: Settings):  # type: ignore[no-untyped-def]
    counter = iter(range(1, 10_000))

    async def make(role: str = "agent", **kwargs: object) -> Staff:
        n = next(counter)
        async with db.unit_of_work() as session:
            user = await auth.create_user(
                session,
                str(kwargs.pop("email", f"{role}{n}@example.com")),
                str(kwargs.pop("name", f"{role.title()} {n}")),
                role,
                PASSWORD,
                **kwargs,  # type: ignore[arg-type]
            )
        return Staff(user, auth.issue_token(user, settings.secret_key, 3600))

    return make


@pytest.fixture
async def agent(make_staff) -> Staff:  # type: ignore[no-untyped-def]
    return await make_staff("agent", extension="201")


@pytest.fixture
async def supervisor(make_staff) -> Staff:  # type: ignore[no-untyped-def]
    return await make_staff("supervisor")


@pytest.fixture
async def signed_in(client, agent) -> str:  # type: ignore[no-untyped-def]
    """The test client, logged in through the real form; returns the CSRF token."""
    page = await client.get("/login")
    csrf = page.cookies["helpdesk_csrf"]
    r = await client.post(
        "/login", data={"email": agent.user.email, "password": PASSWORD, "csrf_token": csrf}
    )
    assert r.status_code == 303
    return csrf


# -- a real server process, for the CLI and browser tests ----------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{process_output(proc)}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def helpdesk_bin() -> str:
    return str(Path(sys.executable).with_name("helpdesk"))


@contextmanager
def helpdesk_process(
    database_url: str, data_dir: Path, *args: str, **env: str
) -> Iterator[subprocess.Popen[str]]:
    """`helpdesk ARGS` in its own process on `database_url`, stopped (SIGTERM, then
    SIGKILL) on the way out.

    Its output goes to a file, never to a pipe: nobody reads a pipe while the tests run, and
    a server whose 64 KiB pipe buffer fills blocks in its next log write, event loop and all.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / f"helpdesk-{args[0] if args else 'process'}-{next(_log_numbers)}.log"
    with log_path.open("w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            [helpdesk_bin(), *args],
            env={
                **os.environ,
                "HELPDESK_DATABASE_URL": database_url,
                "HELPDESK_DATA_DIR": str(data_dir),
                "HELPDESK_SECRET_KEY": "live-server-secret-key-long-enough-for-hs256",
                **env,
            },
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    _process_logs[proc.pid] = log_path
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        _process_logs.pop(proc.pid, None)


_process_logs: dict[int, Path] = {}
_log_numbers = itertools.count(1)


def process_output(proc: subprocess.Popen[str], limit: int = 20_000) -> str:
    """The last `limit` characters a process started by `helpdesk_process` printed."""
    path = _process_logs.get(proc.pid)
    if path is None or not path.exists():
        return ""
    return path.read_text(encoding="utf-8", errors="replace")[-limit:]


@contextmanager
def serve_process(database_url: str, data_dir: Path, **env: str) -> Iterator[str]:
    """`helpdesk serve` in its own process on `database_url`; yields its base URL."""
    port = free_port()
    args = ("serve", "--port", str(port), "--log-level", "warning")
    with helpdesk_process(database_url, data_dir, *args, **env) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/readyz", proc=proc)
        yield base


@pytest.fixture
def live_server(database_url: str, db: Database, tmp_path: Path) -> Iterator[str]:
    """`helpdesk serve` in its own process, on the session's test database."""
    with serve_process(database_url, tmp_path) as base:
        yield base
