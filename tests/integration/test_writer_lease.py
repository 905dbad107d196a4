"""Writer leases on SQLite and PostgreSQL: one live process per writer id and per
measured unit, taken over only once the holder stopped or its lease expired.

Two opens of one ledger in this process stand for two service instances (each
has its own engines and `instance`); tests/e2e/test_writer_lease.py runs real
`invops run` processes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from alembic import command
from sqlalchemy.engine import Connection

from inventory_core import open_ledger
from inventory_core.domain.derivation import DeriverConfig
from inventory_core.domain.errors import UnitsOwned, WriterIdInUse, WriterLeaseLost
from inventory_core.domain.lease import WriterLease
from inventory_core.domain.lot_handling import default_lot_handling
from inventory_core.domain.model import (
    LotId,
    MaterialId,
    MovementKind,
    PostingRequest,
    StorageUnitId,
)
from inventory_core.measurement_service import MeasuredUnit, MeasurementService
from inventory_core.store import upgrade_schema
from inventory_core.store.engine import create_read_engine
from inventory_core.store.migrate import alembic_config, current_revision, head_revision
from tests.conftest import MATERIALS, UNITS

TK101 = StorageUnitId("TK-101")
T0 = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)


def _lease(
    units: Sequence[str], *, host: str = "host-a", pid: int = 101, **terms: float
) -> WriterLease:
    lease = WriterLease.for_this_process((StorageUnitId(u) for u in units), **terms)
    return WriterLease(lease.units, host, pid, lease.instance, lease.duration_s, lease.heartbeat_s)


def _receipt(lot: str, key: str) -> PostingRequest:
    return PostingRequest(
        MovementKind.RECEIPT,
        MaterialId("ETHANOL-96"),
        LotId(lot),
        Decimal(1),
        "kg",
        to_unit=TK101,
        idempotency_key=key,
    )


async def _prepared(url: str) -> None:
    async with open_ledger(url, writer_id="setup", migrate=True) as ledger:
        await ledger.sync_master_data(MATERIALS, UNITS)


async def test_a_second_holder_of_a_writer_id_is_refused_naming_the_first(
    ledger_url: str,
) -> None:
    await _prepared(ledger_url)
    async with open_ledger(ledger_url, writer_id="plant-a", lease=_lease(["TK-101"])) as first:
        with pytest.raises(WriterIdInUse) as refused:
            async with open_ledger(
                ledger_url, writer_id="plant-a", lease=_lease(["TK-101"], host="host-b", pid=202)
            ):
                pytest.fail("a second holder of plant-a was let in")
        message = str(refused.value)
        assert "'plant-a'" in message and "host-a pid 101 since " in message, message
        assert "\n" not in message
        await first.post(_receipt("L1", "k1"))  # the holder keeps booking
    # after a graceful stop (released), the next one takes it at once
    async with open_ledger(
        ledger_url, writer_id="plant-a", lease=_lease(["TK-101"], host="host-b")
    ) as second:
        await second.post(_receipt("L1", "k2"))
        assert (await second.verify()).ok


async def test_an_expired_lease_is_taken_over_and_its_old_holder_is_fenced(
    ledger_url: str,
) -> None:
    await _prepared(ledger_url)
    terms = {"duration_s": 1.0, "heartbeat_s": 0.5}
    async with open_ledger(
        ledger_url, writer_id="plant-a", lease=_lease(["TK-101"], **terms)
    ) as stalled:
        # `stalled` renews nothing (no keep_lease), like a process stopped by SIGSTOP
        with pytest.raises(WriterIdInUse):
            async with open_ledger(ledger_url, writer_id="plant-a", lease=_lease([], **terms)):
                pass
        await asyncio.sleep(1.2)
        async with open_ledger(
            ledger_url, writer_id="plant-a", lease=_lease(["TK-101"], host="host-b", **terms)
        ) as successor:
            # the old holder can neither book nor renew: nothing it sends commits
            with pytest.raises(WriterLeaseLost, match="now held by host-b pid 101"):
                await stalled.post(_receipt("L1", "old"))
            with pytest.raises(WriterLeaseLost):
                async with asyncio.timeout(5):
                    await stalled.keep_lease()
            await successor.post(_receipt("L1", "new"))
            assert [m.idempotency_key for m in await successor.history()] == ["new"]


async def test_keep_lease_renews_so_the_lease_does_not_expire(ledger_url: str) -> None:
    await _prepared(ledger_url)
    terms = {"duration_s": 1.0, "heartbeat_s": 0.2}
    async with open_ledger(
        ledger_url, writer_id="plant-a", lease=_lease(["TK-101"], **terms)
    ) as held:
        keeper = asyncio.create_task(held.keep_lease())
        try:
            deadline = time.monotonic() + 2.5
            while time.monotonic() < deadline:
                with pytest.raises(WriterIdInUse):
                    async with open_ledger(
                        ledger_url, writer_id="plant-a", lease=_lease([], **terms)
                    ):
                        pass
                await asyncio.sleep(0.3)
            await held.post(_receipt("L1", "k"))
        finally:
            keeper.cancel()
            with pytest.raises(asyncio.CancelledError):
                await keeper


async def test_a_measured_unit_of_a_live_writer_is_refused_naming_unit_and_owner(
    ledger_url: str,
) -> None:
    await _prepared(ledger_url)
    async with open_ledger(ledger_url, writer_id="tankfarm", lease=_lease(["TK-101", "TK-102"])):
        with pytest.raises(UnitsOwned) as refused:
            async with open_ledger(
                ledger_url,
                writer_id="silos",
                lease=_lease(["SI-201", "TK-102"], host="host-b", pid=7),
            ):
                pytest.fail("TK-102 booked by two writers")
        message = str(refused.value)
        assert "TK-102 by writer 'tankfarm' (host-a pid 101 since " in message, message
        assert "SI-201" not in message and "TK-101" not in message
        # not overlapping: both run
        async with open_ledger(ledger_url, writer_id="silos", lease=_lease(["SI-201"])) as silos:
            await silos.record_measurement("SI-201", Decimal(5), "kg")


async def test_units_of_a_stopped_writer_are_taken_over_and_a_stalled_one_is_fenced(
    ledger_url: str,
) -> None:
    await _prepared(ledger_url)
    terms = {"duration_s": 1.0, "heartbeat_s": 0.5}
    async with open_ledger(ledger_url, writer_id="old", lease=_lease(["TK-101"], **terms)) as old:
        await asyncio.sleep(1.2)  # `old` stalls past its lease
        async with open_ledger(ledger_url, writer_id="new", lease=_lease(["TK-101"], **terms)):
            with pytest.raises(WriterLeaseLost, match="its lease was removed"):
                await old.post(_receipt("L1", "stale"))
    # a graceful stop frees the units at once
    async with open_ledger(ledger_url, writer_id="new", lease=_lease(["TK-101"])):
        pass
    async with open_ledger(ledger_url, writer_id="old", lease=_lease(["TK-101"])):
        pass


async def test_a_writer_that_stops_booking_a_unit_frees_it(ledger_url: str) -> None:
    await _prepared(ledger_url)
    async with open_ledger(ledger_url, writer_id="a", lease=_lease(["TK-101", "TK-102"])):
        pass
    # a's config no longer measures TK-102: b may book it while a runs
    async with (
        open_ledger(ledger_url, writer_id="a", lease=_lease(["TK-101"])),
        open_ledger(ledger_url, writer_id="b", lease=_lease(["TK-102"])),
    ):
        pass


async def test_ledgers_opened_without_a_lease_are_not_fenced(ledger_url: str) -> None:
    """CLI commands (writer id cli@host, no PLC bookings) post beside a leased service."""
    await _prepared(ledger_url)
    async with open_ledger(ledger_url, writer_id="plant-a", lease=_lease(["TK-101"])):
        async with open_ledger(ledger_url, writer_id="cli@host") as cli:
            await cli.post(_receipt("L1", "cli-1"))
        async with open_ledger(ledger_url, writer_id="cli@host") as cli:
            await cli.post(_receipt("L1", "cli-2"))
            assert (await cli.verify()).ok


async def test_plc_bookings_after_a_lost_lease_fail_the_feed_not_silently(
    ledger_url: str,
) -> None:
    """The measurement pipeline raises (the service then stops); the reading is not
    logged away as a refused movement, nor kept to be booked later."""
    await _prepared(ledger_url)
    terms = {"duration_s": 1.0, "heartbeat_s": 0.5}
    ethanol = next(m for m in MATERIALS if m.id == "ETHANOL-96")
    spec = MeasuredUnit(
        unit=TK101,
        material=ethanol,
        signal_uom="kg",
        deriver=DeriverConfig(
            unit=TK101, deadband=Decimal(1), max_interval=timedelta(minutes=5), settle=timedelta(0)
        ),
    )
    async with open_ledger(ledger_url, writer_id="a", lease=_lease(["TK-101"], **terms)) as old:
        service = MeasurementService(old, [spec])
        await service.start()
        await service.feed(TK101, 100.0, good=True, timestamp=T0)  # the opening count
        await asyncio.sleep(1.2)
        async with open_ledger(ledger_url, writer_id="a", lease=_lease(["TK-101"], **terms)) as new:
            with pytest.raises(WriterLeaseLost):
                await service.feed(TK101, 150.0, good=True, timestamp=T0 + timedelta(seconds=1))
            assert [m.kind for m in await new.history()] == [MovementKind.COUNT]


async def test_upgrade_from_0002_keeps_the_ledger_and_adds_the_lease_tables(
    ledger_url: str,
) -> None:
    """A ledger at the previous head (0002) with movements upgrades to the head in place:
    nothing lost, verify intact, and leases work on it."""
    # The downgrade drops 0004's columns; the upgrade gives them their defaults, so the
    # units are audited with those (as a ledger written before 0004 would be verified).
    units = [replace(u, lot_handling=default_lot_handling(u.kind)) for u in UNITS]
    async with open_ledger(ledger_url, writer_id="setup", migrate=True) as ledger:
        await ledger.sync_master_data(MATERIALS, units)
    async with open_ledger(ledger_url, writer_id="before") as ledger:
        await ledger.post(_receipt("L1", "before-1"))
        await ledger.post(_receipt("L1", "before-2"))
    await _migrate(ledger_url, "0002", down=True)
    engine = create_read_engine(ledger_url)
    try:
        assert await current_revision(engine) == "0002"
    finally:
        await engine.dispose()

    assert await upgrade_schema(ledger_url) == ("0002", head_revision())
    async with open_ledger(ledger_url, writer_id="plant-a", lease=_lease(["TK-101"])) as ledger:
        await ledger.post(_receipt("L1", "after"))
        keys = [m.idempotency_key for m in await ledger.history()]
        assert keys == ["before-1", "before-2", "after"]
        report = await ledger.verify()
        assert report.ok, report.problems


async def _migrate(url: str, revision: str, *, down: bool = False) -> None:
    engine = create_read_engine(url)

    def run(conn: Connection) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)

    try:
        async with engine.begin() as conn:
            await conn.run_sync(run)
    finally:
        await engine.dispose()
