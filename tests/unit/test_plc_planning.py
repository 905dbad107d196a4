"""Poll planning: fewest reads within the limits, no big gaps bridged, every tag decoded."""

from __future__ import annotations

from collections import Counter
from itertools import count

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plc_connectors import (
    Address,
    Area,
    DataType,
    PlcProtocolError,
    ReadBlock,
    Tag,
    TagConfigError,
    WordOrder,
    block_reader,
    byte_size,
    decode_block,
    decode_registers,
    encode_bytes,
    encode_registers,
    minimum_reads,
    parse_address,
    plan_modbus,
    plan_s7,
    tag_span,
    to_engineering,
)

NUMERIC = [
    DataType.INT16,
    DataType.UINT16,
    DataType.INT32,
    DataType.UINT32,
    DataType.FLOAT32,
    DataType.FLOAT64,
]
_names = count()


def _tag(address: str, dt: DataType = DataType.UINT16, scale: float = 1.0) -> Tag:
    return Tag(f"t{next(_names)}", parse_address(address), dt, scale=scale)


def _spans(block: ReadBlock) -> list[tuple[int, int]]:
    return [tag_span(t) for t in block.tags]


# --- examples ------------------------------------------------------------------------


def test_spec_demo_modbus_tags_are_one_read() -> None:
    tags = [
        _tag("hr:0", DataType.FLOAT32),
        _tag("hr:2", DataType.FLOAT32),
        _tag("hr:10", DataType.UINT32),  # hole of 6 registers
        *(_tag(f"hr:{20 + i}") for i in range(4)),  # hole of 8 (= max_gap)
    ]
    assert plan_modbus(tags) == [ReadBlock(Area.HOLDING, 0, 24, tuple(tags))]


def test_contiguous_tags_merge_into_one_read() -> None:
    tags = [_tag(f"hr:{2 * i}", DataType.FLOAT32) for i in range(10)]
    (block,) = plan_modbus(tags)
    assert (block.start, block.count, block.tags) == (0, 20, tuple(tags))


def test_input_order_does_not_matter() -> None:
    tags = [_tag(f"ir:{i}") for i in range(10)]
    assert plan_modbus(reversed(tags)) == plan_modbus(tags)


def test_125_register_limit_splits() -> None:
    tags = [_tag(f"hr:{i}") for i in range(126)]
    blocks = plan_modbus(tags)
    assert [(b.start, b.count) for b in blocks] == [(0, 125), (125, 1)]
    floats = [_tag(f"hr:{2 * i}", DataType.FLOAT32) for i in range(63)]  # 126 registers
    assert [(b.start, b.count) for b in plan_modbus(floats)] == [(0, 124), (124, 2)]


def test_a_value_is_never_split_across_reads() -> None:
    tags = [_tag("hr:0", DataType.FLOAT32), _tag("hr:2", DataType.FLOAT64)]
    blocks = plan_modbus(tags, max_registers=5)
    assert [(b.start, b.count) for b in blocks] == [(0, 2), (2, 4)]


def test_gap_above_max_gap_splits() -> None:
    assert len(plan_modbus([_tag("hr:0"), _tag("hr:9")])) == 1  # 8 unmapped registers
    assert len(plan_modbus([_tag("hr:0"), _tag("hr:10")])) == 2  # 9 unmapped registers
    assert len(plan_modbus([_tag("hr:0"), _tag("hr:1")], max_gap=0)) == 1
    assert len(plan_modbus([_tag("hr:0"), _tag("hr:2")], max_gap=0)) == 2


def test_mixed_areas_split_in_table_order() -> None:
    tags = [
        _tag("di:0", DataType.BOOL),
        _tag("co:0", DataType.BOOL),
        _tag("ir:0"),
        _tag("hr:0"),
    ]
    blocks = plan_modbus(tags)
    assert [b.area for b in blocks] == [Area.HOLDING, Area.INPUT, Area.COIL, Area.DISCRETE]
    assert all(b.count == 1 and b.db is None for b in blocks)


def test_coils_merge_up_to_2000_bits() -> None:
    coils = [_tag(f"co:{i}", DataType.BOOL) for i in range(0, 2001, 5)]
    assert [(b.start, b.count) for b in plan_modbus(coils)] == [(0, 1996), (2000, 1)]


