"""Hostile OPC UA clients against `invops demo`: do PLC polls and other clients keep going?

Prints one JSON line per case (SPEC section 7). Each case starts `invops demo` (PLC
simulators + service, every port 0) in a child process, connects one anonymous
"fresh" client that reads TK-101 `Level` every `--read-interval-ms`, and measures two
windows of `--duration` seconds on the same service:

- quiet (the baseline): nobody else connects;
- attack: `--clients` clients (in another child process, this script with `--attack`)
  log in with wrong passwords as fast as the server answers, each attempt a new
  connection, secure channel and session, as a password guesser does.

Cases: `guess` (every guess for `operator`, all from 127.0.0.1: the issue's attack)
and `spray` (a different name per attempt from a list of 200, each client from its
own loopback address 127.0.0.N: no single name or address carries the load).

Reported per case: attempts (and per second) and what the server answered
(`refused` = Bad_UserAccessDenied, `timeouts`, `errors`), the service's own counts
(`invops_opcua_login_failures_total` by reason, lockouts), the fresh client's read
p50/p99/max (`read_p99_ms`, `baseline_read_p99_ms` from the quiet window), a new
anonymous client's connect time during the attack (`fresh_connect_max_ms`), and the
PLC side: `plc_polls_missed` (polls expected from the demo's 0.5 s interval but not
made, over both PLCs, one per PLC forgiven for the window's edges) and
`plc_poll_errors` (`invops_plc_errors_total` increase), in each window. Goal (issue
12): no missed poll and read p99 < 50 ms while 32 clients guess.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

BENCH = "opcua_hostile"
POLL_INTERVAL_S = 0.5  # examples/demo-plant.toml
PLCS = ("PLC-MODBUS", "PLC-S7")
SPRAY_NAMES = 200
_source: contextvars.ContextVar[str | None] = contextvars.ContextVar("source", default=None)


def log(message: str) -> None:
    print(f"{BENCH}: {message}", file=sys.stderr, flush=True)


def _quiet_logs() -> None:
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


# -- the attackers (child process) -------------------------------------------------------


def _bind_sources(loop: asyncio.AbstractEventLoop) -> None:
    """Make every connection of a task bind to its `_source` loopback address."""
    original = loop.create_connection

    async def create_connection(*args: Any, **kwargs: Any) -> Any:
        source = _source.get()
        if source is not None:
            kwargs.setdefault("local_addr", (source, 0))
        return await original(*args, **kwargs)

    loop.create_connection = create_connection  # type: ignore[method-assign]


async def _guess(url: str, user: str, timeout_s: float) -> str:
    from asyncua import Client
    from asyncua.ua.uaerrors import BadUserAccessDenied

    client = Client(url, timeout=timeout_s)
    client.set_user(user)
    client.set_password(secrets.token_hex(8))
    try:
        async with client:
            return "accepted"
    except BadUserAccessDenied:
        return "refused"
    except TimeoutError:
        return "timeouts"
    except Exception:
        return "errors"


async def attack(url: str, clients: int, duration_s: float, spray: bool) -> dict[str, Any]:
    _bind_sources(asyncio.get_running_loop())
    outcomes: Counter[str] = Counter()
    names = [f"user{n:03d}" for n in range(SPRAY_NAMES - 4)]
    names += ["viewer", "operator", "engineer", "admin"]
    deadline = time.monotonic() + duration_s

    async def guesser(index: int) -> None:
        _source.set(f"127.0.0.{2 + index}" if spray else None)
        n = index
        while time.monotonic() < deadline:
            user = names[n % len(names)] if spray else "operator"
            n += clients
            outcomes[await _guess(url, user, timeout_s=5.0)] += 1

    await asyncio.gather(*(guesser(i) for i in range(clients)))
    return dict(outcomes)


def run_attack(args: argparse.Namespace) -> None:
    _quiet_logs()
    result = asyncio.run(attack(args.attack, args.clients, args.duration, args.spray))
    sys.stdout.write(json.dumps(result) + "\n")


# -- the measuring side --------------------------------------------------------------------


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return values


def _delta(
    before: dict[Any, float], after: dict[Any, float], name: str, **match: str
) -> dict[tuple[tuple[str, str], ...], float]:
    found = {}
    for (sample, labels), value in after.items():
        if sample == name and all(dict(labels).get(k) == v for k, v in match.items()):
            found[labels] = value - before.get((sample, labels), 0.0)
    return found


class Reader:
    """The fresh client: one anonymous session reading TK-101 Level at a steady rate."""

    def __init__(self, url: str, interval_s: float) -> None:
        self._url = url
        self._interval_s = interval_s
        self.latencies: list[float] = []
        self.failures = 0

    async def run(self, stop: asyncio.Event) -> None:
        from asyncua import Client

        async with Client(self._url, timeout=10) as client:
            ns = await client.get_namespace_index("urn:invops:ua:plant")
            tns = await client.get_namespace_index("urn:invops:ua:types")
            tank = await client.nodes.objects.get_child(
                [f"{ns}:Inventory", f"{ns}:PLANT1", f"{ns}:TANKFARM", f"{ns}:TK-101"]
            )
            level = await tank.get_child(f"{tns}:Level")
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    await level.read_data_value(raise_on_bad_status=False)
                    self.latencies.append(time.perf_counter() - started)
                except Exception:
                    self.failures += 1
                await asyncio.sleep(self._interval_s)

    def take(self) -> tuple[list[float], int]:
        taken, failures = self.latencies, self.failures
        self.latencies, self.failures = [], 0
        return taken, failures


async def _connect_times(url: str, stop: asyncio.Event, every_s: float) -> list[float]:
    from asyncua import Client

    times = []
    while not stop.is_set():
        started = time.perf_counter()
        try:
            async with Client(url, timeout=10):
                times.append(time.perf_counter() - started)
        except Exception:
            times.append(float("inf"))
        await asyncio.sleep(every_s)
    return times


def _plc_side(before: dict[Any, float], after: dict[Any, float], seconds: float) -> dict[str, Any]:
    polls = _delta(before, after, "invops_plc_poll_seconds_count")
    expected = seconds / POLL_INTERVAL_S
    missed = 0
    for plc in PLCS:
        made = polls.get((("plc", plc),), 0.0)
        missed += max(0, int(expected - made) - 1)  # one per PLC for the window's edges
    errors = sum(_delta(before, after, "invops_plc_errors_total").values())
    return {"plc_polls_missed": missed, "plc_poll_errors": int(errors)}


async def _window(
    reader: Reader,
    endpoints: dict[str, str],
    args: argparse.Namespace,
    attack: asyncio.Task[Any] | None,
) -> dict[str, Any]:
    stop = asyncio.Event()
    before = _scrape(endpoints["metrics"])
    reader.take()
    started = time.monotonic()
    connects = asyncio.create_task(_connect_times(endpoints["opcua"], stop, every_s=2.0))
    if attack is not None:
        await attack
    else:
        await asyncio.sleep(args.duration)
    stop.set()
    connect_times = await connects
    seconds = time.monotonic() - started
    after = _scrape(endpoints["metrics"])
    latencies, failures = reader.take()
    result: dict[str, Any] = {
        "read_p50_ms": _ms(_percentile(latencies, 0.5)),
        "read_p99_ms": _ms(_percentile(latencies, 0.99)),
        "read_max_ms": _ms(max(latencies, default=None)),
        "read_failures": failures,
        "fresh_connect_max_ms": _ms(max(connect_times, default=None)),
        **_plc_side(before, after, seconds),
    }
    refusals = _delta(before, after, "invops_opcua_login_failures_total")
    result["login_failures"] = {dict(k)["reason"]: int(v) for k, v in refusals.items() if v}
    lockouts = _delta(before, after, "invops_opcua_lockouts_total")
    result["lockouts"] = {dict(k)["scope"]: int(v) for k, v in lockouts.items() if v}
    result["seconds"] = round(seconds, 1)
    return result


def _start_demo(data_dir: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOPS_")}
    args = ["demo", "--data-dir", str(data_dir), "--opcua-port", "0", "--metrics-port", "0",
            "--modbus-port", "0", "--s7-port", "0", "--api-port", "0"]  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "invops.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    path = data_dir / "endpoints.json"
    deadline = time.monotonic() + 60
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("invops demo did not start")
        time.sleep(0.1)
    time.sleep(0.5)  # the file is written before the welcome; let the first polls run
    return process, json.loads(path.read_text())


async def measure(case: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="invops-hostile-") as tmp:
        demo, endpoints = _start_demo(Path(tmp) / "var")
        try:
            await asyncio.sleep(args.warmup)
            reader = Reader(endpoints["opcua"], args.read_interval_ms / 1000)
            stop = asyncio.Event()
            reading = asyncio.create_task(reader.run(stop))
            await asyncio.sleep(1.0)
            quiet = await _window(reader, endpoints, args, None)
            log(f"{case}: quiet window done, attacking with {args.clients} clients")
            command = [sys.executable, __file__, "--attack", endpoints["opcua"]]
            command += ["--clients", str(args.clients), "--duration", str(args.duration)]
            if case == "spray":
                command.append("--spray")
            attacker = await asyncio.create_subprocess_exec(
                *command, stdout=asyncio.subprocess.PIPE
            )
            guessing = asyncio.create_task(attacker.communicate())
            attacked = await _window(reader, endpoints, args, guessing)
            outcomes = json.loads(guessing.result()[0] or b"{}")
            stop.set()
            await reading
        finally:
            demo.terminate()
            try:
                demo.wait(timeout=20)
            except subprocess.TimeoutExpired:
                demo.kill()
    attempts = sum(outcomes.values())
    return {
        "bench": BENCH,
        "case": case,
        "clients": args.clients,
        "duration_s": args.duration,
        "attempts": attempts,
        "attempts_per_s": round(attempts / attacked["seconds"], 1),
        "refused": outcomes.get("refused", 0),
        "accepted": outcomes.get("accepted", 0),
        "timeouts": outcomes.get("timeouts", 0),
        "errors": outcomes.get("errors", 0),
        "login_failures": attacked["login_failures"],
        "lockouts": attacked["lockouts"],
        "plc_polls_missed": attacked["plc_polls_missed"],
        "plc_poll_errors": attacked["plc_poll_errors"],
        "read_p50_ms": attacked["read_p50_ms"],
        "read_p99_ms": attacked["read_p99_ms"],
        "read_max_ms": attacked["read_max_ms"],
        "read_failures": attacked["read_failures"],
        "fresh_connect_max_ms": attacked["fresh_connect_max_ms"],
        "baseline_plc_polls_missed": quiet["plc_polls_missed"],
        "baseline_plc_poll_errors": quiet["plc_poll_errors"],
        "baseline_read_p50_ms": quiet["read_p50_ms"],
        "baseline_read_p99_ms": quiet["read_p99_ms"],
        "baseline_fresh_connect_max_ms": quiet["fresh_connect_max_ms"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="guess,spray", help="comma-separated: guess, spray")
    parser.add_argument("--clients", type=int, default=32, help="password guessers")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per window")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds after start")
    parser.add_argument("--read-interval-ms", type=int, default=50, help="fresh client reads")
    parser.add_argument("--attack", help=argparse.SUPPRESS)  # child mode: the guessers
    parser.add_argument("--spray", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attack:
        run_attack(args)
        return
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(cases) - {"guess", "spray"}
    if unknown or args.clients < 1 or args.duration <= 0:
        parser.error(f"unknown cases {sorted(unknown)}" if unknown else "bad --clients/--duration")
    _quiet_logs()
    for case in cases:
        print(json.dumps(asyncio.run(measure(case, args))), flush=True)


if __name__ == "__main__":
    main()
