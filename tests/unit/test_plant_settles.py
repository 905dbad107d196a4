"""The simulated plant and the example configs agree: every batch settles and is booked.

The plant model's readings are fed, in simulated time at the PLCs' poll
interval, to the MovementDeriver the service runs, configured by
`invops.wiring` from the example file. Each batch (a fill, a draw) must be
booked in the pause after it, by the settle rule, so that between batches the
book equals the measurement: what `invops ledger reconcile` shows. Before the
simulator paused for each unit's settle_s, the template's tank and silo never
settled and booked only every max_interval_s (reconcile off by 10-30 % of
capacity).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from inventory_core.domain.derivation import DerivedMovement, MovementDeriver, Reading
from inventory_core.domain.units import convert
from invops.config import load_config
from invops.plant_description import plant_description
from invops.wiring import measured_units, quantity_tags
from simulators import PlantModel

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class _Tally:
    batches: int = 0  # batches followed by a pause (a new batch started after it)
    booked: int = 0  # ... of which the pause booked the change (book = measurement)
    movements: int = 0
    overdue: int = 0  # booked because max_interval passed, not because the signal settled
    worst_after_booking: Decimal = Decimal(0)  # |book - true quantity| when the next batch starts


def _simulate(name: str, hours: float, seed: int) -> dict[str, _Tally]:
    config = load_config(EXAMPLES / name)
    model = PlantModel(plant_description(config), seed=seed)
    specs = {str(m.unit): m for m in measured_units(config)}
    tags = {str(unit): tag for tag, unit in quantity_tags(config).items()}
    poll_s = min(plc.poll_interval_s for plc in config.plcs)
    derivers = {unit: MovementDeriver(spec.deriver) for unit, spec in specs.items()}
    tallies = {unit: _Tally() for unit in specs}
    busy = dict.fromkeys(specs, True)  # the first start counts as the end of a pause
    booked_in_pause = dict.fromkeys(specs, False)
    resting = dict.fromkeys(specs, Decimal(0))  # the true quantity during the pause

    def base(unit: str, value: float, uom: str) -> Decimal:
        material = specs[unit].material
        quantity = Decimal(repr(value))
        return convert(quantity, uom, material.base_uom, material.density_kg_per_l)

    for step in range(round(hours * 3600 / poll_s)):
        model.step(poll_s)
        at = T0 + timedelta(seconds=(step + 1) * poll_s)
        values = model.tag_values()
        for unit, spec in specs.items():
            tally, simulated = tallies[unit], model.units[unit]
            signal = Decimal(repr(values[tags[unit]]))
            if spec.strapping is not None:
                signal, _ = spec.strapping.volume_at(signal)
            quantity = base(unit, float(signal), spec.signal_uom)
            booked = derivers[unit].booked  # before this reading
            derived = derivers[unit].feed(Reading(at, quantity, good=True))
            for item in derived:
                assert isinstance(item, DerivedMovement)
                if not item.opening:
                    tally.movements += 1
                    tally.overdue += (
                        item.window_end - item.window_start >= spec.deriver.max_interval
                    )
            now_busy = simulated.operation is not None
            if not now_busy:
                resting[unit] = base(unit, simulated.quantity, simulated.uom)
            if busy[unit] and not now_busy:  # a batch ended: its pause begins
                booked_in_pause[unit] = bool(derived)
            elif not now_busy and derived:
                booked_in_pause[unit] = True
            elif now_busy and not busy[unit] and step > 0:  # the pause is over
                tally.batches += 1
                if booked_in_pause[unit]:
                    tally.booked += 1
                    assert booked is not None
                    off = abs(booked - resting[unit])
                    tally.worst_after_booking = max(tally.worst_after_booking, off)
            busy[unit] = now_busy
    return tallies


@pytest.mark.parametrize(
    ("name", "hours", "seed"),
    [
        ("plant-template.toml", 1.0, 1),
        ("plant-template.toml", 1.0, 2),
        ("demo-plant.toml", 0.5, 1),
    ],
)
def test_every_batch_is_booked_in_the_pause_after_it(name: str, hours: float, seed: int) -> None:
    config = load_config(EXAMPLES / name)
    deadbands = {m.unit: m.deriver.deadband for m in measured_units(config)}
    for unit, tally in _simulate(name, hours, seed).items():
        assert tally.batches >= 40, (unit, tally)
        assert tally.booked >= 0.9 * tally.batches, (unit, tally)
        # between batches the book is the measurement, noise aside: reconcile shows ~0
        assert tally.worst_after_booking <= deadbands[unit], (unit, tally)


def test_template_units_book_on_settling_not_on_max_interval() -> None:
    for unit, tally in _simulate("plant-template.toml", 1.0, 3).items():
        assert tally.movements >= 60, (unit, tally)
        assert tally.overdue <= tally.movements // 20, (unit, tally)
