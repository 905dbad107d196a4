"""Inventory domain and ledger: the core every adapter depends on (and that depends on none)."""

from inventory_core.clock import Clock, SystemClock
from inventory_core.ledger import Ledger, open_ledger, validate_posting

__all__ = ["Clock", "Ledger", "SystemClock", "open_ledger", "validate_posting"]
