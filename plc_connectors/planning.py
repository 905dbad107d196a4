"""Poll planning: cover a PLC's tags with the fewest block reads (REFERENCE 4.1, 5.1).

A block never exceeds the request limit and never bridges a hole of more than `max_gap`
unmapped units (registers/bits/bytes no tag covers): devices may reject such reads
(Modbus exception 02), so large gaps always split.
"""

from __future__ import annotations

import operator
import struct
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from plc_connectors.addresses import MODBUS_AREAS, format_address, tag_span
from plc_connectors.codecs import byte_size, struct_code
from plc_connectors.errors import PlcProtocolError, TagConfigError
from plc_connectors.model import Area, DataType, Tag, WordOrder

MODBUS_MAX_REGISTERS = 125
MODBUS_MAX_BITS = 2000
MODBUS_MAX_GAP = 8
S7_MAX_BYTES = 462  # 480-byte PDU minus 18 bytes of header
S7_MAX_GAP = 32

_AREA_ORDER = {area: i for i, area in enumerate(Area)}
_Span = tuple[int, int, Tag]  # start, stop, tag
_LimitOf = Callable[[Area], int]


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One request: `count` registers (hr/ir), bits (co/di) or bytes (DB `db`) from `start`."""

    area: Area
    start: int
    count: int
    tags: tuple[Tag, ...]
    db: int | None = None


def plan_modbus(
    tags: Iterable[Tag],
    *,
    max_registers: int = MODBUS_MAX_REGISTERS,
    max_bits: int = MODBUS_MAX_BITS,
    max_gap: int = MODBUS_MAX_GAP,
) -> list[ReadBlock]:
    """Fewest reads covering `tags`, per table; `max_gap` is in the table's unit."""
    tags = list(tags)
    for tag in tags:
        if tag.address.area not in MODBUS_AREAS:
            raise TagConfigError(f"{tag.name}: {format_address(tag.address)} is not Modbus")
    return _plan(tags, lambda area: _modbus_limit(area, max_registers, max_bits), max_gap)


def plan_s7(
    tags: Iterable[Tag], *, max_bytes: int = S7_MAX_BYTES, max_gap: int = S7_MAX_GAP
) -> list[ReadBlock]:
    """Fewest `db_read`s covering `tags`, per DB; counts and gaps in bytes."""
    tags = list(tags)
    for tag in tags:
        if tag.address.area is not Area.DB:
            raise TagConfigError(f"{tag.name}: {format_address(tag.address)} is not S7")
    return _plan(tags, lambda _area: max_bytes, max_gap)


def minimum_reads(
    tags: Iterable[Tag],
    *,
    max_registers: int = MODBUS_MAX_REGISTERS,
    max_bits: int = MODBUS_MAX_BITS,
    max_bytes: int = S7_MAX_BYTES,
    max_gap: int | None = None,
) -> int:
    """The least number of reads any plan needs under the same limits and gap rule
    (`max_gap` None: 8 for Modbus tables, 32 for DBs).

    Greedy interval covering is optimal here: some read must cover the uncovered tag with
    the lowest start s; a read anchored at s reaching as far as the limit and the gap rule
    allow covers every uncovered tag that any such read could, so taking it never costs
    a read. `plan_*` use the same greedy, so their length equals this; the tests check
    it against brute force on small layouts.
    """
    total = 0
    for (area, _db), spans in _groups(list(tags)).items():
        is_db = area is Area.DB
        limit = max_bytes if is_db else _modbus_limit(area, max_registers, max_bits)
        gap = max_gap if max_gap is not None else (S7_MAX_GAP if is_db else MODBUS_MAX_GAP)
        total += sum(len(_cover(cluster, limit)) for cluster in _clusters(spans, gap))
    return total


BlockDecoder = Callable[[Sequence[int] | bytes], dict[str, float | bool]]
# Writes the engineering value of every tag of one block into the dict it is given.
BlockReader = Callable[[Sequence[int] | bytes, dict[str, float | bool]], None]


def decode_block(block: ReadBlock, data: Sequence[int] | bytes) -> dict[str, float | bool]:
    """Engineering value of every tag in `block` from the data read for it (registers for
    hr/ir, bits for co/di, bytes for a DB). Data longer than `count` is fine (coil reads
    come back rounded up to whole bytes); shorter is a PlcProtocolError.

    Compiles the block each call: pollers keep `block_reader(block)` instead.
    """
    return block_decoder(block)(data)


def block_decoder(block: ReadBlock) -> BlockDecoder:
    """`decode_block` for one block, compiled once (see `block_reader`)."""
    read = block_reader(block)

    def decode(data: Sequence[int] | bytes) -> dict[str, float | bool]:
        values: dict[str, float | bool] = {}
        read(data, values)
        return values

    return decode


