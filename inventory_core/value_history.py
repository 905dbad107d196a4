"""Value history API: trend samples (levels, quantities) kept in the ledger database.

`open_history(url)` yields a `HistoryStore` on the ledger's database (its own
engines, separate from the ledger's writer): `append` many points per
transaction, `read` a series by time, `prune` by retention. The OPC UA
server's history storage (`opcua_server.history_read`) is built on it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from inventory_core.clock import Clock
from inventory_core.domain.errors import LedgerUnavailable
from inventory_core.domain.history_point import HistoryPoint
from inventory_core.store import HistoryStore
from inventory_core.store.history_store import DEFAULT_RETENTION

__all__ = ["DEFAULT_RETENTION", "HistoryPoint", "HistoryStore", "open_history"]


@asynccontextmanager
async def open_history(
    url: str,
    *,
    migrate: bool = False,
    retention: timedelta = DEFAULT_RETENTION,
    clock: Clock | None = None,
) -> AsyncIterator[HistoryStore]:
    """Open the value history at `url` (the ledger URL) and close it on exit.

    Raises LedgerUnavailable when the database is not at the newest schema
    (unless `migrate`, which upgrades it first).
    """
    store = HistoryStore(url, retention=retention, clock=clock, create=migrate)
    try:
        await store.open(migrate=migrate)
    except LedgerUnavailable:
        await store.close()
        raise
    try:
        yield store
    finally:
        await store.close()
