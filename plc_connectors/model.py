"""Tags, addresses and samples: what every PLC link reads and reports (pure values)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple, Protocol


class PlcProtocol(StrEnum):
    MODBUS = "modbus"
    S7 = "s7"


class Area(StrEnum):
    """Where a tag lives: the four Modbus tables or an S7 data block."""

    HOLDING = "hr"
    INPUT = "ir"
    COIL = "co"
    DISCRETE = "di"
    DB = "db"


class DataType(StrEnum):
    BOOL = "bool"
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    FLOAT32 = "float32"
    FLOAT64 = "float64"


class WordOrder(StrEnum):
    """Byte order of a multi-byte value, naming the bytes A (most significant) to D."""

    ABCD = "ABCD"
    CDAB = "CDAB"
    BADC = "BADC"
    DCBA = "DCBA"


class Quality(StrEnum):
    """Quality of a PLC-backed value, mapped 1:1 to OPC UA StatusCodes by the adapter."""

    GOOD = "good"
    UNCERTAIN_LAST_USABLE = "uncertain_last_usable"  # link retrying, last good value held
    BAD_COMMUNICATION = "bad_communication"  # read failed
    BAD_NO_COMMUNICATION = "bad_no_communication"  # link down, no usable value
    BAD_WAITING = "bad_waiting_for_initial_data"  # never read yet


@dataclass(frozen=True, slots=True)
class Address:
    """A tag address. Modbus: area hr/ir/co/di and a 0-based register/bit `index`.
    S7: area db, `db` number, byte offset `index`, and `bit` for DBX."""

    area: Area
    index: int
    db: int | None = None
    bit: int | None = None
    width: int | None = None  # S7 only: 1 (DBX/DBB), 2 (DBW), 4 (DBD), 8 (bytes of an LREAL)


@dataclass(frozen=True, slots=True)
class Tag:
    """One value to read: address, type, byte order, scaling to engineering units."""

    name: str
    address: Address
    data_type: DataType
    word_order: WordOrder = WordOrder.ABCD
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""


class TagValue(NamedTuple):
    """One tag's value as polled. A NamedTuple: every poll builds one per tag, and
    tuples are the cheapest immutable records Python creates."""

    value: float | bool | None
    quality: Quality
    source_time: datetime


@dataclass(frozen=True, slots=True)
class Sample:
    """One poll of one PLC: every tag's value and quality at `read_at`."""

    plc: str
    read_at: datetime
    values: dict[str, TagValue] = field(default_factory=dict)


class PlcLink(Protocol):
    """A connection to one PLC. Modbus and S7 implement it; the poller knows nothing else."""

    name: str

    async def connect(self) -> None: ...

    async def read(self) -> dict[str, float | bool]:
        """Read every configured tag once (engineering units, scale/offset applied).

        Raises PlcError (PlcTimeout, PlcConnectError, PlcProtocolError) on failure.
        """
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class PlcSettings:
    """One PLC as configured: where it is, how to poll it, and every tag to read."""

    name: str
    protocol: PlcProtocol
    host: str
    port: int
    tags: tuple[Tag, ...]
    unit_id: int = 1  # Modbus only
    rack: int = 0  # S7 only
    slot: int = 1  # S7 only
    poll_interval_s: float = 1.0
    timeout_s: float = 1.0
    max_gap: int | None = None  # coalescing: registers (Modbus) / bytes (S7); None = default
