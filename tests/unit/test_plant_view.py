"""The plant view: one conversion per reading, held values, one discrepancy, typed changes."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inventory_core.domain.errors import UnitConversionError
from inventory_core.domain.quality import Quality
from inventory_core.domain.units import convert, parse_quantity
from inventory_core.plant_view import (
    Book,
    Cause,
    Measured,
    PlantChange,
    PlantView,
    UnitChanged,
)
from invops.config import load_config
from invops.wiring import measured_units

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo-plant.toml"
CONFIG = load_config(DEMO, environ={})
UNITS = measured_units(CONFIG)
AT = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)


def view(deadband_fraction: float = 0.0) -> PlantView:
    return PlantView(
        CONFIG.storage_unit_definitions(),
        CONFIG.material_definitions(),
        UNITS,
        deadband_fraction=deadband_fraction,
    )


def recorded(plant: PlantView) -> list[PlantChange]:
    changes: list[PlantChange] = []
    plant.subscribe(changes.append)
    return changes


def _close(got: float | None, want: Decimal | None) -> bool:
    if got is None or want is None:
        return got is None and want is None
    # The exact side rounds twice to the ledger's 10^-6 (volume, then mass at a density
    # above 1): up to 0.5e-6 * 1.11 + 0.5e-6 apart from the float's single conversion.
    return math.isclose(got, float(want), rel_tol=1e-9, abs_tol=2e-6)


@pytest.mark.parametrize("unit", sorted(str(u.unit) for u in UNITS))
@given(fraction=st.floats(-0.2, 1.2))
def test_display_values_match_the_exact_conversion(unit: str, fraction: float) -> None:
    plant = view()
    spec = next(u for u in UNITS if u.unit == unit)
    capacity = plant.state(unit).info.capacity  # type: ignore[union-attr]
    top = spec.strapping.points[-1][0] if spec.strapping else Decimal(str(capacity))
    raw = float(top) * fraction
    plant.apply_reading(unit, raw, Quality.GOOD, AT)
    measured = plant.state(unit).measured  # type: ignore[union-attr]

    signal = parse_quantity(raw)
    if spec.strapping is not None:
        signal, _clamped = spec.strapping.volume_at(signal)
    material = spec.material
    density = material.density_kg_per_l
    base = convert(signal, spec.signal_uom, material.base_uom, density)
    assert measured.quality is Quality.GOOD and measured.source_time == AT
    assert _close(measured.quantity, base)
    assert measured.level == (raw if spec.strapping is not None else None)
    assert _close(measured.fill_percent, base / Decimal(str(capacity)) * 100)
    for got, target in ((measured.volume_l, "L"), (measured.mass_kg, "kg")):
        want: Decimal | None
        try:
            want = convert(signal, spec.signal_uom, target, density)
        except UnitConversionError:
            want = None  # a volume's mass without a density: not known
        assert _close(got, want)


def test_bad_quality_flags_and_nan_become_bad_values_without_numbers() -> None:
    unit = str(UNITS[0].unit)
    for value, quality, shown in (
        (None, Quality.BAD_NO_COMMUNICATION, Quality.BAD_NO_COMMUNICATION),
        (12.0, Quality.BAD_COMMUNICATION, Quality.BAD_COMMUNICATION),
        (None, Quality.UNCERTAIN_LAST_USABLE, Quality.BAD_WAITING),  # held, never read
        (math.nan, Quality.GOOD, Quality.BAD_COMMUNICATION),
        (True, Quality.GOOD, Quality.BAD_COMMUNICATION),
    ):
        plant = view()
        plant.apply_reading(unit, value, quality, AT)
        measured = plant.state(unit).measured  # type: ignore[union-attr]
        # still waiting for a first value is no change from how the unit starts
        assert measured == (Measured() if shown is Quality.BAD_WAITING else Measured(shown, AT))


def test_a_held_reading_keeps_its_numbers_marked_last_usable_and_so_does_the_discrepancy() -> None:
    unit = next(str(u.unit) for u in UNITS if u.strapping is not None)
    plant = view()
    changes = recorded(plant)
    plant.apply_book(unit, Book(quantity=1000.0, material_id="M", lot_id="L1", lots=("L1",)))
    plant.apply_reading(unit, 2500.0, Quality.GOOD, AT)
    good = plant.state(unit)
    later = AT + timedelta(seconds=1)
    plant.apply_reading(unit, 2500.0, Quality.UNCERTAIN_LAST_USABLE, later)
    held = plant.state(unit)
    assert good is not None and held is not None
    assert held.measured.quality is Quality.UNCERTAIN_LAST_USABLE
    assert held.measured.level == good.measured.level == 2500.0
    assert held.measured.quantity == good.measured.quantity
    assert held.discrepancy == good.discrepancy == pytest.approx(good.measured.quantity - 1000.0)
    plant.apply_reading(unit, None, Quality.BAD_NO_COMMUNICATION, later)
    bad = plant.state(unit)
    assert bad is not None and bad.measured.quantity is None and bad.discrepancy is None
    causes = [c.cause for c in changes if isinstance(c, UnitChanged)]
    assert causes == [Cause.BOOK, Cause.MEASUREMENT, Cause.MEASUREMENT, Cause.MEASUREMENT]


def test_discrepancy_is_measured_minus_book_from_either_side() -> None:
    unit = next(str(u.unit) for u in UNITS if u.strapping is None)
    plant = view()
    plant.apply_reading(unit, 412.5, Quality.GOOD, AT)
    state = plant.state(unit)
    assert state is not None and state.measured.quantity is not None
    assert state.discrepancy is None  # the book is not read yet
    plant.apply_book(unit, Book(quantity=400.0))
    state = plant.state(unit)
    assert state is not None
    assert state.discrepancy == pytest.approx(state.measured.quantity - 400.0)


def test_an_unchanged_book_and_unknown_units_notify_nothing() -> None:
    plant = view()
    changes = recorded(plant)
    unit = plant.units[0]
    plant.apply_book(unit, Book(quantity=1.0))
    plant.apply_book(unit, Book(quantity=1.0))
    plant.apply_book("NO-SUCH-UNIT", Book(quantity=1.0))
    plant.apply_reading("NO-SUCH-UNIT", 1.0, Quality.GOOD, AT)
    assert len(changes) == 1


def test_a_failing_subscriber_does_not_stop_the_others() -> None:
    plant = view()

    def broken(change: PlantChange) -> None:
        raise RuntimeError("subscriber bug")

    plant.subscribe(broken)
    changes = recorded(plant)
    plant.apply_book(plant.units[0], Book(quantity=2.0))
    assert len(changes) == 1


def test_changes_within_the_deadband_give_no_update_until_they_add_up_or_quality_changes() -> None:
    spec = next(u for u in UNITS if u.strapping is None)
    unit = str(spec.unit)
    plant = view(deadband_fraction=0.001)
    capacity = plant.state(unit).info.capacity  # type: ignore[union-attr]
    step = capacity * 0.001  # the deadband: 0.1 % of capacity (signal kg = base kg here)
    changes = recorded(plant)

    def shown(value: float | None, quality: Quality = Quality.GOOD) -> bool:
        before = len(changes)
        plant.apply_reading(unit, value, quality, AT)
        return len(changes) > before

    assert shown(1000.0)
    assert not shown(1000.0 + step * 0.6)  # noise
    assert not shown(1000.0 - step * 0.6)
    assert shown(1000.0 + step * 1.2)  # a real change, measured from what is shown
    assert not shown(1000.0 + step * 1.5)
    assert shown(None, Quality.BAD_NO_COMMUNICATION)  # quality changes always go out
    assert not shown(None, Quality.BAD_NO_COMMUNICATION)
    assert shown(1000.0 + step * 1.5)  # back: shown although within the deadband
    exact = view()
    exact.apply_reading(unit, 1000.0, Quality.GOOD, AT)
    changes_exact = recorded(exact)
    exact.apply_reading(unit, 1000.0 + step * 0.01, Quality.GOOD, AT)
    assert changes_exact  # no deadband: every change
