"""Durable postings/s through the invops ledger API, with 1, 8 and 64 concurrent callers.

Prints one JSON line per backend and caller count (SPEC section 7). On SQLite
(WAL, synchronous=FULL) the baseline is the same SQL statements per posting
(movement INSERT, audit INSERT, balance UPSERT) through the stdlib sqlite3
module from one thread, committed in batches of 64: the storage engine alone.
SQLite is measured with the writer in a thread of the caller's process (`"writer":
"thread"`, the library default) and in a process of its own (`"process"`, as the
service runs it). PostgreSQL is measured when INVOPS_BENCH_PG_URL (default: the local test
server) answers; it has no baseline, so its lines carry no baseline keys.

Latency, invops: per posting, from the call of `ledger.post` to its return, when
the posting is durable (committed). Latency, baseline: per posting, from the start
of its batch (BEGIN) to the return of that batch's COMMIT, so every posting of a
batch counts the whole batch. That is what a caller would wait for from a writer
that takes 64 requests submitted together, runs them with the engine alone and
acknowledges them once durable: the closed loop of 64 callers, each awaiting its
posting before it submits the next, against an ideal group commit. p50 and p99 are
nearest-rank percentiles over every posting, computed the same way on both sides.

Comparisons (SQLite lines): `ratio` = postings_per_s / baseline_postings_per_s and
`p99_ratio` = baseline_p99_ms / p99_ms; for both, higher is better and 1 means
invops adds nothing to the engine. The baseline always commits 64 per batch, so at
1 and 8 callers both compare with the engine's best case, not with commits of the
same size (a single caller waits for one commit per posting and gets p99_ratio > 1).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

from inventory_core import open_ledger
from inventory_core.domain.model import (
    Booking,
    LotId,
    LotStatus,
    MaterialDefinition,
    MaterialId,
    MovementKind,
    PostingRequest,
    Source,
    StorageKind,
    StorageUnit,
    StorageUnitId,
)

PG_URL = os.environ.get(
    "INVOPS_BENCH_PG_URL",
    os.environ.get("INVOPS_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"),
)
UNITS = 16
LOTS_PER_UNIT = 4
BATCH = 64

MATERIAL = MaterialDefinition(
    MaterialId("BENCH"), "bench", "kg", Decimal("0.8"), LotStatus.RELEASED
)
STORAGE = [
    StorageUnit(
        StorageUnitId(f"TK-{i:03d}"), "S", "A", StorageKind.TANK, Decimal(10**9), "L", MATERIAL.id
    )
    for i in range(UNITS)
]


def _percentile_ms(seconds: list[float], q: float) -> float:
    """Nearest-rank percentile of `seconds`, in ms (both sides use this)."""
    ordered = sorted(seconds)
    return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000, 2)


def _request(n: int, caller: int) -> PostingRequest:
    unit = STORAGE[n % UNITS].id
    return PostingRequest(
        kind=MovementKind.RECEIPT,
        material=MATERIAL.id,
        lot=LotId(f"LOT-{n % UNITS}-{caller % LOTS_PER_UNIT}"),
        quantity=Decimal("12.5"),
        uom="L",
        to_unit=unit,
        idempotency_key=f"bench-{caller}-{n}",
        reason="benchmark",
        user="bench",
        source=Source.PLC,
    )


async def _measure(
    url: str, callers: int, postings: int, *, process: bool = False
) -> dict[str, float]:
    per_caller = postings // callers
    latencies: list[float] = []
    async with open_ledger(url, writer_id="bench", migrate=True, writer_process=process) as ledger:
        await ledger.sync_master_data([MATERIAL], STORAGE)

        async def caller(c: int) -> None:
            for i in range(per_caller):
                request = _request(c * per_caller + i, c)
                t0 = time.perf_counter()
                await ledger.post(request)
                latencies.append(time.perf_counter() - t0)

        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for c in range(callers):
                group.create_task(caller(c))
        elapsed = time.perf_counter() - started
    done = per_caller * callers
    return {
        "postings": done,
        "postings_per_s": round(done / elapsed, 1),
        "p50_ms": _percentile_ms(latencies, 0.50),
        "p99_ms": _percentile_ms(latencies, 0.99),
    }


BINS = [
    StorageUnit(
        StorageUnitId(f"BIN-{i:02d}"), "S", "A", StorageKind.BIN, Decimal(10**9), "kg",
        MATERIAL.id, booking=Booking.MANUAL,
    )
    for i in range(UNITS)
]  # fmt: skip


async def _many_lots(url: str, callers: int, held: int, measured: int) -> dict[str, float]:
    """Receipts of a new lot each into 16 manual fifo bins: the rate into empty bins, and
    again once the bins hold `held` lots. `scaling` = the second / the first: 1 means a
    posting costs the same whatever else a bin holds."""

    async with open_ledger(url, writer_id="bench", migrate=True) as ledger:
        await ledger.sync_master_data([MATERIAL], BINS)
        sequence = iter(range(10**9))

        async def run(count: int) -> float:
            async def caller() -> None:
                for _ in range(count // callers):
                    n = next(sequence)
                    await ledger.post(
                        PostingRequest(
                            MovementKind.RECEIPT, MATERIAL.id, LotId(f"L{n}"), Decimal(1),
                            "kg", to_unit=BINS[n % UNITS].id, idempotency_key=f"m-{n}",
                            user="bench", source=Source.API,
                        )
                    )  # fmt: skip

            started = time.perf_counter()
            async with asyncio.TaskGroup() as group:
                for _ in range(callers):
                    group.create_task(caller())
            return (count // callers * callers) / (time.perf_counter() - started)

        empty = await run(measured)
        await run(held - measured)
        full = await run(measured)
    return {
        "lots_held": held,
        "postings_per_s": round(full, 1),
        "empty_postings_per_s": round(empty, 1),
        "scaling": round(full / empty, 3),
    }


def _baseline(path: Path, postings: int) -> dict[str, float]:
    """The same three statements per posting via stdlib sqlite3, one thread, 64 per commit.

    Each posting's latency is its batch's, BEGIN to COMMIT returned (module docstring).
    """
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(
        """
        CREATE TABLE movements (seq INTEGER PRIMARY KEY, id TEXT UNIQUE, kind TEXT, material TEXT,
          lot TEXT, from_unit TEXT, to_unit TEXT, quantity TEXT, uom TEXT, posted_quantity TEXT,
          posted_uom TEXT, timestamp TEXT, user TEXT, source TEXT, reason TEXT,
          idempotency_key TEXT UNIQUE, payload_hash TEXT, reverses TEXT UNIQUE, writer TEXT,
          details TEXT);
        CREATE INDEX ix_m_lot ON movements (lot, seq);
        CREATE INDEX ix_m_from ON movements (from_unit, seq);
        CREATE INDEX ix_m_to ON movements (to_unit, seq);
        CREATE INDEX ix_m_ts ON movements (timestamp);
        CREATE TABLE audit (id INTEGER PRIMARY KEY, writer TEXT, seq INTEGER, timestamp TEXT,
          user TEXT, action TEXT, object_type TEXT, object_id TEXT, reason TEXT, old TEXT,
          new TEXT, prev_hash TEXT, hash TEXT, UNIQUE (writer, seq));
        CREATE INDEX ix_audit_object ON audit (object_type, object_id);
        CREATE TABLE balances (unit TEXT, lot TEXT, material TEXT, quantity TEXT,
          PRIMARY KEY (unit, lot));
        """
    )
    latencies: list[float] = []
    started = time.perf_counter()
    batch_started = started
    conn.execute("BEGIN")
    for n in range(postings):
        mid = str(uuid.uuid4())
        unit, lot = f"TK-{n % UNITS:03d}", f"LOT-{n % UNITS}-{n % LOTS_PER_UNIT}"
        ts = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        digest = hashlib.sha256(mid.encode()).hexdigest()
        conn.execute(
            "INSERT INTO movements (id, kind, material, lot, from_unit, to_unit, quantity, uom,"
            " posted_quantity, posted_uom, timestamp, user, source, reason, idempotency_key,"
            " payload_hash, reverses, writer, details)"
            " VALUES (?, 'receipt', 'BENCH', ?, NULL, ?, '10', 'kg', '12.5', 'L', ?, 'bench',"
            " 'plc', 'benchmark', ?, ?, NULL, 'bench', '{}')",
            (mid, lot, unit, ts, f"k-{n}", digest),
        )
        conn.execute(
            "INSERT INTO audit (writer, seq, timestamp, user, action, object_type, object_id,"
            " reason, old, new, prev_hash, hash) VALUES ('bench', ?, ?, 'bench', 'receipt',"
            " 'movement', ?, 'benchmark', '', ?, ?, ?)",
            (n + 1, ts, mid, '{"id":"' + mid + '"}', digest, digest),
        )
        conn.execute(
            "INSERT INTO balances (unit, lot, material, quantity) VALUES (?, ?, 'BENCH', ?)"
            " ON CONFLICT (unit, lot) DO UPDATE SET quantity = excluded.quantity",
            (unit, lot, str(n)),
        )
        if (n + 1) % BATCH == 0 or n + 1 == postings:
            conn.execute("COMMIT")
            committed = time.perf_counter()
            latencies += [committed - batch_started] * (n + 1 - len(latencies))
            batch_started = committed
            if n + 1 < postings:
                conn.execute("BEGIN")
    elapsed = time.perf_counter() - started
    conn.close()
    return {
        "postings_per_s": postings / elapsed,
        "p50_ms": _percentile_ms(latencies, 0.50),
        "p99_ms": _percentile_ms(latencies, 0.99),
    }


async def _pg_database() -> str | None:
    """A fresh PostgreSQL database for the run, or None when the server does not answer."""
    try:
        import asyncpg

        admin = await asyncpg.connect(PG_URL.replace("+asyncpg", ""), timeout=3)
    except Exception as exc:  # no server: report and skip the backend
        print(f"ledger_throughput: PostgreSQL skipped ({exc})", file=sys.stderr)
        return None
    name = f"invops_bench_{uuid.uuid4().hex[:8]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    return f"{PG_URL.rsplit('/', 1)[0]}/{name}"


async def _drop_pg(url: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(PG_URL.replace("+asyncpg", ""), timeout=3)
    await admin.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", default="1,8,64", help="comma-separated caller counts")
    parser.add_argument(
        "--postings", type=int, default=20000, help="postings per case (64 callers)"
    )
    parser.add_argument(
        "--lots-held", type=int, default=8000, help="lots the bins hold in the many_lots case"
    )
    parser.add_argument("--backends", default="sqlite,postgres", help="sqlite and/or postgres")
    parser.add_argument(
        "--writers", default="thread,process",
        help="SQLite writer: a thread of the caller's process (the library) and/or a process "
        "of its own (the service)",
    )  # fmt: skip
    args = parser.parse_args()
    callers = [int(c) for c in args.callers.split(",")]
    backends = args.backends.split(",")

    def postings_for(c: int) -> int:
        # a single caller waits for one fsync per posting: fewer postings keep the run short
        return max(c, min(args.postings, 1000 * c if c < 64 else args.postings))

    with tempfile.TemporaryDirectory() as tmp:
        baseline = _baseline(Path(tmp) / "baseline.db", args.postings)
        if "sqlite" in backends:
            for writer, c in [(w, c) for w in args.writers.split(",") for c in callers]:
                url = f"sqlite+aiosqlite:///{tmp}/ledger-{writer}-{c}.db"
                process = writer == "process"
                result = asyncio.run(_measure(url, c, postings_for(c), process=process))
                line = {"bench": "ledger_throughput", "backend": "sqlite", "writer": writer,
                        "callers": c, **result}  # fmt: skip
                line["baseline_postings_per_s"] = round(baseline["postings_per_s"], 1)
                line["baseline_p50_ms"] = baseline["p50_ms"]
                line["baseline_p99_ms"] = baseline["p99_ms"]
                line["ratio"] = round(result["postings_per_s"] / baseline["postings_per_s"], 3)
                if result["p99_ms"] > 0:  # below the 0.01 ms resolution: no ratio
                    line["p99_ratio"] = round(baseline["p99_ms"] / result["p99_ms"], 3)
                print(json.dumps(line), flush=True)
            url = f"sqlite+aiosqlite:///{tmp}/many-lots.db"
            result = asyncio.run(_many_lots(url, 16, args.lots_held, 1000))
            line = {"bench": "ledger_throughput", "backend": "sqlite", "case": "many_lots",
                    "callers": 16, **result}  # fmt: skip
            print(json.dumps(line), flush=True)
    if "postgres" in backends:
        for c in callers:
            url = asyncio.run(_pg_database())
            if url is None:
                break
            try:
                result = asyncio.run(_measure(url, c, postings_for(c)))
            finally:
                asyncio.run(_drop_pg(url))
            line = {"bench": "ledger_throughput", "backend": "postgres", "callers": c, **result}
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
