"""Dependencies point inward: the core imports no adapter and no I/O library."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ADAPTERS = {
    "information_model", "opcua_server", "plc_connectors", "simulators", "http_api", "invops"
}  # fmt: skip
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
    "httptools",
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


# --- the package graph (issue 13: every arrow but these fails) -------------------------

OURS = frozenset(
    {"inventory_core", "information_model", "opcua_server", "plc_connectors", "simulators",
     "http_api", "invops"}
)  # fmt: skip
ALLOWED: dict[str, frozenset[str]] = {
    "invops": OURS - {"invops"},
    "opcua_server": frozenset({"inventory_core", "information_model"}),
    "http_api": frozenset({"inventory_core"}),
    "information_model": frozenset({"inventory_core"}),
    "simulators": frozenset({"inventory_core", "plc_connectors"}),
    "plc_connectors": frozenset(),
    "inventory_core": frozenset(),
}


def package_arrows() -> set[tuple[str, str]]:
    """(module path relative to the repo, package of ours it imports), across our packages."""
    arrows = set()
    for package in OURS:
        for path, names in _imports(package).items():
            for target in names & OURS - {package}:
                arrows.add((str(path.relative_to(ROOT)), target))
    return arrows


def forbidden(arrows: set[tuple[str, str]]) -> set[tuple[str, str]]:
    return {(m, t) for m, t in arrows if t not in ALLOWED[m.split("/")[0]]}


def test_every_package_arrow_is_an_allowed_one() -> None:
    assert forbidden(package_arrows()) == set(), "forbidden imports (see ALLOWED)"


def test_the_package_graph_has_no_cycle() -> None:
    edges: dict[str, set[str]] = {p: set() for p in OURS}
    for module, target in package_arrows():
        edges[module.split("/")[0]].add(target)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(
            nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt}))
            for nxt in edges[start]
        )

    assert [p for p in sorted(OURS) if reaches(p, p, {p})] == []


def test_the_rule_catches_an_added_forbidden_import() -> None:
    """The check itself works: plc_connectors importing inventory_core is caught."""
    added = {("plc_connectors/model.py", "inventory_core"), ("opcua_server/x.py", "plc_connectors")}
    assert forbidden(package_arrows() | added) == added
