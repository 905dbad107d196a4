"""Apply an inbound B2MML document to the ledger and export ledger state as B2MML."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from inventory_core.b2mml.documents import material_information, operations_performance
from inventory_core.b2mml.messages import Inbound, acknowledge
from inventory_core.domain.model import AnnounceLots, Source
from inventory_core.ledger import Ledger


def new_bod_id() -> str:
    return f"invops-{uuid.uuid4()}"


async def apply_inbound(ledger: Ledger, inbound: Inbound, *, user: str, source: Source) -> bytes:
    """Apply `inbound` all or nothing (audited as `user`); returns the answer document.

    Master data is merged into what the ledger holds (a property not given keeps its
    value). Materials the config defines are the config's: the next service start
    syncs the config's values again.
    """
    reason = f"B2MML {inbound.name} {inbound.bod_id or '(no BODID)'} from {inbound.sender or '?'}"
    created = datetime.now(UTC)
    if inbound.noun == "MaterialDefinition":
        held = {str(m.id): m for m in await ledger.materials()}
        materials = [
            update.applied_to(held.get(update.id), inbound.path(f"MaterialDefinition[{i}]"))
            for i, update in enumerate(inbound.materials, start=1)
        ]
        await ledger.sync_master_data(materials, (), user=user, reason=reason)
        return acknowledge(inbound, materials=materials, created=created, bod_id=new_bod_id())
    lots = await ledger.announce_lots(
        AnnounceLots(inbound.lots, user=user, source=source, reason=reason)
    )
    return acknowledge(inbound, lots=lots, created=created, bod_id=new_bod_id())


async def export_material_information(ledger: Ledger) -> bytes:
    """`ShowMaterialInformation` of every material and lot the ledger holds."""
    return material_information(
        await ledger.materials(),
        await ledger.lots(),
        await ledger.balances(),
        created=datetime.now(UTC),
        bod_id=new_bod_id(),
    )


async def export_movements(
    ledger: Ledger, after_seq: int = 0, limit: int | None = None
) -> tuple[bytes | None, int]:
    """`ShowOperationsPerformance` of the movements after cursor `after_seq` (None when
    there are none: B2MML has no empty performance) and the cursor to ask from next."""
    movements = await ledger.export(after_seq=after_seq, limit=limit)
    if not movements:
        return None, after_seq
    body = operations_performance(movements, created=datetime.now(UTC), bod_id=new_bod_id())
    return body, movements[-1].seq
