"""Back up and restore a desk: the database (pg_dump) and the attachments, in one tar archive.

The archive holds three things:

- `database.dump`: `pg_dump --format=custom` of the database, taken in an exported snapshot so
  that the row counts in the manifest describe exactly what was dumped;
- `attachments/`: the attachment store (content-addressed files, written before the row that
  names them commits, never rewritten), copied after the dump, so every file the dump refers
  to is there;
- `manifest.json`: what the archive is (format, app version, alembic revision, time, row
  counts) and the SHA-256 of every other member, checked before a restore changes anything.

The PostgreSQL client programs come from the embedded server's wheel or from PATH, whichever
is new enough for the server (pg_dump refuses a newer server). The password never appears on
a command line: it goes to the programs in PGPASSWORD.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from helpdesk import __version__
from helpdesk.errors import DeskError

FORMAT = "helpdesk-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DUMP = "database.dump"
ATTACHMENTS = "attachments"

Progress = Callable[[str], None]


class BackupError(DeskError):
    """A backup or restore that cannot go ahead; the message says why and what to do."""


def _quiet(message: str) -> None:
    return None


# -- connecting the client programs ------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A database as libpq sees it (PG* variables) and as asyncpg connects to it."""

    host: str | None
    port: int
    user: str | None
    password: str | None
    database: str
    sslmode: str | None = None

    @classmethod
    def from_url(cls, url: str) -> Target:
        u = make_url(url)
        query = dict(u.query)
        ssl = query.get("sslmode") or query.get("ssl")
        return cls(
            host=str(query.get("host") or u.host or "") or None,
            port=int(query.get("port") or u.port or 5432),
            user=u.username,
            password=u.password,
            database=u.database or "postgres",
            sslmode=str(ssl) if ssl else None,
        )

    def env(self) -> dict[str, str]:
        """The environment for pg_dump/pg_restore/psql: ours, with PG* pointing here."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        values = {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGPASSWORD": self.password,
            "PGDATABASE": self.database,
            "PGSSLMODE": self.sslmode,
            "PGAPPNAME": "helpdesk-backup",
        }
        env |= {k: v for k, v in values.items() if v}
        return env

    async def connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            database=self.database,
            ssl=self.sslmode if self.sslmode and self.sslmode != "disable" else None,
        )


def _major(version_output: str) -> int:
    """18 from "pg_dump (PostgreSQL) 18.6" (or "15.20 (Debian 15.20-0+deb12u1)")."""
    found = re.search(r"\)\s*(\d+)", version_output)
    return int(found.group(1)) if found else 0


def client_bin_dir(server_major: int, preferred: list[Path]) -> Path:
    """A directory with pg_dump, pg_restore and psql at least as new as the server.

    `preferred` first (the embedded wheel's binaries for the embedded server), then PATH,
    then the wheel's as a last resort: an external PostgreSQL 18 with Debian's pg_dump 15 on
    PATH would otherwise fail with "server version mismatch".
    """
    candidates = list(preferred)
    on_path = shutil.which("pg_dump")
    if on_path:
        candidates.append(Path(on_path).parent)
    from helpdesk.embedded_pg import _bin_dir

    candidates.append(_bin_dir())
    seen: list[str] = []
    for directory in candidates:
        tools = [directory / name for name in ("pg_dump", "pg_restore", "psql")]
        if not all(t.exists() for t in tools):
            continue
        out = subprocess.run(
            [str(tools[0]), "--version"], capture_output=True, text=True, check=False
        ).stdout
        seen.append(f"{tools[0]} ({out.strip() or 'unknown version'})")
        if _major(out) >= server_major:
            return directory
    raise BackupError(
        f"no pg_dump for PostgreSQL {server_major} or newer; found {', '.join(seen) or 'none'}. "
        "Install that version's client programs and put them first on PATH."
    )


async def _server_major(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SHOW server_version_num")) // 10000


async def _tables(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename"
    )
    return [r["tablename"] for r in rows]


async def _row_counts(conn: asyncpg.Connection) -> dict[str, int]:
    counts = {}
    for table in await _tables(conn):
        counts[table] = int(await conn.fetchval(f'SELECT count(*) FROM "{table}"'))
    return counts


async def _revision(conn: asyncpg.Connection) -> str | None:
    if await conn.fetchval("SELECT to_regclass('alembic_version')") is None:
        return None
    return await conn.fetchval("SELECT version_num FROM alembic_version")


async def has_data(url: str) -> bool:
    """True when any table of the database (other than alembic's) holds a row."""
    conn = await Target.from_url(url).connect()
    try:
        for table in await _tables(conn):
            if table == "alembic_version":
                continue
            if await conn.fetchval(f'SELECT EXISTS (SELECT 1 FROM "{table}")'):
                return True
        return False
    finally:
        await conn.close()


# -- backup ------------------------------------------------------------------------------------


@dataclass
class BackupReport:
    path: Path
    revision: str | None
    counts: dict[str, int]
    attachments: int
    size: int


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _attachment_files(attachments_dir: Path) -> Iterator[Path]:
    if not attachments_dir.is_dir():
        return
    for path in sorted(attachments_dir.rglob("*")):
        # `.tmp…` files are writes in progress (interactions.write_file renames them into place).
        if path.is_file() and ".tmp" not in path.name:
            yield path


async def create_backup(
    url: str,
    attachments_dir: Path,
    output: Path,
    *,
    preferred_bin: list[Path] | None = None,
    progress: Progress = _quiet,
) -> BackupReport:
    """Write a backup archive of the database at `url` and `attachments_dir` to `output`.

    The archive is written next to `output` and renamed into place when complete, so a failed
    or interrupted backup never leaves a file that looks like a backup.
    """
    target = Target.from_url(url)
    output.parent.mkdir(parents=True, exist_ok=True)
    conn = await target.connect()
    try:
        bin_dir = client_bin_dir(await _server_major(conn), preferred_bin or [])
        # One snapshot for the counts and the dump: pg_dump --snapshot reads exactly what this
        # transaction sees, and the transaction stays open until pg_dump is done.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            revision = await _revision(conn)
            counts = await _row_counts(conn)
            with tempfile.TemporaryDirectory(dir=output.parent, prefix=".backup-") as tmp:
                dump = Path(tmp) / DUMP
                progress(f"dumping database {target.database} (revision {revision})")
                proc = await asyncio.create_subprocess_exec(
                    str(bin_dir / "pg_dump"),
                    "--format=custom",
                    f"--snapshot={snapshot}",
                    f"--file={dump}",
                    env=target.env(),
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
                _, err = await proc.communicate()
                if proc.returncode != 0:
                    raise BackupError(f"pg_dump failed: {err.decode(errors='replace').strip()}")
                return _write_archive(
                    output,
                    Path(tmp),
                    dump,
                    attachments_dir,
                    manifest={
                        "format": FORMAT,
                        "format_version": FORMAT_VERSION,
                        "app_version": __version__,
                        "alembic_revision": revision,
                        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                        "database": target.database,
                        "server_version": int(await conn.fetchval("SHOW server_version_num")),
                        "counts": counts,
                    },
                    progress=progress,
                )
    finally:
        await conn.close()


def _write_archive(
    output: Path,
    tmp: Path,
    dump: Path,
    attachments_dir: Path,
    *,
    manifest: dict[str, object],
    progress: Progress,
) -> BackupReport:
    partial = tmp / "archive.tar"
    files: dict[str, str] = {}
    with tarfile.open(partial, "w") as tar:
        files[DUMP] = _sha256_file(dump)
        tar.add(dump, arcname=DUMP)
        progress(f"database dumped ({dump.stat().st_size} bytes)")
        count = 0
        for path in _attachment_files(attachments_dir):
            try:
                data = path.read_bytes()
            except FileNotFoundError:  # erased (privacy.erase_customer) since we listed it
                continue
            name = f"{ATTACHMENTS}/{path.relative_to(attachments_dir).as_posix()}"
            files[name] = hashlib.sha256(data).hexdigest()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = int(path.stat().st_mtime)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
            count += 1
            if count % 1000 == 0:
                progress(f"{count} attachments")
        progress(f"{count} attachments copied")
        body = json.dumps(
            {**manifest, "attachments": count, "files": files}, indent=2, ensure_ascii=False
        ).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(body)
        info.mtime = int(datetime.now(UTC).timestamp())
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(body))
    os.replace(partial, output)
    return BackupReport(
        path=output,
        revision=manifest["alembic_revision"],  # type: ignore[arg-type]
        counts=manifest["counts"],  # type: ignore[arg-type]
        attachments=count,
        size=output.stat().st_size,
    )


# -- restore -----------------------------------------------------------------------------------


@dataclass
class RestoreReport:
    revision: str | None
    restored_from: str | None
    counts: dict[str, int] = field(default_factory=dict)
    attachments: int = 0


@dataclass
class CheckedArchive:
    """An archive unpacked into a scratch directory and verified member by member."""

    root: Path
    manifest: dict[str, object]

    @property
    def dump(self) -> Path:
        return self.root / DUMP

    def attachment_names(self) -> list[str]:
        files = self.manifest["files"]
        assert isinstance(files, dict)
        return [n for n in files if n.startswith(f"{ATTACHMENTS}/")]


def _unpack(archive: Path, into: Path) -> CheckedArchive:
    """Unpack and verify `archive`; raise BackupError saying what is wrong with it."""
    if not archive.is_file():
        raise BackupError(f"{archive}: no such file")
    try:
        with tarfile.open(archive, "r:") as tar:
            # The "data" filter refuses absolute paths, `..`, links out of the tree and
            # device files: a crafted archive cannot write outside `into`.
            tar.extractall(into, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BackupError(
            f"{archive} is not a readable helpdesk backup (damaged or not a tar archive: {exc})"
        ) from exc
    try:
        manifest = json.loads((into / MANIFEST).read_text())
    except FileNotFoundError:
        raise BackupError(f"{archive} is not a helpdesk backup: it has no {MANIFEST}") from None
    except ValueError as exc:
        raise BackupError(f"{archive}: {MANIFEST} is damaged ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{archive} is not a helpdesk backup (its manifest is another format)")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BackupError(
            f"{archive} is backup format {manifest.get('format_version')}; "
            f"this version of helpdesk reads format {FORMAT_VERSION}"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or DUMP not in files:
        raise BackupError(f"{archive}: the manifest lists no {DUMP}")
    for name, expected in files.items():
        path = into / name
        if not path.is_file():
            raise BackupError(f"{archive} is damaged: {name} is missing")
        if _sha256_file(path) != expected:
            raise BackupError(f"{archive} is damaged: {name} does not match its checksum")
    return CheckedArchive(into, manifest)


def _check_revision(revision: object) -> None:
    """Refuse a backup made by a newer helpdesk: our migrations cannot bring it to our head."""
    if revision is None:
        return
    from alembic.script import ScriptDirectory

    from helpdesk import migrations

    scripts = ScriptDirectory.from_config(migrations.alembic_config())
    try:
        scripts.get_revision(str(revision))
    except Exception:
        raise BackupError(
            f"the backup's schema revision {revision} is unknown to helpdesk {__version__}: "
            "it was made by a newer version; restore it with that version"
        ) from None


# Everything in the target's schema goes, in the same transaction as the restore: a database
# migrated further than the backup keeps no table the backup does not know about, and a failed
# restore leaves the database as it was.
WIPE_SQL = """
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT c.relname, c.relkind FROM pg_class c
             WHERE c.relnamespace = current_schema()::regnamespace
               AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
               AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid
                               AND d.deptype IN ('e', 'a', 'i'))
    LOOP
        EXECUTE format(
            CASE r.relkind WHEN 'v' THEN 'DROP VIEW IF EXISTS %I CASCADE'
                           WHEN 'm' THEN 'DROP MATERIALIZED VIEW IF EXISTS %I CASCADE'
                           WHEN 'S' THEN 'DROP SEQUENCE IF EXISTS %I CASCADE'
                           WHEN 'f' THEN 'DROP FOREIGN TABLE IF EXISTS %I CASCADE'
                           ELSE 'DROP TABLE IF EXISTS %I CASCADE' END, r.relname);
    END LOOP;
    FOR r IN SELECT t.typname FROM pg_type t
             WHERE t.typnamespace = current_schema()::regnamespace
               AND t.typtype IN ('e', 'd', 'c') AND t.typrelid = 0
               AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = t.oid
                               AND d.deptype = 'e')
    LOOP
        EXECUTE format('DROP TYPE IF EXISTS %I CASCADE', r.typname);
    END LOOP;
END $$;
"""


def _run(args: list[str], env: dict[str, str], what: str) -> None:
    result = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BackupError(f"{what} failed: {(result.stderr or result.stdout).strip()[-2000:]}")


EMPTY_SEARCH_PATH = "SELECT pg_catalog.set_config('search_path', '', false);"
RESTORE_SEARCH_PATH = "SELECT pg_catalog.set_config('search_path', 'public', false);"


def _search_path_for_functions(script: Path) -> None:
    """Restore with `public` on the search path instead of pg_dump's empty one.

    The generated column kb_articles.search_grams calls kb_search_grams (migration 0006), an
    SQL function whose body calls kb_search_terms unqualified; with the empty search path a
    dump runs under, creating the table fails ("function kb_search_terms(text) does not
    exist"). Every name in the script is schema-qualified, so the wider path changes nothing
    else. Remove once the functions are schema-qualified by a migration.
    """
    fixed = script.with_suffix(".fixed.sql")
    with script.open() as src, fixed.open("w") as dst:
        for line in src:
            dst.write(RESTORE_SEARCH_PATH + "\n" if line.strip() == EMPTY_SEARCH_PATH else line)
    os.replace(fixed, script)


def _copy_attachments(checked: CheckedArchive, attachments_dir: Path) -> int:
    count = 0
    for name in checked.attachment_names():
        relative = Path(name).relative_to(ATTACHMENTS)
        dest = attachments_dir / relative
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f"{dest.name}.tmp{os.getpid()}")
        shutil.copyfile(checked.root / name, tmp)
        os.replace(tmp, dest)
        count += 1
    return count


async def restore_backup(
    url: str,
    attachments_dir: Path,
    archive: Path,
    *,
    force: bool = False,
    preferred_bin: list[Path] | None = None,
    progress: Progress = _quiet,
) -> RestoreReport:
    """Restore `archive` into the database at `url` and `attachments_dir`, then migrate.

    Nothing changes until the whole archive has been verified and, unless `force`, the
    database found to hold no rows. The database is replaced in one transaction; attachments
    are added to the store (files already there stay: the store is content-addressed).
    """
    with tempfile.TemporaryDirectory(prefix="helpdesk-restore-") as tmp:
        progress(f"checking {archive}")
        checked = _unpack(archive, Path(tmp))
        manifest = checked.manifest
        _check_revision(manifest.get("alembic_revision"))
        progress(
            f"backup of {manifest.get('created_at')}, revision {manifest.get('alembic_revision')}"
            f", {len(checked.attachment_names())} attachments: checksums match"
        )
        target = Target.from_url(url)
        conn = await target.connect()
        try:
            server_major = await _server_major(conn)
        finally:
            await conn.close()
        if not force and await has_data(url):
            raise BackupError(
                f"database {target.database} already holds data; restoring replaces all of it. "
                "Run again with --force to do that (after a backup of it, if it matters)."
            )
        bin_dir = client_bin_dir(server_major, preferred_bin or [])
        script = Path(tmp) / "restore.sql"
        wipe = Path(tmp) / "wipe.sql"
        wipe.write_text(WIPE_SQL)
        env = target.env()
        _run(
            [
                str(bin_dir / "pg_restore"),
                "--clean",
                "--if-exists",
                "--no-owner",
                "--no-privileges",
                f"--file={script}",
                str(checked.dump),
            ],
            env,
            "pg_restore",
        )
        _search_path_for_functions(script)
        progress(f"restoring database {target.database}")
        _run(
            [
                str(bin_dir / "psql"),
                "-X",
                "-q",
                "--single-transaction",
                "-v",
                "ON_ERROR_STOP=1",
                "-f",
                str(wipe),
                "-f",
                str(script),
            ],
            env,
            "restoring the database",
        )
        progress("restoring attachments")
        copied = _copy_attachments(checked, attachments_dir)

    progress("migrating to the current schema")
    from helpdesk import migrations
    from helpdesk.db import Database

    db = Database.from_url(url, pool_size=1)
    try:
        await migrations.upgrade(db.engine)
    finally:
        await db.dispose()
    conn = await target.connect()
    try:
        revision = await _revision(conn)
        counts = await _row_counts(conn)
    finally:
        await conn.close()
    return RestoreReport(
        revision=revision,
        restored_from=str(manifest.get("alembic_revision")),
        counts=counts,
        attachments=copied,
    )


def default_backup_name(now: datetime | None = None) -> str:
    moment = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"helpdesk-backup-{moment}.tar"
