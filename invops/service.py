"""`invops run`: the service's lifecycle — start, run, signals, orderly stop.

`invops.wiring.assemble` builds everything from the config (the one place that
knows every concrete class); here everything long-lived runs as a task of one
TaskGroup. SIGINT/SIGTERM (or the `stop` event) cancels the group, pollers
first, then the exit stack closes in reverse order: queued samples are fed,
pending postings commit, OPC UA sessions close, the ledger writer finishes. A
PLC that fails never stops the others (each poller retries on its own).
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from pathlib import Path

from inventory_core import Ledger
from inventory_core.cancel import cancel_and_wait
from inventory_core.domain.errors import WriterLeaseLost
from inventory_core.log import get_logger
from invops import __version__
from invops.config import InvopsConfig
from invops.wiring import Overrides, assemble

log = get_logger(__name__)
CHAIN_HEAD_LOG_INTERVAL_S = 600


@dataclasses.dataclass(frozen=True, slots=True)
class Endpoints:
    """What a started service listens on (ports resolved when 0 was asked for)."""

    opcua: str
    metrics_port: int
    ledger: Ledger
    api_port: int | None = None  # None: the config has no `[api]`


async def run_service(
    config: InvopsConfig,
    *,
    plc_ports: Mapping[str, int] | None = None,
    opcua_endpoint: str | None = None,
    pki_dir: Path | None = None,
    buffer_path: Path | None = None,
    metrics_port: int | None = None,
    api_port: int | None = None,
    stop: asyncio.Event | None = None,
    ready: Callable[[Endpoints], Awaitable[None] | None] | None = None,
    extra_tasks: Sequence[tuple[str, Callable[[Ledger], Awaitable[None]]]] = (),
) -> None:
    """Run until `stop` is set (or SIGINT/SIGTERM when `stop` is None).

    `ready` is called once everything listens, before the first poll; when it returns
    an awaitable, the service awaits it first (HTTP is served meanwhile: it runs on
    this event loop). `extra_tasks` (name, work) run beside the pollers on the
    service's ledger and stop with them (the demo's simulated ERP).
    """
    stop = stop or _signal_event()
    overrides = Overrides(plc_ports, opcua_endpoint, pki_dir, buffer_path, metrics_port, api_port)
    async with AsyncExitStack() as stack:
        service = await assemble(config, stack, overrides)
        ledger, opcua, http = service.ledger, service.opcua, service.http
        log.info("invops_started", version=__version__, opcua=opcua.endpoint_url, metrics=http.url)
        if ready is not None:
            api = None if service.api is None else service.api.port
            announced = ready(Endpoints(opcua.endpoint_url, http.port, ledger, api))
            if announced is not None:
                await announced
        lost = False
        try:
            async with asyncio.TaskGroup() as group:
                pollers = [
                    group.create_task(poller.run(), name=f"poll-{poller.plc}")
                    for poller in service.pollers
                ]
                others = [group.create_task(work(), name=name) for name, work in service.background]
                others += [group.create_task(_run(work(ledger)), name=n) for n, work in extra_tasks]
                others.append(group.create_task(_log_chain_heads(ledger), name="chain-heads"))
                try:
                    await stop.wait()
                    log.info("invops_stopping", pollers=len(pollers))
                finally:
                    # Also when a task failed and the group cancelled this body: the group
                    # cancels its tasks once, and Python 3.11 can lose that (inventory_core.cancel).
                    await cancel_and_wait(pollers)
                    await cancel_and_wait(others)
        except* WriterLeaseLost as group_error:
            lost = True  # another process books these units now: stop, book nothing more
            error = group_error.exceptions[0]
            log.error("writer_lease_lost_stopping", writer=ledger.writer_id, error=str(error))
            raise error from None
        finally:
            if not lost:
                await service.bridge.drain()  # readings already taken still become movements


async def _run(work: Awaitable[None]) -> None:
    await work


async def _log_chain_heads(ledger: Ledger) -> None:
    """SPEC 5: chain heads go to the log periodically, an outside record of the tail."""
    while True:
        await asyncio.sleep(CHAIN_HEAD_LOG_INTERVAL_S)
        for writer, (seq, digest) in (await ledger.chain_heads()).items():
            log.info("audit_chain_head", when="periodic", writer=writer, seq=seq, hash=digest)


def _signal_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop
