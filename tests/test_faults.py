"""Faults under load (issue 10): PostgreSQL restarted while requests stream in, and an app
process killed under its agents. Real processes, a real PostgreSQL of the test's own (so
restarting it disturbs no other test), real sockets. Waits are bounded polling.

The other faults the issue names are tested where their part lives: the LISTEN connection
dropped (tests/test_hub.py), the SMTP relay down for a while (tests/test_mail_outbound.py),
the CTI bridge cut off from the PBX mid-call (tests/test_cti_ami.py)."""

from __future__ import annotations

import asyncio
import errno
import signal
import uuid

import asyncpg
import httpx
import pytest
from sqlalchemy import select
from websockets.exceptions import ConnectionClosed

from helpdesk import auth, embedded_pg, events, migrations
from helpdesk.db import Database, unreachable
from helpdesk.models import Customer
from tests.conftest import (
    FAST_SERVER,
    PASSWORD,
    free_port,
    helpdesk_process,
    serve_process,
    wait_http,
)
from tests.test_hub import SECRET, WAIT, _sockets_of, _token, agent_socket

pytestmark = pytest.mark.skipif(
    not embedded_pg.supported(), reason="needs the embedded PostgreSQL binaries"
)


@pytest.fixture
def own_postgres(tmp_path):  # type: ignore[no-untyped-def]
    """A PostgreSQL server of this test's own, migrated, that the test may restart."""
    server = embedded_pg.EmbeddedPostgres(
        tmp_path / "pg", database="faults", server_options=FAST_SERVER
    )
    url = server.start()

    async def prepare() -> None:
        db = Database.from_url(url, pool_size=1)
        try:
            await migrations.upgrade(db.engine)
        finally:
            await db.dispose()

    asyncio.run(prepare())
    try:
        yield server, url
    finally:
        server.stop()


async def _staff_token(url: str) -> str:
    db = Database.from_url(url, pool_size=1)
    try:
        async with db.unit_of_work() as session:
            user = await auth.create_user(session, "ops@example.com", "Ops", "agent", PASSWORD)
        return _token(user)
    finally:
        await db.dispose()


def test_postgres_restarted_mid_load_loses_nothing_acknowledged(own_postgres, tmp_path):
    server, url = own_postgres
    asyncio.run(_restart_under_load(server, url, tmp_path))


async def _restart_under_load(server, url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    token = await _staff_token(url)
    acknowledged: list[str] = []
    refused: list[tuple[int, dict]] = []
    restarted = asyncio.Event()
    after_restart = 0
    env = {"HELPDESK_SECRET_KEY": SECRET}
    with serve_process(url, tmp_path / "data", **env) as base:
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:

            async def writer() -> None:
                nonlocal after_restart
                while after_restart < 40:
                    name = f"顧客 {uuid.uuid4().hex[:10]}"
                    r = await http.post("/api/customers", json={"name": name})
                    if r.status_code == 201:
                        acknowledged.append(name)
                        if restarted.is_set():
                            after_restart += 1
                    else:
                        refused.append((r.status_code, r.json()))
                        await asyncio.sleep(0.02)

            async def restart() -> None:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + WAIT
                while len(acknowledged) < 40:
                    assert loop.time() < deadline, "the load never got going"
                    await asyncio.sleep(0.01)
                await asyncio.to_thread(server.stop)
                await asyncio.to_thread(server.start)
                restarted.set()

            await asyncio.wait_for(asyncio.gather(*(writer() for _ in range(4)), restart()), 120)
            ready = await http.get("/readyz")
            assert ready.status_code == 200

    # Every refusal was a clean, documented answer, never a 500 or a dropped connection.
    for status, body in refused:
        assert status == 503, (status, body)
        assert body["error"]["code"] == "unavailable", body
        assert "database" in body["error"]["message"]
    # Everything the desk acknowledged is there; nothing is there twice.
    db = Database.from_url(url, pool_size=1)
    try:
        async with db.unit_of_work() as session:
            names = (await session.scalars(select(Customer.name))).all()
    finally:
        await db.dispose()
    assert sorted(set(acknowledged)) == sorted(acknowledged)
    missing = set(acknowledged) - set(names)
    assert not missing, f"{len(missing)} acknowledged customers are missing"
    assert len(acknowledged) >= 80


async def test_an_app_process_killed_under_its_agents_they_resync_on_another(
    database_url, db, make_staff, tmp_path
):
    """Process one dies at once (SIGKILL: no goodbye to anyone). Its agent reconnects to
    process two and gets events again; process two sweeps the dead socket's row, and the
    agent is not shown offline meanwhile."""
    env = {"HELPDESK_SECRET_KEY": SECRET, "HELPDESK_PRESENCE_GRACE_SECONDS": "1"}
    agent = await make_staff("agent", extension="201")
    token = _token(agent.user)
    port = free_port()
    args = ("serve", "--port", str(port), "--log-level", "warning")
    with (
        serve_process(database_url, tmp_path / "two", **env) as two,
        helpdesk_process(database_url, tmp_path / "one", *args, **env) as doomed,
    ):
        one = f"http://127.0.0.1:{port}"
        wait_http(one + "/readyz", proc=doomed)
        async with agent_socket(one, token) as tab:
            await _sockets_of(db, agent.user.id, 1)
            doomed.send_signal(signal.SIGKILL)
            doomed.wait(10)
            with pytest.raises(ConnectionClosed):
                await tab.next("never")
        # The browser's reconnect lands on the surviving process.
        async with agent_socket(two, token) as tab:
            await _sockets_of(db, agent.user.id, 1)  # the dead process's row is swept
            async with db.unit_of_work() as session:
                await events.publish(
                    session, events.Event("ping_test", {"n": 1}, users=(agent.user.id,))
                )
            assert (await tab.next("ping_test"))["n"] == 1
            async with httpx.AsyncClient(base_url=two) as http:
                r = await http.get("/api/presence", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200, r.text
            [mine] = [p for p in r.json()["items"] if p["user_id"] == agent.user.id]
            assert mine["status"] != "offline"


def test_an_outage_is_told_from_a_bug():
    """Only a database that is not there becomes a 503; bad data and bugs stay errors."""
    assert unreachable(ConnectionRefusedError(errno.ECONNREFUSED, "refused"))
    assert unreachable(FileNotFoundError(errno.ENOENT, "no socket"))  # unix socket gone
    assert unreachable(asyncpg.CannotConnectNowError("the database system is starting up"))
    assert unreachable(asyncpg.AdminShutdownError("terminating connection"))
    wrapped = RuntimeError("outer")
    wrapped.__cause__ = asyncpg.ConnectionDoesNotExistError("closed mid-statement")
    assert unreachable(wrapped)
    assert not unreachable(asyncpg.UniqueViolationError("duplicate key"))
    assert not unreachable(ValueError("a bug"))
    assert not unreachable(PermissionError(errno.EACCES, "not a connection problem"))
    assert not unreachable(FileNotFoundError(errno.ENOENT, "missing", "/data/attachment"))
