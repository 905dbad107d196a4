"""Codecs: REFERENCE 4.4 word orders, bit-exact round trips, S7 bytes, engineering units."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plc_connectors import (
    Address,
    Area,
    DataType,
    Tag,
    WordOrder,
    byte_size,
    decode_bytes,
    decode_registers,
    encode_bytes,
    encode_registers,
    from_engineering,
    integer_range,
    register_count,
    to_engineering,
)

INTEGER_TYPES = [DataType.INT16, DataType.UINT16, DataType.INT32, DataType.UINT32]
FLOAT_TYPES = [DataType.FLOAT32, DataType.FLOAT64]
NUMERIC_TYPES = INTEGER_TYPES + FLOAT_TYPES
ORDERS = list(WordOrder)


def _tag(dt: DataType, scale: float = 1.0, offset: float = 0.0) -> Tag:
    return Tag("t", Address(Area.HOLDING, 0), dt, scale=scale, offset=offset)


def _values(dt: DataType) -> st.SearchStrategy[int | float]:
    if dt in INTEGER_TYPES:
        lo, hi = integer_range(dt)
        return st.integers(lo, hi)
    return st.floats(allow_nan=False, width=32 if dt is DataType.FLOAT32 else 64)


def _bits(value: float, dt: DataType) -> bytes:
    return struct.pack(">f" if dt is DataType.FLOAT32 else ">d", value)


# --- sizes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dt", "registers", "size"),
    [
        (DataType.BOOL, 1, 1),
        (DataType.INT16, 1, 2),
        (DataType.UINT16, 1, 2),
        (DataType.INT32, 2, 4),
        (DataType.UINT32, 2, 4),
        (DataType.FLOAT32, 2, 4),
        (DataType.FLOAT64, 4, 8),
    ],
)
def test_register_count_and_byte_size(dt: DataType, registers: int, size: int) -> None:
    assert register_count(dt) == registers
    assert byte_size(dt) == size


def test_integer_ranges() -> None:
    assert integer_range(DataType.INT16) == (-32768, 32767)
    assert integer_range(DataType.UINT16) == (0, 65535)
    assert integer_range(DataType.INT32) == (-(2**31), 2**31 - 1)
    assert integer_range(DataType.UINT32) == (0, 2**32 - 1)
    with pytest.raises(ValueError):
        integer_range(DataType.FLOAT32)


# --- REFERENCE 4.4 -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("order", "registers"),
    [
        (WordOrder.ABCD, [0x449A, 0x5000]),
        (WordOrder.CDAB, [0x5000, 0x449A]),
        (WordOrder.BADC, [0x9A44, 0x0050]),
        (WordOrder.DCBA, [0x0050, 0x9A44]),
    ],
)
def test_reference_float32_1234_5_in_every_word_order(
    order: WordOrder, registers: list[int]
) -> None:
    assert encode_registers(1234.5, DataType.FLOAT32, order) == registers
    assert decode_registers(registers, DataType.FLOAT32, order) == 1234.5


@pytest.mark.parametrize(
    ("order", "registers"),
    [
        (WordOrder.ABCD, [0x0102, 0x0304]),
        (WordOrder.CDAB, [0x0304, 0x0102]),
        (WordOrder.BADC, [0x0201, 0x0403]),
        (WordOrder.DCBA, [0x0403, 0x0201]),
    ],
)
def test_uint32_follows_the_same_orders(order: WordOrder, registers: list[int]) -> None:
    assert encode_registers(0x01020304, DataType.UINT32, order) == registers
    assert decode_registers(registers, DataType.UINT32, order) == 0x01020304


@pytest.mark.parametrize(
    ("order", "registers"),
    [
        (WordOrder.ABCD, [0x0102, 0x0304, 0x0506, 0x0708]),
        (WordOrder.CDAB, [0x0708, 0x0506, 0x0304, 0x0102]),  # the four words reversed
        (WordOrder.BADC, [0x0201, 0x0403, 0x0605, 0x0807]),
        (WordOrder.DCBA, [0x0807, 0x0605, 0x0403, 0x0201]),
    ],
)
def test_float64_uses_four_registers_with_the_same_idea(
    order: WordOrder, registers: list[int]
) -> None:
    value = struct.unpack(">d", bytes(range(1, 9)))[0]
    assert encode_registers(value, DataType.FLOAT64, order) == registers
    assert decode_registers(registers, DataType.FLOAT64, order) == value


@pytest.mark.parametrize(
    ("order", "register"),
    [
        (WordOrder.ABCD, 0x1234),
        (WordOrder.CDAB, 0x1234),
        (WordOrder.BADC, 0x3412),
        (WordOrder.DCBA, 0x3412),
    ],
)
def test_16_bit_values_only_see_the_byte_swap(order: WordOrder, register: int) -> None:
    assert encode_registers(0x1234, DataType.UINT16, order) == [register]
    assert decode_registers([register], DataType.UINT16, order) == 0x1234


def test_int16_is_signed() -> None:
    assert decode_registers([0xFFFE], DataType.INT16, WordOrder.ABCD) == -2
    assert encode_registers(-2, DataType.INT16, WordOrder.ABCD) == [0xFFFE]


def test_bool_is_one_coil_bit() -> None:
    assert encode_registers(True, DataType.BOOL, WordOrder.ABCD) == [1]
    assert encode_registers(False, DataType.BOOL, WordOrder.ABCD) == [0]
    assert decode_registers([1], DataType.BOOL, WordOrder.ABCD) is True
    assert decode_registers([0], DataType.BOOL, WordOrder.ABCD) is False


# --- round trips ---------------------------------------------------------------------


@given(data=st.data(), dt=st.sampled_from(NUMERIC_TYPES), order=st.sampled_from(ORDERS))
def test_encode_then_decode_registers_returns_the_value(
    data: st.DataObject, dt: DataType, order: WordOrder
) -> None:
    value = data.draw(_values(dt))
    registers = encode_registers(value, dt, order)
    assert len(registers) == register_count(dt)
    assert all(0 <= r <= 0xFFFF for r in registers)
    decoded = decode_registers(registers, dt, order)
    if dt in FLOAT_TYPES:
        assert _bits(decoded, dt) == _bits(value, dt)  # bit-exact, keeps -0.0
    else:
        assert decoded == value


@given(data=st.data(), dt=st.sampled_from(NUMERIC_TYPES), order=st.sampled_from(ORDERS))
def test_decode_then_encode_registers_is_bit_exact(
    data: st.DataObject, dt: DataType, order: WordOrder
) -> None:
    registers = data.draw(
        st.lists(st.integers(0, 0xFFFF), min_size=register_count(dt), max_size=register_count(dt))
    )
    value = decode_registers(registers, dt, order)
    if isinstance(value, float) and math.isnan(value):
        return  # NaN payloads are not guaranteed to survive the float conversions
    assert encode_registers(value, dt, order) == registers


@given(dt=st.sampled_from(NUMERIC_TYPES), order=st.sampled_from(ORDERS))
def test_same_order_twice_is_identity_on_the_wire(dt: DataType, order: WordOrder) -> None:
    """Applying a word order's byte permutation twice gives back the original registers."""
    abcd = [0x0102, 0x0304, 0x0506, 0x0708][: register_count(dt)]
    value = decode_registers(abcd, dt, WordOrder.ABCD)
    swapped = encode_registers(value, dt, order)
    twice = encode_registers(decode_registers(swapped, dt, WordOrder.ABCD), dt, order)
    assert twice == abcd


