"""Meter versus gauge: what a unit's flow totalizer counted, next to its level.

In a measured tank the gauge books every change once; a flow meter on its outlet (or
inlet) counts the same flow a second, independent way. invops keeps the meter's
counts as *meter flows* (quantity, window, the counter at its end), not as movements,
and the period mass balance sets the metered outflow against the issues the level
derived: a difference beyond the meter's accuracy is a leak, a stuck valve, a
strapping table gone wrong, or a meter that needs calibration.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from inventory_core.domain.model import StorageUnitId

__all__ = ["MeterDirection", "MeterFlow"]


class MeterDirection(StrEnum):
    OUT = "out"  # a meter on the unit's outlet: set against the level-derived issues
    IN = "in"  # on its inlet: set against the level-derived receipts


@dataclass(frozen=True, slots=True)
class MeterFlow:
    """What the meter counted between two readings, in the unit's base unit."""

    unit: StorageUnitId
    direction: MeterDirection
    quantity: Decimal
    uom: str
    window_start: str  # ledger timestamps (UTC text)
    window_end: str
    counter: int  # the counter at window_end: where counting resumes after a restart
