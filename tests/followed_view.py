"""A plant view fed by a ledger, as the service runs it: movements reach the OPC UA
server (its events, lots, books) through the view, not straight from the ledger."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from inventory_core import Ledger
from inventory_core.plant_view import LedgerFollower, PlantView
from invops.config import InvopsConfig
from invops.wiring import measured_units


@asynccontextmanager
async def followed_view(config: InvopsConfig, ledger: Ledger) -> AsyncIterator[PlantView]:
    """The config's view, following `ledger` until the block ends."""
    view = PlantView(
        config.storage_unit_definitions(), config.material_definitions(), measured_units(config)
    )
    follower = LedgerFollower(ledger, view, debounce_s=0.05)
    await follower.start()
    books = asyncio.create_task(follower.run())
    try:
        yield view
    finally:
        books.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await books
