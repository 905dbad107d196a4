"""The Alembic migrations build exactly the schema the code queries, on both backends."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from inventory_core.store import upgrade_schema
from inventory_core.store.engine import create_read_engine
from inventory_core.store.migrate import alembic_config, current_revision, head_revision
from inventory_core.store.tables import metadata


async def test_migrated_schema_matches_table_definitions(ledger_url: str) -> None:
    before, after = await upgrade_schema(ledger_url)
    assert (before, after) == (None, head_revision())
    engine = create_read_engine(ledger_url)

    def diff(conn: Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))

    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(diff) == []
    finally:
        await engine.dispose()


async def test_upgrade_twice_is_a_no_op(ledger_url: str) -> None:
    await upgrade_schema(ledger_url)
    assert await upgrade_schema(ledger_url) == (head_revision(), head_revision())


def test_head_revision_constant_is_alembics_head() -> None:
    assert head_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()


async def test_current_revision_read_without_alembic_is_alembics(ledger_url: str) -> None:
    engine = create_read_engine(ledger_url)

    def alembic_current(conn: Connection) -> str | None:
        return MigrationContext.configure(conn).get_current_revision()

    try:
        assert await current_revision(engine) is None  # no schema yet
        await upgrade_schema(ledger_url)
        async with engine.connect() as conn:
            expected = await conn.run_sync(alembic_current)
        assert expected == head_revision()
        assert await current_revision(engine) == expected
    finally:
        await engine.dispose()