def test_s7_plans_per_db_in_bytes() -> None:
    tags = [
        _tag("DB1.DBD0", DataType.FLOAT32),
        _tag("DB1.DBD4", DataType.FLOAT32),
        _tag("DB2.DBW0", DataType.INT16),
        _tag("DB1.DBX8.0", DataType.BOOL),
        _tag("DB1.DBX8.7", DataType.BOOL),
    ]
    blocks = plan_s7(tags)
    assert [(b.db, b.start, b.count, len(b.tags)) for b in blocks] == [(1, 0, 9, 4), (2, 0, 2, 1)]
    assert all(b.area is Area.DB for b in blocks)


def test_s7_limits_and_gaps() -> None:
    far = [_tag("DB1.DBW0", DataType.INT16), _tag("DB1.DBW35", DataType.INT16)]  # hole 33
    assert len(plan_s7(far)) == 2
    assert len(plan_s7(far, max_gap=33)) == 1
    lreals = [_tag(f"DB1.DBD{8 * i}", DataType.FLOAT64) for i in range(60)]  # 480 bytes
    assert [(b.start, b.count) for b in plan_s7(lreals)] == [(0, 456), (456, 24)]


def test_planners_reject_tags_they_cannot_read() -> None:
    with pytest.raises(TagConfigError, match="is not Modbus"):
        plan_modbus([_tag("DB1.DBW0", DataType.INT16)])
    with pytest.raises(TagConfigError, match="is not S7"):
        plan_s7([_tag("hr:0")])
    with pytest.raises(TagConfigError, match="longer than one read"):
        plan_modbus([_tag("hr:0", DataType.FLOAT64)], max_registers=3)
    a = _tag("hr:0")
    with pytest.raises(TagConfigError, match="duplicate tag names"):
        plan_modbus([a, Tag(a.name, Address(Area.HOLDING, 1), DataType.UINT16)])


def test_no_tags_no_reads() -> None:
    assert plan_modbus([]) == []
    assert plan_s7([]) == []
    assert minimum_reads([]) == 0


# --- decode_block --------------------------------------------------------------------


def test_decode_block_gives_engineering_values() -> None:
    level = _tag("hr:0", DataType.FLOAT32, scale=1.0)
    weight = _tag("hr:2", DataType.UINT16, scale=0.1)
    total = Tag("total", Address(Area.HOLDING, 3), DataType.UINT32, WordOrder.CDAB)
    image = [
        *encode_registers(1234.5, DataType.FLOAT32, WordOrder.ABCD),
        *encode_registers(5000, DataType.UINT16, WordOrder.ABCD),
        *encode_registers(70000, DataType.UINT32, WordOrder.CDAB),
    ]
    (block,) = plan_modbus([level, weight, total])
    assert decode_block(block, image) == {level.name: 1234.5, weight.name: 500.0, "total": 70000}


def test_decode_block_reads_coils_and_s7_bits() -> None:
    coils = [_tag("co:0", DataType.BOOL), _tag("co:2", DataType.BOOL)]
    (block,) = plan_modbus(coils)
    bits = [True, False, False, False, False, False, False, False]  # padded to a byte
    assert decode_block(block, bits) == {coils[0].name: True, coils[1].name: False}
    flags = [_tag("DB3.DBX1.0", DataType.BOOL), _tag("DB3.DBX1.6", DataType.BOOL)]
    (block,) = plan_s7(flags)
    assert decode_block(block, bytes([0b0100_0000])) == {flags[0].name: False, flags[1].name: True}


def test_short_read_is_a_retryable_protocol_error() -> None:
    (block,) = plan_modbus([_tag("hr:0", DataType.FLOAT32)])
    with pytest.raises(PlcProtocolError, match="short read") as info:
        decode_block(block, [0])
    assert info.value.retryable


_VALUES: dict[DataType, st.SearchStrategy[int | float]] = {
    DataType.INT16: st.integers(-(2**15), 2**15 - 1),
    DataType.UINT16: st.integers(0, 2**16 - 1),
    DataType.INT32: st.integers(-(2**31), 2**31 - 1),
    DataType.UINT32: st.integers(0, 2**32 - 1),
    DataType.FLOAT32: st.floats(allow_nan=False, allow_infinity=False, width=32),
    DataType.FLOAT64: st.floats(allow_nan=False, allow_infinity=False),
}


