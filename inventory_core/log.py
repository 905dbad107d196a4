"""Structured log calls that reach the standard `logging` tree (STYLE section 7).

    log = get_logger(__name__)
    log.warning("plc_down", plc=name, error=str(exc))

`get_logger` gives a `structlog.stdlib.BoundLogger` over `logging.getLogger(name)`
with processors of its own, whatever `structlog.configure` says: each call is one
stdlib record on that logger at that level, so logger names, levels, handlers,
pytest's `caplog` and the CLI's rendering (`invops.logs`: console or JSON lines,
demotions, escaping) treat it like any other record. Unconfigured structlog
would print to stdout instead, which belongs to the commands' output and to the
benchmarks' JSON.

The record carries the event twice:

- `record.event_dict` (EVENT_DICT): `{"event": "plc_down", "plc": "PLC-S7", ...}`,
  the fields as given (and any `bind()` context); `invops.logs` renders it as the
  event and its fields;
- its message, `"plc_down plc=%s error=%s"` with the values as arguments, so a
  plain `logging.Formatter` (a library user, a benchmark's `basicConfig`) still
  shows `plc_down plc=PLC-S7 error=refused`.

`exc_info=True` (or `log.exception`) and `stack_info=True` go to the record as
in stdlib logging; the record's caller is the line that logged.
"""

from __future__ import annotations

import logging
import sys
from types import FrameType
from typing import Any, Final

import structlog
from structlog.typing import EventDict, WrappedLogger

__all__ = ["EVENT_DICT", "get_logger"]

EVENT_DICT: Final = "event_dict"  # the LogRecord attribute holding the event and its fields

_RECORD_KEYWORDS: Final = ("exc_info", "stack_info")


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger whose calls become records of `logging.getLogger(name)`."""
    return structlog.stdlib.BoundLogger(
        logging.getLogger(name), [structlog.stdlib.filter_by_level, _to_record], {}
    )


def _to_record(logger: WrappedLogger, _method: str, event_dict: EventDict) -> tuple[Any, Any]:
    """The last processor: `(args, kwargs)` for the stdlib logger's method."""
    keywords: dict[str, Any] = {k: event_dict.pop(k) for k in _RECORD_KEYWORDS if k in event_dict}
    positional = event_dict.pop("positional_args", ())
    event = event_dict.pop("event", None)
    text = "" if event is None else str(event)
    if positional:  # log.info("x %s", v): stdlib style, formatted as stdlib would
        try:
            text %= positional
        except (TypeError, ValueError):
            text = f"{text} {positional!r}"
    fields = {"event": text, **event_dict}
    message = text.replace("%", "%%") + "".join(f" {key}=%s" for key in event_dict)
    keywords["extra"] = {EVENT_DICT: fields}
    keywords["stacklevel"] = _stacklevel(logger)
    return (message, *event_dict.values()), keywords


def _stacklevel(logger: WrappedLogger) -> int:
    """The stdlib `stacklevel` that makes the record's caller the line that logged:
    one per structlog frame between that line and the stdlib call (structlog's own
    `_FixedFindCallerLogger`, made by its LoggerFactory, skips them by itself)."""
    if type(logger).findCaller is not logging.Logger.findCaller:
        return 1
    frame: FrameType | None = sys._getframe(2)  # above _to_record: structlog's _process_event
    level = 0
    while frame is not None and frame.f_globals.get("__name__", "").startswith("structlog"):
        level += 1
        frame = frame.f_back
    return max(level, 1)
