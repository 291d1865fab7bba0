"""A private Dovecot IMAP server for tests: its own config, port and maildir in a temp dir.

The IMAP poller is only worth testing against a server that really speaks IMAP (UIDVALIDITY,
IDLE pushes, literal parsing), so this runs Debian's `dovecot-imapd` binary with a config of
its own — never the system instance — on 127.0.0.1 and a free high port. The helpers talk
to it with the stdlib `imaplib`, over the protocol, so the tests see the server the way the
poller does.

Dovecot will not run its login processes as root and will not serve mail as uid 0. Run as a
normal user, every Dovecot process is that user. Run as root (as CI is), the login processes
use the package's `dovenull` user, the internal ones `dovecot`, auth stays root (so it can read
the users file under pytest's 0700 temp dir) and the mail processes run as `nobody`, chrooted
into the maildir root so they never need to traverse that temp dir either.
"""

from __future__ import annotations

import contextlib
import grp
import imaplib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

DOVECOT = "/usr/sbin/dovecot"
USER = "support@example.test"
PASSWORD = "p@ss/w0rd"  # needs percent-encoding in a URL, on purpose
# Dovecot 2.3's post-login capabilities less IDLE.
NO_IDLE_CAPABILITY = (
    "imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE SORT THREAD=REFERENCES"
    " MULTIAPPEND UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 LITERAL+"
)
# AF_UNIX paths are limited to 108 bytes; Dovecot's sockets live in base_dir.
MAX_BASE_DIR = 80


