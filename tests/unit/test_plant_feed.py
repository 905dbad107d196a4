"""PlantFeed: each poller sample goes to the ledger bridge and, tag by tag, to the plant view."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

from inventory_core.domain.quality import Quality as ShownQuality
from inventory_core.measurement_service import MeasurementService
from inventory_core.plant_view import PlantView
from invops.config import load_config
from invops.plant_feed import QUALITY, PlantFeed
from invops.plc_bridge import LedgerBridge
from invops.wiring import measured_units, quantity_tags
from plc_connectors import Quality, Sample

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo-plant.toml"
CONFIG = load_config(DEMO, environ={})
AT = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)


def feed() -> tuple[PlantFeed, PlantView, LedgerBridge]:
    view = PlantView(
        CONFIG.storage_unit_definitions(), CONFIG.material_definitions(), measured_units(CONFIG)
    )
    tags = quantity_tags(CONFIG)
    plc_tags = {s.name: [t.name for t in s.tags] for s in CONFIG.plc_settings()}
    bridge = LedgerBridge(cast(MeasurementService, None), tags, plc_tags=plc_tags)
    return PlantFeed(bridge, view, tags, plc_tags), view, bridge


def test_every_link_quality_has_its_shown_quality_of_the_same_name() -> None:
    assert {str(k): str(v) for k, v in QUALITY.items()} == {str(q): str(q) for q in Quality}


def test_a_sample_updates_its_plcs_units_and_queues_it_for_the_ledger() -> None:
    plant, view, bridge = feed()
    plant.publish(Sample("PLC-S7", AT, Quality.GOOD, AT, {"SI-201.weight": 40_000.0}))
    silo = view.state("SI-201")
    assert silo is not None and silo.measured.quality is ShownQuality.GOOD
    assert silo.measured.quantity == 40_000.0 and silo.measured.source_time == AT
    other = view.state("SI-202")  # same PLC, absent from the sample: never read
    assert other is not None and other.measured.quality is ShownQuality.BAD_WAITING
    tank = view.state("TK-101")  # another PLC's unit: untouched
    assert tank is not None and tank.measured.source_time is None
    assert bridge._pending["PLC-S7"].values == {"SI-201.weight": 40_000.0}


def test_a_held_sample_shows_the_held_value_and_a_bad_one_none() -> None:
    plant, view, _bridge = feed()
    plant.publish(Sample("PLC-S7", AT, Quality.GOOD, AT, {"SI-201.weight": 40_000.0}))
    later = AT + timedelta(seconds=1)
    values = {"SI-201.weight": 40_000.0}
    plant.publish(Sample("PLC-S7", later, Quality.UNCERTAIN_LAST_USABLE, AT, values))
    held = view.state("SI-201")
    assert held is not None and held.measured.quality is ShownQuality.UNCERTAIN_LAST_USABLE
    assert held.measured.quantity == 40_000.0 and held.measured.source_time == AT
    plant.publish(Sample("PLC-S7", later, Quality.BAD_NO_COMMUNICATION, later, {}))
    bad = view.state("SI-201")
    assert bad is not None and bad.measured.quality is ShownQuality.BAD_NO_COMMUNICATION
    assert bad.measured.quantity is None
