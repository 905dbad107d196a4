"""Every log call of ours is an event with fields (STYLE section 7, issue 13 item 8):
`log = get_logger(__name__)` (`inventory_core.log`), then `log.info("snake_case_event",
key=value)`: no %-formatting, no f-string or concatenated message, no positional values.
The domain does not log at all."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("inventory_core", "opcua_server", "simulators", "information_model", "invops")
# plc_connectors is not in PACKAGES: it imports nothing of ours (no inventory_core.log); its
# few stdlib calls are written "event key=%s", which invops.logs renders as fields.
LEVELS = frozenset({"debug", "info", "warning", "error", "exception", "critical"})
EVENT = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")


def _modules() -> list[Path]:
    return [path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))]


def _problems(path: Path) -> list[str]:
    return _problems_in(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))


def _problems_in(text: str, where: str) -> list[str]:
    tree = ast.parse(text, where)
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and [ast.unparse(t) for t in node.targets] == ["log"]
            and ast.unparse(node.value) != "get_logger(__name__)"
        ):
            found.append(f"{where}:{node.lineno}: log = {ast.unparse(node.value)}")
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "log"
        ):
            continue
        method = node.func.attr
        if method not in LEVELS | {"log", "bind"}:
            continue
        args = node.args[1:] if method == "log" else node.args
        line = f"{where}:{node.lineno}: {ast.unparse(node)[:90]}"
        if method == "bind":
            if node.args:
                found.append(f"{line}: bind() takes fields only")
            continue
        if len(args) != 1 or any(isinstance(a, ast.Starred) for a in node.args):
            found.append(f"{line}: one event name, then keyword fields")
            continue
        (event,) = args
        if isinstance(event, ast.Constant) and isinstance(event.value, str):
            if not EVENT.fullmatch(event.value):
                found.append(f"{line}: event names are snake_case")
        elif not (isinstance(event, ast.Attribute) and event.attr.endswith("_event")):
            # A name built once (HttpServer: `{name}_listening`) is an attribute `*_event`;
            # anything else (an f-string, `%`, `+`, a call) is a formatted message.
            found.append(f"{line}: the event is a literal name, not a formatted message")
    return found


def test_every_log_call_is_an_event_with_keyword_fields() -> None:
    problems = [problem for path in _modules() for problem in _problems(path)]
    assert problems == []


def test_no_module_of_ours_logs_through_the_stdlib_logger_directly() -> None:
    """`logging.getLogger(__name__)` records bypass the event dict (only asyncua's own
    loggers, for the messages of the asyncua functions copied in asyncua_patches, stay)."""
    direct = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in _modules()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call)
        and ast.unparse(node.func) == "logging.getLogger"
        and [ast.unparse(a) for a in node.args] == ["__name__"]
    ]
    assert direct == []


def test_the_domain_does_not_log() -> None:
    logging_modules = {"logging", "structlog", "inventory_core.log"}
    offenders = []
    for path in sorted((ROOT / "inventory_core" / "domain").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n in logging_modules]
    assert offenders == []


def test_the_check_catches_a_formatted_message() -> None:
    """The rule itself works: each way of formatting a message is caught."""
    sample = (
        "import logging\n"
        "log = logging.getLogger(__name__)\n"
        'log.info("plc_up plc=%s", name)\n'
        'log.warning(f"plc {name} down")\n'
        'log.error("PLC down: " + name)\n'
        'log.log(logging.INFO, "Free Text")\n'
        'log.exception("plc_down", name)\n'
        'log.info("plc_up", plc=name)\n'
    )
    problems = _problems_in(sample, "sample.py")
    assert [p.split(":")[1] for p in problems] == ["2", "3", "4", "5", "6", "7"]
