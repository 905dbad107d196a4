"""The ledger database goes away mid-run: readings wait on disk, nothing derived is lost.

A real PostgreSQL ledger reached through a TCP proxy that the test cuts and
restores (the server itself is shared, so it is not stopped).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from inventory_core import Ledger, open_ledger
from inventory_core.domain.derivation import DeriverConfig, StrappingTable
from inventory_core.domain.model import MovementKind, StorageUnitId
from inventory_core.measurement_service import MeasuredUnit, MeasurementService
from invops.plc_bridge import LedgerBridge
from invops.reading_buffer import ReadingBuffer
from plc_connectors import Quality, Sample
from tests.conftest import MATERIALS, UNITS

TK = StorageUnitId("TK-101")
T0 = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)


class Proxy:
    """A TCP proxy to PostgreSQL whose connections can be cut and refused."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._pipes: set[asyncio.StreamWriter] = set()
        self.up = True
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.cut()
        self._server.close()
        await self._server.wait_closed()

    def cut(self) -> None:
        self.up = False
        for writer in list(self._pipes):
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._pipes.update({writer, up_writer})

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._pipes.difference_update({writer, up_writer})


def sample(second: int, level_mm: float) -> Sample:
    at = T0 + timedelta(seconds=second)
    return Sample("PLC", at, Quality.GOOD, at, {"TK-101.level": level_mm})


@contextlib.asynccontextmanager
async def through_proxy(pg_url: str) -> AsyncIterator[tuple[Proxy, str]]:
    host_port = pg_url.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.split(":")
    proxy = Proxy((host, int(port)))
    await proxy.start()
    try:
        yield proxy, pg_url.replace(host_port, f"127.0.0.1:{proxy.port}")
    finally:
        await proxy.stop()


def measured() -> MeasuredUnit:
    ethanol = next(m for m in MATERIALS if m.id == "ETHANOL-96")
    return MeasuredUnit(
        TK, ethanol, "L",
        DeriverConfig(TK, Decimal(40), timedelta(minutes=5), timedelta(0)),
        StrappingTable.from_points([(0, 0), (5000, 50000)]),
    )  # fmt: skip


async def test_readings_wait_on_disk_while_the_ledger_is_away(pg_url: str, tmp_path: Path) -> None:
    async with (
        through_proxy(pg_url) as (proxy, url),
        open_ledger(url, writer_id="outage", migrate=True) as ledger,
    ):
        await ledger.sync_master_data(MATERIALS, UNITS)
        service = MeasurementService(ledger, [measured()])
        await service.start()
        states: list[bool] = []
        buffer = ReadingBuffer(tmp_path / "buffer.db")
        bridge = LedgerBridge(
            service, {"TK-101.level": TK}, buffer=buffer,
            ledger_state=lambda up, error: states.append(up),
        )  # fmt: skip
        await bridge.feed(sample(0, 1000.0))  # opening count
        await bridge.feed(sample(1, 1010.0))  # +80 kg receipt

        proxy.cut()  # the database is away
        for second, level in [(2, 1020.0), (3, 1030.0), (4, 1000.0)]:
            await bridge.feed(sample(second, level))  # must not raise
        assert bridge.buffering and len(buffer) == 3
        assert states == [False]

        proxy.up = True  # back
        await bridge.replay()
        assert not bridge.buffering and states[-1] is True
        await check_books(ledger)
        buffer.close()


async def check_books(ledger: Ledger) -> None:
    movements = await ledger.history(unit="TK-101")
    assert [(m.kind, m.quantity) for m in movements] == [
        (MovementKind.COUNT, Decimal(8000)),
        (MovementKind.RECEIPT, Decimal(80)),
        (MovementKind.RECEIPT, Decimal(80)),  # replayed from the buffer, in order
        (MovementKind.RECEIPT, Decimal(80)),
        (MovementKind.ISSUE, Decimal(240)),
    ]
    [balance] = await ledger.balances(unit="TK-101")
    assert balance.quantity == Decimal(8000)  # 1000 mm again
    assert (await ledger.verify()).ok


def test_a_full_buffer_thins_but_keeps_each_units_newest_reading(tmp_path: Path) -> None:
    buffer = ReadingBuffer(tmp_path / "b.db", max_readings=1000)
    for n in range(1500):
        buffer.append("TK-101" if n % 2 else "TK-102", float(n), True, T0, {})
    assert len(buffer) < 1500 and buffer.dropped > 0
    last = {r.unit: r.value for r in buffer.oldest(limit=2000)}
    assert last == {"TK-101": 1499.0, "TK-102": 1498.0}
    buffer.close()
