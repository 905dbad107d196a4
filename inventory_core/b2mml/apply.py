"""Apply an inbound B2MML document to the ledger and export ledger state as B2MML."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import NamedTuple

from inventory_core.b2mml.documents import material_information, operations_performance
from inventory_core.b2mml.messages import B2mmlError, Inbound, acknowledge
from inventory_core.domain.errors import InventoryError
from inventory_core.domain.lots import check_transition
from inventory_core.domain.model import AnnounceLots, Source
from inventory_core.ledger import Ledger


def new_bod_id() -> str:
    return f"invops-{uuid.uuid4()}"


class Applied(NamedTuple):
    """The answer document, and the `request:` ids of what signature policies hold."""

    answer: bytes
    held: list[str]


async def apply_inbound(ledger: Ledger, inbound: Inbound, *, user: str, source: Source) -> Applied:
    """Apply `inbound` all or nothing (audited as `user`); returns the answer document.

    Master data is merged into what the ledger holds (a property not given keeps its
    value). Materials the config defines are the config's: the next service start
    syncs the config's values again. What signature policies hold (`master-data`: the
    material definitions, a known lot's quality data; `lot-status`) is not applied yet:
    the answer names its requests and shows the nouns as they still are.
    """
    reason = f"B2MML {inbound.name} {inbound.bod_id or '(no BODID)'} from {inbound.sender or '?'}"
    created = datetime.now(UTC)
    if inbound.noun == "MaterialDefinition":
        held = {str(m.id): m for m in await ledger.materials()}
        materials = [
            update.applied_to(held.get(update.id), inbound.path(f"MaterialDefinition[{i}]"))
            for i, update in enumerate(inbound.materials, start=1)
        ]
        pending = await ledger.define_materials(materials, user=user, reason=reason, source=source)
        if pending is not None:  # held: the materials as the ledger still holds them
            materials = [held[str(m.id)] for m in materials if str(m.id) in held]
        requests = [pending.request_id] if pending is not None else []
        answer = acknowledge(
            inbound, materials=materials, held=requests, created=created, bod_id=new_bod_id()
        )
        return Applied(answer, requests)
    await _check_lots(ledger, inbound)
    lots, requests = await ledger.announce_lots(
        AnnounceLots(inbound.lots, user=user, source=source, reason=reason)
    )
    answer = acknowledge(inbound, lots=lots, held=requests, created=created, bod_id=new_bod_id())
    return Applied(answer, requests)


async def _check_lots(ledger: Ledger, inbound: Inbound) -> None:
    """The ledger's own checks, made first so that a refusal names the lot's path (the
    ledger checks again inside its transaction, all or nothing)."""
    materials = {str(m.id) for m in await ledger.materials()}
    held = {str(lot.id): lot for lot in await ledger.lots(ids=[a.lot for a in inbound.lots])}
    for i, announced in enumerate(inbound.lots, start=1):
        path = inbound.path(f"MaterialLot[{i}]")
        if announced.material not in materials:
            message = f"material {announced.material} is not defined"
            raise B2mmlError(message, f"{path}/MaterialDefinitionID")
        lot = held.get(announced.lot)
        if lot is None:
            continue
        if lot.material != announced.material:
            message = f"lot {lot.id} is material {lot.material}, not {announced.material}"
            raise B2mmlError(message, f"{path}/MaterialDefinitionID")
        if announced.expiry is not None and announced.expiry != lot.expiry:
            message = (
                f"lot {lot.id} expires {lot.expiry or 'never'}; an announcement cannot "
                f"change its expiry to {announced.expiry}"
            )
            raise B2mmlError(message, f"{path}/MaterialLotProperty")
        if announced.status is not None and announced.status != lot.status:
            try:
                check_transition(lot.id, lot.status, announced.status)
            except InventoryError as exc:
                raise B2mmlError(str(exc), f"{path}/Status") from None


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
