"""Inventory domain and ledger: the core every adapter depends on (and that depends on none)."""

from inventory_core.clock import Clock, SystemClock
from inventory_core.domain.history import HistoryPoint
from inventory_core.history import HistoryStore, open_history
from inventory_core.ledger import Ledger, open_ledger, validate_posting

__all__ = [
    "Clock",
    "HistoryPoint",
    "HistoryStore",
    "Ledger",
    "SystemClock",
    "open_history",
    "open_ledger",
    "validate_posting",
]
