"""Dependencies point inward: the core imports no adapter and no I/O library."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ADAPTERS = {"information_model", "opcua_server", "plc_connectors", "simulators", "invops"}
IO_LIBRARIES = {
    "sqlalchemy",
    "alembic",
    "asyncua",
    "pymodbus",
    "snap7",
    "s7",
    "pydantic",
    "aiosqlite",
    "asyncpg",
    "prometheus_client",
    "starlette",
    "uvicorn",
    "h11",
    "typer",
    "structlog",
}


def _imports(package: str) -> dict[Path, set[str]]:
    found: dict[Path, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[path] = names
    return found


def test_inventory_core_imports_no_adapter_package() -> None:
    offenders = {
        str(p): n & ADAPTERS for p, n in _imports("inventory_core").items() if n & ADAPTERS
    }
    assert not offenders


def test_domain_imports_no_io_library() -> None:
    offenders = {
        str(p): n & IO_LIBRARIES
        for p, n in _imports("inventory_core/domain").items()
        if n & IO_LIBRARIES
    }
    assert not offenders


def test_only_store_imports_sqlalchemy() -> None:
    offenders = [
        str(p)
        for p, n in _imports("inventory_core").items()
        if n & {"sqlalchemy", "alembic", "aiosqlite", "asyncpg"} and "store" not in p.parts
    ]
    assert not offenders
