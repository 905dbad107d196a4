"""End-to-end fixtures: run the real `invops` console script against real ledger files.

Every run gets an explicit environment (the caller's, minus every INVOPS_*
variable, plus what the test sets), a working directory in tmp_path and a
timeout. Ledgers that several tests start from (an empty schema, a small
plant with one movement of every kind) are built once per session through
the CLI itself and copied into each test's tmp_path, so tests stay
independent without paying for the same subprocesses again.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO / "examples" / "demo-plant.toml"
INVOPS_SCRIPT = Path(sys.executable).with_name("invops")
TIMEOUT_S = 60

# The demo plant has no two storage units for the same material, so a transfer
# needs one more ethanol tank: the demo file plus TK-103. And the demo's tanks are
# measured (a manual receipt there is an advice the gauge books), so the CLI's postings
# of every kind go to a TK-101 booked by its postings, as a manual unit is.
MANUAL_TK101 = 'id = "TK-101"\nbooking = "manual"  # e2e: booked by its postings\n'
EXTRA_TANK = """
[[storage_units]]
id = "TK-103"
description = "Second ethanol tank (e2e tests)"
area = "TANKFARM"
kind = "tank"
capacity = 20000
capacity_uom = "L"
material = "ETHANOL-96"
"""


def base_command() -> list[str]:
    if INVOPS_SCRIPT.exists():
        return [str(INVOPS_SCRIPT)]
    return [sys.executable, "-m", "invops.cli"]


def clean_env(
    ledger_url: str | None = None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOPS_")}
    env.update({"NO_COLOR": "1", "COLUMNS": "200", "PYTHONDONTWRITEBYTECODE": "1"})
    if ledger_url is not None:
        env["INVOPS_LEDGER_URL"] = ledger_url
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class Result:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    @property
    def out_lines(self) -> list[str]:
        return [line for line in self.stdout.splitlines() if line.strip()]

    def json(self) -> Any:
        """stdout parsed as exactly one JSON document (json.loads rejects trailing data)."""
        return json.loads(self.stdout)

    def __str__(self) -> str:
        return (
            f"invops {' '.join(self.args)}\n-> exit {self.returncode}\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )


@dataclass
class Cli:
    """Runs `invops ARGS...` in `cwd` with a clean environment."""

    cwd: Path

    def __call__(
        self,
        *args: str | Path,
        env_url: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Result:
        return self.many([args], env_url=env_url, env=env)[0]

    def many(
        self,
        argvs: Sequence[Sequence[str | Path]],
        *,
        env_url: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> list[Result]:
        """Run several invocations concurrently (each still a separate process)."""
        environment = clean_env(env_url, env)
        procs = []
        for argv in argvs:
            args = tuple(str(a) for a in argv)
            proc = subprocess.Popen(
                [*base_command(), *args],
                cwd=self.cwd,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            procs.append((args, proc))
        results = []
        for args, proc in procs:
            try:
                out, err = proc.communicate(timeout=TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                pytest.fail(f"invops {' '.join(args)} did not finish within {TIMEOUT_S} s")
            results.append(Result(args, proc.returncode, out, err))
        return results


@dataclass
class LedgerFile:
    """A SQLite ledger file; `url` is what a user passes to --url."""

    path: Path
    posts: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"sqlite+aiosqlite:///{self.path}"

    def sql(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run SQL on the file with the stdlib sqlite3 module (committed, connection closed)."""
        conn = sqlite3.connect(self.path)
        try:
            rows = conn.execute(query, params).fetchall()
            conn.commit()
            return rows
        finally:
            conn.close()

    def copy_to(self, directory: Path) -> LedgerFile:
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / self.path.name
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{self.path}{suffix}")
            if source.exists():
                shutil.copy2(source, f"{target}{suffix}")
        return LedgerFile(target, dict(self.posts))


