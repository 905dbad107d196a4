"""Writer leases: one live process per writer id, one writer per measured unit.

A service instance that books PLC measurements holds the lease of its writer
id (its audit chain) in the ledger: acquired at start, renewed by a heartbeat,
released at a graceful stop. The lease also covers the measured storage units
the instance books, so that two instances never book the same physical change
twice. A lease that is not renewed expires after `duration_s` (by the
database's clock), and only then may another process take the writer id or
its units over.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from inventory_core.domain.errors import UnitsOwned, ValidationError, WriterIdInUse, WriterLeaseLost
from inventory_core.domain.model import StorageUnitId

__all__ = [
    "DEFAULT_HEARTBEAT_S",
    "DEFAULT_LEASE_S",
    "LeaseHolder",
    "WriterLease",
    "lease_expired",
    "lease_lost",
    "units_owned",
    "writer_id_in_use",
]

DEFAULT_LEASE_S = 30.0
DEFAULT_HEARTBEAT_S = 5.0


@dataclass(frozen=True, slots=True)
class WriterLease:
    """What a booking process claims at start: its writer id's lease and the measured
    units it books, for `duration_s`, renewed every `heartbeat_s`. `instance` tells
    this start of the process from any other (a pid can be reused)."""

    units: tuple[StorageUnitId, ...]
    host: str
    pid: int
    instance: str
    duration_s: float = DEFAULT_LEASE_S
    heartbeat_s: float = DEFAULT_HEARTBEAT_S

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat_s <= self.duration_s / 2:
            raise ValidationError(
                f"lease heartbeat {self.heartbeat_s} s must be positive and at most half "
                f"the lease ({self.duration_s} s), so that one missed renewal is survived"
            )

    @classmethod
    def for_this_process(
        cls,
        units: Iterable[StorageUnitId],
        *,
        duration_s: float = DEFAULT_LEASE_S,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
    ) -> WriterLease:
        return cls(
            units=tuple(sorted(set(units))),
            host=socket.gethostname()[:255],
            pid=os.getpid(),
            instance=uuid.uuid4().hex,
            duration_s=duration_s,
            heartbeat_s=heartbeat_s,
        )


@dataclass(frozen=True, slots=True)
class LeaseHolder:
    """Who holds a writer id, as the ledger records it (times: database clock, UTC text)."""

    writer_id: str
    host: str
    pid: int
    instance: str
    acquired_at: str
    heartbeat_at: str
    expires_at: str

    def describe(self) -> str:
        """`host01 pid 4242 since 2026-12-01T09:00:00Z`: enough to find the process."""
        return f"{self.host} pid {self.pid} since {_seconds(self.acquired_at)}"


def writer_id_in_use(holder: LeaseHolder) -> WriterIdInUse:
    return WriterIdInUse(
        f"writer id {holder.writer_id!r} is held by another invops instance: "
        f"{holder.describe()} (last heartbeat {_seconds(holder.heartbeat_at)}, lease until "
        f"{_seconds(holder.expires_at)}); stop that instance or give this one its own "
        "[ledger] writer_id (if that process is gone, start again once its lease has expired)"
    )


def units_owned(owners: Mapping[StorageUnitId, LeaseHolder]) -> UnitsOwned:
    """The error naming every measured unit another live writer books, grouped by writer."""
    by_writer: dict[str, tuple[LeaseHolder, list[str]]] = {}
    for unit in sorted(owners):
        holder = owners[unit]
        by_writer.setdefault(holder.writer_id, (holder, []))[1].append(unit)
    parts = [
        f"{', '.join(units)} by writer {holder.writer_id!r} ({holder.describe()})"
        for holder, units in by_writer.values()
    ]
    noun = "storage unit is" if len(owners) == 1 else "storage units are"
    return UnitsOwned(
        f"measured {noun} already booked by another live invops instance: "
        f"{'; '.join(parts)}; a measured unit is booked by one instance: stop that instance "
        "or remove the unit (or its level/weight tag) from this config"
    )


def lease_lost(writer_id: str, holder: LeaseHolder | None) -> WriterLeaseLost:
    now = (
        f"now held by {holder.describe()}"
        if holder is not None
        else "its lease was removed (its units were taken over by another writer)"
    )
    return WriterLeaseLost(
        f"writer lease of {writer_id!r} lost: {now}; this instance stops booking"
    )


def lease_expired(holder: LeaseHolder, now: str) -> bool:
    """Whether `holder`'s lease has run out at database time `now` (both UTC text)."""
    return holder.expires_at <= now


def _seconds(timestamp: str) -> str:
    """'2026-12-01T09:00:00.123456Z' -> '2026-12-01T09:00:00Z' (for messages)."""
    head, dot, _ = timestamp.partition(".")
    return f"{head}Z" if dot else timestamp
