"""The `helpdesk` command (DESIGN.md, "Command line")."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import secrets
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from helpdesk import logs
from helpdesk.config import Settings
from helpdesk.db import Database
from helpdesk.embedded_pg import EmbeddedPostgres
from helpdesk.errors import DeskError

if TYPE_CHECKING:
    from cti.events import CallEvent, EventSink

log = logging.getLogger("helpdesk")


class Stopped(BaseException):
    """SIGTERM or SIGINT: unwind (running every `finally`) instead of dying where we stand.

    A BaseException, like KeyboardInterrupt, so no `except Exception` swallows it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signum)


def _install_signal_handlers() -> None:
    # Without this, SIGTERM kills the process on the spot and the embedded PostgreSQL we
    # started keeps running. uvicorn swaps in its own handlers while it serves, restores ours
    # when it has shut down, and then re-raises the signal it caught: that lands here, and
    # `Stopped` unwinds through `_database()`, which stops the server.
    signal.signal(signal.SIGTERM, _raise_stopped)
    signal.signal(signal.SIGINT, _raise_stopped)


def log_format(settings: Settings) -> str:
    """HELPDESK_LOG_FORMAT, or by default JSON lines unless stderr is a terminal (a person
    reading) — under systemd, Docker or a log shipper it is not."""
    return settings.log_format or ("text" if sys.stderr.isatty() else "json")


@contextmanager
def _database(settings: Settings, *, announce: bool = False) -> Iterator[str]:
    """The configured database URL, or the embedded server's: started here, stopped on exit.

    The server object exists before it starts, so a signal that arrives while it is still
    starting also ends in `stop()` (which does nothing unless we own the server).
    """
    if settings.database_url:
        yield settings.database_url
        return
    server = EmbeddedPostgres(settings.data_dir)
    try:
        yield server.start()
    finally:
        owned = server.owner
        server.stop()
        if announce and owned:
            print("helpdesk: embedded PostgreSQL stopped", flush=True)


def _with_database(
    settings: Settings,
    work: Callable[[Database], Awaitable[Any]],
    *,
    migrate: bool = True,
    pool_size: int = 2,
) -> Any:
    """Run `work` against the configured (or embedded) database, stopping what we started."""
    with _database(settings) as url:

        async def run() -> Any:
            db = Database.from_url(url, pool_size=pool_size)
            try:
                if migrate:
                    from helpdesk import migrations

                    await migrations.upgrade(db.engine)
                return await work(db)
            finally:
                await db.dispose()

        return asyncio.run(run())


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    async def nothing(db: Database) -> None:
        return None

    _with_database(settings, nothing)
    print("database schema is at the latest revision")
    return 0


def cmd_user_add(settings: Settings, args: argparse.Namespace) -> int:
    from helpdesk import auth

    password = args.password
    generated = False
    if not password:
        if sys.stdin.isatty():
            password = getpass.getpass("password: ")
        else:
            password = secrets.token_urlsafe(12)
            generated = True

    async def add(db: Database) -> Any:
        async with db.unit_of_work() as session:
            return await auth.create_user(
                session,
                args.email,
                args.name or "",
                args.role,
                password,
                extension=args.extension,
                team_name=args.team,
                language=args.language,
            )

    user = _with_database(settings, add)
    print(f"created {user.role} {user.email} (id {user.id})")
    if generated:
        print(f"password: {password}")
    return 0


