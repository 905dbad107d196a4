"""Is this SQLite file an invops ledger? Asked before SQLAlchemy touches it.

Opening a file through the ledger's engines switches it to WAL and may write to it,
so `invops ledger verify` on an empty file or on another application's database
would change that file. `check_ledger_file` looks first, without writing: the
file's size, then the table names through SQLite's own read-only connection. When no `-wal`
file lies beside the database (nobody has it open in WAL mode), the connection is
`immutable`, so SQLite creates no `-shm`/`-wal` files either; with a `-wal` file, the
schema may still be in it, so a plain read-only connection reads through it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

from inventory_core.domain.errors import LedgerUnavailable

__all__ = ["check_ledger_file"]

LEDGER_TABLES = frozenset({"alembic_version", "movements", "audit"})


def check_ledger_file(path: Path, *, create: bool) -> None:
    """Refuse the existing file `path` unless it is an invops ledger.

    With `create` (`db upgrade`, migrate on start) an empty file or an empty database
    may become one; another application's database is refused either way.
    """
    # Never open the file ourselves: closing any descriptor of it drops the POSIX locks
    # SQLite connections of this process hold on it (the service checks it too). stat()
    # and SQLite's own (read-only) connection are safe.
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise LedgerUnavailable(f"cannot read {path}: {exc.strerror or exc}") from exc
    if size == 0:
        if create:
            return
        raise LedgerUnavailable(f"{path} is an empty file, not an invops ledger; {_fix(path)}")
    tables = _table_names(path)
    if tables >= LEDGER_TABLES or (create and not tables):
        return
    if tables and "alembic_version" not in tables:
        listed = ", ".join(sorted(tables)[:5])
        raise LedgerUnavailable(
            f"{path} is another application's SQLite database (tables {listed}), "
            "not an invops ledger"
        )
    raise LedgerUnavailable(f"{path} has no ledger schema; {_fix(path)}")


def _table_names(path: Path) -> set[str]:
    wal_in_use = Path(f"{path}-wal").exists()
    mode = "mode=ro" if wal_in_use else "mode=ro&immutable=1"
    try:
        connection = sqlite3.connect(f"file:{quote(str(path.resolve()))}?{mode}", uri=True)
    except sqlite3.Error as exc:
        raise LedgerUnavailable(f"cannot open {path}: {exc}") from exc
    try:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {str(name) for (name,) in rows}
    except sqlite3.DatabaseError as exc:
        if "not a database" in str(exc):
            raise LedgerUnavailable(
                f"{path} is not a SQLite database, so not an invops ledger"
            ) from exc
        raise LedgerUnavailable(f"cannot read {path}: {exc}") from exc
    finally:
        connection.close()


def _fix(path: Path) -> str:
    return f"run: invops db upgrade --url sqlite+aiosqlite:///{path}"
