"""Writer leases in SQL: acquire, renew, fence and release, each in one transaction.

Each function runs inside a transaction of the ledger writer's runner, so the
database's own locking makes it atomic: on SQLite the runner's BEGIN IMMEDIATE
holds the write lock for the whole transaction; on PostgreSQL an acquisition
takes a transaction-level advisory lock (acquisitions run one at a time) and
row locks on the leases it reads, and the writer's fence holds a share lock on
its lease row until its batch commits, so a takeover waits for that batch and
every later batch of the old holder sees the new holder. Every time is the
database's clock (PostgreSQL `clock_timestamp()`, SQLite `'now'`), so hosts with
skewed clocks agree on when a lease expires.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, delete, insert, select, text, update
from sqlalchemy.engine import Connection

from inventory_core.clock import format_timestamp
from inventory_core.domain.errors import WriterLeaseLost
from inventory_core.domain.lease import (
    LeaseHolder,
    WriterLease,
    lease_expired,
    lease_lost,
    units_owned,
    writer_id_in_use,
)
from inventory_core.domain.model import StorageUnitId
from inventory_core.store import tables as t

# pg_advisory_xact_lock key of lease acquisitions ("invops" and 1, as a signed int64).
ACQUIRE_LOCK_KEY = 0x696E766F70730001
ACQUIRE_LOCK_TIMEOUT_S = 10

_leases = t.writer_leases
_owners = t.unit_owners
_FENCE = (
    select(_leases.c.instance)
    .where(_leases.c.writer_id == bindparam("writer_id"))
    .with_for_update(read=True)  # FOR SHARE on PostgreSQL; SQLite's writer holds the lock
)


@dataclass(frozen=True, slots=True)
class Acquired:
    """A lease just acquired: its holder row, and what it took over from stopped writers."""

    holder: LeaseHolder
    previous: LeaseHolder | None = None  # this writer id's expired lease, when one was left
    units_taken: dict[StorageUnitId, str] = field(default_factory=dict)  # unit -> old writer


def database_now(conn: Connection) -> datetime:
    """The database's current time (UTC, aware), not this host's."""
    if conn.dialect.name == "postgresql":
        value = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
        assert isinstance(value, datetime)
        return value.astimezone(UTC)
    stamp = conn.execute(text("SELECT strftime('%Y-%m-%dT%H:%M:%f', 'now')")).scalar_one()
    return datetime.fromisoformat(str(stamp)).replace(tzinfo=UTC)


def acquire(conn: Connection, writer_id: str, lease: WriterLease) -> Acquired:
    """Take the lease of `writer_id` and ownership of `lease.units`, or raise
    WriterIdInUse / UnitsOwned naming the live holder. An expired lease (its process
    stopped or died) is taken over; so are units of writers whose lease expired, and
    those writers' leases are removed, so a stalled one that wakes up stops writing."""
    if conn.dialect.name == "postgresql":
        # A holder frozen inside a transaction (SIGSTOP, a hung host) keeps its row locks:
        # fail the start with the database's message instead of waiting for ever.
        conn.execute(text(f"SET LOCAL lock_timeout = '{ACQUIRE_LOCK_TIMEOUT_S}s'"))
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ACQUIRE_LOCK_KEY})
    now = database_now(conn)
    stamp = format_timestamp(now)
    own = holder_of(conn, writer_id, lock=True)
    if own is not None and own.instance != lease.instance and not lease_expired(own, stamp):
        raise writer_id_in_use(own)

    rows = conn.execute(
        select(_owners.c.unit, _owners.c.writer_id).where(_owners.c.unit.in_(lease.units))
    )
    claimed: dict[str, str] = {unit: owner for unit, owner in rows}
    other_writers = sorted({w for w in claimed.values() if w != writer_id})
    others = {w: holder_of(conn, w, lock=True) for w in other_writers}
    live = {
        StorageUnitId(unit): holder
        for unit, w in claimed.items()
        if (holder := others.get(w)) is not None and not lease_expired(holder, stamp)
    }
    if live:
        raise units_owned(live)
    taken = {StorageUnitId(u): w for u, w in claimed.items() if w != writer_id}
    for w in sorted(set(taken.values())):
        conn.execute(delete(_leases).where(_leases.c.writer_id == w))

    holder = LeaseHolder(
        writer_id=writer_id,
        host=lease.host,
        pid=lease.pid,
        instance=lease.instance,
        acquired_at=stamp,
        heartbeat_at=stamp,
        expires_at=format_timestamp(now + timedelta(seconds=lease.duration_s)),
    )
    row = asdict(holder)
    if own is None:
        conn.execute(insert(_leases).values(**row))
    else:
        conn.execute(update(_leases).where(_leases.c.writer_id == writer_id).values(**row))
    _claim_units(conn, writer_id, lease.units, claimed, stamp)
    previous = own if own is not None and own.instance != lease.instance else None
    return Acquired(holder, previous, taken)


