"""Schema migrations through Alembic, run programmatically on the ledger's own engine.

Opening a ledger only compares its revision with the newest one; that check
reads the `alembic_version` table and the `revision` / `down_revision` lines
of the migration scripts itself, so that Alembic is imported only to migrate
(a short CLI command does not pay for it).
"""

from __future__ import annotations

import ast
import functools
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


@functools.cache
def head_revision() -> str:
    """The newest revision: the one no migration script names as its `down_revision`."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in sorted((MIGRATIONS_DIR / "versions").glob("*.py")):
        values = _module_constants(script)
        revision = values.get("revision")
        if not isinstance(revision, str):
            continue
        revisions.add(revision)
        down = values.get("down_revision")
        if isinstance(down, str):
            parents.add(down)
        elif isinstance(down, tuple | list):  # a merge revision
            parents.update(str(d) for d in down)
    heads = sorted(revisions - parents)
    assert len(heads) == 1, f"expected one Alembic head, found {heads or 'none'}"
    return heads[0]


def _module_constants(script: Path) -> dict[str, object]:
    """The literal values of the module-level `name = ...` lines of a script."""
    found: dict[str, object] = {}
    for node in ast.parse(script.read_text(encoding="utf-8"), str(script)).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name):
            try:
                found[target.id] = ast.literal_eval(value)
            except ValueError:
                continue
    return found


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
