"""The character rules for ids, keys and free text, and how text is shown back (issue 12,
items 9 and 10): property tests over generated Unicode text."""

from __future__ import annotations

import unicodedata
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from inventory_core.domain.model import LotId, MaterialId, MovementKind, PostingRequest
from inventory_core.domain.text import (
    FREE_TEXT_MAX,
    InvalidText,
    check_free_text,
    check_identifier,
    check_key,
    escape_controls,
    shown,
)
from inventory_core.ledger import validate_posting

CONTROLS = [chr(c) for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))]
BIDI = list("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
FREE_TEXT_REFUSED = [c for c in CONTROLS if c not in "\t\n"] + BIDI + ["\u2028", "\u2029"]
ID_REFUSED = [*CONTROLS, *BIDI, "\u200e", "\u200f", "\u200b", "\u200d", "\ufeff", "\u00ad", " "]
# What a terminal acts on: must never survive `shown`/`escape_controls`.
ACTED_ON = [*CONTROLS, *BIDI, "\u200e", "\u200f", "\u2028", "\u2029"]
INVISIBLE = ["\u200b", "\u2060", "\u2061", "\u2062", "\u2063", "\u2064", "\ufeff"]

printable = st.characters(
    blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs")
)  # what `str.isprintable` accepts, minus the space
identifiers = st.text(printable, min_size=1, max_size=40).filter(
    lambda s: unicodedata.is_normalized("NFC", s)
)
any_text = st.text(st.characters(), max_size=60)


@given(identifiers)
@example("TK-101")
@example("LOT-🍺")
@example("ロット-7")
def test_printable_nfc_ids_without_spaces_are_accepted(value: str) -> None:
    check_identifier("lot", value)
    check_key("idempotency key", value)


@given(identifiers, st.sampled_from(ID_REFUSED), st.data())
def test_an_id_with_a_control_format_bidi_or_space_character_is_refused_naming_it(
    value: str, bad: str, data: st.DataObject
) -> None:
    at = data.draw(st.integers(0, len(value)))
    with pytest.raises(InvalidText) as caught:
        check_identifier("lot", value[:at] + bad + value[at:])
    message = str(caught.value)
    assert caught.value.field == "lot" and message.startswith("lot ")
    assert f"U+{ord(bad):04X}" in message and f"at character {at + 1}" in message
    assert not any(c in message for c in ACTED_ON)  # the message is safe to print


@given(identifiers, identifiers)
def test_keys_may_hold_inner_spaces_but_not_leading_or_trailing_ones(a: str, b: str) -> None:
    check_key("idempotency key", f"{a} {b}")
    for bad in (f" {a}", f"{a} ", f"{a}\t{b}", f"{a}\n"):
        with pytest.raises(InvalidText):
            check_key("idempotency key", bad)


@given(st.text(st.characters(blacklist_characters=FREE_TEXT_REFUSED, blacklist_categories=["Cs"])))
@example("Lieferung\tLKW 7\nzweite Zeile 🚚 שלום")
def test_free_text_takes_anything_but_the_refused_characters(value: str) -> None:
    check_free_text("reason", value[:FREE_TEXT_MAX])


@given(any_text, st.sampled_from(FREE_TEXT_REFUSED), st.data())
def test_free_text_with_a_refused_character_is_refused_naming_field_and_position(
    value: str, bad: str, data: st.DataObject
) -> None:
    clean = "".join(
        c for c in value if c not in FREE_TEXT_REFUSED and not "\ud800" <= c <= "\udfff"
    )
    at = data.draw(st.integers(0, len(clean)))
    with pytest.raises(InvalidText) as caught:
        check_free_text("reason", clean[:at] + bad + clean[at:])
    assert str(caught.value).startswith(f"reason has U+{ord(bad):04X}")
    assert f"at character {at + 1}:" in str(caught.value)


def test_lengths_are_limited_with_a_message_that_does_not_echo_the_value() -> None:
    with pytest.raises(InvalidText, match=r"^reason is 100000 characters long; at most 2000"):
        check_free_text("reason", "x" * 100_000)
    with pytest.raises(InvalidText) as caught:
        check_identifier("lot", "L" * 100_000)
    assert len(str(caught.value)) < 200 and "(100000 chars)" in str(caught.value)


@given(any_text)
@example("fake\n2026-01-01 [info] ledger ok\r\x1b[2J\u202eevil")
def test_shown_text_keeps_to_one_line_in_its_own_order(value: str) -> None:
    out = escape_controls(value)
    assert not any(c in out for c in ACTED_ON)
    if not any(c in ACTED_ON or c in INVISIBLE or "\ud800" <= c <= "\udfff" for c in value):
        assert out == value  # ordinary text is left alone


def test_escapes_are_readable() -> None:
    assert escape_controls("a\nb\rc\td\x00e\x1b\u202ef") == "a\\nb\\rc\\td\\x00e\\x1b\\u202ef"


@given(st.text(max_size=500), st.integers(1, 300))
def test_shown_caps_long_text_and_says_how_long_it_was(value: str, limit: int) -> None:
    out = shown(value, limit)
    if len(value) <= limit:
        assert out == escape_controls(value)
    else:
        assert out.endswith(f"... ({len(value)} chars)")
        assert out.startswith(escape_controls(value[:limit]))


FIELDS = {
    "material": lambda v: {"material": MaterialId(v)},
    "lot": lambda v: {"lot": LotId(v)},
    "user": lambda v: {"user": v},
    "idempotency key": lambda v: {"idempotency_key": v},
    "reason": lambda v: {"reason": v},
}


@given(st.sampled_from(sorted(FIELDS)), st.sampled_from(FREE_TEXT_REFUSED))
def test_validate_posting_applies_the_rules_to_every_text_field(field: str, bad: str) -> None:
    values = {
        "kind": MovementKind.RECEIPT,
        "material": MaterialId("ETHANOL-96"),
        "lot": LotId("L-1"),
        "quantity": Decimal(1),
        "uom": "kg",
        "to_unit": "TK-101",
        **FIELDS[field](f"a{bad}b"),
    }
    with pytest.raises(InvalidText) as caught:
        validate_posting(PostingRequest(**values))  # type: ignore[arg-type]
    assert caught.value.field == field


def test_blank_ids_and_keys_say_what_is_wrong() -> None:
    with pytest.raises(InvalidText, match=r"^lot is missing$"):
        check_identifier("lot", "")
    with pytest.raises(
        InvalidText, match=r"^lot ' ' has U\+0020 \(SPACE, a space\) at character 1"
    ):
        check_identifier("lot", " ")
    with pytest.raises(
        InvalidText, match=r"^idempotency key '   ' starts or ends with whitespace$"
    ):
        check_key("idempotency key", "   ")
