"""Schema migrations through Alembic, run programmatically on the ledger's own engine.

Opening a ledger only compares its revision (the `alembic_version` table) with
HEAD_REVISION, so that Alembic is imported only to migrate (a short CLI command
does not pay for it).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
VERSION_TABLE = "alembic_version"


def alembic_config(url: str = "") -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg


# The newest migration script's `revision`. Kept here so that opening a ledger does not
# import Alembic to find it; a test holds it equal to Alembic's own answer, so a new
# migration that forgets to move it fails the suite.
HEAD_REVISION = "0009"


def head_revision() -> str:
    """The schema revision this version of invops writes."""
    return HEAD_REVISION


async def upgrade(engine: AsyncEngine) -> None:
    """Create or migrate the ledger schema to the newest revision."""
    from alembic import command

    def _upgrade(connection: Connection) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")

    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)


async def current_revision(engine: AsyncEngine) -> str | None:
    """The schema revision the database is at, None when it has no ledger schema."""

    def _current(connection: Connection) -> str | None:
        if not inspect(connection).has_table(VERSION_TABLE):
            return None
        rows = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).all()
        if len(rows) > 1:  # several heads: not a schema invops wrote
            return ",".join(sorted(str(row[0]) for row in rows))
        return str(rows[0][0]) if rows else None

    async with engine.connect() as conn:
        return await conn.run_sync(_current)
