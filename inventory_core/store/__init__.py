"""SQL storage of the ledger (the only package that imports SQLAlchemy)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from datetime import date
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InvalidRequestError, NoSuchModuleError

from inventory_core.domain.audit import GENESIS_HASH
from inventory_core.domain.errors import LedgerUnavailable
from inventory_core.domain.lease import LeaseHolder, WriterLease
from inventory_core.domain.posting import DEFAULT_CAPACITY_MARGIN_PCT
from inventory_core.log import get_logger
from inventory_core.store import lease as leases
from inventory_core.store.engine import create_read_engine, create_runner, is_sqlite, sqlite_file
from inventory_core.store.history_store import HistoryStore
from inventory_core.store.ledger_file import check_ledger_file
from inventory_core.store.migrate import current_revision, head_revision, upgrade
from inventory_core.store.reader import LedgerReader
from inventory_core.store.writer import BatchWriter, Command, Request
from inventory_core.store.writer_process import WriterProcess, WriterSettings

__all__ = ["HistoryStore", "LedgerStore", "check_url", "describe_url", "upgrade_schema"]

T = TypeVar("T")
log = get_logger(__name__)


def describe_url(url: str) -> str:
    """The URL with any password masked, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid URL>"


SUPPORTED_DRIVERS = {"sqlite": "aiosqlite", "postgresql": "asyncpg"}
URL_EXAMPLES = "sqlite+aiosqlite:///path/invops.db or postgresql+asyncpg://user@host/db"


def check_url(url: str, *, create: bool) -> None:
    """Refuse a URL invops cannot use, with the fix in the message.

    Without `create`, a SQLite file must already exist: a typo in a path then
    reports "no ledger" instead of leaving an empty database behind. An existing
    file must be an invops ledger (`check_ledger_file`), so that an empty file or
    another application's database is refused, not changed.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise LedgerUnavailable(f"invalid ledger URL {url!r}; expected {URL_EXAMPLES}") from None
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if SUPPORTED_DRIVERS.get(backend) != driver:
        raise LedgerUnavailable(f"unsupported ledger URL {describe_url(url)!r}: use {URL_EXAMPLES}")
    path = sqlite_file(parsed) if backend == "sqlite" else None
    if path is None:
        return
    if path.exists():
        check_ledger_file(path, create=create)  # before any engine can change the file
    elif not create:
        raise LedgerUnavailable(
            f"no ledger at {path} (file does not exist); create it with: "
            f"invops db upgrade --url {describe_url(url)}"
        )


def _or_error(factory: Callable[[str], T], url: str) -> T:
    try:
        return factory(url)
    except (ArgumentError, NoSuchModuleError, InvalidRequestError, ValueError) as exc:
        raise LedgerUnavailable(f"invalid ledger URL {describe_url(url)!r}: {exc}") from exc
    except OSError as exc:
        raise LedgerUnavailable(f"cannot create ledger at {describe_url(url)}: {exc}") from exc


async def upgrade_schema(url: str) -> tuple[str | None, str]:
    """Create or migrate the schema at `url`; returns (revision before, revision after)."""
    check_url(url, create=True)
    engine = _or_error(create_read_engine, url)
    try:
        before = await current_revision(engine)
        await upgrade(engine)
        return before, head_revision()
    except (DBAPIError, OSError) as exc:
        raise LedgerUnavailable(
            f"cannot migrate ledger at {describe_url(url)}: {_first_line(exc)}"
        ) from exc
    finally:
        await engine.dispose()


def _own_process_possible(url: str) -> bool:
    """A SQLite file (another process can open it) on POSIX (fd passing)."""
    return os.name == "posix" and is_sqlite(url) and sqlite_file(make_url(url)) is not None


def _absolute_sqlite_url(url: str) -> str:
    parsed = make_url(url)
    path = sqlite_file(parsed)
    assert path is not None
    return parsed.set(database=str(path.resolve())).render_as_string(hide_password=False)


def _log_level() -> int:
    """The level the writer process logs at: what this process's ledger logs would show."""
    return logging.getLogger("inventory_core").getEffectiveLevel()


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.splitlines()[0] if text else type(exc).__name__


