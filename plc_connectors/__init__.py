"""plc_connectors: PLC links (Modbus TCP, S7), tag addresses, codecs and poll planning.

`ModbusLink` and `S7Link` load pymodbus and python-snap7 on first use of their
names: the config loader needs the tag model, not the protocol libraries.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from plc_connectors.addresses import (
    format_address,
    overlaps,
    parse_address,
    tag_span,
    validate_tag,
)
from plc_connectors.codecs import (
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
from plc_connectors.errors import (
    PlcConnectError,
    PlcError,
    PlcProtocolError,
    PlcTimeout,
    TagConfigError,
)
from plc_connectors.model import (
    Address,
    Area,
    DataType,
    PlcLink,
    PlcProtocol,
    PlcSettings,
    Quality,
    Sample,
    Tag,
    WordOrder,
)
from plc_connectors.planning import (
    ReadBlock,
    block_decoder,
    block_reader,
    decode_block,
    minimum_reads,
    plan_modbus,
    plan_s7,
)
from plc_connectors.poller import (
    ERROR_REASONS,
    Clock,
    PlcPoller,
    SampleSink,
    SystemClock,
    error_reason,
    start_offsets,
)

if TYPE_CHECKING:
    from plc_connectors.modbus import ModbusLink
    from plc_connectors.s7 import S7Link

__all__ = [
    "ERROR_REASONS",
    "Address",
    "Area",
    "Clock",
    "DataType",
    "ModbusLink",
    "PlcConnectError",
    "PlcError",
    "PlcLink",
    "PlcPoller",
    "PlcProtocol",
    "PlcProtocolError",
    "PlcSettings",
    "PlcTimeout",
    "Quality",
    "ReadBlock",
    "S7Link",
    "Sample",
    "SampleSink",
    "SystemClock",
    "Tag",
    "TagConfigError",
    "WordOrder",
    "block_decoder",
    "block_reader",
    "byte_size",
    "decode_block",
    "decode_bytes",
    "decode_registers",
    "encode_bytes",
    "encode_registers",
    "error_reason",
    "format_address",
    "from_engineering",
    "integer_range",
    "minimum_reads",
    "overlaps",
    "parse_address",
    "plan_modbus",
    "plan_s7",
    "register_count",
    "start_offsets",
    "tag_span",
    "to_engineering",
    "validate_tag",
]

_LAZY = {"ModbusLink": "plc_connectors.modbus", "S7Link": "plc_connectors.s7"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
