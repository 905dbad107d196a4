"""The ledger's character rules for every text field (issue 12, item 9; item 7's first fix),
the same on a real SQLite file and a real PostgreSQL database: the database never sees a
value it would refuse, and the message names the field and the character.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from inventory_core import Ledger
from inventory_core.domain.errors import InventoryError, LedgerUnavailable
from inventory_core.domain.model import (
    LotId,
    LotStatus,
    LotStatusRequest,
    MaterialId,
    MovementId,
    MovementKind,
    PostingRequest,
    ReversalRequest,
    Source,
    StorageUnitId,
)
from inventory_core.domain.text import InvalidText
from tests.conftest import MATERIALS

ETHANOL = MaterialId("ETHANOL-96")
TK = StorageUnitId("TK-101")


def receipt(lot: str, reason: str = "", **changes: Any) -> PostingRequest:
    request = PostingRequest(
        MovementKind.RECEIPT, ETHANOL, LotId(lot), Decimal(1), "kg", to_unit=TK, reason=reason
    )
    return replace(request, **changes)


# -- the ledger's text rules, the same on both backends ---------------------------------

BAD_TEXT = {
    "NUL": "a\x00b",
    "carriage return": "a\rb",
    "escape sequence": "a\x1b[2Jb",
    "right-to-left override": "A\u202eB",
    "C1 control": "a\x85b",
    "line separator": "a\u2028b",
}
ID_ONLY = {"space": "a b", "zero-width space": "a\u200bb", "newline": "a\nb", "tab": "a\tb"}

POSTING_FIELDS: dict[str, Callable[[str], PostingRequest]] = {
    "material": lambda v: receipt("L-1", material=MaterialId(v)),
    "lot": lambda v: receipt(v),
    "to unit": lambda v: receipt("L-1", to_unit=StorageUnitId(v)),
    "from unit": lambda v: replace(
        receipt("L-1"), kind=MovementKind.ISSUE, to_unit=None, from_unit=StorageUnitId(v)
    ),
    "user": lambda v: receipt("L-1", user=v),
    "idempotency key": lambda v: receipt("L-1", idempotency_key=v),
    "reason": lambda v: receipt("L-1", reason=v),
    "unit of measure": lambda v: receipt("L-1", uom=v),
    "consumed lot": lambda v: replace(
        receipt("L-1"), kind=MovementKind.PRODUCTION, consumed_lots=(LotId(v),)
    ),
}
FREE_TEXT_FIELDS = {"reason"}
KEY_FIELDS = {"idempotency key"}


def text_cases() -> list[Any]:
    cases = []
    for field in POSTING_FIELDS:
        bad = dict(BAD_TEXT)
        if field not in FREE_TEXT_FIELDS:
            bad.update(ID_ONLY)
        if field in KEY_FIELDS:
            bad.pop("space")  # keys may hold inner spaces
        cases += [pytest.param(field, value, id=f"{field}-{what}") for what, value in bad.items()]
    return cases


async def assert_refused_naming(ledger: Ledger, field: str, attempt: Any) -> InvalidText:
    before = len(await ledger.history())
    with pytest.raises(InvalidText) as caught:
        await attempt
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field} "), str(caught.value)
    assert "U+" in str(caught.value)  # names the character
    assert "\x00" not in str(caught.value) and "\r" not in str(caught.value)
    assert len(await ledger.history()) == before
    return caught.value


@pytest.mark.parametrize(("field", "value"), text_cases())
async def test_refused_characters_are_refused_in_every_posting_field_naming_it(
    ledger: Ledger, field: str, value: str
) -> None:
    await assert_refused_naming(ledger, field, ledger.post(POSTING_FIELDS[field](value)))


async def test_reversal_and_lot_status_apply_the_same_rules(ledger: Ledger) -> None:
    posted = await ledger.post(receipt("LS-1"))
    mid = posted.movement_id
    for field, attempt in {
        "movement id": ReversalRequest(MovementId("a\x00b"), "why"),
        "reason": ReversalRequest(mid, "wrong\x00lot"),
        "user": ReversalRequest(mid, "why", user="a\u202eb"),
        "idempotency key": ReversalRequest(mid, "why", idempotency_key="k\r"),
    }.items():
        await assert_refused_naming(ledger, field, ledger.reverse(attempt))
    for field, status in {
        "lot": LotStatusRequest(LotId("LS\u202e1"), LotStatus.HOLD, "why"),
        "reason": LotStatusRequest(LotId("LS-1"), LotStatus.HOLD, "sampling\x1b[1A"),
        "user": LotStatusRequest(LotId("LS-1"), LotStatus.HOLD, "why", user="a\x00"),
    }.items():
        await assert_refused_naming(ledger, field, ledger.set_lot_status(status))


async def test_free_text_keeps_tabs_newlines_and_any_script_exactly(ledger: Ledger) -> None:
    reason = "Lieferung\tLKW 7\nzweite Zeile: 受入検査 ✓ 🚚 שלום"
    posted = await ledger.post(receipt("FT-1", reason, user="müller"))
    [movement] = [m for m in await ledger.history() if m.id == posted.movement_id]
    assert movement.reason == reason and movement.user == "müller"


async def test_ids_may_hold_letters_of_any_script_and_single_emoji(ledger: Ledger) -> None:
    for lot in ("LOT-Ä1", "ロット-7", "LOT-🍺"):
        await ledger.post(receipt(lot))
    assert {m.lot for m in await ledger.history()} == {"LOT-Ä1", "ロット-7", "LOT-🍺"}


async def test_ids_must_be_nfc_so_that_look_alikes_are_one_id(ledger: Ledger) -> None:
    with pytest.raises(InvalidText, match="NFC"):
        await ledger.post(receipt("LOT-A\u0308"))  # A + combining diaeresis, not Ä


LENGTHS = [
    pytest.param("lot", receipt("x" * 129), "at most 128", id="lot-129"),
    pytest.param("material", receipt("L-1", material=MaterialId("M" * 65)), "at most 64",
                 id="material-65"),
    pytest.param("to unit", receipt("L-1", to_unit=StorageUnitId("U" * 65)), "at most 64",
                 id="unit-65"),
    pytest.param("user", receipt("L-1", user="u" * 129), "at most 128", id="user-129"),
    pytest.param("idempotency key", receipt("L-1", idempotency_key="k" * 201), "at most 200",
                 id="key-201"),
    pytest.param("reason", receipt("L-1", "r" * 100_000), "at most 2000", id="reason-100000"),
]  # fmt: skip


@pytest.mark.parametrize(("field", "request_", "limit"), LENGTHS)
async def test_overlong_text_is_refused_before_the_database_with_a_short_message(
    ledger: Ledger, field: str, request_: PostingRequest, limit: str
) -> None:
    with pytest.raises(InvalidText) as caught:
        await ledger.post(request_)
    message = str(caught.value)
    assert message.startswith(f"{field} ") and limit in message
    assert len(message) < 300  # the value is not echoed whole


async def test_master_data_text_is_checked_too(ledger: Ledger) -> None:
    material = replace(MATERIALS[0], description="Ethanol\x00 96 %")
    with pytest.raises(InvalidText, match="material ETHANOL-96: description has U\\+0000"):
        await ledger.sync_master_data([material], [])


async def test_refusals_are_inventory_errors_not_outages(ledger: Ledger) -> None:
    with pytest.raises(InventoryError) as caught:
        await ledger.post(receipt("L-1", "a\x00b", source=Source.OPCUA))
    assert not isinstance(caught.value, LedgerUnavailable)
