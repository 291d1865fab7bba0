"""The schema is made by Alembic only, and the migrations agree with the models.

Each test works in a database of its own, created empty on the session's server (the embedded
one, or HELPDESK_TEST_DATABASE_URL's) and dropped afterwards.

Autogenerate's comparison (`compare_metadata`, with the options alembic/env.py uses) covers
tables, columns, types, nullability, server defaults, foreign keys, unique constraints and
indexes by name and columns. What it does not look at is checked here separately, against
PostgreSQL's own rendering of the model's DDL: CHECK constraints, index methods and operator
classes (GIN, gin_trgm_ops), and free-standing sequences such as `case_number_seq`.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import CheckConstraint, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.schema import AddConstraint, CreateIndex

from helpdesk import migrations
from helpdesk.models import Base
from tests.conftest import PgServer, helpdesk_bin

ROOT = Path(__file__).resolve().parent.parent
HEAD = ScriptDirectory.from_config(migrations.alembic_config()).get_current_head()


@pytest.fixture
async def fresh_url(pg_server: PgServer) -> AsyncIterator[str]:
    name = f"helpdesk_migrations_{uuid.uuid4().hex[:8]}"
    url = await pg_server.create_database(name)
    yield url
    await pg_server.drop_database(name)


@pytest.fixture
async def engine(fresh_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(fresh_url)
    yield engine
    await engine.dispose()


# -- what the database holds -----------------------------------------------------------------


async def tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        )
        return {r[0] for r in rows}


async def version(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())


def differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts=dict(migrations.COMPARE_OPTIONS))
    return list(compare_metadata(context, Base.metadata))


async def autogenerate_diff(engine: AsyncEngine) -> list[object]:
    async with engine.connect() as conn:
        return await conn.run_sync(differences)


# Free-standing sequences: not the ones behind serial / identity columns.
SEQUENCES_SQL = """
    SELECT s.sequencename, s.data_type::text, s.start_value, s.increment_by
    FROM pg_sequences s
    JOIN pg_class c ON c.relname = s.sequencename
    JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = s.schemaname
    WHERE s.schemaname = current_schema()
      AND NOT EXISTS (SELECT 1 FROM pg_depend d
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                        AND d.deptype IN ('a', 'i'))
"""

INDEX_DEF_SQL = "SELECT pg_get_indexdef(to_regclass(:name))"

CHECKS_SQL = """
    SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
    WHERE conrelid = to_regclass(:table) AND contype = 'c'
