"""The embedded PostgreSQL (helpdesk/embedded_pg.py) and the CLI that starts it, for real.

Every test gets its own data directory and its own server processes; nothing is mocked.
The contract under test (module docstring of embedded_pg.py, DESIGN.md "Storage", issue 2):

- data survives stop/start;
- the first process to take `<data dir>/pg.lock` owns the server; a second process on the same
  data dir attaches to it, starts nothing, and never stops it;
- a server left running by a killed owner is adopted; a stale `postmaster.pid` from a server
  that died with it (even one naming a pid the OS has reused) is recovered;
- `helpdesk serve` without HELPDESK_DATABASE_URL runs the embedded server under
  HELPDESK_DATA_DIR and stops it on SIGTERM or SIGINT; a second run reuses the data;
- with HELPDESK_DATABASE_URL nothing embedded starts.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from helpdesk.embedded_pg import EmbeddedPostgres
from tests.conftest import free_port, helpdesk_bin, wait_http

ROOT = Path(__file__).resolve().parent.parent
FAST = {"fsync": "off", "full_page_writes": "off"}
PASSWORD = "embedded-pg-test-password"

pytestmark = pytest.mark.timeout(120)


# -- helpers ---------------------------------------------------------------------------------


def alive(pid: int) -> bool:
    """True while `pid` runs. A zombie (dead, not yet reaped by whoever inherited it) is dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(pids: list[int] | int, timeout: float = 30.0) -> None:
    pids = [pids] if isinstance(pids, int) else pids
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids):
        if time.monotonic() > deadline:
            raise AssertionError(f"still running after {timeout}s: {[p for p in pids if alive(p)]}")
        time.sleep(0.05)


def postmaster_pid(data_dir: Path) -> int | None:
    return EmbeddedPostgres(data_dir).postmaster_pid()


def query(url: str, sql: str) -> object:
    """One scalar through SQLAlchemy + asyncpg: the URL the app would use really works."""

    async def run() -> object:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                return (await conn.execute(text(sql))).scalar()
        finally:
            await engine.dispose()

    return asyncio.run(run())


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[EmbeddedPostgres]]:
    """Servers a test starts; stopped afterwards, and nothing left running in tmp_path."""
    started: list[EmbeddedPostgres] = []
    yield started
    for server in reversed(started):  # attached ones first, the owner last
        server.stop()
    for pidfile in tmp_path.rglob("postmaster.pid"):
        # a failed test may leave a server whose owner is gone: fast shutdown, then wait
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (OSError, IndexError, ValueError):
            continue
        if alive(pid) and psutil.Process(pid).name() == "postgres":
            os.kill(pid, signal.SIGINT)
            wait_gone(pid)


def start(servers: list[EmbeddedPostgres], data_dir: Path, **kwargs: object) -> EmbeddedPostgres:
    server = EmbeddedPostgres(data_dir, **kwargs)  # type: ignore[arg-type]
    servers.append(server)
    server.start()
    return server


# -- EmbeddedPostgres ------------------------------------------------------------------------


def test_data_survives_stop_and_start(tmp_path: Path, servers: list[EmbeddedPostgres]) -> None:
    first = start(servers, tmp_path, database="app", server_options=FAST)
    assert first.owner
    pid = first.postmaster_pid()
    assert pid is not None and alive(pid)
    assert first.url().startswith("postgresql+asyncpg://")
    assert query(first.url(), "SELECT current_database()") == "app"
    first.psql("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')", "app")

    first.stop()
    assert not first.owner
    assert not (tmp_path / "pg" / "postmaster.pid").exists()
    wait_gone(pid)

    second = start(servers, tmp_path, database="app", server_options=FAST)
    assert second.owner
    assert second.postmaster_pid() not in (None, pid)  # a new server, on the old data
    assert query(second.url(), "SELECT v FROM kept") == "still here"