@st.composite
def _register_layout(draw: st.DrawFn) -> tuple[list[Tag], dict[str, int | float], list[int]]:
    """Non-overlapping hr tags of random types/orders/scales and their register image."""
    tags: list[Tag] = []
    raws: dict[str, int | float] = {}
    image: list[int] = []
    for i in range(draw(st.integers(1, 25))):
        image.extend([0xDEAD] * draw(st.integers(0, 12)))  # unmapped filler
        dt = draw(st.sampled_from(NUMERIC))
        order = draw(st.sampled_from(list(WordOrder)))
        scale = draw(st.sampled_from([1.0, 0.1, 2.0]))
        tag = Tag(f"v{i}", Address(Area.HOLDING, len(image)), dt, order, scale, -5.0)
        raws[tag.name] = draw(_VALUES[dt])
        image.extend(encode_registers(raws[tag.name], dt, order))
        tags.append(tag)
    return tags, raws, image


@given(layout=_register_layout(), max_registers=st.integers(4, 125))
def test_decode_block_returns_every_tag_from_a_register_image(
    layout: tuple[list[Tag], dict[str, int | float], list[int]], max_registers: int
) -> None:
    tags, raws, image = layout
    values: dict[str, float | bool] = {}
    for block in plan_modbus(tags, max_registers=max_registers):
        data = image[block.start : block.start + block.count]
        values.update(decode_block(block, data))
    assert values == {t.name: to_engineering(raws[t.name], t) for t in tags}


@given(data=st.data())
def test_decode_block_returns_every_tag_from_a_db_image(data: st.DataObject) -> None:
    image = bytearray(64)
    tags: list[Tag] = []
    expected: dict[str, float | bool] = {}
    for offset in range(0, 64, 8):  # one slot of 8 bytes each: a number or 8 bits
        if data.draw(st.booleans()):
            dt = data.draw(st.sampled_from(NUMERIC))
            width = min(byte_size(dt), 4)  # float64 is spelled DBD
            tag = Tag(f"n{offset}", Address(Area.DB, offset, db=1, width=width), dt)
            raw = data.draw(_VALUES[dt])
            encoded = encode_bytes(raw, dt)
            image[offset : offset + len(encoded)] = encoded
            tags.append(tag)
            expected[tag.name] = to_engineering(raw, tag)
        else:
            for bit in data.draw(st.sets(st.integers(0, 7), max_size=8)):
                tag = Tag(f"b{offset}.{bit}", Address(Area.DB, offset, 1, bit, 1), DataType.BOOL)
                value = data.draw(st.booleans())
                image[offset] |= encode_bytes(value, DataType.BOOL, bit)[0]
                tags.append(tag)
                expected[tag.name] = value
    values: dict[str, float | bool] = {}
    for block in plan_s7(tags, max_bytes=data.draw(st.integers(8, 64))):
        values.update(decode_block(block, bytes(image[block.start : block.start + block.count])))
    assert values == expected


# --- properties: coverage, limits, gaps, optimality ----------------------------------


@st.composite
def _random_tags(draw: st.DrawFn, max_tags: int = 30) -> list[Tag]:
    """Random layouts over all four tables, overlaps and duplicates of addresses allowed."""
    tags = []
    for i in range(draw(st.integers(0, max_tags))):
        area = draw(st.sampled_from([Area.HOLDING, Area.INPUT, Area.COIL, Area.DISCRETE]))
        index = draw(st.integers(0, 80))
        bit_area = area in (Area.COIL, Area.DISCRETE)
        dt = DataType.BOOL if bit_area else draw(st.sampled_from(NUMERIC))
        tags.append(Tag(f"t{i}", Address(area, index), dt))
    return tags


def _longest_hole(block: ReadBlock, all_tags: list[Tag]) -> int:
    """Longest run inside the block that no tag of its table maps."""
    mapped: set[int] = set()
    for tag in all_tags:
        if (tag.address.area, tag.address.db) == (block.area, block.db):
            mapped.update(range(*tag_span(tag)))
    longest = run = 0
    for unit in range(block.start, block.start + block.count):
        run = 0 if unit in mapped else run + 1
        longest = max(longest, run)
    return longest