def _check(result: Result) -> Result:
    # pytest.fail, not assert: a broken fixture must not pass as an xfail(raises=AssertionError)
    if result.returncode != 0:
        pytest.fail(f"fixture setup failed:\n{result}")
    return result


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


@pytest.fixture(scope="session")
def plus_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo plant with TK-101 booked manually (lots mixed, not blended), plus a second
    ethanol tank TK-103."""
    path = tmp_path_factory.mktemp("config") / "demo-plus-tk103.toml"
    demo = DEMO_CONFIG.read_text(encoding="utf-8")
    assert demo.count('id = "TK-101"\n') == 1 and demo.count('lot_handling = "blend"') == 1
    demo = demo.replace('lot_handling = "blend"', 'lot_handling = "mixed"  # e2e: lots kept apart')
    path.write_text(demo.replace('id = "TK-101"\n', MANUAL_TK101) + EXTRA_TANK, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def empty_template(tmp_path_factory: pytest.TempPathFactory) -> LedgerFile:
    directory = tmp_path_factory.mktemp("empty-ledger")
    ledger = LedgerFile(directory / "ledger.db")
    _check(Cli(directory)("db", "upgrade", "--url", ledger.url))
    return ledger


@pytest.fixture(scope="session")
def plant_template(
    tmp_path_factory: pytest.TempPathFactory, empty_template: LedgerFile, plus_config: Path
) -> LedgerFile:
    """One movement of every postable kind, posted through the CLI with --json.

    Book balances afterwards: TK-101/E1 395 kg, TK-101/E2 50 kg, TK-103/E1 200 kg.
    """
    directory = tmp_path_factory.mktemp("plant-ledger")
    ledger = empty_template.copy_to(directory)
    run = Cli(directory)
    common = ["--url", ledger.url, "--user", "op-e2e", "--json"]
    demo = ["--config", str(plus_config)]
    steps: dict[str, list[str]] = {
        # 1000 L of ethanol at 0.80 kg/L = 800 kg
        "receipt": ["--lot", "E1", "--qty", "1000", "--uom", "L", "--to", "TK-101", *demo],
        "issue": ["--lot", "E1", "--qty", "100", "--uom", "kg", "--from", "TK-101", *demo],
        "production": [
            *("--lot", "E2", "--qty", "50", "--uom", "kg", "--to", "TK-101"),
            *("--consumed", "E1", *demo),
        ],
        "transfer": [
            *("--lot", "E1", "--qty", "200", "--uom", "kg", "--from", "TK-101", "--to", "TK-103"),
            *("--config", str(plus_config)),
        ],
        "adjustment": [
            *("--lot", "E1", "--qty", "-10", "--uom", "kg", "--to", "TK-101"),
            *("--reason", "spillage", *demo),
        ],
        # book 490 kg, counted 400 kg
        "count": ["--lot", "E1", "--qty", "400", "--uom", "kg", "--to", "TK-101", *demo],
        "scrap": [
            *("--lot", "E1", "--qty", "5", "--uom", "kg", "--from", "TK-101"),
            *("--reason", "contaminated", *demo),
        ],
    }
    for kind, args in steps.items():
        result = _check(run("ledger", "post", kind, "--material", "ETHANOL-96", *args, *common))
        ledger.posts[kind] = result.json()
    return ledger


@pytest.fixture
def new_ledger(tmp_path: Path) -> Callable[[str], LedgerFile]:
    """LedgerFile(tmp_path / NAME): a path for a ledger that does not exist yet."""
    return lambda name: LedgerFile(tmp_path / name)


@pytest.fixture
def empty_ledger(empty_template: LedgerFile, tmp_path: Path) -> LedgerFile:
    """A ledger with the schema and nothing else, in this test's tmp_path."""
    return empty_template.copy_to(tmp_path / "db")


@pytest.fixture
def plant(plant_template: LedgerFile, tmp_path: Path) -> LedgerFile:
    """This test's own copy of the plant ledger (free to post into or tamper with)."""
    return plant_template.copy_to(tmp_path / "db")