def test_second_process_attaches_and_never_stops_the_server(
    tmp_path: Path, servers: list[EmbeddedPostgres]
) -> None:
    owner = start(servers, tmp_path, database="app", server_options=FAST)
    pid = owner.postmaster_pid()
    owner.psql("CREATE TABLE shared (v text); INSERT INTO shared VALUES ('one server')", "app")

    # Another process (say a mail listener next to `helpdesk serve`) on the same data dir.
    # Run it as a real second process: the flock is per open file, so this is what counts.
    attach = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from helpdesk.embedded_pg import EmbeddedPostgres
        server = EmbeddedPostgres(Path(sys.argv[1]), database=sys.argv[2])
        url = server.start()
        print(server.owner, server.postmaster_pid(), url, sep="\\n", flush=True)
        server.stop()
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", attach, str(tmp_path), "app"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    owned, seen_pid, url = result.stdout.split()
    assert owned == "False"
    assert int(seen_pid) == pid  # no second server started
    assert url == owner.url()
    # its stop() left the server alone
    assert alive(pid)
    assert owner.postmaster_pid() == pid
    assert query(owner.url(), "SELECT v FROM shared") == "one server"

    # In this process too (a second object opens its own lock file description).
    other = start(servers, tmp_path, database="mail")
    assert not other.owner
    assert other.postmaster_pid() == pid
    # an attached process gets its own database created if the owner has not made it
    assert query(other.url(), "SELECT current_database()") == "mail"
    other.stop()
    assert alive(pid)
    assert query(owner.url(), "SELECT count(*) FROM shared") == 1

    owner.stop()
    wait_gone(pid)
    assert not (tmp_path / "pg" / "postmaster.pid").exists()


