"""Two real `invops run` processes on one ledger (SQLite file and PostgreSQL), polling
the same simulated PLCs (`invops simulate`): a writer id is held by one live process,
a measured unit is booked by one writer (issue 12 item 8).

Every process gets its own OPC UA and metrics ports (INVOPS_OPCUA_ENDPOINT,
INVOPS_METRICS_LISTEN on port 0: the kernel picks free ones as each binds), a
deadline, and is stopped (SIGTERM, else SIGKILL) at teardown.
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from inventory_core import open_ledger
from inventory_core.domain.model import Movement
from tests.e2e.conftest import DEMO_CONFIG, base_command, clean_env
from tests.polling import wait_until

START_S = 60.0  # a start (imports, OPC UA address space, first-start key) on 2 busy cores
READY = re.compile(r"invops_started\b.*opc\.tcp://")  # the start line (console or JSON)
REFUSED_WRITER = re.compile(
    r"^invops: error: writer id '(?P<writer>[^']+)' is held by another invops instance: "
    r"(?P<host>\S+) pid (?P<pid>\d+) since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ "
    r"\(last heartbeat .+, lease until .+\); stop that instance or give this one its own "
    r"\[ledger\] writer_id .+$"
)
TANKFARM_UNITS = {"TK-101", "TK-102", "BN-301", "BN-302", "BN-303", "BN-304"}
SILO_UNITS = {"SI-201", "SI-202"}
SIMULATOR_PORTS = ("--port", "PLC-MODBUS=0", "--port", "PLC-S7=0")  # free ports


class Service:
    """One `invops run --config FILE` process; stderr collected line by line."""

    def __init__(self, config: Path, cwd: Path, ledger_url: str) -> None:
        cwd.mkdir(parents=True, exist_ok=True)
        env = clean_env(
            ledger_url,
            {
                # port 0: the kernel picks; the start line names the ports bound
                "INVOPS_OPCUA_ENDPOINT": "opc.tcp://127.0.0.1:0/invops",
                "INVOPS_METRICS_LISTEN": "127.0.0.1:0",
                "INVOPS_API_LISTEN": "127.0.0.1:0",
            },
        )
        self.process = subprocess.Popen(
            [*base_command(), "run", "--config", str(config)],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))
            if READY.search(line):
                self._ready.set()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self, within_s: float = START_S) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                self._reader.join(5)
                pytest.fail(f"invops run exited {self.process.returncode}:\n{self.stderr}")
            return self._ready.wait(0.1)

        wait_until(
            ready,
            lambda: f"invops run ready (its start line):\n{self.stderr}",
            timeout_s=within_s,
            interval_s=0,
        )

    def wait_exit(self, within_s: float = START_S) -> int:
        try:
            code = self.process.wait(timeout=within_s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"invops run still running after {within_s} s:\n{self.stderr}")
        self._reader.join(5)
        return code

    def stop(self) -> int:
        """Graceful stop (SIGTERM), as systemd or Ctrl+C does it."""
        self.process.send_signal(signal.SIGTERM)
        return self.wait_exit(30)

    def kill(self) -> None:
        self.process.kill()  # SIGKILL: no release, no last heartbeat
        self.process.wait(timeout=10)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._reader.join(5)


@pytest.fixture
def services() -> Iterator[list[Service]]:
    started: list[Service] = []
    try:
        yield started
    finally:
        for service in started:
            service.close()


@pytest.fixture(scope="module")
def plc_ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    """The demo plant's PLC simulators on free ports, for every test of this module."""
    process = subprocess.Popen(
        [*base_command(), "simulate", "--config", str(DEMO_CONFIG), *SIMULATOR_PORTS],
        cwd=tmp_path_factory.mktemp("simulators"),
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        ports: dict[str, int] = {}
        assert process.stdout is not None
        deadline = time.monotonic() + START_S
        while len(ports) < 2 and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                pytest.fail(f"invops simulate exited {process.wait(timeout=5)}")
            if match := re.match(r"^(PLC-\S+)\s+\S+\s+127\.0\.0\.1:(\d+)", line):
                ports[match[1]] = int(match[2])
        assert set(ports) == {"PLC-MODBUS", "PLC-S7"}, ports
        yield ports
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _config(
    path: Path,
    plc_ports: dict[str, int],
    *,
    writer_id: str | None = None,
    units: set[str] | None = None,
    lease_s: float | None = None,
) -> Path:
    """The demo plant against the simulators, with a writer id, a subset of its storage
    units and a short lease when asked."""
    text = (
        DEMO_CONFIG.read_text(encoding="utf-8")
        .replace("port = 5020\n", f"port = {plc_ports['PLC-MODBUS']}\n")
        .replace("port = 1102\n", f"port = {plc_ports['PLC-S7']}\n")
    )
    ledger = ["[ledger]"]
    if writer_id is not None:
        ledger.append(f'writer_id = "{writer_id}"')
    if lease_s is not None:
        ledger += [f"lease_s = {lease_s}", f"lease_heartbeat_s = {lease_s / 8}"]
    text = text.replace("[ledger]\n", "\n".join(ledger) + "\n", 1)
    if units is not None:
        head, *blocks = text.split("\n[[storage_units]]\n")
        kept = [b for b in blocks if re.match(r'id = "([^"]+)"', b)[1] in units]  # type: ignore[index]
        assert len(kept) == len(units)
        text = head + "".join(f"\n[[storage_units]]\n{b}" for b in kept)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _movements(url: str) -> list[Movement]:
    async def read() -> list[Movement]:
        async with open_ledger(url, writer_id="e2e-reader") as ledger:
            return await ledger.history()

    return asyncio.run(read())


def _wait_for_bookings(url: str, writers: set[str], within_s: float = START_S) -> None:
    """Until every writer in `writers` has booked a PLC movement."""
    wait_until(
        lambda: writers <= {m.writer for m in _movements(url) if m.source == "plc"},
        f"a PLC movement of every writer of {sorted(writers)}",
        timeout_s=within_s,
        interval_s=0.5,
    )


def _verify(url: str, cwd: Path) -> None:
    result = subprocess.run(
        [*base_command(), "ledger", "verify", "--url", url],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=START_S,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _one_error_line(service: Service) -> str:
    """A refused start: exit 1, the error as the last stderr line, no traceback, and it
    never got as far as polling a PLC or serving OPC UA."""
    code = service.wait_exit()
    lines = [line for line in service.lines if line.strip()]
    assert code == 1 and lines and "Traceback" not in service.stderr, service.stderr
    assert not any(READY.search(line) or "plc_up" in line for line in lines), service.stderr
    assert lines[-1].startswith("invops: error: "), service.stderr
    return lines[-1]


def test_a_second_instance_with_the_same_config_is_refused_naming_the_holder(
    ledger_url: str, plc_ports: dict[str, int], tmp_path: Path, services: list[Service]
) -> None:
    """The issue's set-up: one config, one working directory, other ports."""
    config = _config(tmp_path / "plant.toml", plc_ports)
    first = Service(config, tmp_path / "run", ledger_url)
    services.append(first)
    first.wait_ready()

    second = Service(config, tmp_path / "run", ledger_url)
    services.append(second)
    message = _one_error_line(second)
    match = REFUSED_WRITER.match(message)
    assert match, message
    assert (match["host"], int(match["pid"])) == (socket.gethostname(), first.pid)
    assert match["writer"] == f"PLANT1@{socket.gethostname()}"[:64]

    _wait_for_bookings(ledger_url, {match["writer"]})
    assert first.stop() == 0
    # released at the graceful stop: the next instance starts at once
    third = Service(config, tmp_path / "run", ledger_url)
    services.append(third)
    third.wait_ready()
    assert third.stop() == 0
    keys = [m.idempotency_key for m in _movements(ledger_url)]
    assert len(keys) == len(set(keys))
    openings = [m.to_unit for m in _movements(ledger_url) if m.kind == "count"]
    assert openings and len(openings) == len(set(openings))  # no unit opened twice
    _verify(ledger_url, tmp_path)


def test_after_kill_9_the_next_instance_starts_only_once_the_lease_expired(
    ledger_url: str, plc_ports: dict[str, int], tmp_path: Path, services: list[Service]
) -> None:
    lease_s = 8.0  # heartbeat every 1 s
    config = _config(tmp_path / "plant.toml", plc_ports, writer_id="plant-a", lease_s=lease_s)
    first = Service(config, tmp_path / "a", ledger_url)
    services.append(first)
    first.wait_ready()
    _wait_for_bookings(ledger_url, {"plant-a"})
    first.kill()
    killed = time.monotonic()
    earliest_expiry = killed + lease_s - lease_s / 8  # the last heartbeat came before the kill

    early = Service(config, tmp_path / "b", ledger_url)
    services.append(early)
    message = _one_error_line(early)
    assert time.monotonic() < earliest_expiry, "the refused start took too long to prove it"
    match = REFUSED_WRITER.match(message)
    assert match and int(match["pid"]) == first.pid, message

    time.sleep(max(0.0, killed + lease_s + 0.5 - time.monotonic()))
    later = Service(config, tmp_path / "b", ledger_url)
    services.append(later)
    later.wait_ready()
    assert any("writer_lease_taken_over" in line for line in later.lines), later.stderr
    _wait_for_bookings(ledger_url, {"plant-a"})
    assert later.stop() == 0
    _verify(ledger_url, tmp_path)


def test_a_measured_unit_is_booked_by_one_writer_and_other_units_run_side_by_side(
    ledger_url: str, plc_ports: dict[str, int], tmp_path: Path, services: list[Service]
) -> None:
    tankfarm = Service(
        _config(tmp_path / "tankfarm.toml", plc_ports, writer_id="tankfarm", units=TANKFARM_UNITS),
        tmp_path / "tankfarm",
        ledger_url,
    )
    services.append(tankfarm)
    tankfarm.wait_ready()

    overlapping = _config(
        tmp_path / "silos-tk102.toml",
        plc_ports,
        writer_id="silos",
        units=SILO_UNITS | {"TK-102"},
    )
    refused = Service(overlapping, tmp_path / "silos", ledger_url)
    services.append(refused)
    message = _one_error_line(refused)
    assert message.startswith(
        "invops: error: measured storage unit is already booked by another live invops "
        f"instance: TK-102 by writer 'tankfarm' ({socket.gethostname()} pid {tankfarm.pid} since "
    ), message
    assert "SI-20" not in message, message

    silos = Service(
        _config(tmp_path / "silos.toml", plc_ports, writer_id="silos", units=SILO_UNITS),
        tmp_path / "silos",
        ledger_url,
    )
    services.append(silos)
    silos.wait_ready()
    _wait_for_bookings(ledger_url, {"tankfarm", "silos"})
    assert tankfarm.stop() == 0
    assert silos.stop() == 0
    booked_by: dict[str, set[str]] = {}
    for m in _movements(ledger_url):
        if m.source == "plc":
            booked_by.setdefault(m.to_unit or m.from_unit or "", set()).add(m.writer)
    assert all(
        writers == ({"tankfarm"} if unit in TANKFARM_UNITS else {"silos"})
        for unit, writers in booked_by.items()
    ), booked_by

    # the units of a stopped instance can be taken over: now the overlapping config runs
    takeover = Service(overlapping, tmp_path / "silos", ledger_url)
    services.append(takeover)
    takeover.wait_ready()
    assert takeover.stop() == 0
    _verify(ledger_url, tmp_path)