class LedgerStore:
    """Engines, the batch writer and the reader for one ledger database."""

    def __init__(
        self,
        url: str,
        *,
        writer_id: str,
        batch_max: int,
        now: Callable[[], str],
        today: Callable[[], date],
        on_commit: Callable[[int, float], None] | None = None,
        create: bool = False,
        capacity_margin_pct: Decimal = DEFAULT_CAPACITY_MARGIN_PCT,
        lease: WriterLease | None = None,
        writer_process: bool = False,
    ) -> None:
        check_url(url, create=create)
        self.url = url
        self.writer_id = writer_id
        self.lease = lease
        self.lease_holder: LeaseHolder | None = None  # set while this process holds the lease
        self._opened = False
        self._read_engine = _or_error(create_read_engine, url)
        self._runner = _or_error(create_runner, url)
        self.reader = LedgerReader(self._read_engine)

        self._writer: BatchWriter | WriterProcess
        if writer_process and _own_process_possible(url):
            # The file's absolute path: a child started later must find the same file
            # whatever this process's working directory is by then.
            absolute = _absolute_sqlite_url(url)
            settings = WriterSettings(
                absolute, writer_id, batch_max, capacity_margin_pct, None, _log_level()
            )
            self._writer = WriterProcess(settings, now=now, today=today, on_commit=on_commit)
        else:

            def committed(batch: Sequence[Command], seconds: float) -> None:
                if on_commit is not None:
                    on_commit(len(batch), seconds)

            self._writer = BatchWriter(
                self._runner,
                writer_id=writer_id,
                batch_max=batch_max,
                now=now,
                today=today,
                on_commit=committed,
                capacity_margin_pct=capacity_margin_pct,
            )

    async def open(self, *, migrate: bool) -> None:
        try:
            if migrate:
                await upgrade(self._read_engine)
            revision = await current_revision(self._read_engine)
        except (DBAPIError, OSError) as exc:
            raise LedgerUnavailable(
                f"cannot open ledger at {describe_url(self.url)}: {_first_line(exc)}"
            ) from exc
        if revision != head_revision():
            state = "has no ledger schema" if revision is None else f"is at schema {revision}"
            raise LedgerUnavailable(
                f"ledger at {describe_url(self.url)} {state}; "
                f"run: invops db upgrade --url {describe_url(self.url)}"
            )
        if self.lease is not None:
            await self._acquire_lease(self.lease)
        await self._writer.start()
        self._opened = True
        await self.log_chain_head("open")

    async def _acquire_lease(self, lease: WriterLease) -> None:
        writer_id = self.writer_id
        try:
            acquired = await self._runner.run(lambda c: leases.acquire(c, writer_id, lease))
        except (DBAPIError, OSError) as exc:
            raise LedgerUnavailable(
                f"cannot take the writer lease at {describe_url(self.url)}: {_first_line(exc)}"
            ) from exc
        holder = self.lease_holder = acquired.holder
        self._writer.fence_with(lease.instance)
        if acquired.previous is not None:
            previous = acquired.previous
            log.warning(
                "writer_lease_taken_over",
                writer=writer_id,
                previous_host=previous.host,
                previous_pid=previous.pid,
                expired=previous.expires_at,
            )
        for unit, owner in sorted(acquired.units_taken.items()):
            log.warning("measured_unit_taken_over", unit=unit, from_writer=owner)
        log.info(
            "writer_lease_acquired",
            writer=writer_id,
            host=holder.host,
            pid=holder.pid,
            units=len(lease.units),
            expires=holder.expires_at,
        )

    async def renew_lease(self) -> str:
        """Renew this process's writer lease; returns the new expiry (database time).
        Raises WriterLeaseLost when another process holds it, LedgerUnavailable when the
        ledger cannot be reached."""
        lease, writer_id = self.lease, self.writer_id
        assert lease is not None and self.lease_holder is not None, "no writer lease held"
        try:
            return await self._runner.run(lambda c: leases.renew(c, writer_id, lease))
        except (DBAPIError, OSError) as exc:
            raise LedgerUnavailable(f"writer lease not renewed: {_first_line(exc)}") from exc

    async def _release_lease(self) -> None:
        lease, writer_id = self.lease, self.writer_id
        if lease is None or self.lease_holder is None:
            return
        self.lease_holder = None
        try:
            released = await self._runner.run(
                lambda c: leases.release(c, writer_id, lease.instance)
            )
        except (DBAPIError, OSError) as exc:
            log.warning(
                "writer_lease_not_released",
                writer=writer_id,
                expires_in_s=lease.duration_s,
                error=_first_line(exc),
            )
            return
        if released:
            log.info("writer_lease_released", writer=writer_id)

    async def submit(self, request: Request, digest: str = "") -> Any:
        return await self._writer.submit(request, digest)

    @property
    def writer_pid(self) -> int | None:
        """The writer process's id (None where the writer is a thread of this process)."""
        return self._writer.pid if isinstance(self._writer, WriterProcess) else None

    async def log_chain_head(self, when: str) -> None:
        """Write this writer's chain head to the log: an outside record that exposes a
        truncated chain tail (SPEC section 5)."""
        seq, digest = (await self.reader.chain_heads()).get(self.writer_id, (0, GENESIS_HASH))
        log.info("audit_chain_head", when=when, writer=self.writer_id, seq=seq, hash=digest)

    async def close(self) -> None:
        await self._writer.stop()
        await self._release_lease()  # after the last batch: nothing of ours commits later
        if self._opened:
            try:
                await self.log_chain_head("close")
            except (DBAPIError, OSError) as exc:
                log.warning("audit_chain_head_not_logged", when="close", error=_first_line(exc))
        await self._runner.close()
        await self._read_engine.dispose()
