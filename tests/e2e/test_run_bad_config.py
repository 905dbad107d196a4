"""`invops run` with a config that does not validate: the named errors, exit 2, and
nothing started (no ledger file, no certificate, no listening port)."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e.conftest import DEMO_CONFIG

if TYPE_CHECKING:
    from tests.e2e.conftest import Cli

PROBLEM_LINE = re.compile(r"^(?P<file>[^:]+\.toml):(?P<line>\d+): (?P<path>[\w.\[\]-]+): .+$")


@contextmanager
def _taken_port() -> Iterator[int]:
    """A port this test holds, listening, for as long as the block runs: one the kernel
    picked (bound to port 0), so no other process can have it meanwhile."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        yield int(squatter.getsockname()[1])


def _plant(tmp_path: Path, opcua_port: int = 0, metrics_port: int = 0) -> tuple[str, Path, Path]:
    """The demo plant, with its ledger and certificates inside tmp_path, on these ports
    (0: the kernel picks a free one when the service binds)."""
    ledger, pki = tmp_path / "data" / "ledger.db", tmp_path / "data" / "pki"
    text = (
        DEMO_CONFIG.read_text(encoding="utf-8")
        .replace("sqlite+aiosqlite:///var/invops.db", f"sqlite+aiosqlite:///{ledger}")
        .replace('certificate_dir = "var/pki"', f'certificate_dir = "{pki}"')
        .replace("opc.tcp://127.0.0.1:4840/invops", f"opc.tcp://127.0.0.1:{opcua_port}/invops")
        .replace('listen = "127.0.0.1:9840"', f'listen = "127.0.0.1:{metrics_port}"')
    )
    assert str(ledger) in text and str(pki) in text
    assert f":{opcua_port}/invops" in text and f'"127.0.0.1:{metrics_port}"' in text
    return text, ledger, pki


@pytest.mark.parametrize("log_format", ["console", "json"])
def test_a_broken_config_names_every_problem_and_starts_nothing(
    cli: Cli, tmp_path: Path, log_format: str
) -> None:
    # Both ports are held by this test: a listener the service tried would fail (exit 1).
    with _taken_port() as opcua_port, _taken_port() as metrics_port:
        text, ledger, pki = _plant(tmp_path, opcua_port, metrics_port)
        broken = (
            text.replace('material = "GLYCOL"', 'material = "GLYKOL"')  # unknown material
            .replace('address = "hr:2"', 'address = "hr:1"', 1)  # overlaps TK-101's hr:0 float32
            .replace("poll_interval_s = 0.5", "poll_intervall_s = 0.5", 1)  # typo: unknown key
        )
        config = tmp_path / "bad.toml"
        config.write_text(broken, encoding="utf-8")

        result = cli("--log-format", log_format, "run", "--config", config)

    assert result.returncode == 2, result
    assert result.stdout == "", result
    assert "Traceback" not in result.stderr, result
    problems = [PROBLEM_LINE.fullmatch(line) for line in result.err_lines]
    assert all(problems), result  # every stderr line is `file:line: key.path: message`
    paths = {m["path"] for m in problems if m}
    assert {
        "plcs[0].poll_intervall_s",
        "storage_units[1].material",
        "storage_units[1].level.address",
    } <= paths, result
    assert all(m["file"] == str(config) for m in problems if m)
    # Nothing was started: no ledger created, no certificate made, no listener tried
    # (on the taken ports it would have ended in "already in use" and exit 1).
    assert "already in use" not in result.stderr, result
    assert not ledger.exists()
    assert not ledger.parent.exists()
    assert not pki.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


def test_a_config_that_is_not_toml_is_one_line(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[site]\nname = "PLANT1\n', encoding="utf-8")

    result = cli("run", "--config", config)

    assert result.returncode == 2, result
    assert len(result.err_lines) == 1, result
    assert result.err_lines[0].startswith(f"{config}:2"), result
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


def test_a_missing_config_file_is_one_line(cli: Cli, tmp_path: Path) -> None:
    result = cli("run", "--config", tmp_path / "nowhere.toml")

    assert result.returncode == 2, result
    assert result.err_lines == [f"{tmp_path / 'nowhere.toml'}: file not found"], result
    assert list(tmp_path.iterdir()) == []


def test_a_taken_metrics_port_fails_before_the_ledger_is_touched(cli: Cli, tmp_path: Path) -> None:
    with _taken_port() as metrics_port:
        text, ledger, pki = _plant(tmp_path, metrics_port=metrics_port)
        config = tmp_path / "plant.toml"
        config.write_text(text, encoding="utf-8")
        result = cli("run", "--config", config)

    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr, result
    assert result.err_lines[-1].startswith("invops: error: "), result
    assert str(metrics_port) in result.err_lines[-1], result
    assert not ledger.exists() and not pki.exists()
