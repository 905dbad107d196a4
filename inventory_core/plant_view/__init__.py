"""The plant view: one home for the live state of every storage unit.

`PlantView` holds it and notifies subscribers (`UnitChanged`, `MovementSeen`);
`LedgerFollower` keeps its book side in step with the ledger. See `view.py`.
"""

from inventory_core.plant_view.ledger_follower import LedgerFollower
from inventory_core.plant_view.state import (
    Book,
    Cause,
    Measured,
    MovementSeen,
    PlantChange,
    UnitChanged,
    UnitInfo,
    UnitState,
)
from inventory_core.plant_view.view import PlantView, Subscriber

__all__ = [
    "Book",
    "Cause",
    "LedgerFollower",
    "Measured",
    "MovementSeen",
    "PlantChange",
    "PlantView",
    "Subscriber",
    "UnitChanged",
    "UnitInfo",
    "UnitState",
]