def is_installed() -> bool:
    return Path(DOVECOT).exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DovecotServer:
    """Context manager: `with DovecotServer(tmp_path) as server:` gives a running server.

    `server.url()` is an imap:// URL for the test user; `append`, `flags`, `count`, `uids`,
    `create` and `delete` manipulate mailboxes through IMAP itself.
    """

    host = "127.0.0.1"
    user = USER
    password = PASSWORD

    def __init__(self, tmp_path: Path, *, idle: bool = True) -> None:
        self.root = Path(tmp_path) / "dovecot"
        self.idle = idle  # False: a server that does not advertise IDLE, to test polling
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._short_base_dir: str | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> DovecotServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, port: int | None = None) -> None:
        """Start Dovecot on `port`, or on a free one (retried if another process grabs it)."""
        for attempt in range(3):
            self.port = port or _free_port()
            conf = self._write_config()
            log = (self.root / "stdout.log").open("ab")
            self._process = subprocess.Popen(
                [DOVECOT, "-F", "-c", str(conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so stop() reaches every child
            )
            log.close()
            if self._wait_listening(timeout=10.0):
                return
            self.stop()
            if attempt == 2:
                raise RuntimeError(f"dovecot did not start:\n{self.log_tail()}")

    def restart(self) -> None:
        """Stop and start again on the same port with the same mail: a server restart."""
        port = self.port
        self.stop()
        self.start(port)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            # SIGKILL to the whole process group (ours: start_new_session): a clean SIGTERM
            # shutdown takes Dovecot one to five seconds, and nothing here needs it — every
            # APPEND and STORE was committed to the maildir before the server answered.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
            # A stale pid file would stop a restart if the pid were reused meanwhile.
            with contextlib.suppress(FileNotFoundError):
                (self._base_dir / "master.pid").unlink()
        if self._short_base_dir is not None:
            shutil.rmtree(self._short_base_dir, ignore_errors=True)
            self._short_base_dir = None

    def log_tail(self, lines: int = 30) -> str:
        text = ""
        for name in ("dovecot.log", "stdout.log"):
            path = self.root / name
            if path.exists():
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def _wait_listening(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                return False
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), 0.5),
            ):
                return True
            time.sleep(0.05)
        return False

    @property
    def _base_dir(self) -> Path:
        base_dir = self.root / "run"
        if len(str(base_dir)) > MAX_BASE_DIR:
            if self._short_base_dir is None:
                self._short_base_dir = tempfile.mkdtemp(prefix="dovecot-")
            base_dir = Path(self._short_base_dir)
        return base_dir

    def _write_config(self) -> Path:
        root = self.root
        state, mail = root / "state", root / "mail"
        for path in (root, state, mail):
            path.mkdir(parents=True, exist_ok=True)
        base_dir = self._base_dir
        base_dir.mkdir(exist_ok=True)
        users = root / "users"
        users.write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")

        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            for name in ("dovecot", "dovenull"):
                pwd.getpwnam(name)  # KeyError here means the package's users are missing
            os.chown(mail, nobody.pw_uid, nobody.pw_gid)
            home = mail / USER
            home.mkdir(exist_ok=True)
            os.chown(home, nobody.pw_uid, nobody.pw_gid)
            identity = f"""\
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
first_valid_uid = {nobody.pw_uid}
mail_chroot = {mail}
valid_chroot_dirs = {mail}
service auth {{
  user = root
}}
"""
            mail_uid, mail_gid, home_in_userdb = nobody.pw_uid, nobody.pw_gid, "/%u"
        else:
            me = pwd.getpwuid(os.getuid())
            group = grp.getgrgid(os.getgid()).gr_name
            identity = f"""\
default_internal_user = {me.pw_name}
default_internal_group = {group}
default_login_user = {me.pw_name}
first_valid_uid = {me.pw_uid}
first_valid_gid = {os.getgid()}
service imap-login {{
  chroot =
}}
service anvil {{
  chroot =
}}
"""
            mail_uid, mail_gid, home_in_userdb = os.getuid(), os.getgid(), f"{mail}/%u"

        conf = root / "dovecot.conf"
        conf.write_text(
            f"""\
# Dovecot 2.3 syntax (Debian 12). Everything lives under {root}.
protocols = imap
listen = {self.host}
base_dir = {base_dir}
state_dir = {state}
log_path = {root / "dovecot.log"}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
mail_location = maildir:~/Maildir
{"" if self.idle else NO_IDLE_CAPABILITY}
{identity}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {users}
}}
userdb {{
  driver = static
  args = uid={mail_uid} gid={mail_gid} home={home_in_userdb}
}}
service imap-login {{
  inet_listener imap {{
    address = {self.host}
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""
        )
        return conf

    # -- helpers over IMAP ------------------------------------------------------------------

    def url(self, mailbox: str = "INBOX") -> str:
        """An imap:// URL for the test user, credentials percent-encoded."""
        user, password = quote(self.user, safe=""), quote(self.password, safe="")
        return f"imap://{user}:{password}@{self.host}:{self.port}/{quote(mailbox)}"

    @contextlib.contextmanager
    def session(self) -> Iterator[imaplib.IMAP4]:
        """A logged-in stdlib IMAP session, logged out afterwards."""
        imap = imaplib.IMAP4(self.host, self.port, timeout=10)
        try:
            imap.login(self.user, self.password)
            yield imap
        finally:
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                imap.logout()

    def append(self, raw: bytes, flags: Iterable[str] = (), mailbox: str = "INBOX") -> int:
        """APPEND a message; returns its UID (from Dovecot's APPENDUID)."""
        flag_list = f"({' '.join(flags)})" if flags else None
        with self.session() as imap:
            typ, data = imap.append(_quoted(mailbox), flag_list, None, raw)
        _check(typ, data)
        match = re.search(rb"APPENDUID \d+ (\d+)", data[0])
        assert match, data
        return int(match.group(1))

    def flags(self, uid: int, mailbox: str = "INBOX") -> set[str]:
        """The flags on one message; KeyError when there is no message with that UID."""
        with self.session() as imap:
            _check(*imap.select(_quoted(mailbox), readonly=True))
            typ, data = imap.uid("FETCH", str(uid), "(FLAGS)")
        _check(typ, data)
        for item in data:
            line = item[0] if isinstance(item, tuple) else item
            match = re.search(
                rb"UID (\d+) FLAGS \(([^)]*)\)|FLAGS \(([^)]*)\) UID (\d+)", line or b""
            )
            if match:
                found_uid = int(match.group(1) or match.group(4))
                if found_uid == uid:
                    return set((match.group(2) or match.group(3) or b"").decode().split())
        raise KeyError(uid)

    def count(self, mailbox: str = "INBOX") -> int:
        with self.session() as imap:
            typ, data = imap.status(_quoted(mailbox), "(MESSAGES)")
        _check(typ, data)
        match = re.search(rb"MESSAGES (\d+)", data[0])
        assert match, data
        return int(match.group(1))

    def uids(self, mailbox: str = "INBOX") -> list[int]:
        with self.session() as imap:
            _check(*imap.select(_quoted(mailbox), readonly=True))
            typ, data = imap.uid("SEARCH", "ALL")
        _check(typ, data)
        return [int(uid) for uid in data[0].split()]

    def create(self, mailbox: str) -> None:
        with self.session() as imap:
            _check(*imap.create(_quoted(mailbox)))

    def delete(self, mailbox: str) -> None:
        with self.session() as imap:
            _check(*imap.delete(_quoted(mailbox)))


def _quoted(mailbox: str) -> str:
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _check(typ: str, data: list) -> None:
    if typ != "OK":
        raise imaplib.IMAP4.error(f"{typ}: {data!r}")
