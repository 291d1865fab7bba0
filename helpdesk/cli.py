"""The `helpdesk` command (DESIGN.md, "Command line")."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from types import FrameType
from typing import Any

from helpdesk.config import Settings
from helpdesk.db import Database
from helpdesk.embedded_pg import EmbeddedPostgres
from helpdesk.errors import DeskError

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
    settings: Settings, work: Callable[[Database], Awaitable[Any]], *, migrate: bool = True
) -> Any:
    """Run `work` against the configured (or embedded) database, stopping what we started."""
    with _database(settings) as url:

        async def run() -> Any:
            db = Database.from_url(url, pool_size=2)
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
            return await demo.seed(session, region=settings.default_region)

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
                        return await demo.seed(session, region=settings.default_region)
            finally:
                await db.dispose()
            return None

        report = asyncio.run(prepare())
        if report is not None:
            from helpdesk import demo

            print(demo.describe(report), flush=True)
        app = create_app(settings, url)
        print(f"helpdesk: serving on http://{args.host}:{args.port}", flush=True)
        # uvicorn turns SIGINT/SIGTERM into a graceful shutdown, then re-raises the signal,
        # which `_raise_stopped` turns into `Stopped`: `_database()` stops the embedded server.
        # Being told to stop is how a server is meant to end: exit status 0.
        with suppress(Stopped):
            uvicorn.run(
                app, host=args.host, port=args.port, log_level=args.log_level, lifespan="on"
            )
    return 0


def cmd_db_url(settings: Settings, args: argparse.Namespace) -> int:
    """Print the URL of the embedded server (for psql or a second process)."""
    if settings.database_url:
        print(settings.database_url)
    else:
        print(EmbeddedPostgres(settings.data_dir).url(driver="asyncpg"))
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
    serve.set_defaults(func=cmd_serve)

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

    db_url = sub.add_parser("db-url", help="print the database URL in use")
    db_url.set_defaults(func=cmd_db_url)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        logging.getLogger("alembic").setLevel(logging.WARNING)
    settings = Settings.from_env()
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
