"""Tag address syntax (SPEC 3) and the rules that decide whether a tag can work at all.

Checked once at config load so a bad tag is a config error naming the problem, not a
Modbus exception 02 or a garbled value at run time.
"""

from __future__ import annotations

import math
import re

from plc_connectors.codecs import byte_size, register_count
from plc_connectors.errors import TagConfigError
from plc_connectors.model import Address, Area, DataType, PlcProtocol, Tag, WordOrder

EXPECTED = "expected hr:N, ir:N, co:N, di:N or DB<n>.DBX<o>.<bit>/DBB/DBW/DBD<o>"
ADDRESS_SPACE = 65536  # Modbus registers/bits per table; bytes of a non-optimized S7 DB

MODBUS_AREAS = frozenset({Area.HOLDING, Area.INPUT, Area.COIL, Area.DISCRETE})
_BIT_AREAS = frozenset({Area.COIL, Area.DISCRETE})
_MODBUS_RE = re.compile(r"(hr|ir|co|di):(\d{1,10})", re.IGNORECASE | re.ASCII)
_S7_RE = re.compile(
    r"db(\d{1,10})\.db([xbwd])(\d{1,10})(?:\.(\d{1,10}))?", re.IGNORECASE | re.ASCII
)
_S7_WIDTHS = {"x": 1, "b": 1, "w": 2, "d": 4}
_WIDTH_LETTER = {2: "W", 4: "D", 8: "D"}  # 8: an LREAL is spelled DBD<o> (see validate_tag)
# S7 address kind -> data types whose size matches it (SPEC 3 types; DBB fits none).
_S7_TYPES: dict[str, frozenset[DataType]] = {
    "DBX": frozenset({DataType.BOOL}),
    "DBB": frozenset(),
    "DBW": frozenset({DataType.INT16, DataType.UINT16}),
    "DBD": frozenset({DataType.INT32, DataType.UINT32, DataType.FLOAT32, DataType.FLOAT64}),
}


def parse_address(text: str) -> Address:
    """Parse `hr:N`/`ir:N`/`co:N`/`di:N` (0-based) or `DB<n>.DBX<o>.<bit>`, `DB<n>.DBB<o>`,
    `DB<n>.DBW<o>`, `DB<n>.DBD<o>` (case-insensitive); TagConfigError on anything else."""
    stripped = text.strip()
    if m := _MODBUS_RE.fullmatch(stripped):
        address = Address(Area(m[1].lower()), int(m[2]))
    elif m := _S7_RE.fullmatch(stripped):
        kind = m[2].lower()
        if (kind == "x") != (m[4] is not None):
            raise TagConfigError(
                f"bad address {text!r}: DBX needs a bit (DB<n>.DBX<o>.<bit>), DBB/DBW/DBD none"
            )
        bit = int(m[4]) if m[4] is not None else None
        address = Address(Area.DB, int(m[3]), db=int(m[1]), bit=bit, width=_S7_WIDTHS[kind])
    else:
        raise TagConfigError(f"bad address {text!r}: {EXPECTED}")
    _check_address(address, text)
    return address


def format_address(address: Address) -> str:
    """The config spelling of an address; `parse_address(format_address(a)) == a` for parsed
    addresses (an 8-byte width is spelled DBD, as in the config)."""
    if address.area in MODBUS_AREAS:
        return f"{address.area.value}:{address.index}"
    if address.db is None:
        raise TagConfigError("S7 address without a DB number")
    if address.width == 1:
        if address.bit is None:
            return f"DB{address.db}.DBB{address.index}"
        return f"DB{address.db}.DBX{address.index}.{address.bit}"
    if address.width in _WIDTH_LETTER:
        return f"DB{address.db}.DB{_WIDTH_LETTER[address.width]}{address.index}"
    raise TagConfigError(f"S7 address with width {address.width}: expected 1, 2, 4 or 8")


def _s7_kind(address: Address) -> str:
    if address.width == 1:
        return "DBB" if address.bit is None else "DBX"
    return "DBW" if address.width == 2 else "DBD"


