"""The plant state file: save, resume, and a fresh start (never a crash) when unusable."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from invops.config import load_config
from invops.plant_description import plant_description
from simulators import (
    STATE_FORMAT,
    PlantDescription,
    PlantModel,
    keep_plant_state,
    load_plant_state,
    save_plant_state,
)
from tests.log_events import events
from tests.polling import eventually
from tests.unit.plant_configs import with_ethanol_twins

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo-plant.toml"
LOGGER = "simulators.plant_state"


@pytest.fixture(scope="module")
def demo() -> PlantDescription:
    return plant_description(load_config(DEMO))


def _quantities(model: PlantModel) -> dict[str, float]:
    return {unit.id: unit.quantity for unit in model.units.values()}


def _stepped(plant: PlantDescription, seconds: float, seed: int = 1) -> PlantModel:
    model = PlantModel(plant, seed=seed)
    for _ in range(round(seconds / 0.5)):
        model.step(0.5)
    return model


def _warnings(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return events(caplog.records, logger=LOGGER, level=logging.WARNING)


def test_a_saved_plant_resumes_exactly_where_it_was(demo: PlantDescription, tmp_path: Path) -> None:
    before = _stepped(demo, 120)
    before.jump_totalizer("TK-101.totalizer", 1000)
    path = tmp_path / "plant-state.json"
    save_plant_state(before, path)

    after = PlantModel(demo, seed=99)  # another fresh start: different quantities
    assert _quantities(after) != _quantities(before)
    assert load_plant_state(after, path)

    assert _quantities(after) == _quantities(before)
    for unit_id, unit in before.units.items():
        resumed = after.units[unit_id]
        assert (resumed.received, resumed.issued) == (unit.received, unit.issued)
        assert resumed.booked == pytest.approx(resumed.quantity)  # material balance holds
        assert (resumed.operation is None) == (unit.operation is None)
        if unit.operation is not None and resumed.operation is not None:
            assert resumed.operation.activity == unit.operation.activity
            assert resumed.operation.remaining == unit.operation.remaining
    counts = before.totalizer_counts("TK-101.totalizer")
    assert after.totalizer_counts("TK-101.totalizer") == counts  # the counter does not restart
    assert after.tag_values()["TK-101.totalizer"] == before.tag_values()["TK-101.totalizer"]


def test_a_running_transfer_resumes_as_one_operation_of_both_units(tmp_path: Path) -> None:
    plant = with_ethanol_twins(weighed=False)
    model = PlantModel(plant, seed=1)
    model.start_transfer("TK-101", "TK-103", 2000.0, rate=50.0)
    model.step(10)
    path = tmp_path / "state.json"
    save_plant_state(model, path)

    resumed = PlantModel(plant, seed=2)
    assert load_plant_state(resumed, path)
    source, destination = resumed.units["TK-101"], resumed.units["TK-103"]
    assert source.operation is not None and source.operation is destination.operation
    total = source.quantity + destination.quantity
    resumed.step(5)
    assert source.quantity + destination.quantity == pytest.approx(total)  # 1 L = 1 L
    assert source.transferred_out == pytest.approx(destination.transferred_in)


def test_the_resumed_plant_keeps_moving_within_its_bands(
    demo: PlantDescription, tmp_path: Path
) -> None:
    path = tmp_path / "state.json"
    save_plant_state(_stepped(demo, 600), path)
    model = PlantModel(demo, seed=5)
    assert load_plant_state(model, path)
    start = _quantities(model)
    for _ in range(3600):
        model.step(1.0)
        assert all(0.1 <= unit.fill_ratio <= 0.9 for unit in model.units.values())
    assert _quantities(model) != start


def test_a_missing_file_is_a_first_start_without_warning(
    demo: PlantDescription, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = PlantModel(demo, seed=3)
    fresh = _quantities(model)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        assert not load_plant_state(model, tmp_path / "plant-state.json")
    assert _quantities(model) == fresh
    assert _warnings(caplog) == []
    assert events(caplog.records, logger=LOGGER) == [
        {
            "event": "plant_state_none",
            "path": str(tmp_path / "plant-state.json"),
            "outcome": "the simulated plant starts fresh",
        }
    ]


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b'{"format": "invops-plant-state/1", "units": {"TK-1', id="truncated"),
        pytest.param(b"\xff\xfe\x00garbage", id="not-utf8"),
        pytest.param(b"[1, 2, 3]", id="a-list"),
        pytest.param(b'{"format": "something-else/7", "units": {}}', id="foreign-format"),
        pytest.param(b'{"format": "invops-plant-state/1"}', id="no-units"),
        pytest.param(
            b'{"format": "invops-plant-state/1", "units": {"XX-1": {}}, "operations": [],'
            b' "totalizers": {}}',
            id="no-unit-of-this-plant",
        ),
    ],
)
def test_an_unusable_file_starts_the_plant_fresh_with_one_warning(
    demo: PlantDescription, tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    path = tmp_path / "plant-state.json"
    path.write_bytes(content)
    model = PlantModel(demo, seed=3)
    fresh = _quantities(model)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert not load_plant_state(model, path)
    assert _quantities(model) == fresh
    assert all(unit.operation is None for unit in model.units.values())
    (warning,) = _warnings(caplog)
    assert (warning["event"], warning["path"]) == ("plant_state_unusable", str(path))
    assert warning["outcome"] == "the simulated plant starts fresh" and warning["reason"]
    model.step(30)  # and it runs


def test_a_directory_in_place_of_the_file_starts_fresh_with_one_warning(
    demo: PlantDescription, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "plant-state.json"
    path.mkdir()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert not load_plant_state(PlantModel(demo, seed=3), path)
    assert len(_warnings(caplog)) == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("quantity", float("nan")),
        ("quantity", -5.0),
        ("quantity", 10_000_000.0),  # beyond capacity
        ("received", "12"),
        ("issued", True),
        ("capacity", 12345.0),  # the config changed
        ("uom", "t"),
        ("initial", 1.0),  # material balance broken
    ],
)
def test_a_unit_that_does_not_fit_starts_fresh_and_the_others_resume(
    demo: PlantDescription,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    field: str,
    value: object,
) -> None:
    saved = _stepped(demo, 60)
    state = saved.to_state()
    state["units"]["SI-202"][field] = value
    path = tmp_path / "plant-state.json"
    path.write_text(json.dumps(state))  # NaN is written as NaN: JSON readers accept it

    model = PlantModel(demo, seed=42)
    fresh = model.units["SI-202"].quantity
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert load_plant_state(model, path)
    assert model.units["SI-202"].quantity == fresh
    assert model.units["SI-202"].operation is None
    assert model.units["SI-201"].quantity == saved.units["SI-201"].quantity
    (warning,) = _warnings(caplog)
    assert (warning["event"], warning["outcome"]) == (
        "plant_state_partial",
        "these units start fresh",
    )
    assert "SI-202" in warning["fresh_units"] and "SI-201" not in warning["fresh_units"]


def test_an_invalid_operation_is_dropped_and_its_unit_resumes_idle(
    demo: PlantDescription, tmp_path: Path
) -> None:
    saved = PlantModel(demo, seed=1)
    saved.start_receipt("TK-101", 1000.0)
    state = saved.to_state()
    (op,) = (o for o in state["operations"] if o["destination"] == "TK-101")
    op["rate"] = -1.0
    path = tmp_path / "plant-state.json"
    path.write_text(json.dumps(state))
    model = PlantModel(demo, seed=2)
    assert load_plant_state(model, path)
    assert model.units["TK-101"].operation is None
    assert model.units["TK-101"].quantity == saved.units["TK-101"].quantity


def test_restore_rejects_a_foreign_state_and_changes_nothing(demo: PlantDescription) -> None:
    model = PlantModel(demo, seed=1)
    fresh = _quantities(model)
    with pytest.raises(ValueError, match="not a plant state"):
        model.restore({"format": "other", "units": {}})
    assert _quantities(model) == fresh
    assert model.to_state()["format"] == STATE_FORMAT


def test_saving_replaces_the_file_atomically(demo: PlantDescription, tmp_path: Path) -> None:
    path = tmp_path / "plant-state.json"
    model = _stepped(demo, 10)
    save_plant_state(model, path)
    first = path.read_text()
    model.step(30)
    save_plant_state(model, path)
    assert path.read_text() != first
    assert json.loads(path.read_text())["format"] == STATE_FORMAT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plant-state.json"]  # no leftovers
    with pytest.raises(OSError):
        save_plant_state(model, tmp_path / "missing-dir" / "plant-state.json")


async def test_the_state_is_kept_periodically_and_exactly_at_the_stop(
    demo: PlantDescription, tmp_path: Path
) -> None:
    path = tmp_path / "plant-state.json"
    model = _stepped(demo, 10)
    task = asyncio.create_task(keep_plant_state(model, path, every_s=0.02))
    try:
        await eventually(path.exists, "a periodic save", timeout_s=2, interval_s=0.01)
        model.step(15)  # moves after the last periodic save ...
        last = _quantities(model)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    resumed = PlantModel(demo, seed=7)
    assert load_plant_state(resumed, path)
    assert _quantities(resumed) == last  # ... are in the final save


async def test_a_failing_save_warns_once_and_the_plant_keeps_running(
    demo: PlantDescription, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = PlantModel(demo, seed=1)
    path = tmp_path / "missing-dir" / "plant-state.json"
    with caplog.at_level(logging.INFO, logger=LOGGER):
        task = asyncio.create_task(keep_plant_state(model, path, every_s=0.01))
        await asyncio.sleep(0.2)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [(w["event"], w["path"]) for w in _warnings(caplog)] == [
        ("plant_state_save_failed", str(path))
    ]
