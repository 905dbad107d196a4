"""The simulated plant's state in a file, so that a restarted plant resumes where it was.

`invops demo` keeps it in `<data-dir>/plant-state.json` (`invops simulate
--state FILE` on request): read once at start, written atomically (temporary
file, fsync, rename) every `SAVE_EVERY_S` and once more when the simulators
stop. A missing file means a first start; an unreadable or foreign one is
reported with one warning. Either way the plant starts fresh, never crashes.

After a clean stop the plant resumes exactly where it stopped; the service's
first reading then books, as one movement spanning the gap, only what really
flowed: what it had not booked yet before the stop, and what flowed while it
was starting again. After `kill -9` (or a power cut) the plant resumes from
the last periodic save, up to `SAVE_EVERY_S` old, while the ledger may already
hold readings of those last moments: the first movement after the restart can
then also give back up to `SAVE_EVERY_S` of flow (at most 400 kg on the
demo's silos, the fastest flow), e.g. a small issue after a fill. It is
bounded by the flows, never a jump to a fresh random state.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from inventory_core.log import get_logger
from simulators.plant import PlantModel

__all__ = [
    "PLANT_STATE_FILE",
    "SAVE_EVERY_S",
    "keep_plant_state",
    "load_plant_state",
    "save_plant_state",
]

log = get_logger(__name__)

PLANT_STATE_FILE: Final = "plant-state.json"  # the demo's file name in its data dir
SAVE_EVERY_S: Final = 1.0


def load_plant_state(model: PlantModel, path: Path) -> bool:
    """Resume `model` from `path`; True if it did (a unit that does not match starts fresh).

    Logs one line: info on a resume or a first start (no file), one warning
    when the file cannot be used (the plant then starts fresh)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        log.debug("plant_state_none", path=str(path), outcome="the simulated plant starts fresh")
        return False
    except (OSError, UnicodeDecodeError) as exc:
        _unusable(path, f"cannot read it ({exc})")
        return False
    try:
        state = json.loads(text)
        fresh = model.restore(state)
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        _unusable(path, str(exc))
        return False
    if len(fresh) == len(model.units):
        _unusable(path, "no storage unit in it matches this plant")
        return False
    saved_at = state.get("saved_at", "?")
    if fresh:
        reasons = "; ".join(f"{unit}: {why}" for unit, why in sorted(fresh.items()))
        log.warning(
            "plant_state_partial",
            path=str(path),
            saved_at=saved_at,
            outcome="these units start fresh",
            fresh_units=reasons,
        )
    else:
        log.info("plant_resumed", path=str(path), saved_at=saved_at)
    return True


def save_plant_state(model: PlantModel, path: Path) -> None:
    """Write the plant's state to `path` atomically: a reader (or a crash) sees the old
    file or the new one, never half of one. Raises OSError."""
    _write(path, _serialize(model))


async def keep_plant_state(model: PlantModel, path: Path, every_s: float = SAVE_EVERY_S) -> None:
    """Save the plant's state every `every_s` until cancelled, then once more.

    Periodic saves are written in a thread (an fsync must not stall the PLC
    servers); a failed one is logged (once until one succeeds again) and
    retried, the simulators keep running."""
    writer = _Writer(path)
    failing = False
    try:
        while True:
            await asyncio.sleep(every_s)
            snapshot = writer.snapshot(model)  # consistent: taken on the loop, between steps
            try:
                await asyncio.to_thread(writer.write, *snapshot)
            except OSError as exc:
                if not failing:
                    log.warning("plant_state_save_failed", path=str(path), error=str(exc))
                failing = True
            else:
                if failing:
                    log.info("plant_state_saved_again", path=str(path))
                failing = False
    finally:
        try:  # the plant stands still now: its exact last state, after any write in flight
            writer.write(*writer.snapshot(model))
        except OSError as exc:
            if not failing:
                log.warning("plant_state_save_failed", path=str(path), error=str(exc))


class _Writer:
    """Writes snapshots in the order they were taken: a periodic save still running in
    its thread at shutdown can neither overwrite the final save nor interleave with it."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._taken = 0
        self._written = 0

    def snapshot(self, model: PlantModel) -> tuple[int, str]:
        self._taken += 1
        return self._taken, _serialize(model)

    def write(self, number: int, text: str) -> None:
        with self._lock:
            if number > self._written:
                _write(self._path, text)
                self._written = number


def _serialize(model: PlantModel) -> str:
    state = {"saved_at": datetime.now(UTC).isoformat(), **model.to_state()}
    return json.dumps(state, indent=1, sort_keys=True) + "\n"


def _write(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    try:
        directory = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return  # e.g. a platform that cannot open directories: the rename is done anyway
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _unusable(path: Path, reason: str) -> None:
    log.warning(
        "plant_state_unusable",
        path=str(path),
        reason=reason,
        outcome="the simulated plant starts fresh",
    )
