"""Logging set-up for the `invops` command line (STYLE section 7).

One configuration renders everything: invops modules log with the standard
`logging` module (or `structlog.get_logger()`), third-party libraries (asyncua,
pymodbus, snap7, alembic) too, and every record goes through the same
`structlog.stdlib.ProcessorFormatter` on one stderr handler:

- `console`: human-readable lines (`2026-01-05T06:00:00.123Z [warning] plc_down
  plc=PLC-S7 phase=connect error=...`), coloured on a terminal unless NO_COLOR is set;
- `json`: one JSON object per line with `timestamp` (ISO 8601, UTC), `level`,
  `logger`, `event` and the event's fields;
- `auto` (the default): `console`. JSON is always an explicit choice.

invops' own packages log through `inventory_core.log.get_logger(__name__)`
(`log.info("plc_up", plc=name)`): each call is a stdlib record on its module's
logger that carries the event and its fields (`record.event_dict`), rendered here
as they were given. Older stdlib records written as ``log.info("plc_up plc=%s",
name)`` (an event name, then ` key=%s` pairs: `plc_connectors`, which imports
nothing of ours) are split into the event and typed fields; third-party records
keep their formatted message as the event.

Logs go to stderr only: stdout belongs to the commands' user output and JSON.

Third-party loggers (asyncua, pymodbus, snap7, uvicorn) are held at WARNING unless
the level is DEBUG (uvicorn's access log, one line per HTTP request, shows then). Messages that
libraries repeat on every retry or every refused request (pymodbus "Failed to
connect", asyncua's service fault for a denied login) are demoted to DEBUG: invops
logs the transition or the security event itself, once.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from enum import StrEnum
from typing import Any, Final, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from inventory_core.log import EVENT_DICT

__all__ = [
    "LOG_LEVELS",
    "LONG_RUNNING_COMMANDS",
    "NOISY_LOGGERS",
    "LogFormat",
    "configure_logging",
    "default_level",
    "parse_level",
]

LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LONG_RUNNING_COMMANDS: Final = frozenset({"run", "demo", "simulate"})
# Chatty below WARNING (asyncua logs every request at INFO, uvicorn.access one line per
# HTTP request): quiet unless DEBUG.
NOISY_LOGGERS: Final = ("asyncua", "pymodbus", "snap7", "uvicorn")

# (logger name prefix, message prefix): repeated per retry or per refused request,
# while invops logs the state change or the security event itself.
_DEMOTED: Final[tuple[tuple[str, str], ...]] = (
    # A PLC that is down: invops logs plc_down once; pymodbus logs at every retry.
    ("pymodbus", "Failed to connect"),
    ("pymodbus", "Connection to ("),
    ("pymodbus", "Not connected, trying to connect"),
    ("pymodbus", "No response received after"),
    ("pymodbus", "Repeating...."),
    # A refused login or request: invops logs opcua_login_failed / opcua_request_denied.
    ("asyncua", "sending service fault response"),
    ("asyncua", "%s attempted to do something they are not permitted"),
    # A port in use: invops reports "cannot listen on ..." as one line, not a traceback.
    ("asyncua", "%s error starting server"),
    # A malformed or upgrade HTTP request: answered 400 / as plain HTTP; one WARNING each
    # would let any client write the log.
    ("uvicorn", "Invalid HTTP request received."),
    ("uvicorn", "Unsupported upgrade request."),
    ("uvicorn", "No supported WebSocket library detected."),
    # Alembic's preamble on every migration check at start.
    ("alembic", "Context impl "),
    ("alembic", "Will assume "),
    # Alembic's plugin registry at import (the CLI imports Alembic only to migrate).
    ("alembic", "setup plugin "),
)

# "event key=%s key2=%d": the trailing ` key=%x` pairs of a stdlib format string.
_FIELDS_TAIL: Final = re.compile(r"((?:\s+[A-Za-z_][A-Za-z0-9_.]*=%[sdrif])+)\s*$")
_FIELD: Final = re.compile(r"([A-Za-z_][A-Za-z0-9_.]*)=%[sdrif]")
_PLACEHOLDER: Final = re.compile(r"%[sdrif]")
_PLAIN_TYPES: Final = (str, int, float, bool, type(None))


class LogFormat(StrEnum):
    """How log lines are rendered on stderr."""

    AUTO = "auto"
    CONSOLE = "console"
    JSON = "json"


def parse_level(level: str | int) -> int:
    """`"info"`, `"INFO"` or `logging.INFO` -> `logging.INFO`; ValueError otherwise."""
    if isinstance(level, int):
        return level
    name = level.strip().upper()
    if name not in LOG_LEVELS:
        raise ValueError(f"unknown log level {level!r} (use one of {', '.join(LOG_LEVELS)})")
    return int(logging.getLevelName(name))


def configure_logging(
    fmt: LogFormat | Literal["auto", "console", "json"] = "auto",
    level: str | int = "INFO",
    *,
    stream: TextIO | None = None,
) -> None:
    """Route the stdlib root logger and structlog through one stderr handler.

    Safe to call again (tests, a second command in one process): it replaces the
    handler it installed before and leaves other handlers (pytest's) alone.
    `stream` defaults to `sys.stderr` as it is at each write.
    """
    numeric = parse_level(level)
    chosen = LogFormat(fmt)
    out = stream if stream is not None else _StderrProxy()
    renderer = _renderer(chosen, out)
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        timestamper,
    ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(), _event_dict, _event_fields],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _drop_positional_args,
            *([] if chosen is LogFormat.JSON else [_escape_console_text]),
            *([structlog.processors.format_exc_info] if chosen is LogFormat.JSON else []),
            renderer,
        ],
        pass_foreign_args=True,
    )
    handler = _InvopsHandler(out)
    handler.setFormatter(formatter)
    handler.setLevel(numeric)
    handler.addFilter(_DemoteRepeats(numeric))

    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _InvopsHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(
            logging.NOTSET if numeric <= logging.DEBUG else max(numeric, logging.WARNING)
        )

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


# --------------------------------------------------------------------------- rendering


class _InvopsHandler(logging.StreamHandler[Any]):
    """The one handler `configure_logging` owns (so a second call replaces it)."""


class _StderrProxy:
    """Writes to whatever `sys.stderr` is at the time (pytest's capsys swaps it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _renderer(fmt: LogFormat, stream: Any) -> Processor:
    if fmt is LogFormat.JSON:
        return structlog.processors.JSONRenderer(
            serializer=_json_for_terminals, default=str, ensure_ascii=False
        )
    terminal = _is_terminal(stream)
    colors = terminal and not os.environ.get("NO_COLOR")
    return structlog.dev.ConsoleRenderer(
        colors=colors,
        exception_formatter=(
            structlog.dev.default_exception_formatter if terminal else structlog.dev.plain_traceback
        ),
        sort_keys=False,
    )


# --------------------------------------------------------------------------- processors


def _drop_positional_args(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    event.pop("positional_args", None)
    return event


_RESERVED: Final = frozenset({"event", "level", "logger", "timestamp", "exception"})
# Set on the record by an earlier handler's formatter (pytest's caplog), never a field.
_FORMATTED: Final = ("message", "asctime")


def _event_dict(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """A record of `inventory_core.log` (`log.warning("plc_down", plc=a, error=b)`)
    becomes `event="plc_down", plc=a, error=b`, in that order, before `level`,
    `logger` and `timestamp` as for a structlog call; other records pass as they are."""
    for key in _FORMATTED:
        event.pop(key, None)
    given = event.pop(EVENT_DICT, None)
    if not isinstance(given, dict) or not isinstance(given.get("event"), str):
        return event
    event.pop("positional_args", None)  # the message's arguments: the fields again
    taken = _RESERVED | event.keys()  # a field never replaces the record's own keys
    rebuilt: EventDict = {"event": given["event"]}
    for key, value in given.items():
        if key != "event":
            rebuilt[f"{key}_" if key in taken else key] = _plain(value)
    for key, value in event.items():
        if key != "event":
            rebuilt.setdefault(key, value)
    return rebuilt


def _event_fields(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """A stdlib record `log.info("plc_down plc=%s error=%s", a, b)` becomes
    `event="plc_down", plc=a, error=b`; any other record keeps its formatted message."""
    record = event.get("_record")
    args = event.get("positional_args")
    if record is None or not isinstance(record.msg, str) or not isinstance(args, tuple):
        return event
    message: str = record.msg
    tail = _FIELDS_TAIL.search(message)
    if tail is None:
        return event
    head = message[: tail.start()]
    head_count = len(_PLACEHOLDER.findall(head))
    keys = _FIELD.findall(tail.group(1))
    if head.count("%") != head_count or head_count + len(keys) != len(args):
        return event  # "%%", "%(name)s" or a width: leave the message as it is
    try:
        name = head % args[:head_count] if head_count else head
    except (TypeError, ValueError):
        return event
    name = name.strip().rstrip(":,;").strip()
    if not name:
        return event
    fields = {key: _plain(value) for key, value in zip(keys, args[head_count:], strict=True)}
    for key, value in fields.items():
        event[f"{key}_" if key in _RESERVED else key] = value
    event["event"] = name
    return event


# Text a terminal acts on (controls, line separators, bidi controls, invisible characters):
# a log line must stay one line in its own order whatever a caller sent (CWE-117).
_UNSAFE: Final = re.compile(
    "[\x00-\x1f\x7f-\x9f\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069"
    "\ufeff\ud800-\udfff]"
)
# structlog's console renderer repr()s a str value holding one of these (repr escapes every
# unsafe character); it writes any other str value as it is.
_CONSOLE_QUOTED: Final = frozenset(" \t=\r\n\"'")
_NOT_ESCAPED: Final = frozenset({"exception", "exc_info", "stack"})  # tracebacks keep lines


def _escape_console_text(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """Console lines: the unsafe characters of the message and of each unquoted value as
    `\\n`, `\\x1b`, `\\u202e` (JSON lines: `_json_for_terminals`)."""
    for key, value in event.items():
        if (
            isinstance(value, str)
            and key not in _NOT_ESCAPED
            and (key == "event" or not _CONSOLE_QUOTED.intersection(value))
            and _UNSAFE.search(value)
        ):
            event[key] = _UNSAFE.sub(_escaped, value)
    return event


def _json_for_terminals(value: Any, **kwargs: Any) -> str:
    """json.dumps, with every character a terminal acts on written as a \\uXXXX escape:
    still the exact text for a JSON reader, one line in its own order for a human."""
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(value, **kwargs))


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _plain(value: object) -> object:
    """JSON-friendly field values: str, numbers, bool and None as they are, the rest
    (exceptions, paths, enums that are not str) as their str()."""
    return value if isinstance(value, _PLAIN_TYPES) else str(value)


class _DemoteRepeats(logging.Filter):
    """Demotes known per-retry library messages to DEBUG, then keeps them only when
    the configured level lets DEBUG through."""

    def __init__(self, threshold: int) -> None:
        super().__init__()
        self._threshold = threshold

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno <= logging.DEBUG or not _is_demoted(record):
            return True
        record.levelno = logging.DEBUG
        record.levelname = logging.getLevelName(logging.DEBUG)
        return self._threshold <= logging.DEBUG


def _is_demoted(record: logging.LogRecord) -> bool:
    message = record.msg if isinstance(record.msg, str) else ""
    return any(
        record.name.startswith(prefix) and message.startswith(text) for prefix, text in _DEMOTED
    )


def default_level(command: str | None) -> str:
    """Default log level of a subcommand: INFO for the long-running ones (run, demo,
    simulate), WARNING for the short ones, whose output is the answer, not a log."""
    return "INFO" if command in LONG_RUNNING_COMMANDS else "WARNING"
