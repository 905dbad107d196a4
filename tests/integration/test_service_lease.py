"""The service fails closed when its writer lease is taken from it: it stops booking at
once (every later batch is refused in its transaction) and stops, naming the holder.

The demo plant runs in-process against its simulators, on SQLite and PostgreSQL; the
takeover is written into the lease row directly, as a process that took over a lease
this one failed to renew would have left it.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from sqlalchemy import text

from inventory_core import Ledger
from inventory_core.domain.errors import WriterLeaseLost
from inventory_core.store.engine import create_read_engine
from invops.config import load_config
from invops.plant_description import plant_description
from invops.service import Endpoints, run_service
from simulators import Simulation
from tests.log_events import events
from tests.polling import eventually

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo-plant.toml"


async def _plc_movements(ledger: Ledger) -> int:
    return sum(1 for m in await ledger.history() if m.source == "plc")


async def test_a_service_whose_lease_is_taken_stops_booking_and_stops(
    ledger_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config(DEMO)
    ledger_config = config.ledger.model_copy(
        update={
            "url": ledger_url,
            "migrate_on_start": True,
            "writer_id": "plant-a",
            "lease_s": 2.0,
            "lease_heartbeat_s": 0.25,
        }
    )
    config = config.model_copy(update={"ledger": ledger_config})
    started: list[Endpoints] = []
    engine = create_read_engine(ledger_url)
    try:
        async with Simulation(
            plant_description(config), ports={"PLC-MODBUS": 0, "PLC-S7": 0}
        ) as sim:
            service = asyncio.create_task(
                run_service(
                    config,
                    plc_ports=sim.ports,
                    opcua_endpoint="opc.tcp://127.0.0.1:0/invops",
                    pki_dir=tmp_path / "pki",
                    buffer_path=tmp_path / "buffer.db",
                    metrics_port=0,
                    stop=asyncio.Event(),
                    ready=started.append,
                )
            )

            async def booking() -> bool:
                assert not service.done(), service
                return bool(started) and await _plc_movements(started[0].ledger) > 0

            await eventually(booking, "a PLC movement", timeout_s=60, interval_s=0.2)
            async with engine.begin() as conn:  # another process holds plant-a now
                await conn.execute(
                    text(
                        "UPDATE writer_leases SET host = 'intruder', pid = 4242, "
                        "instance = 'someone-else' WHERE writer_id = 'plant-a'"
                    )
                )
                last_seq = (await conn.execute(text("SELECT max(seq) FROM movements"))).scalar()
            with caplog.at_level(logging.ERROR, logger="invops.service"):
                async with asyncio.timeout(15):
                    with pytest.raises(WriterLeaseLost, match="now held by intruder pid 4242"):
                        await service
            (lost,) = events(
                caplog.records, logger="invops.service", event="writer_lease_lost_stopping"
            )
            assert lost["writer"] == "plant-a" and "now held by intruder pid 4242" in lost["error"]
        async with engine.connect() as conn:
            after = (await conn.execute(text("SELECT max(seq) FROM movements"))).scalar()
            # nothing of plant-a committed after the takeover: it failed closed
            assert after == last_seq
            holder = (
                await conn.execute(
                    text("SELECT host, instance FROM writer_leases WHERE writer_id = 'plant-a'")
                )
            ).one()
            assert tuple(holder) == ("intruder", "someone-else")  # not released over it
    finally:
        await engine.dispose()