def test_server_of_a_killed_owner_is_adopted(
    tmp_path: Path, servers: list[EmbeddedPostgres]
) -> None:
    child = textwrap.dedent(
        """
        import os, signal, sys
        from pathlib import Path
        from helpdesk.embedded_pg import EmbeddedPostgres
        server = EmbeddedPostgres(Path(sys.argv[1]), database="app")
        server.start()
        assert server.owner
        server.psql("CREATE TABLE t (v text); INSERT INTO t VALUES ('before the kill')", "app")
        print(server.postmaster_pid(), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", child, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    pid = int(result.stdout.strip())
    assert alive(pid)  # the server outlived its owner; the lock died with the owner

    adopter = start(servers, tmp_path, database="app")
    assert adopter.owner
    assert adopter.postmaster_pid() == pid  # adopted, not restarted
    assert query(adopter.url(), "SELECT v FROM t") == "before the kill"

    adopter.stop()  # the adopter owns it now, so it stops it
    wait_gone(pid)


def test_stale_postmaster_pid_of_a_dead_server_is_recovered(
    tmp_path: Path, servers: list[EmbeddedPostgres]
) -> None:
    # Default (durable) settings: this simulates a crash, and committed data must survive it.
    crashed = start(servers, tmp_path, database="app")
    crashed.psql("CREATE TABLE t (v text); INSERT INTO t VALUES ('committed')", "app")
    pid = crashed.postmaster_pid()
    assert pid is not None
    # The whole server dies at once (OOM killer, container killed)...
    postgres = psutil.Process(pid)
    victims = [postgres, *postgres.children(recursive=True)]
    for proc in victims:
        proc.kill()
    wait_gone([p.pid for p in victims])
    # ...and its owner with it: stop() finds nothing to stop and only releases the lock.
    crashed.stop()
    pg = tmp_path / "pg"
    lock_files = [pg / "postmaster.pid", pg / ".s.PGSQL.5432.lock"]  # both name the dead pid
    for lock_file in lock_files:
        assert int(lock_file.read_text().splitlines()[0]) == pid

    # Worst case for stale lock files: their pid now belongs to another live process (pids are
    # reused, in a container after a restart almost surely), and PostgreSQL itself refuses to
    # start ("Is another postmaster running?").
    squatter = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        for lock_file in lock_files:
            lines = lock_file.read_text().splitlines()
            lock_file.write_text("\n".join([str(squatter.pid), *lines[1:]]) + "\n")

        recovered = start(servers, tmp_path, database="app")
        assert recovered.owner
        new_pid = recovered.postmaster_pid()
        assert new_pid not in (None, pid, squatter.pid)
        assert alive(new_pid)
        assert query(recovered.url(), "SELECT v FROM t") == "committed"
        assert squatter.poll() is None  # nobody touched the unrelated process
    finally:
        squatter.kill()
        squatter.wait()


# -- the CLI ---------------------------------------------------------------------------------


def cli_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a fresh install: no HELPDESK_* from the caller, our data dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELPDESK_")}
    return {**env, "HELPDESK_DATA_DIR": str(data_dir), **extra}


def helpdesk(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [helpdesk_bin(), *args], env=env, capture_output=True, text=True, timeout=90, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@dataclass
class Served:
    proc: subprocess.Popen[str]
    base: str
    log: Path

    def output(self) -> str:
        return self.log.read_text()

    def login(self, email: str, password: str) -> int:
        r = httpx.post(
            f"{self.base}/api/auth/token", json={"email": email, "password": password}, timeout=10
        )
        return r.status_code

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


@contextmanager
def serve(env: dict[str, str], log: Path, *args: str) -> Iterator[Served]:
    port = free_port()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [helpdesk_bin(), "serve", "--port", str(port), "--log-level", "warning", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
    served = Served(proc, f"http://127.0.0.1:{port}", log)
    try:
        try:
            wait_http(served.base + "/readyz", timeout=90, proc=proc)
        except (RuntimeError, TimeoutError) as exc:
            raise AssertionError(f"{exc}\n{served.output()}") from exc
        yield served
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_runs_embedded_server_stops_it_on_sigterm_and_reuses_data(
    tmp_path: Path, servers: list[EmbeddedPostgres]
) -> None:
    data = tmp_path / "var"
    env = cli_env(data)

    # A one-shot command starts the embedded server (initdb, migrate), then stops it.
    helpdesk(env, "user", "add", "first@example.com", "--role", "agent", "--password", PASSWORD)
    assert (data / "pg" / "PG_VERSION").exists()
    assert postmaster_pid(data) is None

    with serve(env, tmp_path / "serve1.log") as first:
        pid = postmaster_pid(data)
        assert pid is not None and alive(pid)
        assert psutil.Process(pid).name() == "postgres"
        assert first.login("first@example.com", PASSWORD) == 200  # data of the earlier run

        # A second process on the same data dir while `serve` owns the server: it attaches
        # and leaves the server running when it is done.
        helpdesk(
            env, "user", "add", "second@example.com", "--role", "admin", "--password", PASSWORD
        )
        assert postmaster_pid(data) == pid and alive(pid)
        assert httpx.get(first.base + "/readyz", timeout=10).status_code == 200
        assert first.login("second@example.com", PASSWORD) == 200

        assert first.stop(signal.SIGTERM) == 0, first.output()
        assert "embedded PostgreSQL stopped" in first.output()
        wait_gone(pid)  # pg_ctl -w already waited; the process must not outlive serve
        assert not (data / "pg" / "postmaster.pid").exists()

    with serve(env, tmp_path / "serve2.log") as second:
        new_pid = postmaster_pid(data)
        assert new_pid is not None and new_pid != pid
        assert second.login("first@example.com", PASSWORD) == 200
        assert second.login("second@example.com", PASSWORD) == 200
        assert second.stop(signal.SIGTERM) == 0, second.output()
        wait_gone(new_pid)


def test_serve_demo_prints_credentials_and_stops_on_ctrl_c(
    tmp_path: Path, servers: list[EmbeddedPostgres]
) -> None:
    data = tmp_path / "var"
    with serve(cli_env(data), tmp_path / "serve.log", "--demo") as served:
        out = served.output()
        password = re.search(r"password for all: (\S+)\)", out)
        assert password, out
        logins = re.findall(r"^\s+(agent|supervisor|admin)\s+(\S+@\S+)", out, re.MULTILINE)
        assert {role for role, _ in logins} == {"agent", "supervisor", "admin"}, out
        for _, email in logins:
            assert served.login(email, password.group(1)) == 200, email

        pid = postmaster_pid(data)
        assert pid is not None
        assert served.stop(signal.SIGINT) == 0, served.output()  # Ctrl-C
        assert "Traceback" not in served.output()
        wait_gone(pid)
        assert not (data / "pg" / "postmaster.pid").exists()


def test_with_a_database_url_nothing_embedded_starts(tmp_path: Path, database_url: str) -> None:
    data = tmp_path / "var"
    env = cli_env(data, HELPDESK_DATABASE_URL=database_url)
    with serve(env, tmp_path / "serve.log") as served:
        assert served.stop(signal.SIGTERM) == 0, served.output()
    assert "embedded PostgreSQL" not in served.output()
    assert data.is_dir()  # the data dir is still used (generated secrets)
    assert not (data / "pg").exists()
    assert not (data / "pg.lock").exists()
