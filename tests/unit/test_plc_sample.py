"""A Sample carries quality and time once; `reading()` gives one tag's view of it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from plc_connectors import Quality, Sample

AT = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
READ = datetime(2026, 12, 1, 5, 59, tzinfo=UTC)


def test_a_tag_in_values_has_the_sample_quality_and_source_time() -> None:
    sample = Sample("PLC", AT, Quality.UNCERTAIN_LAST_USABLE, READ, {"a": 1.5, "b": True})
    assert sample.reading("a") == (1.5, Quality.UNCERTAIN_LAST_USABLE, READ)
    assert sample.reading("b") == (True, Quality.UNCERTAIN_LAST_USABLE, READ)


@pytest.mark.parametrize(
    ("quality", "absent"),
    [
        (Quality.GOOD, Quality.BAD_WAITING),
        (Quality.UNCERTAIN_LAST_USABLE, Quality.BAD_WAITING),
        (Quality.BAD_WAITING, Quality.BAD_WAITING),
        (Quality.BAD_COMMUNICATION, Quality.BAD_COMMUNICATION),
        (Quality.BAD_NO_COMMUNICATION, Quality.BAD_NO_COMMUNICATION),
    ],
)
def test_an_absent_tag_has_no_value_stamped_read_at(quality: Quality, absent: Quality) -> None:
    values: dict[str, float | bool] = {} if quality.name.startswith("BAD") else {"a": 1.0}
    assert Sample("PLC", AT, quality, READ, values).reading("x") == (None, absent, AT)


def test_values_are_carried_as_given_not_copied() -> None:
    read = {"a": 1.0}
    assert Sample("PLC", AT, Quality.GOOD, AT, read).values is read