def test_nan_survives_as_nan() -> None:
    for dt in FLOAT_TYPES:
        for order in ORDERS:
            assert math.isnan(decode_registers(encode_registers(math.nan, dt, order), dt, order))


# --- rejections ----------------------------------------------------------------------


def test_wrong_register_count_is_rejected() -> None:
    with pytest.raises(ValueError, match="needs 2 register"):
        decode_registers([1], DataType.FLOAT32, WordOrder.ABCD)


def test_register_values_must_be_16_bit() -> None:
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        decode_registers([0x10000], DataType.UINT16, WordOrder.ABCD)


@pytest.mark.parametrize("dt", INTEGER_TYPES)
def test_integers_out_of_range_are_rejected(dt: DataType) -> None:
    lo, hi = integer_range(dt)
    for bad in (lo - 1, hi + 1):
        with pytest.raises(ValueError, match="out of range"):
            encode_registers(bad, dt, WordOrder.ABCD)
        with pytest.raises(ValueError, match="out of range"):
            encode_bytes(bad, dt)


def test_float_into_integer_type_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        encode_registers(1.5, DataType.INT32, WordOrder.ABCD)


def test_float32_overflow_is_rejected() -> None:
    with pytest.raises(ValueError, match="out of range"):
        encode_registers(1e39, DataType.FLOAT32, WordOrder.ABCD)


# --- S7 bytes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "dt", "raw"),
    [
        (1234.5, DataType.FLOAT32, b"\x44\x9a\x50\x00"),
        (-2, DataType.INT16, b"\xff\xfe"),
        (0xFFFE, DataType.UINT16, b"\xff\xfe"),
        (-2, DataType.INT32, b"\xff\xff\xff\xfe"),
        (0x01020304, DataType.UINT32, b"\x01\x02\x03\x04"),
        (1.0, DataType.FLOAT64, b"\x3f\xf0\x00\x00\x00\x00\x00\x00"),
    ],
)
def test_s7_values_are_big_endian(value: float, dt: DataType, raw: bytes) -> None:
    assert encode_bytes(value, dt) == raw
    assert decode_bytes(raw, dt) == value