"""


def what_autogenerate_does_not_compare(connection: Connection) -> list[str]:
    """Every CHECK constraint, index and sequence of the models, compared exactly.

    For each object: read the database's definition, drop it, create the model's version under
    the same name, read PostgreSQL's definition of that, and compare the two. All inside one
    transaction that is rolled back, so PostgreSQL does the normalizing and nothing changes.
    """
    problems: list[str] = []
    transaction = connection.begin_nested()
    try:
        for table in Base.metadata.sorted_tables:
            in_db = dict(connection.execute(text(CHECKS_SQL), {"table": table.name}).all())
            checks = [c for c in table.constraints if isinstance(c, CheckConstraint)]
            in_model = {str(c.name) for c in checks}
            if set(in_db) != in_model:
                problems.append(
                    f"{table.name}: CHECK constraints {sorted(in_db)} in the database, "
                    f"{sorted(in_model)} in the models"
                )
            for check in checks:
                if check.name not in in_db:
                    continue
                connection.execute(text(f'ALTER TABLE {table.name} DROP CONSTRAINT "{check.name}"'))
                connection.execute(AddConstraint(check))
                from_model = dict(
                    connection.execute(text(CHECKS_SQL), {"table": table.name}).all()
                )[check.name]
                if from_model != in_db[check.name]:
                    problems.append(
                        f"{table.name}.{check.name}: {in_db[check.name]!r} in the database, "
                        f"{from_model!r} from the models"
                    )

            for index in table.indexes:
                in_database = connection.execute(text(INDEX_DEF_SQL), {"name": index.name}).scalar()
                if in_database is None:
                    problems.append(f"index {index.name} is missing")
                    continue
                connection.execute(text(f'DROP INDEX "{index.name}"'))
                connection.execute(CreateIndex(index))
                from_model = connection.execute(text(INDEX_DEF_SQL), {"name": index.name}).scalar()
                if from_model != in_database:
                    problems.append(
                        f"index {index.name}: {in_database!r} in the database, "
                        f"{from_model!r} from the models"
                    )

        in_db_seqs = {r[0]: tuple(r[1:]) for r in connection.execute(text(SEQUENCES_SQL))}
        in_model_seqs = {
            name: ("bigint", seq.start or 1, seq.increment or 1)
            for name, seq in Base.metadata._sequences.items()
        }
        if in_db_seqs != in_model_seqs:
            problems.append(f"sequences: {in_db_seqs} in the database, {in_model_seqs} in models")
    finally:
        transaction.rollback()
    return problems


async def exact_diff(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return await conn.run_sync(what_autogenerate_does_not_compare)


# -- tests -----------------------------------------------------------------------------------


async def test_upgrade_head_on_an_empty_database_creates_the_schema(
    engine: AsyncEngine,
) -> None:
    assert await tables(engine) == set()
    assert await version(engine) is None

    await migrations.upgrade(engine)

    assert await tables(engine) == set(Base.metadata.tables) | {"alembic_version"}
    assert await version(engine) == HEAD
    async with engine.connect() as conn:
        trgm = await conn.scalar(text("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'"))
        assert trgm == 1
        assert await conn.scalar(text("SELECT nextval('case_number_seq')")) == 1001

    # at head, upgrading again (every `helpdesk serve` does) changes nothing
    await migrations.upgrade(engine)
    assert await version(engine) == HEAD


async def test_processes_starting_together_on_a_new_database_take_turns(fresh_url: str) -> None:
    """Four processes migrating one empty database at once: one builds it, the others wait
    on the migration lock and then find nothing to do (no duplicate-table errors)."""
    engines = [create_async_engine(fresh_url) for _ in range(4)]
    try:
        await asyncio.gather(*(migrations.upgrade(e) for e in engines))
        assert await version(engines[0]) == HEAD
    finally:
        for e in engines:
            await e.dispose()


async def test_models_and_migrations_agree(engine: AsyncEngine) -> None:
    await migrations.upgrade(engine)
    assert await autogenerate_diff(engine) == []
    assert await exact_diff(engine) == []


async def test_the_comparison_notices_drift(engine: AsyncEngine) -> None:
    """The two checks above are not vacuous: each reports a schema that strayed."""
    await migrations.upgrade(engine)
    async with engine.connect() as conn:
        await conn.execute(text("ALTER TABLE customers ALTER COLUMN name TYPE varchar(100)"))
        await conn.execute(text("DROP INDEX ix_cases_tags"))
        await conn.execute(text("ALTER TABLE customers ADD COLUMN stray integer"))
        await conn.execute(text("DROP INDEX ix_customers_search_text_trgm"))
        await conn.execute(
            text(
                "CREATE INDEX ix_customers_search_text_trgm ON customers USING gist (search_text gist_trgm_ops)"
            )
        )
        await conn.execute(text("ALTER TABLE cases DROP CONSTRAINT ck_cases_priority"))
        await conn.execute(
            text(
                "ALTER TABLE cases ADD CONSTRAINT ck_cases_priority "
                "CHECK (priority IN ('low', 'normal'))"
            )
        )
        await conn.execute(text("ALTER SEQUENCE case_number_seq START WITH 1"))

        found = await conn.run_sync(differences)
        modified = {(d[0], d[2], d[3]) for x in found if isinstance(x, list) for d in x}
        assert ("modify_type", "customers", "name") in modified, found
        ops = [d for d in found if isinstance(d, tuple)]
        assert "ix_cases_tags" in {d[1].name for d in ops if d[0] == "add_index"}, found
        removed = {(d[2], d[3].name) for d in ops if d[0] == "remove_column"}
        assert ("customers", "stray") in removed, found

        problems = await conn.run_sync(what_autogenerate_does_not_compare)
        assert any("ix_customers_search_text_trgm" in p for p in problems), problems
        assert any("ck_cases_priority" in p for p in problems), problems
        assert any("sequences" in p for p in problems), problems
        await conn.rollback()


async def test_downgrade_base_removes_everything_and_upgrade_works_again(
    engine: AsyncEngine,
) -> None:
    await migrations.upgrade(engine)
    await migrations.downgrade(engine, "base")

    assert await tables(engine) <= {"alembic_version"}
    assert await version(engine) is None
    async with engine.connect() as conn:
        left = await conn.execute(
            text(
                "SELECT relname, relkind FROM pg_class "
                "WHERE relnamespace = current_schema()::regnamespace "
                "AND relname NOT LIKE 'alembic_version%'"
            )
        )
        assert left.all() == []  # no index, sequence or view left behind either
        types = await conn.execute(
            text(
                "SELECT typname FROM pg_type WHERE typnamespace = current_schema()::regnamespace "
                "AND typtype IN ('e', 'd', 'c') AND typrelid = 0"
            )
        )
        assert types.all() == []  # nor enums or domains

    await migrations.upgrade(engine)
    assert await tables(engine) == set(Base.metadata.tables) | {"alembic_version"}
    assert await version(engine) == HEAD
    assert await autogenerate_diff(engine) == []
    assert await exact_diff(engine) == []


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


async def test_helpdesk_migrate_against_a_database_url(
    fresh_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    data = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELPDESK_")}
    env |= {"HELPDESK_DATABASE_URL": fresh_url, "HELPDESK_DATA_DIR": str(data)}

    out = run([helpdesk_bin(), "migrate"], env)
    assert "latest revision" in out.stdout
    assert await version(engine) == HEAD
    assert await tables(engine) == set(Base.metadata.tables) | {"alembic_version"}
    run([helpdesk_bin(), "migrate"], env)  # again: nothing to do
    assert await version(engine) == HEAD
    # with a URL, nothing embedded was started
    assert not (data / "pg").exists()
    assert not (data / "pg.lock").exists()

    # The plain alembic command line goes through the same env.py (its async branch), and
    # `alembic check` is autogenerate's comparison: no new operations.
    alembic = str(Path(helpdesk_bin()).with_name("alembic"))
    assert "No new upgrade operations" in run([alembic, "check"], env).stdout
    run([alembic, "downgrade", "base"], env)
    assert await tables(engine) <= {"alembic_version"}
    run([alembic, "upgrade", "head"], env)
    assert await version(engine) == HEAD