@given(tags=_random_tags(), max_registers=st.integers(4, 30), max_gap=st.integers(0, 10))
def test_modbus_plan_covers_every_tag_once_within_limits(
    tags: list[Tag], max_registers: int, max_gap: int
) -> None:
    max_bits = max_registers
    blocks = plan_modbus(tags, max_registers=max_registers, max_bits=max_bits, max_gap=max_gap)
    covered = Counter(t.name for b in blocks for t in b.tags)
    assert covered == Counter(t.name for t in tags)
    for block in blocks:
        assert 1 <= block.count <= max_registers
        assert all(t.address.area is block.area for t in block.tags)
        spans = _spans(block)
        assert min(s for s, _ in spans) == block.start
        assert max(e for _, e in spans) == block.start + block.count
        assert _longest_hole(block, tags) <= max_gap
    assert len(blocks) == minimum_reads(
        tags, max_registers=max_registers, max_bits=max_bits, max_gap=max_gap
    )


@st.composite
def _random_s7_tags(draw: st.DrawFn) -> list[Tag]:
    tags = []
    for i in range(draw(st.integers(0, 30))):
        db, offset = draw(st.integers(1, 3)), draw(st.integers(0, 120))
        kind = draw(st.sampled_from(["x", "w", "d", "lreal"]))
        if kind == "x":
            tag = Tag(
                f"t{i}", Address(Area.DB, offset, db, draw(st.integers(0, 7)), 1), DataType.BOOL
            )
        elif kind == "w":
            tag = Tag(f"t{i}", Address(Area.DB, offset, db, None, 2), DataType.INT16)
        else:
            dt = DataType.FLOAT32 if kind == "d" else DataType.FLOAT64
            tag = Tag(f"t{i}", Address(Area.DB, offset, db, None, 4), dt)
        tags.append(tag)
    return tags


@given(tags=_random_s7_tags(), max_bytes=st.integers(8, 64), max_gap=st.integers(0, 40))
def test_s7_plan_covers_every_tag_once_within_limits(
    tags: list[Tag], max_bytes: int, max_gap: int
) -> None:
    blocks = plan_s7(tags, max_bytes=max_bytes, max_gap=max_gap)
    assert Counter(t.name for b in blocks for t in b.tags) == Counter(t.name for t in tags)
    for block in blocks:
        assert 1 <= block.count <= max_bytes
        assert all(t.address.db == block.db for t in block.tags)
        assert _longest_hole(block, tags) <= max_gap
        assert all(block.start <= s and e <= block.start + block.count for s, e in _spans(block))
    assert len(blocks) == minimum_reads(tags, max_bytes=max_bytes, max_gap=max_gap)


def _brute_force_minimum(spans: list[tuple[int, int]], limit: int, max_gap: int) -> int:
    """Fewest windows (each <= limit, no unmapped run > max_gap) containing every span."""
    mapped = {u for s, e in spans for u in range(s, e)}

    def valid(lo: int, hi: int) -> bool:
        run = 0
        for unit in range(lo, hi):
            run = 0 if unit in mapped else run + 1
            if run > max_gap:
                return False
        return hi - lo <= limit

    windows = {
        sum(1 << i for i, (s, e) in enumerate(spans) if lo <= s and e <= hi)
        for lo, _ in spans
        for _, hi in spans
        if lo < hi and valid(lo, hi)
    }
    full, reached, steps = (1 << len(spans)) - 1, {0}, 0
    while full not in reached:
        reached = {have | w for have in reached for w in windows}
        steps += 1
    return steps


@given(
    layout=st.lists(
        st.tuples(st.integers(0, 30), st.sampled_from(NUMERIC)), min_size=1, max_size=7
    ),
    max_registers=st.integers(4, 12),
    max_gap=st.integers(0, 4),
)
def test_minimum_reads_is_truly_minimal(
    layout: list[tuple[int, DataType]], max_registers: int, max_gap: int
) -> None:
    tags = [Tag(f"t{i}", Address(Area.HOLDING, idx), dt) for i, (idx, dt) in enumerate(layout)]
    spans = [tag_span(t) for t in tags]
    expected = _brute_force_minimum(spans, max_registers, max_gap)
    assert minimum_reads(tags, max_registers=max_registers, max_gap=max_gap) == expected
    assert len(plan_modbus(tags, max_registers=max_registers, max_gap=max_gap)) == expected


