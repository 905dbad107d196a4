"""Productions with consumed quantities through the real ledger (SQLite and PostgreSQL):
the consumed lots are drawn from their manual units in the same atomic posting, the
genealogy links carry each input's quantity, and a measured unit's draw is its gauge's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from inventory_core import Ledger, open_ledger
from inventory_core.domain.errors import (
    IdempotencyConflict,
    InsufficientStock,
    LotNotReleased,
    ValidationError,
)
from inventory_core.domain.model import (
    Booking,
    LotHandling,
    LotId,
    LotStatus,
    MaterialDefinition,
    MaterialId,
    MovementKind,
    PostingRequest,
    Source,
    StorageKind,
    StorageUnit,
    StorageUnitId,
)

K = MovementKind
ETHANOL = MaterialDefinition(
    MaterialId("ETHANOL"), "Ethanol", "kg", Decimal("0.8"), LotStatus.RELEASED
)
WATER = MaterialDefinition(MaterialId("WATER"), "Water", "kg", Decimal(1), LotStatus.RELEASED)
MIX = MaterialDefinition(MaterialId("MIX"), "Hand rub", "kg", Decimal("0.9"), LotStatus.QUARANTINE)


def unit(uid: str, material: MaterialDefinition, booking: Booking) -> StorageUnit:
    return StorageUnit(
        StorageUnitId(uid), "P", "A", StorageKind.TANK, Decimal(100000), "kg", material.id,
        lot_handling=LotHandling.FIFO, booking=booking, zero_lot_threshold=Decimal(0),
    )  # fmt: skip


UNITS = (
    unit("ETH-DRUMS", ETHANOL, Booking.MANUAL),
    unit("WATER-TANK", WATER, Booking.MEASURED),
    unit("MIX-IBC", MIX, Booking.MANUAL),
    unit("MIX-TANK", MIX, Booking.MEASURED),
)


@pytest.fixture
async def ledger(ledger_url: str) -> AsyncIterator[Ledger]:
    async with open_ledger(ledger_url, writer_id="prod", migrate=True) as opened:
        await opened.sync_master_data((ETHANOL, WATER, MIX), UNITS)
        await opened.post(receipt(ETHANOL, "E1", "500", "ETH-DRUMS"))
        await opened.post(gauge("WATER-TANK", "2000", "plc:w0", kind=K.COUNT, lot="W1"))
        yield opened


def receipt(material: MaterialDefinition, lot: str, qty: str, to: str) -> PostingRequest:
    return PostingRequest(
        K.RECEIPT, material.id, LotId(lot), Decimal(qty), "kg", to_unit=StorageUnitId(to),
        user="alice", source=Source.CLI,
    )  # fmt: skip


def production(
    lot: str,
    qty: str,
    to: str,
    consumed: dict[str, tuple[str, str | None]],
    key: str | None = "p1",
) -> PostingRequest:
    return PostingRequest(
        K.PRODUCTION, MIX.id, LotId(lot), Decimal(qty), "kg", to_unit=StorageUnitId(to),
        idempotency_key=key, user="mes", source=Source.OPCUA, reason="batch 17",
        consumed_lots=tuple(LotId(c) for c in consumed),
        consumed_quantities=tuple(Decimal(q) for q, _ in consumed.values()),
        consumed_units=tuple(None if u is None else StorageUnitId(u) for _, u in consumed.values()),
    )  # fmt: skip


def gauge(
    unit: str,
    qty: str,
    key: str,
    *,
    kind: MovementKind = K.RECEIPT,
    lot: str | None = None,
    settled: bool = True,
) -> PostingRequest:
    into = kind is not K.ISSUE
    material = {"WATER-TANK": WATER, "MIX-TANK": MIX}[unit]
    return PostingRequest(
        kind, material.id, None if lot is None else LotId(lot), Decimal(qty), "kg",
        to_unit=StorageUnitId(unit) if into else None,
        from_unit=None if into else StorageUnitId(unit),
        idempotency_key=key, user="plc", source=Source.PLC, details={"settled": settled},
    )  # fmt: skip


async def books(ledger: Ledger, unit: str) -> dict[str, Decimal]:
    return {b.lot: b.quantity for b in await ledger.balances(unit=unit) if b.quantity}


async def test_a_production_draws_its_manual_inputs_in_one_posting_with_linked_quantities(
    ledger: Ledger,
) -> None:
    # 300 kg of ethanol drawn from the drums, 200 kg of water from the measured tank
    request = production(
        "MIX-1", "500", "MIX-IBC", {"E1": ("300", "ETH-DRUMS"), "W1": ("200", "WATER-TANK")}
    )
    result = await ledger.post(request)
    assert result.movement is not None and result.movement.lot == "MIX-1"
    (draw,) = [m for m in result.movements if m.from_unit == "ETH-DRUMS"]
    assert (draw.kind, draw.lot, draw.material, draw.quantity) == (
        K.PRODUCTION,
        "E1",
        "ETHANOL",
        Decimal(300),
    )
    assert draw.details["consumed_by"] == "MIX-1"
    assert len(result.movements) == 2  # the measured water tank's draw is its gauge's
    assert await books(ledger, "ETH-DRUMS") == {"E1": Decimal(200)}
    assert await books(ledger, "WATER-TANK") == {"W1": Decimal(2000)}
    assert await books(ledger, "MIX-IBC") == {"MIX-1": Decimal(500)}
    links = await ledger.trace("MIX-1", forward=False)
    assert {(link.parent, link.quantity) for link in links} == {
        ("E1", Decimal(300)),
        ("W1", Decimal(200)),
    }
    (check,) = await ledger.mass_balance(links)
    assert check.conserved is True
    again = await ledger.post(request)
    assert again.replayed and again.movement_id == result.movement_id
    with pytest.raises(IdempotencyConflict):  # same key, other consumption
        await ledger.post(
            production(
                "MIX-1", "500", "MIX-IBC", {"E1": ("310", "ETH-DRUMS"), "W1": ("190", "WATER-TANK")}
            )
        )
    assert (await ledger.verify()).ok


async def test_a_consumption_beyond_stock_or_of_an_unreleased_lot_posts_nothing(
    ledger: Ledger,
) -> None:
    with pytest.raises(InsufficientStock, match="consumption of 600 kg of lot E1 from ETH-DRUMS"):
        await ledger.post(production("MIX-2", "600", "MIX-IBC", {"E1": ("600", "ETH-DRUMS")}))
    await ledger.post(production("MIX-Q", "10", "MIX-IBC", {"E1": ("10", "ETH-DRUMS")}, key="q"))
    await ledger.post(receipt(MIX, "MIX-Q2", "50", "MIX-IBC"))  # quarantined by default
    with pytest.raises(LotNotReleased):
        await ledger.post(
            production("MIX-3", "5", "MIX-IBC", {"MIX-Q2": ("5", "MIX-IBC")}, key="r")
        )
    assert await books(ledger, "ETH-DRUMS") == {"E1": Decimal(490)}
    assert "MIX-2" not in {lot.id for lot in await ledger.lots()}


@pytest.mark.parametrize(
    ("consumed", "message"),
    [
        ({"E1": ("0", "ETH-DRUMS")}, "consumed quantity of lot E1 must be positive"),
        ({"E1": ("-3", None)}, "consumed quantity of lot E1 must be positive"),
    ],
)
async def test_bad_consumed_quantities_are_refused(
    ledger: Ledger, consumed: dict[str, tuple[str, str | None]], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        await ledger.post(production("MIX-4", "5", "MIX-IBC", consumed))


async def test_consumed_arrays_must_line_up(ledger: Ledger) -> None:
    base = production("MIX-5", "5", "MIX-IBC", {"E1": ("5", "ETH-DRUMS")})
    from dataclasses import replace

    with pytest.raises(ValidationError, match="1 consumed lots need as many consumed quantities"):
        await ledger.post(replace(base, consumed_quantities=(Decimal(1), Decimal(2))))
    with pytest.raises(ValidationError, match="consumed units need the consumed quantities"):
        await ledger.post(replace(base, consumed_quantities=()))


async def test_a_production_into_a_measured_tank_draws_its_inputs_with_the_first_gauge_step(
    ledger: Ledger,
) -> None:
    advised = await ledger.post(
        production("MIX-6", "400", "MIX-TANK", {"E1": ("250", "ETH-DRUMS")}, key="p6")
    )
    assert advised.advice is not None and advised.advice.consumed_quantities == (Decimal(250),)
    assert await books(ledger, "ETH-DRUMS") == {"E1": Decimal(500)}  # nothing until it flows
    await ledger.post(gauge("MIX-TANK", "150", "plc:m1", settled=False))
    await ledger.post(gauge("MIX-TANK", "245", "plc:m2", settled=True))
    assert await books(ledger, "ETH-DRUMS") == {"E1": Decimal(250)}  # drawn once
    assert await books(ledger, "MIX-TANK") == {"MIX-6": Decimal(395)}
    links = await ledger.trace("MIX-6", forward=False)
    assert [(link.parent, link.quantity) for link in links] == [("E1", Decimal(250))]
    assert (await ledger.advice(advised.advice.id)).matched == Decimal(395)
    assert (await ledger.verify()).ok