def block_reader(block: ReadBlock, *, wire: bool = False) -> BlockReader:
    """`decode_block` for one block, compiled once, writing into a dict the caller owns
    (a link fills one dict per poll from all its blocks, with no dict per block).
    `wire`: a register block's data is the register bytes as sent (two per register,
    big-endian), not a list of registers, so nothing is packed per read.

    Compiled: the block's numbers come out of one or two `struct` unpacks (every word
    order is a plain big- or little-endian read of the wire bytes or of the wire bytes
    with each register's two bytes swapped, so no per-tag permutation), scale and offset
    are applied from flat tuples, and the values go into the dict in the block's tag
    order. Links build these when they plan, so the hot path never hashes a block (a
    ReadBlock hashes every one of its tags)."""
    wire = wire and block.area in (Area.HOLDING, Area.INPUT)
    decode = _compile(block, wire)
    count, start = block.count, block.start
    per_unit = 2 if wire else 1  # data items (bytes or registers/bits) per unit
    need = count * per_unit
    at = f"DB{block.db}.DBB" if block.db is not None else f"{block.area.value}:"

    def checked(data: Sequence[int] | bytes, into: dict[str, float | bool]) -> None:
        if len(data) < need:
            raise PlcProtocolError(
                f"short read at {at}{start}: got {len(data) // per_unit} of {count} units",
                retryable=True,
            )
        decode(data, into)

    return checked


_BUFFERS = (bytes, bytearray)
assert array("H").itemsize == 2  # the register-swapped copy is made with array("H")
_Picker = Callable[[Sequence[Any]], Sequence[Any]]


def _picker(positions: Sequence[int]) -> _Picker:
    """The items at `positions`, as one sequence (itemgetter returns a bare item for one)."""
    if len(positions) == 1:
        (only,) = positions
        return lambda seq: (seq[only],)
    return operator.itemgetter(*positions)


@dataclass(frozen=True, slots=True)
class _Field:
    index: int  # the tag's position in block.tags
    at: int  # byte offset in the decode buffer
    code: str  # struct code
    size: int  # bytes


def _lanes(fields: list[_Field]) -> list[list[_Field]]:
    """Fields in runs of non-overlapping ones by offset, each run one `struct` format
    (tags may share bytes: a plan can hold overlapping tags)."""
    lanes: list[list[_Field]] = []
    for f in sorted(fields, key=lambda f: (f.at, f.index)):
        for lane in lanes:
            last = lane[-1]
            if last.at + last.size <= f.at:
                lane.append(f)
                break
        else:
            lanes.append([f])
    return lanes


def _lane_struct(endian: str, lane: list[_Field]) -> tuple[struct.Struct, int]:
    """One format for a run of fields (pad bytes between them) and where it starts."""
    parts, cursor = [], lane[0].at
    for f in lane:
        if f.at > cursor:
            parts.append(f"{f.at - cursor}x")
        parts.append(f.code)
        cursor = f.at + f.size
    return struct.Struct(endian + "".join(parts)), lane[0].at


