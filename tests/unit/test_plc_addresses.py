"""Addresses: SPEC 3 syntax, round trips, rejections that name the problem, overlaps."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plc_connectors import (
    Address,
    Area,
    DataType,
    PlcError,
    PlcProtocol,
    Tag,
    TagConfigError,
    WordOrder,
    format_address,
    overlaps,
    parse_address,
    tag_span,
    validate_tag,
)
from plc_connectors.addresses import EXPECTED

MODBUS = [Area.HOLDING, Area.INPUT, Area.COIL, Area.DISCRETE]


def _tag(
    address: str,
    dt: DataType,
    *,
    word_order: WordOrder = WordOrder.ABCD,
    scale: float = 1.0,
    offset: float = 0.0,
) -> Tag:
    return Tag("t", parse_address(address), dt, word_order, scale, offset)


# --- parsing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("hr:0", Address(Area.HOLDING, 0)),
        ("ir:65535", Address(Area.INPUT, 65535)),
        ("co:7", Address(Area.COIL, 7)),
        ("di:12", Address(Area.DISCRETE, 12)),
        ("DB1.DBX4.3", Address(Area.DB, 4, db=1, bit=3, width=1)),
        ("DB2.DBB9", Address(Area.DB, 9, db=2, width=1)),
        ("DB1.DBW4", Address(Area.DB, 4, db=1, width=2)),
        ("DB1.DBD0", Address(Area.DB, 0, db=1, width=4)),
        ("db10.dbd100", Address(Area.DB, 100, db=10, width=4)),
        ("HR:5", Address(Area.HOLDING, 5)),
        ("Db1.DbX0.7", Address(Area.DB, 0, db=1, bit=7, width=1)),
        ("  hr:3 ", Address(Area.HOLDING, 3)),
    ],
)
def test_parse_address(text: str, address: Address) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize(
    ("text", "canonical"),
    [("HR:5", "hr:5"), ("db1.dbx4.3", "DB1.DBX4.3"), ("db1.dbw02", "DB1.DBW2")],
)
def test_format_address_gives_the_canonical_spelling(text: str, canonical: str) -> None:
    assert format_address(parse_address(text)) == canonical


_MODBUS_ADDRESSES = st.builds(Address, st.sampled_from(MODBUS), st.integers(0, 65535))
_S7_ADDRESSES = st.one_of(
    st.builds(
        lambda db, o, bit: Address(Area.DB, o, db=db, bit=bit, width=1),
        st.integers(1, 65535),
        st.integers(0, 65535),
        st.integers(0, 7),
    ),
    st.builds(
        lambda db, o, w: Address(Area.DB, o, db=db, width=w),
        st.integers(1, 65535),
        st.integers(0, 65535),
        st.sampled_from([1, 2, 4]),
    ),
)


@given(address=st.one_of(_MODBUS_ADDRESSES, _S7_ADDRESSES))
def test_format_then_parse_round_trips(address: Address) -> None:
    assert parse_address(format_address(address)) == address


@given(address=st.one_of(_MODBUS_ADDRESSES, _S7_ADDRESSES), upper=st.booleans())
def test_parse_is_case_insensitive(address: Address, upper: bool) -> None:
    text = format_address(address)
    assert parse_address(text.upper() if upper else text.lower()) == address


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("hr:-1", EXPECTED),
        ("hr:", EXPECTED),
        ("hr:1.5", EXPECTED),
        ("40001", EXPECTED),
        ("xr:1", EXPECTED),
        ("hr:0x10", EXPECTED),
        ("DB1.DBQ4", EXPECTED),
        ("DB1.DBD", EXPECTED),
        ("M0.0", EXPECTED),
        ("", EXPECTED),
        ("hr:١٢", EXPECTED),  # non-ASCII digits
        ("hr:65536", "65536 outside 0..65535"),
        ("co:99999999", "99999999 outside 0..65535"),
        ("DB0.DBW2", "DB number 0 outside 1..65535"),
        ("DB70000.DBW2", "DB number 70000 outside 1..65535"),
        ("DB1.DBW65536", "65536 outside 0..65535"),
        ("DB1.DBX4.8", "bit 8 outside 0..7"),
        ("DB1.DBX4", "DBX needs a bit"),
        ("DB1.DBW4.1", "DBX needs a bit"),
    ],
)
def test_bad_addresses_are_rejected_naming_the_problem(text: str, problem: str) -> None:
    with pytest.raises(TagConfigError) as info:
        parse_address(text)
    assert problem in str(info.value)
    assert repr(text) in str(info.value)


def test_tag_config_error_is_a_plc_error_and_a_value_error() -> None:
    """A ValueError so pydantic validators can report it under the config key path."""
    with pytest.raises(PlcError):
        parse_address("junk")
    with pytest.raises(ValueError):
        parse_address("junk")
    assert TagConfigError("x").retryable is False


def test_float64_on_s7_is_spelled_dbd_and_spans_8_bytes() -> None:
    tag = _tag("DB1.DBD8", DataType.FLOAT64)
    assert tag_span(tag) == (8, 16)
    assert format_address(Address(Area.DB, 8, db=1, width=8)) == "DB1.DBD8"
    validate_tag(tag, "s7")


# --- validate_tag --------------------------------------------------------------------

SPEC_DEMO_TAGS = [
    ("hr:0", DataType.FLOAT32, "modbus"),
    ("hr:2", DataType.FLOAT32, "modbus"),
    ("hr:10", DataType.UINT32, "modbus"),
    ("hr:20", DataType.UINT16, "modbus"),
    ("DB1.DBD0", DataType.FLOAT32, "s7"),
    ("DB1.DBD4", DataType.FLOAT32, "s7"),
]


@pytest.mark.parametrize(("address", "dt", "protocol"), SPEC_DEMO_TAGS)
def test_spec_demo_tags_are_valid(address: str, dt: DataType, protocol: str) -> None:
    validate_tag(_tag(address, dt), protocol)


@pytest.mark.parametrize(
    ("address", "dt", "protocol"),
    [
        ("co:0", DataType.BOOL, "modbus"),
        ("di:65535", DataType.BOOL, "modbus"),
        ("ir:5", DataType.INT16, PlcProtocol.MODBUS),
        ("hr:65532", DataType.FLOAT64, "modbus"),
        ("hr:65534", DataType.UINT32, "modbus"),
        ("hr:65535", DataType.UINT16, "modbus"),
        ("DB1.DBX0.0", DataType.BOOL, "s7"),
        ("DB1.DBW2", DataType.INT16, "s7"),
        ("DB1.DBW2", DataType.UINT16, "s7"),
        ("DB1.DBD2", DataType.INT32, "s7"),
        ("DB1.DBD2", DataType.UINT32, "s7"),
        ("DB1.DBD65528", DataType.FLOAT64, PlcProtocol.S7),
    ],
)
def test_valid_type_and_area_combinations(address: str, dt: DataType, protocol: str) -> None:
    validate_tag(_tag(address, dt), protocol)


@pytest.mark.parametrize(
    ("tag", "protocol", "problem"),
    [
        (_tag("co:0", DataType.FLOAT32), "modbus", "single bits: use bool"),
        (_tag("di:0", DataType.INT16), "modbus", "single bits: use bool"),
        (_tag("hr:0", DataType.BOOL), "modbus", "registers hold numbers"),
        (_tag("ir:0", DataType.BOOL), "modbus", "registers hold numbers"),
        (_tag("hr:65535", DataType.FLOAT32), "modbus", "past the end"),
        (_tag("ir:65533", DataType.FLOAT64), "modbus", "past the end"),
        (_tag("DB1.DBX0.0", DataType.INT16), "s7", "DBX fits bool"),
        (_tag("DB1.DBB0", DataType.BOOL), "s7", "DBB fits none"),
        (_tag("DB1.DBB0", DataType.UINT16), "s7", "DBB fits none"),
        (_tag("DB1.DBW0", DataType.FLOAT32), "s7", "DBW fits int16, uint16"),
        (_tag("DB1.DBW0", DataType.INT32), "s7", "DBW fits"),
        (_tag("DB1.DBD0", DataType.INT16), "s7", "DBD fits"),
        (_tag("DB1.DBD0", DataType.BOOL), "s7", "DBD fits"),
        (_tag("DB1.DBD65532", DataType.FLOAT64), "s7", "past the end"),
        (_tag("DB1.DBD0", DataType.FLOAT32, word_order=WordOrder.CDAB), "s7", "big-endian"),
        (_tag("DB1.DBW0", DataType.INT16, word_order=WordOrder.BADC), "s7", "big-endian"),
        (_tag("hr:0", DataType.FLOAT32), "s7", "a Modbus address on an S7 PLC"),
        (_tag("DB1.DBD0", DataType.FLOAT32), "modbus", "an S7 address on a Modbus PLC"),
        (_tag("hr:0", DataType.FLOAT32), "opcua", "unknown protocol"),
        (_tag("co:0", DataType.BOOL, scale=2.0), "modbus", "bools take no scale"),
        (_tag("hr:0", DataType.FLOAT32, scale=0.0), "modbus", "non-zero"),
        (_tag("hr:0", DataType.FLOAT32, scale=float("nan")), "modbus", "finite"),
        (_tag("hr:0", DataType.FLOAT32, offset=float("inf")), "modbus", "finite"),
        (
            Tag("t", Address(Area.DB, 0, db=1, width=8), DataType.FLOAT32),
            "s7",
            "DBD fits",
        ),
        (Tag("t", Address(Area.HOLDING, 0, db=1), DataType.INT16), "modbus", "no db/bit"),
        (Tag("t", Address(Area.HOLDING, -1), DataType.INT16), "modbus", "outside 0..65535"),
        (Tag("t", Address(Area.DB, 0, width=2), DataType.INT16), "s7", "DB number None"),
        (Tag("t", Address(Area.DB, 0, db=1, width=3), DataType.INT16), "s7", "width 3"),
        (Tag("t", Address(Area.DB, 0, db=1, bit=1, width=2), DataType.INT16), "s7", "bit 1"),
    ],
)
def test_tags_that_cannot_work_are_rejected(tag: Tag, protocol: str, problem: str) -> None:
    with pytest.raises(TagConfigError) as info:
        validate_tag(tag, protocol)
    assert problem in str(info.value)


def test_rejection_names_address_and_type() -> None:
    with pytest.raises(TagConfigError, match=r"^co:3 float32: "):
        validate_tag(_tag("co:3", DataType.FLOAT32), "modbus")


# --- overlaps ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (_tag("hr:0", DataType.FLOAT32), _tag("hr:1", DataType.UINT16), True),
        (_tag("hr:0", DataType.FLOAT32), _tag("hr:2", DataType.UINT16), False),
        (_tag("hr:0", DataType.FLOAT64), _tag("hr:3", DataType.INT16), True),
        (_tag("hr:0", DataType.FLOAT32), _tag("ir:0", DataType.FLOAT32), False),
        (_tag("co:0", DataType.BOOL), _tag("co:1", DataType.BOOL), False),
        (_tag("co:1", DataType.BOOL), _tag("co:1", DataType.BOOL), True),
        (_tag("co:1", DataType.BOOL), _tag("di:1", DataType.BOOL), False),
        (_tag("DB1.DBX4.3", DataType.BOOL), _tag("DB1.DBX4.4", DataType.BOOL), False),
        (_tag("DB1.DBX4.3", DataType.BOOL), _tag("DB1.DBX4.3", DataType.BOOL), True),
        (_tag("DB1.DBX4.3", DataType.BOOL), _tag("DB1.DBW4", DataType.INT16), True),
        (_tag("DB1.DBW3", DataType.INT16), _tag("DB1.DBX4.0", DataType.BOOL), True),
        (_tag("DB1.DBW2", DataType.INT16), _tag("DB1.DBX4.0", DataType.BOOL), False),
        (_tag("DB1.DBD0", DataType.FLOAT64), _tag("DB1.DBW6", DataType.INT16), True),
        (_tag("DB1.DBD0", DataType.FLOAT32), _tag("DB1.DBW4", DataType.INT16), False),
        (_tag("DB1.DBD0", DataType.FLOAT32), _tag("DB2.DBD0", DataType.FLOAT32), False),
    ],
)
def test_overlaps(a: Tag, b: Tag, expected: bool) -> None:
    assert overlaps(a, b) is expected
    assert overlaps(b, a) is expected


_S7_TYPE = {1: DataType.BOOL, 2: DataType.INT16, 4: DataType.FLOAT32, 8: DataType.FLOAT64}


@st.composite
def _s7_tags(draw: st.DrawFn) -> Tag:
    db = draw(st.integers(1, 2))
    offset = draw(st.integers(0, 12))
    size = draw(st.sampled_from([1, 2, 4, 8]))
    if size == 1:
        address = Address(Area.DB, offset, db=db, bit=draw(st.integers(0, 7)), width=1)
    else:
        address = Address(Area.DB, offset, db=db, width=min(size, 4))
    return Tag("t", address, _S7_TYPE[size])


def _bits_used(tag: Tag) -> set[tuple[int | None, int, int]]:
    """Every (db, byte, bit) a tag touches: the brute-force definition of overlap."""
    start, stop = tag_span(tag)
    bits = [tag.address.bit] if tag.address.bit is not None else range(8)
    return {(tag.address.db, byte, bit) for byte in range(start, stop) for bit in bits}


@given(a=_s7_tags(), b=_s7_tags())
def test_s7_overlap_matches_shared_bits(a: Tag, b: Tag) -> None:
    assert overlaps(a, b) is bool(_bits_used(a) & _bits_used(b))
