"""Logging set-up (`invops.logs`, STYLE section 7): one configuration renders structlog
and stdlib records alike, on stderr only; library retry noise is demoted to DEBUG.
`inventory_core.log` loggers reach the stdlib tree whether or not it ran."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import structlog

from inventory_core.log import get_logger
from invops.logs import configure_logging, default_level, parse_level
from tests.log_events import events

INVOPS = Path(sys.executable).with_name("invops")


pytestmark = pytest.mark.usefixtures("restore_logging")


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_is_one_object_per_line_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "INFO")
    structlog.get_logger("invops.test").warning("plc_down", plc="PLC-S7", attempt=3)
    logging.getLogger("invops.test").info("metrics_listening url=%s", "http://127.0.0.1:9840")
    structlog.get_logger("invops.test").debug("not_shown")

    captured = capsys.readouterr()
    assert captured.out == ""
    first, second = json_lines(captured.err)
    assert first["event"] == "plc_down"
    assert (first["level"], first["plc"], first["attempt"]) == ("warning", "PLC-S7", 3)
    assert first["logger"] == "invops.test"
    stamp = datetime.fromisoformat(first["timestamp"].replace("Z", "+00:00"))
    assert first["timestamp"].endswith("Z") and stamp.utcoffset() is not None
    assert second == {**second, "event": "metrics_listening", "level": "info"}
    assert second["url"] == "http://127.0.0.1:9840"


def test_events_of_our_packages_render_with_their_fields(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from inventory_core import measurement_service

    configure_logging("json", "INFO")
    measurement_service.log.warning(
        "measurement_held_for_review", unit="TK-101", reason="change across a gap"
    )
    get_logger("inventory_core.store").info(
        "audit_chain_head", when="open", writer="w1", seq=7, hash="ab12"
    )
    get_logger("opcua_server.x").bind(unit="TK-1").info(
        "odd_values", path=Path("/tmp/x"), level="kept", ratio=0.5, flag=None
    )
    get_logger("opcua_server.x").debug("not_shown")

    held, head, odd = json_lines(capsys.readouterr().err)
    assert held == {
        "event": "measurement_held_for_review",
        "unit": "TK-101",
        "reason": "change across a gap",
        "level": "warning",
        "logger": "inventory_core.measurement_service",
        "timestamp": held["timestamp"],
    }
    assert list(held)[:3] == ["event", "unit", "reason"]  # as given, as a structlog call
    assert head == {**head, "event": "audit_chain_head", "when": "open", "seq": 7, "hash": "ab12"}
    assert odd == {
        **odd,
        "event": "odd_values",
        "unit": "TK-1",  # bound context
        "path": "/tmp/x",  # not JSON: its str()
        "level_": "kept",  # a field named like a reserved key keeps its value
        "level": "info",
        "ratio": 0.5,
        "flag": None,
    }


def test_events_of_our_packages_reach_stdlib_logging_unconfigured(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No configure_logging (a library user, a benchmark's basicConfig, caplog): a plain
    record on the module's logger, its message readable, its event and fields kept."""
    log = get_logger("inventory_core.ledger")
    with caplog.at_level(logging.INFO, logger="inventory_core"):
        log.warning("writer_lease_not_renewed", writer="w1", retry_s=5, error="100% gone")
        log.debug("not_shown")
        try:
            raise ValueError("bad reading")
        except ValueError:
            log.exception("ledger_write_failed", writer="w1")

    lease, failed = caplog.records
    assert (lease.name, lease.levelname) == ("inventory_core.ledger", "WARNING")
    assert lease.getMessage() == "writer_lease_not_renewed writer=w1 retry_s=5 error=100% gone"
    assert lease.filename == "test_logs.py"  # the caller is the line that logged
    assert lease.funcName == "test_events_of_our_packages_reach_stdlib_logging_unconfigured"
    assert failed.exc_info is not None and failed.exc_info[0] is ValueError
    assert events(caplog.records) == [
        {"event": "writer_lease_not_renewed", "writer": "w1", "retry_s": 5, "error": "100% gone"},
        {"event": "ledger_write_failed", "writer": "w1"},
    ]