def test_minimum_reads_uses_protocol_default_gaps() -> None:
    modbus = [_tag("hr:0"), _tag("hr:20")]  # hole 19 > 8
    s7 = [_tag("DB1.DBW0", DataType.INT16), _tag("DB1.DBW20", DataType.INT16)]  # 18 <= 32
    assert minimum_reads(modbus + s7) == 3
    assert minimum_reads(modbus + s7, max_gap=100) == 2


def test_start_offsets_spread_plcs_with_one_interval_evenly() -> None:
    from plc_connectors import PlcProtocol, PlcSettings, start_offsets

    def plc(name: str, interval: float) -> PlcSettings:
        return PlcSettings(name, PlcProtocol.MODBUS, "127.0.0.1", 502, (), poll_interval_s=interval)

    offsets = start_offsets([plc("a", 0.1), plc("b", 0.1), plc("c", 1.0), plc("d", 0.1)])
    assert offsets == pytest.approx({"a": 0.0, "b": 0.1 / 3, "c": 0.0, "d": 0.2 / 3})


def test_decode_block_reads_overlapping_tags_and_keeps_the_block_tag_order() -> None:
    """A plan may hold tags that share registers: each still decodes from its own bytes,
    in every word order, and the values come in the block's tag order."""
    wide = Tag("wide", Address(Area.HOLDING, 0), DataType.FLOAT64, WordOrder.CDAB)
    low = Tag("low", Address(Area.HOLDING, 1), DataType.UINT16, WordOrder.BADC)
    mid = Tag("mid", Address(Area.HOLDING, 1), DataType.INT32, WordOrder.DCBA, 0.5, 1.0)
    inner = Tag("inner", Address(Area.HOLDING, 2), DataType.UINT32, WordOrder.CDAB)  # as wide
    tail = Tag("tail", Address(Area.HOLDING, 4), DataType.UINT32, WordOrder.ABCD)
    image = [*encode_registers(-2.5e9, DataType.FLOAT64, WordOrder.CDAB), 0, 0]
    image[4:6] = encode_registers(4_000_000_000, DataType.UINT32, WordOrder.ABCD)
    (block,) = plan_modbus([tail, inner, mid, low, wide])
    got = decode_block(block, image)
    assert list(got) == [t.name for t in block.tags]
    regs = image[1:3]
    assert got == {
        "wide": -2.5e9,
        "low": float(decode_registers(regs[:1], DataType.UINT16, WordOrder.BADC)),
        "mid": decode_registers(regs, DataType.INT32, WordOrder.DCBA) * 0.5 + 1.0,
        "inner": float(decode_registers(image[2:4], DataType.UINT32, WordOrder.CDAB)),
        "tail": 4_000_000_000.0,
    }


def test_block_reader_fills_the_given_dict() -> None:
    (block,) = plan_modbus([_tag("hr:0", DataType.INT16), _tag("hr:1", DataType.UINT16)])
    values: dict[str, float | bool] = {"other": 1.0}
    block_reader(block)([*encode_registers(-3, DataType.INT16, WordOrder.ABCD), 7], values)
    assert values == {"other": 1.0, block.tags[0].name: -3.0, block.tags[1].name: 7.0}


@given(layout=_register_layout(), max_registers=st.integers(4, 125))
def test_a_wire_reader_takes_the_register_bytes_as_sent(
    layout: tuple[list[Tag], dict[str, int | float], list[int]], max_registers: int
) -> None:
    tags, raws, image = layout
    values: dict[str, float | bool] = {}
    for block in plan_modbus(tags, max_registers=max_registers):
        wire = b"".join(
            r.to_bytes(2, "big") for r in image[block.start : block.start + block.count]
        )
        block_reader(block, wire=True)(wire, values)
        with pytest.raises(PlcProtocolError, match="short read"):
            block_reader(block, wire=True)(wire[:-1], {})
    assert values == {t.name: to_engineering(raws[t.name], t) for t in tags}
