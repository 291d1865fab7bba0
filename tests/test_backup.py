"""`helpdesk backup` and `helpdesk restore` as an operator runs them (docs/OPERATIONS.md).

Each test has a source database with data and attachments and an empty target database, both
on the session's server, and runs the CLI as a subprocess with HELPDESK_DATABASE_URL pointing
at one of them: the backup is taken from the source and restored into the target, and the two
are compared row by row count and byte by byte.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tarfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from helpdesk import backup, cases, customers, interactions, migrations
from helpdesk.db import Database
from tests.conftest import PgServer, helpdesk_bin

ROOT = Path(__file__).resolve().parent.parent
HEAD = ScriptDirectory.from_config(migrations.alembic_config()).get_current_head()


@pytest.fixture
async def source(pg_server: PgServer, tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """A migrated database with customers, cases, a timeline and two attachments."""
    name = f"helpdesk_backup_src_{uuid.uuid4().hex[:8]}"
    url = await pg_server.create_database(name)
    attachments_dir = tmp_path / "source" / "attachments"
    db = Database.from_url(url, pool_size=1)
    try:
        await migrations.upgrade(db.engine)
        async with db.unit_of_work() as session:
            for i, (name_, phone) in enumerate(
                [("山田 太郎", "03-1234-5678"), ("Alice Smith", "+44 20 7946 0018")]
            ):
                customer = await customers.create_customer(
                    session,
                    customers.CustomerInput(
                        name=name_,
                        identities=[
                            customers.IdentityInput("phone", phone),
                            customers.IdentityInput("email", f"customer{i}@example.com"),
                        ],
                    ),
                )
                case = await cases.create_case(
                    session,
                    cases.CaseInput(
                        customer_id=customer.id,
                        subject=f"請求書について {i}",
                        channel="email",
                        body="請求書の金額が違います。",
                    ),
                    author_user_id=None,
                )
                entry = await interactions.add_interaction(
                    session,
                    customer_id=customer.id,
                    case_id=case.id,
                    kind="email",
                    direction="in",
                    text="添付をご確認ください",
                )
                await interactions.store_attachment(
                    session,
                    attachments_dir=attachments_dir,
                    interaction_id=entry.id,
                    filename=f"invoice-{i}.pdf",
                    content_type="application/pdf",
                    data=f"%PDF-1.4 invoice {i} ".encode() + os.urandom(2048),
                    max_bytes=1 << 20,
                )
    finally:
        await db.dispose()
    yield url, attachments_dir
    await pg_server.drop_database(name)


@pytest.fixture
async def target(pg_server: PgServer, tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    name = f"helpdesk_backup_dst_{uuid.uuid4().hex[:8]}"
    url = await pg_server.create_database(name)
    yield url, tmp_path / "target" / "attachments"
    await pg_server.drop_database(name)


def helpdesk(
    args: list[str], url: str, attachments_dir: Path, *, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELPDESK_")}
    env |= {"HELPDESK_DATABASE_URL": url, "HELPDESK_DATA_DIR": str(attachments_dir.parent)}
    result = subprocess.run(
        [helpdesk_bin(), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert (result.returncode == 0) == ok, result.stdout + result.stderr
    return result


async def row_counts(url: str) -> dict[str, int]:
    conn = await backup.Target.from_url(url).connect()
    try:
        return await backup._row_counts(conn)
    finally:
        await conn.close()


async def scalar(url: str, sql: str) -> object:
    conn = await backup.Target.from_url(url).connect()
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


async def test_backup_restores_into_an_empty_database_with_every_row_and_file(
    source: tuple[str, Path], target: tuple[str, Path], tmp_path: Path
) -> None:
    source_url, source_files = source
    target_url, target_files = target
    archive = tmp_path / "desk.tar"

    made = helpdesk(["backup", "--output", str(archive)], source_url, source_files)
    assert "dumping database" in made.stderr  # progress on stderr, the result on stdout
    assert "backup written to" in made.stdout

    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        manifest = json.load(tar.extractfile(backup.MANIFEST))  # type: ignore[arg-type]
    assert {backup.DUMP, backup.MANIFEST} <= names
    assert manifest["format"] == backup.FORMAT
    assert manifest["alembic_revision"] == HEAD
    assert manifest["counts"]["customers"] == 2
    assert manifest["attachments"] == 2
    assert set(manifest["files"]) == names - {backup.MANIFEST}

    restored = helpdesk(["restore", str(archive)], target_url, target_files)
    assert "restored" in restored.stdout

    source_counts = await row_counts(source_url)
    assert source_counts["interactions"] >= 4 and source_counts["attachments"] == 2
    assert await row_counts(target_url) == source_counts
    assert files(target_files) == files(source_files)
    assert await scalar(target_url, "SELECT version_num FROM alembic_version") == HEAD
    # Sequences come back too: the next case number follows the restored ones.
    assert await scalar(target_url, "SELECT max(number) FROM cases") == await scalar(
        source_url, "SELECT max(number) FROM cases"
    )
    assert await scalar(target_url, "SELECT nextval('case_number_seq')") == await scalar(
        source_url, "SELECT nextval('case_number_seq')"
    )


async def test_restore_refuses_a_database_with_data_unless_forced(
    source: tuple[str, Path], target: tuple[str, Path], tmp_path: Path
) -> None:
    source_url, source_files = source
    target_url, target_files = target
    archive = tmp_path / "desk.tar"
    helpdesk(["backup", "-o", str(archive)], source_url, source_files)

    # The target is a desk of its own: migrated, with one customer of its own.
    db = Database.from_url(target_url, pool_size=1)
    try:
        await migrations.upgrade(db.engine)
        async with db.unit_of_work() as session:
            await customers.create_customer(session, customers.CustomerInput(name="Keep Me"))
    finally:
        await db.dispose()

    refused = helpdesk(["restore", str(archive)], target_url, target_files, ok=False)
    assert refused.returncode == 2
    assert "already holds data" in refused.stderr and "--force" in refused.stderr
    assert await scalar(target_url, "SELECT name FROM customers") == "Keep Me"

    helpdesk(["restore", "--force", str(archive)], target_url, target_files)
    assert await row_counts(target_url) == await row_counts(source_url)
    assert await scalar(target_url, "SELECT count(*) FROM customers WHERE name = 'Keep Me'") == 0


async def test_a_corrupt_or_foreign_archive_is_refused_and_changes_nothing(
    source: tuple[str, Path], target: tuple[str, Path], tmp_path: Path
) -> None:
    source_url, source_files = source
    target_url, target_files = target
    archive = tmp_path / "desk.tar"
    helpdesk(["backup", "-o", str(archive)], source_url, source_files)

    # One flipped byte inside the dump (past the tar header) breaks its checksum.
    damaged = tmp_path / "damaged.tar"
    data = bytearray(archive.read_bytes())
    with tarfile.open(archive) as tar:
        offset = tar.getmember(backup.DUMP).offset_data
    data[offset + 100] ^= 0xFF
    damaged.write_bytes(bytes(data))
    out = helpdesk(["restore", "--force", str(damaged)], target_url, target_files, ok=False)
    assert "damaged" in out.stderr and "database.dump" in out.stderr

    # A truncated archive, a tar of something else, and a file that is no tar at all.
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(archive.read_bytes()[: len(data) // 2])
    out = helpdesk(["restore", str(truncated)], target_url, target_files, ok=False)
    assert "helpdesk: " in out.stderr and "Traceback" not in out.stderr

    foreign = tmp_path / "foreign.tar"
    with tarfile.open(foreign, "w") as tar:
        tar.add(Path(__file__), arcname="test_backup.py")
    out = helpdesk(["restore", str(foreign)], target_url, target_files, ok=False)
    assert "not a helpdesk backup" in out.stderr

    not_tar = tmp_path / "notes.txt"
    not_tar.write_text("not an archive\n" * 100)
    out = helpdesk(["restore", str(not_tar)], target_url, target_files, ok=False)
    assert "not a readable helpdesk backup" in out.stderr

    # Nothing reached the target: no table, no file.
    assert await row_counts(target_url) == {}
    assert not target_files.exists()


def test_client_programs_older_than_the_server_are_passed_over() -> None:
    """Debian's pg_dump 15 on PATH cannot dump PostgreSQL 18: the wheel's is used instead."""
    assert backup._major("pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)") == 15
    assert backup._major("pg_dump (PostgreSQL) 18.6") == 18
    chosen = backup.client_bin_dir(18, [])
    version = subprocess.run(
        [str(chosen / "pg_dump"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert backup._major(version) >= 18
    with pytest.raises(backup.BackupError, match="no pg_dump for PostgreSQL 99"):
        backup.client_bin_dir(99, [])


def test_the_password_goes_in_the_environment_not_the_command_line() -> None:
    target = backup.Target.from_url("postgresql+asyncpg://desk:s3cret@db.example:6543/helpdesk")
    env = target.env()
    assert env["PGPASSWORD"] == "s3cret"
    assert (env["PGHOST"], env["PGPORT"], env["PGUSER"], env["PGDATABASE"]) == (
        "db.example",
        "6543",
        "desk",
        "helpdesk",
    )


async def test_a_plain_pg_dump_restores_with_plain_pg_restore(source, target, tmp_path):
    """The plain tools route of docs/OPERATIONS.md, without `helpdesk restore`'s help: since
    migration 0014 no function depends on the search_path a restore runs without."""
    from helpdesk.embedded_pg import _bin_dir

    src_url, _ = source
    dst_url, _ = target
    dump = tmp_path / "plain.dump"
    bins = _bin_dir()
    await asyncio.to_thread(
        subprocess.run,
        [str(bins / "pg_dump"), "--format=custom", "--file", str(dump)],
        env=backup.Target.from_url(src_url).env(),
        check=True,
        capture_output=True,
        timeout=120,
    )
    restored = await asyncio.to_thread(
        subprocess.run,
        [str(bins / "pg_restore"), "--no-owner", "--exit-on-error", "-d",
         backup.Target.from_url(dst_url).database, str(dump)],
        env=backup.Target.from_url(dst_url).env(),
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert restored.returncode == 0, restored.stderr
    assert await row_counts(dst_url) == await row_counts(src_url)
    assert await scalar(dst_url, "SELECT version_num FROM alembic_version") == HEAD