def test_stdlib_records_with_fields_in_the_message_are_split(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Records written as `"event key=%s"` (plc_connectors: it imports nothing of ours,
    so not inventory_core.log either) render with fields too."""
    configure_logging("json", "INFO")
    logging.getLogger("plc_connectors.poller").warning("plc_down plc=%s attempt=%d", "PLC-S7", 3)
    logging.getLogger("plc_connectors.s7").info("link %s: plc=%s", "down", "PLC-1")
    logging.getLogger("asyncua.server").warning("free text %s, not an event", "stays")

    down, link, free = json_lines(capsys.readouterr().err)
    assert (down["event"], down["plc"], down["attempt"]) == ("plc_down", "PLC-S7", 3)
    assert (link["event"], link["plc"]) == ("link down", "PLC-1")
    assert free["event"] == "free text stays, not an event"


def test_exceptions_and_odd_values_still_make_valid_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("json", "INFO")
    log = logging.getLogger("invops.test")
    try:
        raise ValueError("bad reading")
    except ValueError:
        log.exception("feed_failed unit=%s path=%s", "TK-1", Path("/tmp/x"))
    log.info("100%% sure %s", "yes")

    failed, percent = json_lines(capsys.readouterr().err)
    assert failed["event"] == "feed_failed" and failed["path"] == "/tmp/x"
    assert "ValueError: bad reading" in failed["exception"]
    assert percent["event"] == "100% sure yes"


def test_console_is_human_readable(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("console", "INFO")
    logging.getLogger("plc_connectors.poller").warning(
        "plc_down plc=%s phase=%s error=%s", "PLC-MODBUS", "connect", "refused"
    )
    structlog.get_logger("invops.test").info("plc_up", plc="PLC-MODBUS")

    captured = capsys.readouterr()
    assert captured.out == ""
    down, up = captured.err.splitlines()
    assert "plc_down" in down and "warning" in down
    assert "plc=PLC-MODBUS" in down and "phase=connect" in down and "error=refused" in down
    assert "\x1b[" not in down  # no colours when stderr is not a terminal
    assert not down.startswith("{")
    assert "plc_up" in up and "info" in up


def test_configuring_again_replaces_the_handler(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("console", "INFO")
    configure_logging("json", "WARNING")
    log = logging.getLogger("invops.test")
    log.info("hidden")
    log.warning("shown once")

    assert [line["event"] for line in json_lines(capsys.readouterr().err)] == ["shown once"]


def test_third_party_loggers_are_quiet_unless_debug(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "INFO")
    logging.getLogger("asyncua.server.uaprocessor").info("Read request (%s)", "user")
    logging.getLogger("asyncua.server.server").warning("something worth a look")
    assert [line["event"] for line in json_lines(capsys.readouterr().err)] == [
        "something worth a look"
    ]

    configure_logging("json", "DEBUG")
    logging.getLogger("asyncua.server.uaprocessor").info("Read request (%s)", "user")
    assert [line["event"] for line in json_lines(capsys.readouterr().err)] == [
        "Read request (user)"
    ]


def test_pymodbus_connect_failures_are_demoted(capsys: pytest.CaptureFixture[str]) -> None:
    """A PLC that is down is logged once by the poller (plc_down), not per pymodbus retry."""
    pymodbus_log = logging.getLogger("pymodbus.logging")
    configure_logging("json", "INFO")
    pymodbus_log.error("Failed to connect [Errno 111] Connection refused")
    pymodbus_log.warning("Failed to connect [Errno 111] Connection refused")
    pymodbus_log.error("Connection to (%s, %s) failed: %s", "10.0.0.1", 502, "timed out")
    pymodbus_log.error("Invalid Modbus protocol id: 7")  # not a retry message: kept
    assert [line["event"] for line in json_lines(capsys.readouterr().err)] == [
        "Invalid Modbus protocol id: 7"
    ]

    configure_logging("json", "DEBUG")
    pymodbus_log.error("Failed to connect [Errno 111] Connection refused")
    (line,) = json_lines(capsys.readouterr().err)
    assert (line["event"], line["level"]) == (
        "Failed to connect [Errno 111] Connection refused",
        "debug",
    )


def test_alembic_plugin_registration_at_import_is_demoted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("json", "INFO")
    plugins = logging.getLogger("alembic.runtime.plugins")
    plugins.info("setup plugin %s", "alembic.autogenerate.schemas")
    logging.getLogger("alembic.runtime.migration").info("Running upgrade %s -> %s", "", "0001")
    assert [line["event"] for line in json_lines(capsys.readouterr().err)] == [
        "Running upgrade  -> 0001"
    ]


def test_a_real_refused_modbus_connect_logs_nothing_at_info(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pymodbus.client import AsyncModbusTcpClient

    async def attempt(port: int) -> bool:
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0)
        try:
            return await client.connect()
        finally:
            client.close()

    configure_logging("json", "INFO")
    # A port bound by this test but not listening: connects are refused (RST), and no
    # other process can take the port while the test holds it.
    with socket.socket() as closed_port:
        closed_port.bind(("127.0.0.1", 0))
        for _ in range(3):
            assert asyncio.run(attempt(closed_port.getsockname()[1])) is False
    assert capsys.readouterr().err == ""


def test_levels() -> None:
    assert parse_level("debug") == logging.DEBUG
    assert parse_level(" WARNING ") == logging.WARNING
    assert parse_level(logging.ERROR) == logging.ERROR
    with pytest.raises(ValueError, match="unknown log level"):
        parse_level("verbose")
    assert [default_level(c) for c in ("run", "demo", "simulate")] == ["INFO"] * 3
    assert [default_level(c) for c in ("ledger", "check-config", None)] == ["WARNING"] * 3


def _run(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOPS_")}
    command = [str(INVOPS)] if INVOPS.exists() else [sys.executable, "-m", "invops.cli"]
    return subprocess.run(
        [*command, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_options_route_logs_to_stderr_as_json(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/ledger.db"
    result = _run(
        "--log-format", "json", "--log-level", "info", "db", "upgrade", "--url", url,
        tmp_path=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ledger at ") and len(result.stdout.splitlines()) == 1
    events = json_lines(result.stderr)
    assert events and all({"event", "level", "timestamp"} <= set(e) for e in events)
    assert any(e["logger"].startswith("alembic") for e in events)


def test_short_commands_log_only_warnings_by_default(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/ledger.db"
    result = _run("db", "upgrade", "--url", url, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_cli_rejects_an_unknown_level(tmp_path: Path) -> None:
    result = _run("--log-level", "verbose", "check-config", "x.toml", tmp_path=tmp_path)
    assert result.returncode == 2
    assert "--log-level" in result.stderr and "Traceback" not in result.stderr
