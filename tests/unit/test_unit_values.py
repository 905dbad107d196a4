"""The float display path (PLC sample -> OPC UA values) agrees with the exact conversions."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inventory_core.domain.errors import UnitConversionError
from inventory_core.domain.quality import Quality as ShownQuality
from inventory_core.domain.units import convert, parse_quantity
from invops.config import load_config
from invops.service import capacities
from invops.unit_values import UnitValuesBuilder
from invops.wiring import measured_units, quantity_tags
from plc_connectors import Quality, Sample

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo-plant.toml"
CONFIG = load_config(DEMO, environ={})
UNITS = measured_units(CONFIG)
TAGS = quantity_tags(CONFIG)
CAPACITIES = capacities(CONFIG)


# one PLC per quantity tag, named after it: a sample of one tag leaves no other unit's
# tag absent (an absent tag shows BAD_WAITING)
PLC_TAGS = {tag: [tag] for tag in TAGS}


def builder(deadband_fraction: float = 0.0) -> UnitValuesBuilder:
    return UnitValuesBuilder(
        UNITS, TAGS, CAPACITIES, plc_tags=PLC_TAGS, deadband_fraction=deadband_fraction
    )


AT = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)


def _sample(tag: str, value: float | bool | None, quality: Quality = Quality.GOOD) -> Sample:
    """A sample of the PLC that reads `tag` (a BAD one carries no value)."""
    return Sample(tag, AT, quality, AT, {} if value is None else {tag: value})


def _close(got: float | None, want: Decimal | None) -> bool:
    if got is None or want is None:
        return got is None and want is None
    return math.isclose(got, float(want), rel_tol=1e-9, abs_tol=1e-6)


@pytest.mark.parametrize("tag", sorted(TAGS))
@given(fraction=st.floats(-0.2, 1.2))
def test_display_values_match_the_exact_conversion(tag: str, fraction: float) -> None:
    unit = TAGS[tag]
    spec = next(u for u in UNITS if u.unit == unit)
    top = spec.strapping.points[-1][0] if spec.strapping else CAPACITIES[unit]
    raw = float(top) * fraction
    [values] = builder().from_sample(_sample(tag, raw))

    signal = parse_quantity(raw)
    if spec.strapping is not None:
        signal, _clamped = spec.strapping.volume_at(signal)
    material = spec.material
    density = material.density_kg_per_l
    base = convert(signal, spec.signal_uom, material.base_uom, density)
    assert values.quality is ShownQuality.GOOD and values.source_time == AT
    assert _close(values.measured_quantity, base)
    assert values.level == (raw if spec.strapping is not None else None)
    assert _close(values.fill_percent, base / CAPACITIES[unit] * 100)
    for got, target in ((values.volume_l, "L"), (values.mass_kg, "kg")):
        want: Decimal | None
        try:
            want = convert(signal, spec.signal_uom, target, density)
        except UnitConversionError:
            want = None  # a volume's mass without a density: not known
        assert _close(got, want)


def test_bad_quality_flags_and_nan_become_bad_values_without_numbers() -> None:
    tag = sorted(TAGS)[0]
    for value, quality, shown in (
        (None, Quality.BAD_NO_COMMUNICATION, Quality.BAD_NO_COMMUNICATION),
        (12.0, Quality.UNCERTAIN_LAST_USABLE, Quality.UNCERTAIN_LAST_USABLE),
        (math.nan, Quality.GOOD, Quality.BAD_COMMUNICATION),
        (True, Quality.GOOD, Quality.BAD_COMMUNICATION),
    ):
        [values] = builder().from_sample(_sample(tag, value, quality))
        assert values.quality is ShownQuality(shown)
        assert values.measured_quantity is None and values.level is None


def test_tags_that_are_not_quantities_are_ignored() -> None:
    assert builder().from_sample(_sample("NOT-A-TAG.level", 1.0)) == []


def test_a_plc_sample_updates_its_own_quantity_tags_only_absent_ones_as_waiting() -> None:
    first, second, other = sorted(TAGS)[:3]
    values = UnitValuesBuilder(
        UNITS, TAGS, CAPACITIES, plc_tags={"PLC": [first, "PLC.pump", second], "PLC-2": [other]}
    )
    held_at = datetime(2026, 11, 26, 5, 59, tzinfo=UTC)
    good = Sample("PLC", AT, Quality.GOOD, AT, {first: 1.0, "PLC.pump": True})
    assert [(u.unit, u.quality, u.source_time) for u in values.from_sample(good)] == [
        (TAGS[first], ShownQuality.GOOD, AT),
        (TAGS[second], ShownQuality.BAD_WAITING, AT),  # absent from the read
    ]
    held = Sample("PLC", AT, Quality.UNCERTAIN_LAST_USABLE, held_at, {first: 1.0, second: 2.0})
    assert [(u.unit, u.quality, u.source_time) for u in values.from_sample(held)] == [
        (TAGS[first], ShownQuality.UNCERTAIN_LAST_USABLE, held_at),
        (TAGS[second], ShownQuality.UNCERTAIN_LAST_USABLE, held_at),
    ]
    bad = Sample("PLC", AT, Quality.BAD_COMMUNICATION, AT, {})
    assert [(u.unit, u.quality, u.source_time) for u in values.from_sample(bad)] == [
        (TAGS[first], ShownQuality.BAD_COMMUNICATION, AT),
        (TAGS[second], ShownQuality.BAD_COMMUNICATION, AT),
    ]


def test_changes_within_the_deadband_give_no_update_until_they_add_up_or_quality_changes() -> None:
    tag = next(t for t in sorted(TAGS) if t.endswith(".weight"))
    unit = TAGS[tag]
    step = float(CAPACITIES[unit]) * 0.001  # the deadband: 0.1 % of capacity
    values = builder(deadband_fraction=0.001)

    def shown(value: float | None, quality: Quality = Quality.GOOD) -> bool:
        return bool(values.from_sample(_sample(tag, value, quality)))

    assert shown(1000.0)
    assert not shown(1000.0 + step * 0.6)  # noise
    assert not shown(1000.0 - step * 0.6)
    assert shown(1000.0 + step * 1.2)  # a real change, measured from what is shown
    assert not shown(1000.0 + step * 1.5)
    assert shown(None, Quality.BAD_NO_COMMUNICATION)  # quality changes always go out
    assert not shown(None, Quality.BAD_NO_COMMUNICATION)
    assert shown(1000.0 + step * 1.5)  # back: shown although within the deadband
    assert builder().from_sample(_sample(tag, 1000.0))  # no deadband: every change
