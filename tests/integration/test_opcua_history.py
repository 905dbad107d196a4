"""OPC UA HistoryRead served from the ledger database, through a real asyncua server and client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from asyncua import Client, Node, Server, ua

from inventory_core import HistoryStore, open_history
from inventory_core.store import upgrade_schema
from opcua_server.history_read import LedgerHistoryStorage
from tests.polling import eventually

DEADLINE_S = 10
UNCERTAIN_LAST_USABLE = ua.StatusCodes.UncertainLastUsableValue
BAD_NO_COMMUNICATION = ua.StatusCodes.BadNoCommunication


@dataclass
class Running:
    server: Server
    storage: LedgerHistoryStorage
    store: HistoryStore
    level: Node
    url: str


@asynccontextmanager
async def history_server(
    db_url: str, *, node_id: ua.NodeId | None = None, **storage_options: object
) -> AsyncIterator[Running]:
    """A server with one historized variable, series "TK-101.Level", on port 0."""
    async with open_history(db_url) as store:
        storage = LedgerHistoryStorage(store, **storage_options)  # type: ignore[arg-type]
        server = Server()
        server.iserver.disabled_clock = True  # no CurrentTime task: stop() returns at once
        server.iserver.history_manager.set_storage(storage)
        await server.init()
        server.set_endpoint("opc.tcp://127.0.0.1:0")
        idx = await server.register_namespace("urn:invops:ua:plant")
        level = await server.nodes.objects.add_variable(
            node_id or ua.NodeId("PLANT1.TANKFARM.TK-101.Level", idx),
            ua.QualifiedName("Level", idx),
            ua.Variant(0.0, ua.VariantType.Double),
        )
        storage.register(level.nodeid, "TK-101.Level", ua.VariantType.Double)
        await server.historize_node_data_change(level, period=timedelta(days=1))
        await server.start()
        try:
            port = server.bserver.port  # type: ignore[union-attr]
            yield Running(server, storage, store, level, f"opc.tcp://127.0.0.1:{port}")
        finally:
            await server.stop()


async def _write(running: Running, values: Sequence[tuple[float | None, datetime, int]]) -> None:
    for value, when, status in values:
        await running.server.write_attribute_value(
            running.level.nodeid,
            ua.DataValue(
                ua.Variant(value, ua.VariantType.Double if value is not None else None),
                StatusCode=ua.StatusCode(status),
                SourceTimestamp=when,
            ),
        )


async def _read_until(node: Node, start: datetime, end: datetime, count: int) -> list[ua.DataValue]:
    """Read raw history until `count` values arrived (historizing is asynchronous)."""

    async def enough() -> list[ua.DataValue] | None:
        values = await node.read_raw_history(start, end)
        return values if len(values) >= count else None

    return await eventually(enough, f"{count} values in the history", timeout_s=DEADLINE_S)


async def test_history_read_returns_stored_values_and_survives_a_restart(ledger_url: str) -> None:
    await upgrade_schema(ledger_url)
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    samples = [
        (10.0 + n, base + timedelta(minutes=n), 0) for n in range(5)
    ] + [  # a link retrying, then down
        (15.5, base + timedelta(minutes=5), UNCERTAIN_LAST_USABLE),
        (None, base + timedelta(minutes=6), BAD_NO_COMMUNICATION),
    ]
    start, end = base - timedelta(seconds=1), base + timedelta(minutes=10)

    async with history_server(ledger_url) as running:
        await _write(running, samples)
        async with Client(running.url) as client, asyncio.timeout(DEADLINE_S):
            node = client.get_node(running.level.nodeid)
            assert await node.read_attribute(ua.AttributeIds.Historizing) is not None
            assert (await node.read_attribute(ua.AttributeIds.Historizing)).Value.Value is True
            access = (await node.read_attribute(ua.AttributeIds.AccessLevel)).Value.Value
            assert access & ua.AccessLevel.HistoryRead.mask
            values = await _read_until(node, start, end, len(samples))
        assert [(dv.Value.Value, dv.SourceTimestamp, dv.StatusCode.value) for dv in values] == [
            (value, when, status) for value, when, status in samples
        ]
        assert await running.store.read("TK-101.Level", start, end) != []  # in the database

    # A new server instance on the same database, the variable under another NodeId.
    async with history_server(ledger_url, node_id=ua.NodeId("Level", 2)) as restarted:
        async with Client(restarted.url) as client, asyncio.timeout(DEADLINE_S):
            node = client.get_node(restarted.level.nodeid)
            values = await node.read_raw_history(start, end)
        assert [dv.Value.Value for dv in values] == [value for value, _, _ in samples]
        assert [dv.SourceTimestamp for dv in values] == [when for _, when, _ in samples]


async def test_history_read_pages_with_continuation_points_and_reads_backwards(
    sqlite_url: str,
) -> None:
    await upgrade_schema(sqlite_url)
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    samples = [(float(n), base + timedelta(seconds=n), 0) for n in range(1, 13)]
    start, end = base, base + timedelta(minutes=1)
    async with history_server(sqlite_url, max_history_data_response_size=5) as running:
        await _write(running, samples)
        async with Client(running.url) as client, asyncio.timeout(DEADLINE_S):
            node = client.get_node(running.level.nodeid)
            # The client follows the continuation points: pages of 5, 5 and 2.
            values = await _read_until(node, start, end, len(samples))
            assert [dv.Value.Value for dv in values] == [value for value, _, _ in samples]
            # start > end reads newest first; numvalues limits the answer.
            newest = await node.read_raw_history(end, start, numvalues=3)
            assert [dv.Value.Value for dv in newest] == [12.0, 11.0, 10.0]
            first = await node.read_raw_history(start, end, numvalues=2)
            assert [dv.Value.Value for dv in first] == [1.0, 2.0]


async def test_buffered_values_are_flushed_in_the_background(sqlite_url: str) -> None:
    await upgrade_schema(sqlite_url)
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    samples = [(float(n), base + timedelta(seconds=n), 0) for n in range(1, 51)]
    async with history_server(sqlite_url, flush_interval_s=0.05) as running:
        appended: list[int] = []
        original = running.store.append

        async def counting(points: Sequence[object]) -> int:
            appended.append(len(points))
            return await original(points)  # type: ignore[arg-type]

        running.store.append = counting  # type: ignore[method-assign]
        await _write(running, samples)

        async def all_stored() -> bool:  # no HistoryRead: the flush task stores them
            stored = await running.store.read("TK-101.Level", base, base + timedelta(minutes=1))
            return [p.value for p in stored] == [value for value, _, _ in samples]

        await eventually(all_stored, "every sample stored", timeout_s=DEADLINE_S)
        assert sum(appended) >= len(samples)
        assert len(appended) < len(samples)  # batched, not one transaction per value
