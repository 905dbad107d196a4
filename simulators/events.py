"""Deliveries and shipments: plant events that tests, `invops simulate --event` and the
demo's simulated ERP schedule on a `PlantModel`.

A delivery is a truck unloading into a storage unit, a shipment one loading from it.
An event waits until its unit is idle (after the pause that lets the service book the
batch before), then runs as one receipt or issue of `amount` over `duration_s`; like
every activity it stops at the unit's HIGH_STOP / LOW_STOP, so a truck too big for the
room left delivers less (a receiving variance the ledger reports).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

__all__ = ["EventKind", "PlantEvent", "parse_event"]

_EVENT: Final = re.compile(
    r"^(?P<unit>[^:\s]+):(?P<kind>[a-z]+)=(?P<amount>[0-9]+(?:\.[0-9]+)?)\s*(?P<uom>[A-Za-z0-9]+)?"
    r"(?:@(?P<at>[0-9]+(?:\.[0-9]+)?))?(?:/(?P<duration>[0-9]+(?:\.[0-9]+)?)s?)?$"
)


class EventKind(StrEnum):
    """What a truck does at a storage unit."""

    DELIVERY = "delivery"  # unloads into the unit (a receipt)
    SHIPMENT = "shipment"  # loads from the unit, through its outlet (an issue)


@dataclass(frozen=True, slots=True)
class PlantEvent:
    """One delivery or shipment. `amount` is in the unit's simulated uom unless `uom`
    names another (converted through the material's density when the model schedules
    it); `at_s` is the earliest simulated time it starts; `duration_s` how long the
    truck takes (None: the unit's usual flow rate); `ref` names it (the demo uses the
    advice id), so a caller can tell it is already scheduled."""

    kind: EventKind
    unit: str
    amount: float
    uom: str | None = None
    at_s: float = 0.0
    duration_s: float | None = None
    ref: str | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.amount) and self.amount > 0):
            raise ValueError(f"a {self.kind} amount must be a positive number (got {self.amount})")
        if not (math.isfinite(self.at_s) and self.at_s >= 0):
            raise ValueError(f"a {self.kind} start time must be >= 0 s (got {self.at_s})")
        if self.duration_s is not None and not (
            math.isfinite(self.duration_s) and self.duration_s > 0
        ):
            raise ValueError(f"a {self.kind} duration must be positive (got {self.duration_s})")


def parse_event(text: str, *, now_s: float = 0.0) -> PlantEvent:
    """`UNIT:delivery=AMOUNT[UOM][@AT_S][/DURATION_S]` (or `shipment=`) -> a PlantEvent
    starting no earlier than `now_s + AT_S`; ValueError with the expected form otherwise.

    Examples: `TK-102:delivery=5000kg@10/60`, `SI-201:shipment=8t`, `BN-301:delivery=200`.
    """
    match = _EVENT.match(text.strip())
    kinds = ", ".join(kind.value for kind in EventKind)
    if match is None or match["kind"] not in set(EventKind):
        raise ValueError(
            f"expected UNIT:KIND=AMOUNT[UOM][@START_S][/DURATION_S] with KIND one of {kinds}, "
            f"e.g. TK-102:delivery=5000kg@10/60 (got {text!r})"
        )
    duration = match["duration"]
    return PlantEvent(
        EventKind(match["kind"]),
        match["unit"],
        float(match["amount"]),
        uom=match["uom"],
        at_s=now_s + float(match["at"] or 0.0),
        duration_s=float(duration) if duration is not None else None,
    )