@given(data=st.data(), dt=st.sampled_from(NUMERIC_TYPES))
def test_s7_encode_then_decode_returns_the_value(data: st.DataObject, dt: DataType) -> None:
    value = data.draw(_values(dt))
    raw = encode_bytes(value, dt)
    assert len(raw) == byte_size(dt)
    decoded = decode_bytes(raw, dt)
    if dt in FLOAT_TYPES:
        assert _bits(decoded, dt) == _bits(value, dt)
    else:
        assert decoded == value


@given(byte=st.integers(0, 255), bit=st.integers(0, 7))
def test_s7_bool_reads_one_bit_of_a_byte(byte: int, bit: int) -> None:
    assert decode_bytes(bytes([byte]), DataType.BOOL, bit) is bool(byte >> bit & 1)


@given(value=st.booleans(), bit=st.integers(0, 7))
def test_s7_bool_encodes_only_its_bit(value: bool, bit: int) -> None:
    raw = encode_bytes(value, DataType.BOOL, bit)
    assert raw == bytes([int(value) << bit])
    assert decode_bytes(raw, DataType.BOOL, bit) is value


def test_s7_bool_needs_a_bit_and_wrong_lengths_are_rejected() -> None:
    with pytest.raises(ValueError, match="bit"):
        decode_bytes(b"\x01", DataType.BOOL)
    with pytest.raises(ValueError, match="bit"):
        encode_bytes(True, DataType.BOOL, 8)
    with pytest.raises(ValueError, match="needs 4 byte"):
        decode_bytes(b"\x00\x00", DataType.FLOAT32)


def test_s7_codec_agrees_with_snap7_util() -> None:
    util = pytest.importorskip("snap7.util")
    buf = bytearray(encode_bytes(1234.5, DataType.FLOAT32) + encode_bytes(-7, DataType.INT16))
    assert util.get_real(buf, 0) == 1234.5
    assert util.get_int(buf, 4) == -7
    flags = bytearray(1)
    util.set_bool(flags, 0, 5, True)
    assert decode_bytes(bytes(flags), DataType.BOOL, 5) is True
    assert decode_bytes(bytes(flags), DataType.BOOL, 4) is False


# --- engineering units ---------------------------------------------------------------


def test_to_engineering_applies_scale_then_offset() -> None:
    assert to_engineering(1000, _tag(DataType.UINT16, scale=0.1, offset=-10.0)) == 90.0
    assert to_engineering(7, _tag(DataType.INT16)) == 7.0


def test_bools_are_never_scaled() -> None:
    tag = _tag(DataType.BOOL, scale=10.0, offset=3.0)
    assert to_engineering(True, tag) is True
    assert from_engineering(False, tag) is False


SCALES = st.sampled_from([1.0, 0.1, 0.01, 0.5, 2.5, 10.0, -1.0])
OFFSETS = st.sampled_from([0.0, -273.15, 100.0, 0.5])


@given(data=st.data(), dt=st.sampled_from(INTEGER_TYPES), scale=SCALES, offset=OFFSETS)
def test_integer_scale_offset_round_trip(
    data: st.DataObject, dt: DataType, scale: float, offset: float
) -> None:
    raw = data.draw(_values(dt))
    tag = _tag(dt, scale, offset)
    assert from_engineering(to_engineering(raw, tag), tag) == raw


@given(raw=st.floats(-1e6, 1e6), scale=SCALES, offset=OFFSETS)
def test_float_scale_offset_round_trip(raw: float, scale: float, offset: float) -> None:
    tag = _tag(DataType.FLOAT64, scale, offset)
    back = from_engineering(to_engineering(raw, tag), tag)
    assert back == pytest.approx(raw, rel=1e-9, abs=1e-6)


def test_from_engineering_rounds_to_the_nearest_integer() -> None:
    tag = _tag(DataType.UINT16, scale=0.1)
    assert from_engineering(12.34, tag) == 123
    assert from_engineering(12.36, tag) == 124


def test_from_engineering_raises_instead_of_clamping() -> None:
    with pytest.raises(ValueError, match="outside uint16"):
        from_engineering(-0.1, _tag(DataType.UINT16, scale=0.1))
    with pytest.raises(ValueError, match="outside int16"):
        from_engineering(3276.8, _tag(DataType.INT16, scale=0.1))
    with pytest.raises(ValueError, match="non-finite"):
        from_engineering(math.nan, _tag(DataType.INT32))
    with pytest.raises(ValueError, match="out of range"):
        from_engineering(1e39, _tag(DataType.FLOAT32))
    with pytest.raises(ValueError, match="scale 0"):
        from_engineering(1.0, _tag(DataType.FLOAT32, scale=0.0))
