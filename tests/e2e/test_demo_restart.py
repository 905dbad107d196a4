"""A restarted `invops demo` resumes its simulated plant: no movement that never happened.

The demo is stopped with SIGTERM and started again on the same data dir.
What the ledger books across the restart must be physically possible: no
more than the simulated flows can move in the time the plant actually ran
within the movement's window, and the plant's quantities continue from the
state it saved at the stop (a fresh random plant would jump by thousands of kg).
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from invops.config import load_config
from invops.plant_description import plant_description
from simulators import PLANT_STATE_FILE, STATE_FORMAT, PlantModel
from simulators.plant import NOISE, RATE
from tests.e2e.test_demo import INVOPS, start_demo, wait_for
from tests.polling import wait_until

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo-plant.toml"
MEASURED = ("TK-101", "TK-102", "SI-201", "SI-202", "BN-301", "BN-302", "BN-303", "BN-304")
SLACK_S = 0.5  # poll and tick granularity on either side of a window


def _kg_per_uom() -> dict[str, float]:
    """Per measured unit: kg per unit of the quantity the simulator keeps (L or kg)."""
    config = load_config(DEMO)
    densities = {m.id: m.density_kg_per_l for m in config.materials}
    factors: dict[str, float] = {}
    for unit in config.storage_units:
        if unit.id in MEASURED:
            density = densities[unit.material or ""] if unit.strapping is not None else None
            factors[unit.id] = float(density) if density is not None else 1.0
    return factors


def _limits() -> tuple[dict[str, float], dict[str, float]]:
    """(fastest flow in kg/s, allowance for reading noise in kg) per measured unit."""
    factors = _kg_per_uom()
    model = PlantModel(plant_description(load_config(DEMO)), seed=0)
    flows, noise = {}, {}
    for unit_id, kg in factors.items():
        unit = model.units[unit_id]
        flows[unit_id] = min(RATE[1] * unit.capacity, unit.max_rate) * kg
        noise[unit_id] = 8 * NOISE * unit.capacity * kg  # two readings, 4 sigma each
    return flows, noise


def _at(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _plc_movements(db: Path, after_seq: int = 0) -> list[dict[str, object]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT seq, kind, coalesce(to_unit, from_unit), quantity, details FROM movements"
            " WHERE source = 'plc' AND seq > ? ORDER BY seq",
            (after_seq,),
        ).fetchall()
    return [
        {"seq": seq, "kind": kind, "unit": unit, "quantity": Decimal(qty), **json.loads(details)}
        for seq, kind, unit, qty, details in rows
    ]


def _stop(process: subprocess.Popen[str]) -> float:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0, process.communicate()[1]
    return time.time()


def test_restarted_demo_books_only_what_the_plant_can_have_moved(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    db, state_file = data_dir / "invops.db", data_dir / PLANT_STATE_FILE
    flows, noise = _limits()
    factors = _kg_per_uom()

    first = start_demo(data_dir)
    try:
        wait_for(data_dir / "endpoints.json", first)
        time.sleep(12)  # > max_interval_s: every unit has booked while running
        assert state_file.exists()  # saved periodically, not only at the stop
        stopped_at = _stop(first)
    finally:
        if first.poll() is None:
            first.kill()
        first.communicate(timeout=10)
    (data_dir / "endpoints.json").unlink()
    saved = json.loads(state_file.read_text())
    assert saved["format"] == STATE_FORMAT
    last_seq = max(int(str(m["seq"])) for m in _plc_movements(db))

    time.sleep(2)  # the plant stands still while the demo is down
    started_at = time.time()
    second = start_demo(data_dir)
    try:
        wait_for(data_dir / "endpoints.json", second)
        wait_until(
            lambda: {m["unit"] for m in _plc_movements(db, last_seq)} >= set(MEASURED),
            "a movement of every unit after the restart",
            timeout_s=20,
            interval_s=0.3,
        )
        _stop(second)
    finally:
        if second.poll() is None:
            second.kill()
        _, stderr = second.communicate(timeout=10)
    assert "plant_resumed" in stderr

    after = _plc_movements(db, last_seq)
    assert not [m for m in after if m["opening"]]  # the restart reopened nothing
    seen: set[object] = set()
    for movement in after:
        unit = str(movement["unit"])
        start, end = _at(str(movement["window_start"])), _at(str(movement["window_end"]))
        if start < started_at:  # the window spans the restart
            ran_s = max(0.0, stopped_at - start) + max(0.0, end - started_at) + 2 * SLACK_S
            limit = flows[unit] * ran_s + noise[unit]
            assert float(movement["quantity"]) <= limit, (movement, ran_s, limit)
        if unit not in seen:  # the first reading after the restart continues the saved plant
            seen.add(unit)
            # the window that spans the restart is flagged (one that opens after it need not be)
            assert movement["spans_gap"] is True or start >= started_at, movement
            resumed = float(saved["units"][unit]["quantity"]) * factors[unit]
            measured = float(str(movement["booked_after"]))
            ran_s = end - started_at + SLACK_S
            assert abs(measured - resumed) <= flows[unit] * ran_s + noise[unit], (
                unit,
                measured,
                resumed,
                ran_s,
            )

    verify = subprocess.run(
        [*INVOPS, "ledger", "verify", "--url", f"sqlite+aiosqlite:///{db}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stderr
