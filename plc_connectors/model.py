"""Tags, addresses and samples: what every PLC link reads and reports (pure values)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol


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


_NO_VALUE_UNLESS_BAD = frozenset({Quality.GOOD, Quality.UNCERTAIN_LAST_USABLE})


@dataclass(frozen=True, slots=True)
class Sample:
    """One poll of one PLC (or one change of quality while its link fails).

    Quality and time are carried once per sample, not per tag: a poll builds no
    per-tag objects, and `values` is the dict the link's `read()` returned, as-is
    (links return a fresh dict per read and never touch it afterwards; consumers
    must not mutate it either). A tag absent from `values` has no value: consumers
    treat it like BAD_WAITING (`reading()` does).
    """

    plc: str
    read_at: datetime  # when this sample was published
    quality: Quality  # of every value in it
    source_time: datetime  # when `values` were read (held values: their read time; BAD: read_at)
    # tag -> engineering value: the link's dict as-is; the held values while
    # UNCERTAIN_LAST_USABLE; empty when BAD_*
    values: Mapping[str, float | bool]

    def reading(self, tag: str) -> tuple[float | bool | None, Quality, datetime]:
        """One tag's (value, quality, source time). A tag absent from `values` has no
        value: the sample's BAD quality, or BAD_WAITING (a good or held sample that
        lacks it), stamped `read_at`."""
        values = self.values
        if tag in values:
            return values[tag], self.quality, self.source_time
        quality = self.quality
        if quality in _NO_VALUE_UNLESS_BAD:
            quality = Quality.BAD_WAITING
        return None, quality, self.read_at


class PlcLink(Protocol):
    """A connection to one PLC. Modbus and S7 implement it; the poller knows nothing else."""

    name: str

    async def connect(self) -> None: ...

    async def read(self) -> dict[str, float | bool]:
        """Read every configured tag once (engineering units, scale/offset applied): a
        fresh dict per call, never mutated afterwards (samples carry it as-is).

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