def _check_address(address: Address, text: str | None = None) -> None:
    """Ranges and field consistency, also for Addresses built in code rather than parsed."""
    shown = repr(text) if text is not None else repr(address)
    if not 0 <= address.index < ADDRESS_SPACE:
        raise TagConfigError(f"bad address {shown}: {address.index} outside 0..65535")
    if address.area in MODBUS_AREAS:
        if (address.db, address.bit, address.width) != (None, None, None):
            raise TagConfigError(f"bad address {shown}: Modbus addresses have no db/bit/width")
        return
    if address.db is None or not 1 <= address.db < ADDRESS_SPACE:
        raise TagConfigError(f"bad address {shown}: DB number {address.db} outside 1..65535")
    if address.width not in (1, 2, 4, 8):
        raise TagConfigError(f"bad address {shown}: width {address.width}, expected 1/2/4/8")
    if address.bit is not None and (address.width != 1 or not 0 <= address.bit <= 7):
        raise TagConfigError(f"bad address {shown}: bit {address.bit} outside 0..7 (DBX only)")


def tag_span(tag: Tag) -> tuple[int, int]:
    """[start, stop) the tag occupies in its area: registers (hr/ir), bits (co/di), bytes (DB).
    A DBX bit occupies its whole byte; a float64 on S7 occupies 8 bytes from its offset."""
    start = tag.address.index
    if tag.address.area is Area.DB:
        return start, start + byte_size(tag.data_type)
    if tag.address.area in _BIT_AREAS:
        return start, start + 1
    return start, start + register_count(tag.data_type)


def validate_tag(tag: Tag, protocol: str) -> None:
    """Raise TagConfigError if `tag` cannot work on a PLC speaking `protocol` ("modbus"/"s7").

    Modbus: coils/discrete inputs hold bool only; hr/ir hold any numeric type but not bool,
    and a multi-register value must end at or below register 65535.
    S7 (always big-endian, so word_order must be ABCD): the address width must equal the
    type size: DBX=bool, DBW=int16/uint16, DBD=int32/uint32/float32. float64 (LREAL) is
    written DBD<o> and means the 8 bytes from byte o. DBB (one byte) fits none of our
    types and is rejected. Bools take no scale/offset; scale must be finite and non-zero.
    """
    address, dt = tag.address, tag.data_type
    _check_address(address)
    where = f"{format_address(address)} {dt}"
    try:
        proto = PlcProtocol(protocol)
    except ValueError:
        raise TagConfigError(f"unknown protocol {protocol!r}: expected modbus or s7") from None
    if proto is PlcProtocol.MODBUS and address.area is Area.DB:
        raise TagConfigError(f"{where}: an S7 address on a Modbus PLC")
    if proto is PlcProtocol.S7 and address.area is not Area.DB:
        raise TagConfigError(f"{where}: a Modbus address on an S7 PLC")
    if not (math.isfinite(tag.scale) and math.isfinite(tag.offset)) or tag.scale == 0:
        raise TagConfigError(f"{where}: scale must be finite and non-zero, offset finite")
    if dt is DataType.BOOL and (tag.scale, tag.offset) != (1.0, 0.0):
        raise TagConfigError(f"{where}: bools take no scale/offset")
    if address.area in _BIT_AREAS and dt is not DataType.BOOL:
        raise TagConfigError(f"{where}: coils and discrete inputs hold single bits: use bool")
    if address.area in (Area.HOLDING, Area.INPUT) and dt is DataType.BOOL:
        raise TagConfigError(f"{where}: registers hold numbers: use co:/di: for bool")
    if address.area is Area.DB:
        kind = _s7_kind(address)
        if dt not in _S7_TYPES[kind] or (address.width == 8 and dt is not DataType.FLOAT64):
            fits = ", ".join(sorted(_S7_TYPES[kind])) or "none of the supported types"
            raise TagConfigError(f"{where}: {kind} fits {fits}")
        if tag.word_order is not WordOrder.ABCD:
            raise TagConfigError(f"{where}: S7 is big-endian: word_order must be ABCD")
    if tag_span(tag)[1] > ADDRESS_SPACE:
        raise TagConfigError(f"{where}: the value runs past the end of the address space")


def overlaps(a: Tag, b: Tag) -> bool:
    """True if two tags (of one PLC) share a register, bit or byte. Two DBX bits of the same
    byte overlap only when they are the same bit; hr and ir are separate tables."""
    x, y = a.address, b.address
    if x.area is not y.area or x.db != y.db:
        return False
    if x.area is Area.DB and x.bit is not None and y.bit is not None and x.index == y.index:
        return x.bit == y.bit
    (a_start, a_stop), (b_start, b_stop) = tag_span(a), tag_span(b)
    return a_start < b_stop and b_start < a_stop
