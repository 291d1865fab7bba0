"""Run Alembic programmatically: the schema is made only by migrations."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from alembic import command

ROOT = Path(__file__).resolve().parent.parent

# How autogenerate compares the models with a database: column types and server defaults too,
# not only tables, columns, indexes and constraints. alembic/env.py configures every run with
# these (so `alembic check` and `alembic revision --autogenerate` see what the tests see).
COMPARE_OPTIONS: dict[str, object] = {"compare_type": True, "compare_server_default": True}
# Every process migrates at start (`helpdesk serve`, `helpdesk worker`): several starting at
# once on a new database take turns on this lock, and the later ones find nothing to do.
MIGRATION_LOCK = 0x68656C70  # "help"


def alembic_config() -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "alembic"))
    return cfg


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    await _run(engine, lambda cfg: command.upgrade(cfg, revision))


async def downgrade(engine: AsyncEngine, revision: str = "base") -> None:
    await _run(engine, lambda cfg: command.downgrade(cfg, revision))


async def _run(engine: AsyncEngine, fn) -> None:  # type: ignore[no-untyped-def]
    async with engine.begin() as conn:
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})

        def sync(connection) -> None:  # type: ignore[no-untyped-def]
            cfg = alembic_config()
            cfg.attributes["connection"] = connection
            fn(cfg)

        await conn.run_sync(sync)
