"""Raw PLC words/bytes <-> typed values <-> engineering units, table-driven with `struct`.

pymodbus' `convert_from_registers` cannot do byte-swapped orders (BADC/DCBA) nor
several values per block, so every decode goes through the tables here (REFERENCE 4.4).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from plc_connectors.model import DataType, Tag, WordOrder


@dataclass(frozen=True, slots=True)
class _Layout:
    code: str  # big-endian struct code
    size: int  # bytes (S7 width; 2 * registers on Modbus)
    registers: int  # Modbus registers (bool: one coil/discrete bit)


_LAYOUTS: dict[DataType, _Layout] = {
    DataType.BOOL: _Layout("?", 1, 1),
    DataType.INT16: _Layout("h", 2, 1),
    DataType.UINT16: _Layout("H", 2, 1),
    DataType.INT32: _Layout("i", 4, 2),
    DataType.UINT32: _Layout("I", 4, 2),
    DataType.FLOAT32: _Layout("f", 4, 2),
    DataType.FLOAT64: _Layout("d", 8, 4),
}
_INTEGER_TYPES = frozenset({DataType.INT16, DataType.UINT16, DataType.INT32, DataType.UINT32})
_FLOAT_TYPES = frozenset({DataType.FLOAT32, DataType.FLOAT64})


def _permutation(order: WordOrder, size: int) -> tuple[int, ...]:
    """Wire position i holds big-endian byte perm[i]: CDAB reverses words, BADC swaps bytes."""
    words = [[i, i + 1] for i in range(0, size, 2)]
    if order in (WordOrder.CDAB, WordOrder.DCBA):
        words.reverse()
    if order in (WordOrder.BADC, WordOrder.DCBA):
        words = [[hi_lo[1], hi_lo[0]] for hi_lo in words]
    return tuple(i for word in words for i in word)


# Word order -> byte permutation per value size. Each is its own inverse (tested).
_PERMUTATIONS: dict[tuple[WordOrder, int], tuple[int, ...]] = {
    (order, size): _permutation(order, size) for order in WordOrder for size in (2, 4, 8)
}


def register_count(dt: DataType) -> int:
    """Modbus registers a value occupies (bool: one coil/discrete-input bit)."""
    return _LAYOUTS[dt].registers


def byte_size(dt: DataType) -> int:
    """S7 bytes a value occupies (bool: the one byte holding its bit)."""
    return _LAYOUTS[dt].size


def integer_range(dt: DataType) -> tuple[int, int]:
    """Inclusive (min, max) of an integer type; ValueError for bool/float types."""
    if dt not in _INTEGER_TYPES:
        raise ValueError(f"{dt} is not an integer type")
    bits = 8 * _LAYOUTS[dt].size
    if _LAYOUTS[dt].code.islower():  # signed struct codes are lower case
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _pack(value: int | float, dt: DataType) -> bytes:
    """Big-endian bytes of a numeric value; ValueError when it does not fit the type."""
    if dt in _INTEGER_TYPES:
        if not isinstance(value, int):
            raise TypeError(f"{dt} needs an int, got {type(value).__name__}")
        lo, hi = integer_range(dt)
        if not lo <= value <= hi:
            raise ValueError(f"{value} out of range for {dt} ({lo}..{hi})")
        return struct.pack(">" + _LAYOUTS[dt].code, value)
    try:
        return struct.pack(">" + _LAYOUTS[dt].code, float(value))
    except OverflowError as exc:
        raise ValueError(f"{value} out of range for {dt}") from exc


def struct_code(dt: DataType) -> str:
    """The big-endian `struct` code of a data type ('f' for float32, 'I' for uint32 ...)."""
    return _LAYOUTS[dt].code


def byte_permutation(order: WordOrder, size: int) -> tuple[int, ...]:
    """Wire byte index for each big-endian byte of a `size`-byte value in `order`
    (its own inverse: the same table encodes and decodes)."""
    return _PERMUTATIONS[(order, size)]


def decode_registers(regs: Sequence[int], dt: DataType, order: WordOrder) -> int | float:
    """Registers as read (wire order) -> value. For bool, `regs` is the one coil/input bit."""
    layout = _LAYOUTS[dt]
    if len(regs) != layout.registers:
        raise ValueError(f"{dt} needs {layout.registers} register(s), got {len(regs)}")
    if dt is DataType.BOOL:
        return bool(regs[0])
    if any(not 0 <= r <= 0xFFFF for r in regs):
        raise ValueError(f"register values must be 0..65535, got {list(regs)}")
    wire = struct.pack(f">{len(regs)}H", *regs)
    perm = _PERMUTATIONS[(order, layout.size)]
    value: int | float = struct.unpack(">" + layout.code, bytes(wire[i] for i in perm))[0]
    return value


def encode_registers(value: int | float | bool, dt: DataType, order: WordOrder) -> list[int]:
    """Value -> registers to write (wire order). For bool, one coil bit [0] or [1]."""
    if dt is DataType.BOOL:
        return [int(bool(value))]
    layout = _LAYOUTS[dt]
    big_endian = _pack(value, dt)
    wire = bytes(big_endian[i] for i in _PERMUTATIONS[(order, layout.size)])
    return list(struct.unpack(f">{layout.registers}H", wire))


def decode_bytes(buf: bytes | bytearray, dt: DataType, bit: int | None = None) -> int | float:
    """S7 bytes (big-endian, exactly `byte_size(dt)`) -> value; bool reads `bit` of one byte."""
    layout = _LAYOUTS[dt]
    if len(buf) != layout.size:
        raise ValueError(f"{dt} needs {layout.size} byte(s), got {len(buf)}")
    if dt is DataType.BOOL:
        if bit is None or not 0 <= bit <= 7:
            raise ValueError(f"bool needs a bit 0..7, got {bit}")
        return bool((buf[0] >> bit) & 1)
    value: int | float = struct.unpack(">" + layout.code, buf)[0]
    return value


def encode_bytes(value: int | float | bool, dt: DataType, bit: int | None = None) -> bytes:
    """Value -> S7 bytes (big-endian). A bool gives a byte with only `bit` possibly set:
    writers must merge it into the current byte (read-modify-write) or write the bit alone."""
    if dt is DataType.BOOL:
        if bit is None or not 0 <= bit <= 7:
            raise ValueError(f"bool needs a bit 0..7, got {bit}")
        return bytes([int(bool(value)) << bit])
    return _pack(value, dt)


def to_engineering(raw: int | float | bool, tag: Tag) -> float | bool:
    """Raw PLC value -> engineering units: raw * scale + offset (bools pass unscaled)."""
    if tag.data_type is DataType.BOOL:
        return bool(raw)
    return float(raw) * tag.scale + tag.offset


def from_engineering(value: float | bool, tag: Tag) -> int | float | bool:
    """Engineering value -> raw value to write: (value - offset) / scale, rounded to the
    nearest int for integer types. Raises ValueError when the result does not fit the type
    (never clamps: writing a clamped setpoint would be silently wrong)."""
    dt = tag.data_type
    if dt is DataType.BOOL:
        return bool(value)
    if tag.scale == 0:
        raise ValueError(f"{tag.name}: scale 0 cannot be inverted")
    raw = (float(value) - tag.offset) / tag.scale
    if dt in _FLOAT_TYPES:
        _pack(raw, dt)  # raises ValueError on float32 overflow
        return raw
    if not math.isfinite(raw):
        raise ValueError(f"{tag.name}: {value} gives non-finite raw value for {dt}")
    rounded = round(raw)
    lo, hi = integer_range(dt)
    if not lo <= rounded <= hi:
        raise ValueError(f"{tag.name}: {value} gives raw {rounded}, outside {dt} ({lo}..{hi})")
    return rounded