def cmd_demo_data(settings: Settings, args: argparse.Namespace) -> int:
    from helpdesk import demo

    async def seed(db: Database) -> Any:
        async with db.unit_of_work() as session:
            report = await demo.seed(session, region=settings.default_region)
        report.knowledge_base = await demo.seed_knowledge_base(
            db, index=lambda ids: _index_articles(settings, db, ids)
        )
        return report

    report = _with_database(settings, seed)
    print(demo.describe(report))
    return 0


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from helpdesk import migrations
    from helpdesk.web.app import create_app

    with _database(settings, announce=True) as url:

        async def prepare() -> Any:
            db = Database.from_url(url, pool_size=2)
            try:
                await migrations.upgrade(db.engine)
                if args.demo:
                    from helpdesk import demo

                    async with db.unit_of_work() as session:
                        report = await demo.seed(session, region=settings.default_region)
                    report.knowledge_base = await demo.seed_knowledge_base(
                        db, index=lambda ids: _index_articles(settings, db, ids)
                    )
                    return report
            finally:
                await db.dispose()
            return None

        report = asyncio.run(prepare())
        if report is not None:
            from helpdesk import demo

            print(demo.describe(report), flush=True)
        workers = max(1, args.workers)
        print(
            f"helpdesk: serving on http://{args.host}:{args.port}"
            + (f" with {workers} worker processes" if workers > 1 else ""),
            flush=True,
        )
        options: dict[str, Any] = {
            "host": args.host,
            "port": args.port,
            "log_level": args.log_level,
            "lifespan": "on",
            # Hub frames are short JSON; per-socket deflate state costs ~38 KB a socket
            # (docs/PERFORMANCE.md, "Realtime hub: fan-out").
            "ws_per_message_deflate": False,
            # Our handlers (JSON lines, masked, with request ids) in every worker process;
            # helpdesk.logs.RequestContext writes the access lines, without query strings.
            "log_config": logs.dict_config(
                log_format(settings), logging.DEBUG if args.verbose else logging.INFO
            ),
            "access_log": False,
        }
        # uvicorn turns SIGINT/SIGTERM into a graceful shutdown, then re-raises the signal,
        # which `_raise_stopped` turns into `Stopped`: `_database()` stops the embedded server.
        # Being told to stop is how a server is meant to end: exit status 0.
        with suppress(Stopped):
            if workers == 1:
                uvicorn.run(create_app(settings, url), **options)
            else:
                # Worker processes share nothing but the database: the hub, presence and
                # the outbox already work across processes. They reach the database this
                # process started (or was given) through the environment.
                os.environ["HELPDESK_DATABASE_URL"] = url
                uvicorn.run(
                    "helpdesk.web.app:create_app_from_env",
                    factory=True,
                    workers=workers,
                    **options,
                )
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    """The background work (helpdesk/background.py) in a process of its own, until stopped.

    For app processes started with HELPDESK_BACKGROUND=0; any number of these may run at
    once, beside any number of app processes.
    """
    from helpdesk.background import BackgroundWork

    async def work(db: Database) -> None:
        try:
            background = BackgroundWork(db, settings)
        except ValueError as exc:  # a bad HELPDESK_SMTP_URL
            raise DeskError(str(exc)) from None

        async def run() -> None:
            # Started once the signal handlers are ours: a SIGTERM from now on ends in a
            # clean stop, never half-way through starting.
            background.start()
            await background.wait()

        try:
            await _until_stopped(run())
        finally:
            # Each job finishes the batch in hand: mail the relay took is marked sent.
            await background.stop()

    # The outbox holds a connection while it sends a batch, the SLA worker one per pass, and
    # what they announce is published in the same transactions.
    _with_database(settings, work, pool_size=4)
    return 0