def _compile(block: ReadBlock, wire: bool) -> BlockReader:
    """The unchecked reader of one read of `block` (`wire`: register bytes as sent)."""
    names = tuple(tag.name for tag in block.tags)
    if block.area in (Area.COIL, Area.DISCRETE):
        bits = _picker([tag_span(tag)[0] - block.start for tag in block.tags])

        def read_bits(data: Sequence[int] | bytes, into: dict[str, float | bool]) -> None:
            into.update(zip(names, map(bool, bits(data))))  # noqa: B905 (hot path; lengths match by construction)

        return read_bits

    is_db = block.area is Area.DB
    unit = 1 if is_db else 2  # bytes per addressing unit
    wire_bytes = block.count * unit
    # Wire bytes in `order` -> a plain read: ABCD big-endian; DCBA little-endian; BADC
    # big-endian and CDAB little-endian of the copy with each register's bytes swapped
    # (for 16-bit values CDAB is ABCD and DCBA is BADC, which the same reads give).
    reads = {
        WordOrder.ABCD: (">", False),
        WordOrder.DCBA: ("<", False),
        WordOrder.BADC: (">", True),
        WordOrder.CDAB: ("<", True),
    }
    by_endian: dict[str, list[_Field]] = {">": [], "<": []}
    flags: list[tuple[int, int, int]] = []  # (tag index, byte offset, bit)
    scales: list[float] = []
    offsets: list[float] = []
    swapped_needed = False
    for index, tag in enumerate(block.tags):
        at = (tag_span(tag)[0] - block.start) * unit
        if tag.data_type is DataType.BOOL:
            flags.append((index, at, tag.address.bit or 0))
            continue
        endian, swapped = reads[WordOrder.ABCD if is_db else tag.word_order]
        swapped_needed |= swapped
        at_buf = at + wire_bytes if swapped else at  # the swapped copy follows the wire bytes
        size = byte_size(tag.data_type)
        by_endian[endian].append(_Field(index, at_buf, struct_code(tag.data_type), size))
    lanes = [
        (_lane_struct(endian, lane), lane)
        for endian in (">", "<")
        for lane in _lanes(by_endian[endian])
    ]
    order: list[int] = []  # tag index of each value, in the order the reads give them
    for _, lane in lanes:
        for f in lane:
            order.append(f.index)
            tag = block.tags[f.index]
            scales.append(tag.scale)
            offsets.append(tag.offset)
    order.extend(index for index, _, _ in flags)
    unpacks = tuple((layout.unpack_from, first) for (layout, first), _ in lanes)
    scale_of, offset_of = tuple(scales), tuple(offsets)
    bit_at = tuple((at, bit) for _, at, bit in flags)
    # values come out in `order`; the dict gets them in tag order
    position = {index: i for i, index in enumerate(order)}
    in_tag_order = None
    if order != sorted(order):
        in_tag_order = _picker([position[i] for i in range(len(names))])
    registers = struct.Struct(f">{block.count}H")
    count = block.count

    def read_words(data: Sequence[int] | bytes, into: dict[str, float | bool]) -> None:
        buf: bytes | bytearray
        if is_db:
            buf = data if isinstance(data, _BUFFERS) else bytes(data)
        elif wire:
            buf = bytes(data[:wire_bytes])  # a no-op for bytes of exactly the block
        else:
            try:
                buf = registers.pack(*(data if len(data) == count else data[:count]))
            except struct.error as exc:
                raise PlcProtocolError(
                    f"register value out of range: {exc}", retryable=True
                ) from exc
        if swapped_needed:  # the same registers with their two bytes swapped, after them
            swapped = array("H")
            swapped.frombytes(buf)
            swapped.byteswap()
            buf = buf + swapped.tobytes()
        raws: tuple[int | float, ...] = ()
        for unpack, first in unpacks:
            raws += unpack(buf, first)
        values: list[float | bool] = [
            raw * scale + offset
            for raw, scale, offset in zip(raws, scale_of, offset_of)  # noqa: B905 (as above)
        ]
        if bit_at:
            values += [bool((buf[at] >> bit) & 1) for at, bit in bit_at]
        into.update(
            zip(names, values if in_tag_order is None else in_tag_order(values))  # noqa: B905
        )

    return read_words


def _modbus_limit(area: Area, max_registers: int, max_bits: int) -> int:
    return max_bits if area in (Area.COIL, Area.DISCRETE) else max_registers


def _plan(tags: list[Tag], limit_of: _LimitOf, max_gap: int) -> list[ReadBlock]:
    names = [t.name for t in tags]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise TagConfigError(f"duplicate tag names in one plan: {', '.join(dupes)}")
    blocks: list[ReadBlock] = []
    for (area, db), spans in _groups(tags).items():
        limit = limit_of(area)
        for cluster in _clusters(spans, max_gap):
            for group in _cover(cluster, limit):
                start = group[0][0]
                stop = max(s[1] for s in group)
                blocks.append(ReadBlock(area, start, stop - start, tuple(s[2] for s in group), db))
    return blocks


def _groups(tags: list[Tag]) -> dict[tuple[Area, int | None], list[_Span]]:
    """Spans per table/DB sorted by (start, stop), tables in Area order then by DB number."""
    groups: dict[tuple[Area, int | None], list[_Span]] = {}
    for tag in tags:
        start, stop = tag_span(tag)
        groups.setdefault((tag.address.area, tag.address.db), []).append((start, stop, tag))
    for spans in groups.values():
        spans.sort(key=lambda s: (s[0], s[1]))
    return dict(sorted(groups.items(), key=lambda kv: (_AREA_ORDER[kv[0][0]], kv[0][1] or 0)))


def _clusters(spans: list[_Span], max_gap: int) -> Iterator[list[_Span]]:
    """Split sorted spans where more than `max_gap` units lie between them (unbridgeable)."""
    cluster: list[_Span] = []
    reach = 0
    for span in spans:
        if cluster and span[0] - reach > max_gap:
            yield cluster
            cluster = []
        reach = max(reach, span[1]) if cluster else span[1]
        cluster.append(span)
    if cluster:
        yield cluster


def _cover(cluster: list[_Span], limit: int) -> list[list[_Span]]:
    """Greedy: anchor a read at the lowest uncovered start, take every tag ending within
    `limit` of it, repeat. Each group lies inside one cluster, so it bridges no big gap."""
    groups: list[list[_Span]] = []
    pending = cluster
    while pending:
        end = pending[0][0] + limit
        if pending[0][1] > end:
            tag = pending[0][2]
            raise TagConfigError(
                f"{tag.name}: {format_address(tag.address)} {tag.data_type} is longer "
                f"than one read ({limit})"
            )
        groups.append([s for s in pending if s[1] <= end])
        pending = [s for s in pending if s[1] > end]
    return groups
