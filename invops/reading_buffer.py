"""A bounded, on-disk queue of measurements taken while the ledger is away.

While the ledger database cannot be reached, every reading of a quantity tag
is appended here (a local SQLite file, WAL, fsync on commit) instead of being
lost; when the ledger is back the bridge replays them in order, so the
movements they imply are derived and posted as if nothing happened
(idempotency keys make a replay after a crash harmless).

Bounded: when `max_readings` is reached, every second buffered reading is
dropped (never a unit's newest). Movements are derived against the last
*booked* quantity, so thinning merges movements but never loses material:
the total measured change of each unit stays in the books.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from inventory_core.log import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class BufferedReading:
    id: int
    unit: str
    value: float | None
    good: bool
    timestamp: datetime
    raw: dict[str, object]


class ReadingBuffer:
    """Append-only FIFO of readings in one SQLite file (used from the event loop thread)."""

    def __init__(self, path: Path, *, max_readings: int = 200_000) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS readings (id INTEGER PRIMARY KEY, unit TEXT NOT NULL,"
            " value REAL, good INTEGER NOT NULL, timestamp TEXT NOT NULL, raw TEXT NOT NULL)"
        )
        self._max = max_readings
        self.dropped = 0
        self._count = int(self._db.execute("SELECT count(*) FROM readings").fetchone()[0])

    def __len__(self) -> int:
        return self._count

    def append(self, unit: str, value: float | None, good: bool, timestamp: datetime,
               raw: dict[str, object] | None) -> None:  # fmt: skip
        if len(self) >= self._max:
            self._thin()
        self._db.execute(
            "INSERT INTO readings (unit, value, good, timestamp, raw) VALUES (?, ?, ?, ?, ?)",
            (unit, value, int(good), timestamp.isoformat(), json.dumps(raw or {}, default=str)),
        )
        self._count += 1

    def oldest(self, limit: int = 500) -> list[BufferedReading]:
        rows = self._db.execute(
            "SELECT id, unit, value, good, timestamp, raw FROM readings ORDER BY id LIMIT ?",
            (limit,),
        ).fetchall()
        return [
            BufferedReading(i, u, v, bool(g), datetime.fromisoformat(ts), json.loads(raw))
            for i, u, v, g, ts, raw in rows
        ]

    def remove_through(self, reading_id: int) -> None:
        """Forget every reading up to and including `reading_id` (it reached the ledger)."""
        cursor = self._db.execute("DELETE FROM readings WHERE id <= ?", (reading_id,))
        self._count -= cursor.rowcount

    def close(self) -> None:
        self._db.close()

    def _thin(self) -> None:
        """Drop every second reading, keeping each unit's newest (see module docstring)."""
        newest = "SELECT max(id) FROM readings GROUP BY unit"
        cursor = self._db.execute(f"DELETE FROM readings WHERE id % 2 = 0 AND id NOT IN ({newest})")
        self.dropped += cursor.rowcount
        self._count -= cursor.rowcount
        log.warning("reading_buffer_full_thinned", readings=cursor.rowcount, material="conserved")