async def _until_stopped(work: Awaitable[Any]) -> bool:
    """Await `work` until it ends or SIGTERM/SIGINT cancels it; True when a signal did.

    While the event loop runs, a signal cancels the task, so every `finally` runs with the
    loop intact (rather than `Stopped` bursting out of whatever callback was running, where
    asyncio would log and swallow it). The previous handlers are back once the work is over.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    caught: list[int] = []

    def stop(signum: int) -> None:
        caught.append(signum)
        task.cancel()

    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    for signum in previous:
        loop.add_signal_handler(signum, stop, signum)
    try:
        await work
    except asyncio.CancelledError:
        if not caught:
            raise
        task.uncancel()
    finally:
        for signum, handler in previous.items():
            loop.remove_signal_handler(signum)
            signal.signal(signum, handler)
    if caught:
        print(f"helpdesk: stopped by {signal.Signals(caught[0]).name}", file=sys.stderr)
    return bool(caught)


def _call_service_sink(db: Database, settings: Settings) -> EventSink:
    """Where CTI adapters deliver: each event applied to the call log in its own transaction."""
    from helpdesk import calls

    async def apply(event: CallEvent) -> None:
        async with db.unit_of_work() as session:
            await calls.apply_event(session, event, region=settings.default_region)

    return apply


def cmd_cti_ami(settings: Settings, args: argparse.Namespace) -> int:
    from cti.adapters.ami import AmiBridge, AmiLoginError

    secret = args.secret or os.environ.get("HELPDESK_AMI_SECRET", "")
    if not secret:
        print("helpdesk: give the AMI secret with HELPDESK_AMI_SECRET or --secret", file=sys.stderr)
        return 2

    async def follow(db: Database) -> None:
        bridge = AmiBridge(
            args.host,
            args.port,
            args.user,
            secret,
            _call_service_sink(db, settings),
            extension_pattern=args.extension_pattern,
        )
        print(f"helpdesk: following Asterisk at {args.host}:{args.port}", flush=True)
        try:
            await _until_stopped(bridge.run())
        finally:
            await bridge.close()

    try:
        _with_database(settings, follow)
    except AmiLoginError as exc:
        print(f"helpdesk: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_cti_simulate(settings: Settings, args: argparse.Namespace) -> int:
    """Ring an extension, answer, hang up: the call service sees what a PBX would send."""
    from cti.events import CallEvent

    async def simulate(db: Database) -> None:
        sink = _call_service_sink(db, settings)
        call_id = f"sim-{uuid.uuid4().hex[:12]}"
        sent: list[str] = []

        async def send(event: str, **details: Any) -> None:
            call_event = CallEvent(
                event=event,
                call_id=call_id,
                from_number=args.from_number,
                to_number=args.to,
                **details,
            )
            await sink(call_event)
            sent.append(event)
            print(json.dumps(call_event.as_json(), ensure_ascii=False), flush=True)

        async def call() -> None:
            await send("ring", agents=(args.to,))
            await asyncio.sleep(args.answer_after)
            if args.no_answer:
                await send("hangup", cause="noAnswer")
                return
            await send("answer", agents=(args.to,))
            await asyncio.sleep(args.talk)
            await send("hangup", cause="normalClearing")

        if await _until_stopped(call()) and sent and "hangup" not in sent:
            # Stopped mid-call: hang up, or the call would go on ringing on agents' screens.
            await send("hangup", cause="normalClearing" if "answer" in sent else "cancel")

    _with_database(settings, simulate)
    return 0


def cmd_mail_smtp(settings: Settings, args: argparse.Namespace) -> int:
    """Listen for inbound mail until stopped."""
    from helpdesk.mail.smtp import start_listener

    async def listen(db: Database) -> None:
        server = await start_listener(db, settings, host=args.host, port=args.port)
        print(f"helpdesk: SMTP listener on {args.host}:{args.port}", flush=True)
        try:
            await _until_stopped(server.serve_forever())
        finally:
            server.close()
            await server.wait_closed()

    # Every SMTP session files its message in its own transaction: one connection each.
    _with_database(settings, listen, pool_size=10)
    return 0


def cmd_mail_imap(settings: Settings, args: argparse.Namespace) -> int:
    """Poll (or IDLE on) one mailbox; each message goes through the ingest service."""
    from helpdesk.mail.cursors import DatabaseCursorStore
    from helpdesk.mail.imap import ImapPoller, MailboxUrl
    from helpdesk.mail.ingest import ingest_message

    url = args.url or os.environ.get("HELPDESK_IMAP_URL", "")
    if not url:
        print("helpdesk: give the mailbox with --url or HELPDESK_IMAP_URL", file=sys.stderr)
        return 2
    try:
        mailbox = MailboxUrl.parse(url)
    except ValueError as exc:
        print(f"helpdesk: {exc}", file=sys.stderr)
        return 2

    async def poll(db: Database) -> None:
        async def deliver(raw: bytes) -> None:
            async with db.unit_of_work() as session:
                await ingest_message(session, raw, settings=settings, source="imap")

        poller = ImapPoller(
            mailbox,
            deliver,
            DatabaseCursorStore(db),
            delete=args.delete,
            poll_seconds=args.poll_seconds,
        )
        stop = asyncio.Event()
        print(f"helpdesk: polling {mailbox.key}", flush=True)
        try:
            await _until_stopped(poller.run(stop))
        finally:
            stop.set()

    _with_database(settings, poll)
    return 0


class ProgressBar:
    """`[#####.....] 120/240` on stderr: redrawn in place on a terminal; elsewhere (a log,
    a pipe) a new line only when another tenth is done, so logs stay short."""

    def __init__(self, stream: Any = None, width: int = 30) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.is_tty = self.stream.isatty()
        self.shown = -1

    def update(self, done: int, total: int) -> None:
        if total <= 0:
            return
        filled = min(self.width, done * self.width // total)
        bar = f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total}"
        if self.is_tty:
            print(f"\r{bar}", end="\n" if done >= total else "", file=self.stream, flush=True)
        elif filled * 10 // self.width != self.shown or done >= total:
            self.shown = filled * 10 // self.width
            print(bar, file=self.stream, flush=True)


async def _index_articles(settings: Settings, db: Database, article_ids: list[int]) -> None:
    """Hand saved articles to the search backend (after their commit)."""
    from sqlalchemy import select

    from knowledge_base.models import KbArticle
    from knowledge_base.search import ArticleDoc, category_paths, make_search

    search = make_search(settings, db)
    try:
        paths = await category_paths(db)
        async with db.sessionmaker() as session:
            for start in range(0, len(article_ids), 500):
                saved = await session.scalars(
                    select(KbArticle).where(KbArticle.id.in_(article_ids[start : start + 500]))
                )
                docs = [
                    ArticleDoc.from_article(a, paths.get(a.category_id or 0, ())) for a in saved
                ]
                await search.index(docs)
    finally:
        await search.close()


def cmd_kb_import(settings: Settings, args: argparse.Namespace) -> int:
    """Import Markdown files or a CSV into the knowledge base, then index what changed."""
    from sqlalchemy import select

    from helpdesk.identities import normalize_email
    from helpdesk.models import User
    from knowledge_base import importer

    bar = ProgressBar()

    async def run(db: Database) -> importer.ImportSummary:
        author_id = None
        if args.author:
            async with db.sessionmaker() as session:
                author_id = await session.scalar(
                    select(User.id).where(User.email == normalize_email(args.author))
                )
            if author_id is None:
                raise DeskError(f"no user with the email {args.author}")
        summary = await importer.import_path(
            db, args.path, author_id=author_id, progress=bar.update
        )
        if summary.article_ids:
            try:
                await _index_articles(settings, db, summary.article_ids)
            except Exception as exc:  # the import is committed: say so, and how to catch up
                print(
                    f"helpdesk: imported, but the search index was not updated ({exc}); "
                    "run `helpdesk kb reindex`",
                    file=sys.stderr,
                )
        return summary

    try:
        summary = _with_database(settings, run)
    except DeskError as exc:
        print(f"helpdesk: {exc.message}", file=sys.stderr)
        return 1
    print(
        f"{summary.created} created, {summary.updated} updated, "
        f"{summary.unchanged} unchanged, {len(summary.rejected)} rejected"
    )
    for source, reason in summary.rejected:
        print(f"rejected {source}: {reason}")
    # Rejections are reported, not fatal; an import that brought in nothing is.
    return 0 if summary.imported else 1


def cmd_kb_reindex(settings: Settings, args: argparse.Namespace) -> int:
    """Rebuild the search index from the articles table."""
    from sqlalchemy import func, select

    from knowledge_base.models import KbArticle
    from knowledge_base.search import iter_docs, make_search

    bar = ProgressBar()

    async def run(db: Database) -> int:
        async with db.sessionmaker() as session:
            total = int(await session.scalar(select(func.count()).select_from(KbArticle)) or 0)
        search = make_search(settings, db)
        try:
            return await search.reindex(
                iter_docs(db), total=total, progress=lambda done: bar.update(done, total)
            )
        finally:
            await search.close()

    try:
        count = _with_database(settings, run)
    except ValueError as exc:  # an unknown or half-configured backend
        print(f"helpdesk: {exc}", file=sys.stderr)
        return 2
    print(f"reindexed {count} articles ({settings.search})")
    return 0


def cmd_db_url(settings: Settings, args: argparse.Namespace) -> int:
    """Print the URL of the embedded server (for psql or a second process)."""
    if settings.database_url:
        print(settings.database_url)
    else:
        print(EmbeddedPostgres(settings.data_dir).url(driver="asyncpg"))
    return 0


def _client_bins(settings: Settings) -> list[Path]:
    """The embedded server's own pg_dump/pg_restore/psql first when it is the one we use."""
    if settings.database_url:
        return []
    from helpdesk.embedded_pg import _bin_dir

    return [_bin_dir()]


