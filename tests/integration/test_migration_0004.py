"""Revision 0004 upgrades a ledger written by 0003: units get the lot handling and booking
the config would give them by default, balances their lot's arrival order, and the
units' old audit documents still verify against the migrated rows."""

from __future__ import annotations

from alembic import command
from sqlalchemy import select, text
from sqlalchemy.engine import Connection

from inventory_core.domain.audit import canonical_json
from inventory_core.domain.model import Booking, LotHandling
from inventory_core.domain.posting import master_document
from inventory_core.store import tables as t
from inventory_core.store import upgrade_schema
from inventory_core.store.engine import create_read_engine
from inventory_core.store.migrate import HEAD_REVISION, alembic_config
from inventory_core.store.rows import unit_from_row
from inventory_core.store.verify import _with_later_fields

OLD_UNITS = [  # as 0003 stored them
    {"id": "TK-1", "site": "P", "area": "A", "kind": "tank", "capacity": "1000",
     "capacity_uom": "L", "material": "M", "description": ""},
    {"id": "SI-1", "site": "P", "area": "A", "kind": "silo", "capacity": "80",
     "capacity_uom": "t", "material": "M", "description": ""},
]  # fmt: skip


async def test_a_0003_ledger_upgrades_with_the_default_rules(ledger_url: str) -> None:
    engine = create_read_engine(ledger_url)

    def at_0003(conn: Connection) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
        for unit in OLD_UNITS:
            conn.execute(
                text(
                    "INSERT INTO storage_units (id, site, area, kind, capacity, capacity_uom, "
                    "material, description) VALUES (:id, :site, :area, :kind, :capacity, "
                    ":capacity_uom, :material, :description)"
                ),
                unit,
            )
        conn.execute(
            text(
                "INSERT INTO lots (id, material, status, created_at) "
                "VALUES ('L1', 'M', 'released', '2026-01-02T03:04:05.000000Z')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO balances (unit, lot, material, quantity) "
                "VALUES ('TK-1', 'L1', 'M', '5')"
            )
        )

    try:
        async with engine.begin() as conn:
            await conn.run_sync(at_0003)
        assert await upgrade_schema(ledger_url) == ("0003", HEAD_REVISION)
        async with engine.connect() as conn:
            units = {
                row["id"]: unit_from_row(row)
                for row in (await conn.execute(select(t.storage_units))).mappings()
            }
            [entered] = (await conn.execute(select(t.balances.c.entered))).scalars()
    finally:
        await engine.dispose()
    assert units["TK-1"].lot_handling is LotHandling.MIXED
    assert units["SI-1"].lot_handling is LotHandling.FIFO
    assert {u.booking for u in units.values()} == {Booking.MANUAL}
    assert {u.zero_lot_threshold for u in units.values()} == {None}
    assert entered == "2026-01-02T03:04:05.000000Z"
    for old in OLD_UNITS:  # what the 0003 audit recorded for each unit
        audited = canonical_json(
            master_document(units[old["id"]])
            | {"lot_handling": None, "zero_lot_threshold": None, "booking": None}
            | {"advice_window_s": None}
        )
        audited_then = canonical_json(
            {k: v for k, v in master_document(units[old["id"]]).items() if k in old}
        )
        assert _with_later_fields(audited_then) == canonical_json(master_document(units[old["id"]]))
        assert _with_later_fields(audited) != canonical_json(master_document(units[old["id"]]))
