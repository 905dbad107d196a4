"""Inventory domain and ledger: the core every adapter depends on (and that depends on none).

The ledger and history stores (SQLAlchemy, Alembic) load on first use of their
names, so that importing `inventory_core.domain` stays cheap: the CLI's short
commands and the config loader need the domain types, not the database.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from inventory_core.clock import Clock, SystemClock
from inventory_core.domain.history_point import HistoryPoint

if TYPE_CHECKING:
    from inventory_core.ledger import Ledger, open_ledger, validate_posting
    from inventory_core.value_history import HistoryStore, open_history

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

_LAZY = {
    "HistoryStore": "inventory_core.value_history",
    "open_history": "inventory_core.value_history",
    "Ledger": "inventory_core.ledger",
    "open_ledger": "inventory_core.ledger",
    "validate_posting": "inventory_core.ledger",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