def _progress(message: str) -> None:
    print(f"helpdesk: {message}", file=sys.stderr, flush=True)


def cmd_backup(settings: Settings, args: argparse.Namespace) -> int:
    """Database (pg_dump --format=custom) and attachments in one archive (docs/OPERATIONS.md)."""
    from helpdesk import backup

    output = Path(args.output or backup.default_backup_name()).resolve()
    with _database(settings) as url:
        report = asyncio.run(
            backup.create_backup(
                url,
                settings.attachments_dir,
                output,
                preferred_bin=_client_bins(settings),
                progress=_progress,
            )
        )
    rows = sum(n for table, n in report.counts.items() if table != "alembic_version")
    print(
        f"backup written to {report.path} ({report.size} bytes): revision {report.revision}, "
        f"{rows} rows, {report.attachments} attachments"
    )
    return 0


def cmd_restore(settings: Settings, args: argparse.Namespace) -> int:
    """Restore an archive from `helpdesk backup`, then migrate it to the current schema."""
    from helpdesk import backup

    with _database(settings) as url:
        report = asyncio.run(
            backup.restore_backup(
                url,
                settings.attachments_dir,
                Path(args.file).resolve(),
                force=args.force,
                preferred_bin=_client_bins(settings),
                progress=_progress,
            )
        )
    rows = sum(n for table, n in report.counts.items() if table != "alembic_version")
    print(
        f"restored {rows} rows and {report.attachments} attachments "
        f"(backup at revision {report.restored_from}, now at {report.revision})"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="helpdesk", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="migrate, optionally seed demo data, and serve")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--demo", action="store_true", help="seed demo data first (idempotent)")
    serve.add_argument("--log-level", default="info")
    serve.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("HELPDESK_WORKERS", "1") or 1),
        help="app processes sharing the port (default 1, or HELPDESK_WORKERS)",
    )
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser(
        "worker",
        help="run the outbox and SLA workers until stopped (for serve with HELPDESK_BACKGROUND=0)",
    )
    worker.set_defaults(func=cmd_worker)

    migrate = sub.add_parser("migrate", help="alembic upgrade head")
    migrate.set_defaults(func=cmd_migrate)

    user = sub.add_parser("user", help="manage users")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    add = user_sub.add_parser("add", help="add an agent, supervisor or admin")
    add.add_argument("email")
    add.add_argument("--role", required=True, choices=["agent", "supervisor", "admin"])
    add.add_argument("--name")
    add.add_argument("--extension")
    add.add_argument("--team")
    add.add_argument("--language", choices=["ja", "en"])
    add.add_argument("--password", help="prompted for (or generated) when omitted")
    add.set_defaults(func=cmd_user_add)

    demo = sub.add_parser("demo-data", help="seed demo teams, agents, customers and cases")
    demo.set_defaults(func=cmd_demo_data)

    cti = sub.add_parser("cti", help="telephony: PBX bridges and a call simulator")
    cti_sub = cti.add_subparsers(dest="cti_command", required=True)
    ami = cti_sub.add_parser("ami", help="follow an Asterisk PBX over its Manager Interface")
    ami.add_argument("--host", default="127.0.0.1")
    ami.add_argument("--port", type=int, default=5038)
    ami.add_argument("--user", required=True, help="AMI user (manager.conf)")
    ami.add_argument(
        "--secret", help="AMI secret; better given as HELPDESK_AMI_SECRET (no ps listing)"
    )
    ami.add_argument(
        "--extension-pattern",
        default=r"\d{2,6}",
        help="regular expression an agent's extension matches (default: 2 to 6 digits)",
    )
    ami.set_defaults(func=cmd_cti_ami)
    simulate = cti_sub.add_parser("simulate", help="ring, answer and hang up a demo call")
    simulate.add_argument("--from", dest="from_number", required=True, help="caller's number")
    simulate.add_argument("--to", required=True, help="extension (or agent email) to ring")
    simulate.add_argument("--answer-after", type=float, default=2.0, help="seconds of ringing")
    simulate.add_argument("--talk", type=float, default=5.0, help="seconds of conversation")
    simulate.add_argument("--no-answer", action="store_true", help="ring, then give up")
    simulate.set_defaults(func=cmd_cti_simulate)

    mail = sub.add_parser("mail", help="email: inbound listener and mailbox poller")
    mail_sub = mail.add_subparsers(dest="mail_command", required=True)
    smtp = mail_sub.add_parser("smtp", help="listen for inbound mail over SMTP")
    smtp.add_argument("--host", default="127.0.0.1")
    smtp.add_argument("--port", type=int, default=2525)
    smtp.set_defaults(func=cmd_mail_smtp)
    imap = mail_sub.add_parser("imap", help="poll an IMAP mailbox (IDLE when offered)")
    imap.add_argument(
        "--url", help="imaps://user:pass@host/INBOX; better given as HELPDESK_IMAP_URL"
    )
    imap.add_argument(
        "--delete", action="store_true", help="delete filed messages (default: flag them)"
    )
    imap.add_argument("--poll-seconds", type=float, default=60.0, help="when IDLE is not offered")
    imap.set_defaults(func=cmd_mail_imap)

    kb = sub.add_parser("kb", help="knowledge base: import articles, rebuild the search index")
    kb_sub = kb.add_subparsers(dest="kb_command", required=True)
    kb_import = kb_sub.add_parser(
        "import", help="import a directory of Markdown files, one .md file or a FAQ CSV"
    )
    kb_import.add_argument(
        "path", help="directory, .md file or .csv (question,answer,category,lang)"
    )
    kb_import.add_argument("--author", help="email of the user recorded as author and editor")
    kb_import.set_defaults(func=cmd_kb_import)
    kb_reindex = kb_sub.add_parser("reindex", help="rebuild the search index from the database")
    kb_reindex.set_defaults(func=cmd_kb_reindex)

    backup_cmd = sub.add_parser(
        "backup", help="database (pg_dump) and attachments in one archive, with checksums"
    )
    backup_cmd.add_argument(
        "--output", "-o", help="archive to write (default: ./helpdesk-backup-<UTC time>.tar)"
    )
    backup_cmd.set_defaults(func=cmd_backup)
    restore = sub.add_parser(
        "restore", help="restore a `helpdesk backup` archive, then migrate to the current schema"
    )
    restore.add_argument("file", help="archive written by `helpdesk backup`")
    restore.add_argument(
        "--force", action="store_true", help="replace a database that already holds data"
    )
    restore.set_defaults(func=cmd_restore)

    db_url = sub.add_parser("db-url", help="print the database URL in use")
    db_url.set_defaults(func=cmd_db_url)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.from_env()
    logs.configure(log_format(settings), logging.DEBUG if args.verbose else logging.INFO)
    if not args.verbose:
        logging.getLogger("alembic").setLevel(logging.WARNING)
    _install_signal_handlers()
    try:
        return int(args.func(settings, args) or 0)
    except DeskError as exc:
        print(f"helpdesk: {exc.message}", file=sys.stderr)
        return 2
    except Stopped as stopped:
        print(f"helpdesk: stopped by {signal.Signals(stopped.signum).name}", file=sys.stderr)
        return 128 + stopped.signum


if __name__ == "__main__":
    sys.exit(main())
