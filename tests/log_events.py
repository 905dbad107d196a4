"""The structured events in captured log records, for asserting on an event and its
fields instead of on the text of a message.

invops' packages log with `inventory_core.log.get_logger` (`log.warning("plc_down",
plc=name)`); each record carries `{"event": "plc_down", "plc": ...}` (EVENT_DICT).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from inventory_core.log import EVENT_DICT


def events(
    records: Iterable[logging.LogRecord],
    *,
    logger: str | None = None,
    level: int = logging.NOTSET,
    event: str | None = None,
) -> list[dict[str, Any]]:
    """The event dicts of `records` (pytest's `caplog.records`), in order: those of
    `logger` and its children, at `level` or above, named `event`, when given."""
    found = []
    for record in records:
        data = getattr(record, EVENT_DICT, None)
        if not isinstance(data, dict) or record.levelno < level:
            continue
        if logger is not None and not (
            record.name == logger or record.name.startswith(logger + ".")
        ):
            continue
        if event is None or data["event"] == event:
            found.append(data)
    return found
