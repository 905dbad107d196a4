"""`invops run`: the service — ledger, PLC pollers, measurement pipeline, OPC UA server.

Everything long-lived runs as a task of one TaskGroup; SIGINT/SIGTERM (or the
`stop` event) cancels the group, then the `async with` blocks close in reverse
order: pollers stop, queued samples are fed, pending postings commit, OPC UA
sessions close, the ledger writer finishes. A PLC that fails never stops the
others (each poller retries on its own).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import socket
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from decimal import Decimal
from pathlib import Path

from prometheus_client import CollectorRegistry

from inventory_core import Ledger, open_history, open_ledger
from inventory_core.domain.errors import WriterLeaseLost
from inventory_core.domain.lease import WriterLease
from inventory_core.domain.model import StorageUnitId
from inventory_core.domain.units import convert
from inventory_core.measurement_service import MeasurementService
from invops import __version__
from invops.cancel import cancel_and_wait
from invops.config import InvopsConfig
from invops.http import HealthBoard, HttpEndpoint, watch_ledger
from invops.metrics import Metrics, MetricsSink, StorageSnapshot, ua_session_count
from invops.opcua_extras import AlarmFeature, HistoryFeature
from invops.plc_bridge import LedgerBridge
from invops.reading_buffer import ReadingBuffer
from invops.unit_values import UnitValuesBuilder
from invops.wiring import http_limits, make_link, measured_units, quantity_tags
from opcua_server import InvopsOpcUaServer
from opcua_server.denied_calls import DeniedCallAudit
from opcua_server.security import (
    client_certificate_validator,
    current_session,
    current_user,
    identity_tokens,
    secure_server_kwargs,
)
from plc_connectors import PlcError, PlcPoller, PlcSettings, Sample, start_offsets

log = logging.getLogger(__name__)
CHAIN_HEAD_LOG_INTERVAL_S = 600


@dataclasses.dataclass(frozen=True, slots=True)
class Endpoints:
    """What a started service listens on (ports resolved when 0 was asked for)."""

    opcua: str
    metrics_port: int
    ledger: Ledger


class ServiceSink:
    """What every poller reports to: the ledger bridge and the OPC UA values."""

    def __init__(
        self,
        bridge: LedgerBridge,
        values: UnitValuesBuilder,
        opcua: InvopsOpcUaServer,
    ) -> None:
        self._bridge = bridge
        self._values = values
        self._opcua = opcua

    def publish(self, sample: Sample) -> None:
        self._bridge.publish(sample)
        self._opcua.update_units(self._values.from_sample(sample))

    def link_state(self, plc: str, up: bool, error: PlcError | None) -> None:
        # Not logged here: the poller logs each transition once (plc_up / plc_down).
        self._bridge.link_state(plc, up, error)

    def poll_finished(self, plc: str, seconds: float, error_reason: str | None) -> None:
        self._bridge.poll_finished(plc, seconds, error_reason)


def writer_id(config: InvopsConfig) -> str:
    """This instance's audit chain: the configured one, else one per host and site."""
    return config.ledger.writer_id or f"{config.site.name}@{socket.gethostname()}"[:64]


def capacities(config: InvopsConfig) -> dict[StorageUnitId, Decimal]:
    """Each unit's capacity in its material's base unit (for fill percent)."""
    materials = {m.id: m for m in config.material_definitions()}
    result: dict[StorageUnitId, Decimal] = {}
    for unit in config.storage_unit_definitions():
        material = materials.get(unit.material) if unit.material else None
        if material is not None:
            result[unit.id] = convert(
                unit.capacity, unit.capacity_uom, material.base_uom, material.density_kg_per_l
            )
    return result


