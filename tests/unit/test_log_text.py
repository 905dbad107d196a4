"""Caller-supplied text in log lines (issue 12, item 9): whatever a client sends, one record
stays one line in its own order, on the console and in JSON, and JSON keeps the exact text."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from inventory_core.log import get_logger
from invops.logs import configure_logging

HOSTILE = "fake\n2026-01-01T00:00:00Z [info     ] ledger_ok\r\x1b[2J\u202eevil\x85\u2028end"
UNSAFE = "\n\r\x1b\u202e\x85\u2028\x00\u2066\u200b\ufeff"


pytestmark = pytest.mark.usefixtures("restore_logging")


def render(fmt: str, emit: object) -> str:
    out = io.StringIO()
    configure_logging(fmt, "INFO", stream=out)  # type: ignore[arg-type]
    assert callable(emit)
    emit()
    return out.getvalue()


def emit_all() -> None:
    log = get_logger("opcua_server.methods")
    log.info("opcua_method_rejected", method="PostReceipt", reason=HOSTILE)
    log.info("opcua_method_rejected", method=HOSTILE.replace(" ", ""), reason="x")
    logging.getLogger("asyncua.server").warning("free text %s", HOSTILE)
    structlog.get_logger("invops.test").warning("plc_down", error=HOSTILE)
    logging.getLogger("plc_connectors.poller").warning("plc_down plc=%s", HOSTILE)


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_hostile_text_keeps_each_record_on_one_line(fmt: str) -> None:
    lines = render(fmt, emit_all).split("\n")
    assert lines[-1] == "" and len(lines) == 6  # five records, five lines
    for line in lines:
        assert not any(c in line for c in UNSAFE), repr(line)


def test_json_lines_still_carry_the_exact_text() -> None:
    records = [json.loads(line) for line in render("json", emit_all).splitlines()]
    assert records[0]["reason"] == HOSTILE
    assert records[3]["error"] == HOSTILE
    assert records[4]["plc"] == HOSTILE


def test_console_shows_the_escapes() -> None:
    first = render("console", emit_all).splitlines()[2]
    assert "fake\\n2026-01-01T00:00:00Z" in first and "\\x1b[2J\\u202eevil" in first


def test_tracebacks_keep_their_lines() -> None:
    def emit() -> None:
        try:
            raise ValueError("bad\nreading")
        except ValueError:
            get_logger("invops.test").exception("feed_failed", unit="TK-1")

    text = render("console", emit)
    assert "Traceback (most recent call last):" in text.splitlines()


@settings(max_examples=50)
@given(st.text(max_size=40), st.sampled_from(["console", "json"]))
def test_any_text_in_a_field_is_one_line(value: str, fmt: str) -> None:
    text = render(fmt, lambda: get_logger("x").info("event_x", value=value))
    assert text.count("\n") == 1 and text.endswith("\n")
    assert not any(c in text[:-1] for c in UNSAFE)