def _claim_units(
    conn: Connection,
    writer_id: str,
    units: Sequence[StorageUnitId],
    claimed: dict[str, str],
    stamp: str,
) -> None:
    """Own exactly `units`: drop this writer's units it no longer books, claim the rest."""
    conn.execute(
        delete(_owners).where(_owners.c.writer_id == writer_id, _owners.c.unit.not_in(units))
    )
    moved = [u for u in units if u in claimed and claimed[u] != writer_id]
    if moved:
        conn.execute(
            update(_owners)
            .where(_owners.c.unit.in_(moved))
            .values(writer_id=writer_id, claimed_at=stamp)
        )
    new = [u for u in units if u not in claimed]
    if new:
        conn.execute(
            insert(_owners), [{"unit": u, "writer_id": writer_id, "claimed_at": stamp} for u in new]
        )


def renew(conn: Connection, writer_id: str, lease: WriterLease) -> str:
    """Extend this process's lease by `lease.duration_s` from now; returns the new expiry.
    Raises WriterLeaseLost when the lease is no longer this process's."""
    now = database_now(conn)
    expires = format_timestamp(now + timedelta(seconds=lease.duration_s))
    result = conn.execute(
        update(_leases)
        .where(_leases.c.writer_id == writer_id, _leases.c.instance == lease.instance)
        .values(heartbeat_at=format_timestamp(now), expires_at=expires)
    )
    if result.rowcount != 1:
        raise lease_lost(writer_id, holder_of(conn, writer_id, lock=False))
    return expires


def fence(conn: Connection, writer_id: str, instance: str) -> WriterLeaseLost | None:
    """In a writer batch's transaction: None while this process holds the lease, else the
    error every command of the batch fails with (nothing of the batch is written)."""
    found = conn.execute(_FENCE, {"writer_id": writer_id}).scalar()
    if found == instance:
        return None
    return lease_lost(writer_id, holder_of(conn, writer_id, lock=False))


def release(conn: Connection, writer_id: str, instance: str) -> bool:
    """End this process's lease now (graceful stop): its writer id and units are free at
    once. The row stays, naming the last holder. False when it was not ours any more."""
    stamp = format_timestamp(database_now(conn))
    result = conn.execute(
        update(_leases)
        .where(_leases.c.writer_id == writer_id, _leases.c.instance == instance)
        .values(heartbeat_at=stamp, expires_at=stamp)
    )
    return bool(result.rowcount == 1)


def holder_of(conn: Connection, writer_id: str, *, lock: bool) -> LeaseHolder | None:
    query = select(_leases).where(_leases.c.writer_id == writer_id)
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).mappings().first()
    if row is None:
        return None
    return LeaseHolder(
        writer_id=row["writer_id"],
        host=row["host"],
        pid=int(row["pid"]),
        instance=row["instance"],
        acquired_at=row["acquired_at"],
        heartbeat_at=row["heartbeat_at"],
        expires_at=row["expires_at"],
    )