async def run_service(
    config: InvopsConfig,
    *,
    plc_ports: Mapping[str, int] | None = None,
    opcua_endpoint: str | None = None,
    pki_dir: Path | None = None,
    buffer_path: Path | None = None,
    metrics_port: int | None = None,
    stop: asyncio.Event | None = None,
    ready: Callable[[Endpoints], Awaitable[None] | None] | None = None,
) -> None:
    """Run until `stop` is set (or SIGINT/SIGTERM when `stop` is None).

    `ready` is called once everything listens, before the first poll; when it returns
    an awaitable, the service awaits it first (HTTP is served meanwhile: it runs on
    this event loop).
    """
    stop = stop or _signal_event()
    settings = [_with_port(s, plc_ports) for s in config.plc_settings()]
    names = [s.name for s in settings]
    registry = CollectorRegistry()
    metrics = Metrics(registry, version=__version__, plcs=names)
    board = HealthBoard(names)
    snapshot = StorageSnapshot.from_config(config)
    metrics.register_storage(snapshot.samples)
    units = measured_units(config)
    lease = WriterLease.for_this_process(
        (u.unit for u in units),
        duration_s=config.ledger.lease_s,
        heartbeat_s=config.ledger.lease_heartbeat_s,
    )
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(
            HttpEndpoint(
                config.metrics.host,
                config.metrics.port if metrics_port is None else metrics_port,
                registry,
                board.current,
                limits=http_limits(config.metrics),
            )
        )
        # A second instance of this writer id or of these measured units is refused here
        # (naming the holder), before it polls a PLC or opens the reading buffer.
        ledger = await stack.enter_async_context(
            open_ledger(
                config.ledger.url,
                writer_id=writer_id(config),
                batch_max=config.ledger.batch_max,
                capacity_margin_pct=config.ledger.capacity_margin_pct,
                migrate=config.ledger.migrate_on_start,
                on_commit=metrics.posting_committed,
                lease=lease,
            )
        )
        ledger.subscribe(metrics.movement_posted)
        await ledger.sync_master_data(
            config.material_definitions(), config.storage_unit_definitions()
        )
        board.set_ledger(True)
        service = MeasurementService(ledger, units)
        await service.start()
        tags = quantity_tags(config)
        plc_tags = {plc.name: [tag.name for tag in plc.tags] for plc in settings}
        buffer = ReadingBuffer(
            buffer_path or Path(config.ledger.buffer_path),
            max_readings=config.ledger.buffer_max_readings,
        )
        stack.callback(buffer.close)
        bridge = LedgerBridge(
            service, tags, plc_tags=plc_tags, buffer=buffer, ledger_state=board.set_ledger
        )
        pki = pki_dir or Path(config.opcua.certificate_dir)
        security = secure_server_kwargs(
            config.opcua,
            config.opcua_users(),
            pki,
            audit=ledger.record_event,
            on_login_refused=metrics.opcua_login_refused,
            on_lockout=metrics.opcua_lockout,
        )
        stack.callback(security["user_manager"].close)
        opcua = InvopsOpcUaServer(
            config,
            ledger,
            endpoint=opcua_endpoint,
            identity_tokens=identity_tokens(config.opcua),
            certificate_validator=client_certificate_validator(pki),
            current_user=current_user,
            denied_calls=DeniedCallAudit(
                ledger.record_event,
                window_s=config.opcua.denied_audit_window_s,
                session=current_session,
                on_denied=metrics.opcua_denied_call,
            ),
            **security,
        )
        opcua.add_values_listener(snapshot.apply)
        opcua.add_refusal_listener(metrics.opcua_refused)
        metrics.set_opcua_sessions(lambda: ua_session_count(opcua.ua_server))
        history_store = await stack.enter_async_context(open_history(config.ledger.url))
        history = HistoryFeature(history_store)
        alarms = AlarmFeature(config)
        opcua.add_setup_hook(history.setup)
        opcua.add_setup_hook(alarms.setup)
        await stack.enter_async_context(opcua)
        stack.push_async_callback(history.stop)  # runs before the server stops
        stack.push_async_callback(alarms.close)
        sink = MetricsSink(
            ServiceSink(
                bridge,
                UnitValuesBuilder(
                    units,
                    tags,
                    capacities(config),
                    plc_tags=plc_tags,
                    deadband_fraction=config.opcua.value_deadband_pct / 100,
                ),
                opcua,
            ),
            metrics,
            health=board,
        )
        log.info("invops %s: opcua %s, metrics %s", __version__, opcua.endpoint_url, http.url)
        if ready is not None:
            announced = ready(Endpoints(opcua.endpoint_url, http.port, ledger))
            if announced is not None:
                await announced
        offsets = start_offsets(settings)
        lost = False
        try:
            async with asyncio.TaskGroup() as group:
                keeper = group.create_task(ledger.keep_lease(), name="writer-lease")
                feeder = group.create_task(bridge.run(), name="measurements")
                pollers = [
                    group.create_task(
                        PlcPoller(make_link(s), s, sink, start_offset_s=offsets[s.name]).run(),
                        name=f"poll-{s.name}",
                    )
                    for s in settings
                ]
                heads = group.create_task(_log_chain_heads(ledger), name="chain-heads")
                alarm_task = group.create_task(alarms.run(), name="alarms")
                health = group.create_task(
                    watch_ledger(board, ledger.chain_heads), name="ledger-health"
                )
                try:
                    await stop.wait()
                    log.info("stopping: %d pollers", len(pollers))
                finally:
                    # Also when a task failed and the group cancelled this body: the group
                    # cancels its tasks once, and Python 3.11 can lose that (invops.cancel).
                    await cancel_and_wait(pollers)
                    await cancel_and_wait([feeder, heads, health, alarm_task, keeper])
        except* WriterLeaseLost as group_error:
            lost = True  # another process books these units now: stop, book nothing more
            error = group_error.exceptions[0]
            log.error("writer_lease_lost_stopping writer=%s error=%s", ledger.writer_id, error)
            raise error from None
        finally:
            if not lost:
                await bridge.drain()  # readings already taken still become movements


async def _log_chain_heads(ledger: Ledger) -> None:
    """SPEC 5: chain heads go to the log periodically, an outside record of the tail."""
    while True:
        await asyncio.sleep(CHAIN_HEAD_LOG_INTERVAL_S)
        for writer, (seq, digest) in (await ledger.chain_heads()).items():
            log.info("audit chain head: writer=%s seq=%d hash=%s", writer, seq, digest)


def _with_port(settings: PlcSettings, ports: Mapping[str, int] | None) -> PlcSettings:
    if ports is None or settings.name not in ports:
        return settings
    return dataclasses.replace(settings, port=ports[settings.name])


def _signal_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop
