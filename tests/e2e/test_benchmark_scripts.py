"""The benchmark scripts still run: each in a short configuration, as `make bench` runs it
(a separate process), printing only JSON lines in SPEC section 7's shape. No figure is
judged here (benchmarks measure speed, tests do not); `make bench` itself is not part of
CI, so a script that no longer runs would otherwise go unnoticed until someone measures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Every script in benchmarks/, in a configuration of seconds.
SHORT = {
    "api.py": ["--clients", "4", "--postings", "64", "--reads", "32", "--events", "5"],
    "opcua_server.py": [
        "--cases", "post_receipt", "--sessions", "2", "--call-window", "0.5",
        "--call-warmup", "0.2",
    ],
    "ledger_throughput.py": [
        "--backends", "sqlite", "--callers", "1,8", "--postings", "128", "--lots-held", "64",
    ],
    "plc_poll.py": ["--cases", "modbus:2,s7:2", "--window", "1", "--rounds", "1",
                    "--warmup", "0.5"],
    "end_to_end.py": ["--units", "10", "--plcs", "5", "--window", "2", "--warmup", "1",
                      "--grace", "1"],
    "opcua_connections.py": ["--sockets", "20", "--window", "1", "--ramp", "0.5",
                             "--warmup", "0.5", "--clients", "2", "--items", "10"],
    "opcua_hostile.py": ["--cases", "guess", "--clients", "2", "--duration", "1",
                         "--warmup", "0.5"],
}  # fmt: skip


def test_every_benchmark_script_is_run_here() -> None:
    assert sorted(SHORT) == sorted(p.name for p in (ROOT / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", sorted(SHORT))
def test_a_benchmark_prints_json_lines_in_the_spec_shape(script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *SHORT[script]],
        capture_output=True, text=True, timeout=240, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines, "no measured case"
    for line in lines:
        case = json.loads(line)  # nothing but JSON lines on stdout
        assert case["bench"] == script.removesuffix(".py"), case
        figures = [k for k in case if k.endswith(("_per_s", "_ms", "_mb", "_pct_cpu"))]
        assert figures and all(isinstance(case[k], int | float) for k in figures), case
        if "ratio" in case:
            assert any(k.startswith("baseline_") for k in case), case
