"""Mirror the ledger into the address space: movement events and lots.

Movements reach the server from the plant view (`MovementSeen`: this
process's as they are posted, other writers' from the ledger tail the view's
follower reads); units' book values come with the view's unit states. The
listener only queues and notes what a movement touched; two loops do the work:

- the event loop raises one `InventoryMovementEventType` event per movement this
  process posted, on the Ledger object and, with the same EventId, on the Server
  object (asyncua delivers an event only to subscribers of the node it is
  triggered on, it does not walk a notifier hierarchy);
- the refresh loop re-reads the touched lots from the ledger, at most once per
  debounce interval, and writes `Lots/<LotID>` (Status, Quantity,
  StorageLocation, MaterialDefinitionID, the quantity per unit, parent and child
  lots with the quantities that went from one into the other, the quality data:
  ExpirationDate, RetestDate, RetestDue, Certificate and the properties as parallel
  arrays); a lot that gained a child (production, blend) refreshes its parents too.
  A full re-read every `resync_s` catches anything missed.

A lot's quality data changes without a movement (an audit record the ledger notifies
no listener of): an OPC UA SetLotQuality refreshes its lot itself (`refresh`, awaited
by the method handler); a change through another interface or process shows with the
next full re-read, which also turns `RetestDue` on the day after the retest date.
Lot refreshes are serialised, so the newest read of a lot is the one written last.

Advices this process records or closes (matched, expired) raise an
`AdviceEventType` event the same way and keep `Ledger/OpenAdvices` current; the
full re-read also re-reads the open advices (other writers' too).

`Ledger/PendingRequests` (the requests waiting for signatures) is re-read from the
ledger: at once after an OPC UA call held a request or signed one
(`refresh_requests`, awaited by the method handlers), in the refresh loop after a
movement posted on signatures (its details name the request; this process's, through
any interface, or another writer's), and in every full re-read (which also catches
requests held or rejected through another interface or process: the ledger notifies
no listener of those).
"""

from __future__ import annotations

import asyncio
import copy
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final

from asyncua import ua
from asyncua.server.event_generator import EventGenerator
from asyncua.server.server import Server
from asyncua.ua.object_ids import ObjectIds

from information_model import TYPE_MODEL
from inventory_core.clock import parse_timestamp
from inventory_core.domain.advices import Advice, AdviceState
from inventory_core.domain.model import (
    Balance,
    GenealogyLink,
    Lot,
    MaterialDefinition,
    Movement,
    MovementKind,
)
from inventory_core.domain.signatures import RequestState, signature_lines
from inventory_core.domain.units import format_decimal
from inventory_core.ledger import Ledger
from inventory_core.log import get_logger
from opcua_server.address_space import AddressSpace, midnight
from opcua_server.values import make_node_id

log = get_logger(__name__)

EVENT_TYPE: Final = "InventoryMovementEventType"
ADVICE_EVENT_TYPE: Final = "AdviceEventType"
DEBOUNCE_S: Final = 0.2
RESYNC_S: Final = 60.0
RETRY_S: Final = 2.0
QUEUE_LIMIT: Final = 10_000
SEVERITY_NORMAL: Final = 100
SEVERITY_CORRECTION: Final = 300  # corrections and status changes deserve a look
_CORRECTIONS: Final = frozenset(
    {MovementKind.ADJUSTMENT, MovementKind.SCRAP, MovementKind.REVERSAL, MovementKind.LOT_STATUS}
)


def movement_message(movement: Movement) -> str:
    """One line a SCADA event list can show."""
    if movement.kind is MovementKind.LOT_STATUS:
        old = movement.details.get("old_status", "?")
        new = movement.details.get("new_status", "?")
        return f"lot {movement.lot} status {old} -> {new} by {movement.user}"
    route = f"{movement.from_unit or '-'} -> {movement.to_unit or '-'}"
    quantity = f"{format_decimal(movement.quantity)} {movement.uom}"
    text = f"{movement.kind} {quantity} {movement.material} lot {movement.lot} {route}"
    if movement.reverses:
        text += f" (reverses {movement.reverses})"
    return f"{text} by {movement.user} ({movement.source})"


class LedgerMirror:
    """Keeps lots and book values current and raises movement events (see module doc)."""

    def __init__(
        self,
        server: Server,
        ledger: Ledger,
        space: AddressSpace,
        *,
        debounce_s: float = DEBOUNCE_S,
        resync_s: float = RESYNC_S,
    ) -> None:
        self._server = server
        self._ledger = ledger
        self._space = space
        self._debounce_s = debounce_s
        self._resync_s = resync_s
        self._movements: asyncio.Queue[Movement | Advice] = asyncio.Queue(QUEUE_LIMIT)
        self._touched_lots: set[str] = set()
        self._dirty = asyncio.Event()
        self._closed = False
        self._generator: EventGenerator | None = None
        self._advice_generator: EventGenerator | None = None
        self._open_advices: dict[str, str] = {}  # open advice id -> created_at
        self._requests_dirty = False  # a movement posted on signatures: re-read the requests
        self._requests_lock = asyncio.Lock()  # one read-and-write of PendingRequests at a time
        self._lots_lock = asyncio.Lock()  # one read-and-write of lots at a time
        self._materials: dict[str, MaterialDefinition] = {}
        self.dropped_events = 0
        self.events_raised = 0

    async def setup(self) -> None:
        """Event generators, then a first full read of the lots (before clients connect)."""
        self._generator = await self._event_generator(EVENT_TYPE)
        self._advice_generator = await self._event_generator(ADVICE_EVENT_TYPE)
        self._ledger.subscribe_advices(self.on_advice)
        self._ledger.subscribe_requests(self.on_request)
        self._ledger.subscribe_lots(self.on_lot)
        await self.refresh_all()

    async def _event_generator(self, name: str) -> EventGenerator:
        event_type = self._space.type_ids[name]
        generator = await self._server.get_event_generator(event_type, self._space.ledger_id)
        # asyncua takes each field's type from the type's property value; the imported
        # declarations hold null, so every field would be sent as Null. Declare them.
        for event_field in TYPE_MODEL.event_type(name).fields:
            variant_type = ua.VariantType[event_field.data_type]
            generator.event.add_property(event_field.name, None, variant_type)
        return generator

    def close(self) -> None:
        """Stop listening (the listener turns into a no-op)."""
        self._closed = True

    def on_movement(self, movement: Movement, *, own: bool = True) -> None:
        """A committed movement (quick, never raising: it runs inside the posting).
        Its lot is refreshed; an event is raised for this process's movements."""
        if self._closed:
            return
        self._touched_lots.add(str(movement.lot))
        if "request" in movement.details:  # posted on signatures: its request closed
            self._requests_dirty = True
        self._dirty.set()
        if own:
            self._queue(movement)

    def on_request(self, request_id: str) -> None:
        """`Ledger.subscribe_requests` listener: a request this process held, signed or
        closed, through any interface (CLI, HTTP API, B2MML): PendingRequests follows."""
        if self._closed:
            return
        self._requests_dirty = True
        self._dirty.set()

    def on_lot(self, lot: Lot) -> None:
        """`Ledger.subscribe_lots` listener: a lot's quality data or an announcement
        changed it without a movement: its node is refreshed."""
        if self._closed:
            return
        self._touched_lots.add(str(lot.id))
        self._dirty.set()

    def on_advice(self, advice: Advice) -> None:
        """`Ledger.subscribe_advices` listener: an advice recorded, matched or closed. Its
        event is raised when it is recorded and when it closes (not per measured step)."""
        if self._closed or (advice.state is AdviceState.OPEN and advice.matches):
            return
        self._queue(advice)

    def _queue(self, item: Movement | Advice) -> None:
        try:
            self._movements.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped_events += 1
            if self.dropped_events == 1 or self.dropped_events % 1000 == 0:
                log.warning("opcua_movement_event_queue_full", dropped=self.dropped_events)

    async def run(self) -> None:
        """The event and refresh loops, until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._event_loop())
            group.create_task(self._refresh_loop())

    # --- events ------------------------------------------------------------------------

    async def _event_loop(self) -> None:
        while True:
            item = await self._movements.get()
            try:
                if isinstance(item, Advice):
                    await self.emit_advice(item)
                else:
                    await self.emit(item)
            except Exception:  # one broken event must not stop the next ones
                log.exception("opcua_event_not_raised", id=str(item.id))

    async def emit(self, movement: Movement) -> None:
        """Raise the movement's event on the Ledger object and the Server object."""
        if self._generator is None:
            raise RuntimeError("LedgerMirror.setup() has not run")
        event = self._generator.event
        event.MovementId = str(movement.id)
        event.Kind = str(movement.kind)
        event.MaterialDefinitionID = str(movement.material)
        event.LotID = str(movement.lot)
        event.FromUnit = movement.from_unit or ""
        event.ToUnit = movement.to_unit or ""
        event.Quantity = float(movement.quantity)
        event.UnitOfMeasure = movement.uom
        event.User = movement.user
        event.Source = str(movement.source)
        event.RequestId = str(movement.details.get("request", ""))
        event.Signatures = signature_lines(movement.details)
        event.Severity = SEVERITY_CORRECTION if movement.kind in _CORRECTIONS else SEVERITY_NORMAL
        unit = self._space.units.get(movement.unit or "")
        if unit is not None:  # SourceNode: the storage unit the movement is about
            event.SourceNode, event.SourceName = unit.object_id, unit.unit
        else:
            event.SourceNode, event.SourceName = self._space.ledger_id, "Ledger"
        await self._trigger(
            self._generator, parse_timestamp(movement.timestamp), movement_message(movement)
        )

    async def emit_advice(self, advice: Advice) -> None:
        """Raise the advice's event (Ledger and Server objects); keep OpenAdvices current."""
        if self._advice_generator is None:
            raise RuntimeError("LedgerMirror.setup() has not run")
        if advice.state is AdviceState.OPEN:
            self._open_advices[advice.id] = advice.created_at
        else:
            self._open_advices.pop(advice.id, None)
        await self._write_open_advices()
        event = self._advice_generator.event
        event.AdviceId = advice.id
        event.State = str(advice.state)
        event.Kind = str(advice.kind)
        event.MaterialDefinitionID = str(advice.material)
        event.LotID = str(advice.lot or "")
        event.Unit = str(advice.unit)
        event.Reference = advice.ref
        event.AdvisedQuantity = float(advice.expected)
        event.BookedQuantity = float(advice.matched)
        event.Variance = float(advice.variance or 0)
        event.VariancePercent = float(advice.variance_pct or 0)
        event.UnitOfMeasure = advice.uom
        event.User = advice.user
        expired = advice.state is AdviceState.EXPIRED
        event.Severity = SEVERITY_CORRECTION if expired else SEVERITY_NORMAL
        unit = self._space.units.get(str(advice.unit))
        if unit is not None:
            event.SourceNode, event.SourceName = unit.object_id, unit.unit
        else:
            event.SourceNode, event.SourceName = self._space.ledger_id, "Ledger"
        at = parse_timestamp(advice.closed_at or advice.created_at)
        await self._trigger(self._advice_generator, at, advice_message(advice))

    async def _trigger(self, generator: EventGenerator, at: datetime, message: str) -> None:
        await generator.trigger(time_attr=at, message=message)
        on_server = copy.copy(generator.event)  # same EventId: one event, two notifiers
        on_server.emitting_node = make_node_id(ObjectIds.Server)
        await self._server.iserver.subscription_service.trigger_event(on_server)
        self.events_raised += 1

    async def _write_open_advices(self) -> None:
        ids = sorted(self._open_advices, key=lambda a: (self._open_advices[a], a))
        await self._space.writer.write(
            self._space.ledger_variables["OpenAdvices"],
            ua.Variant(ids, ua.VariantType.String),
            source_time=datetime.now(UTC),
        )

    # --- lots and book values ----------------------------------------------------------

    async def _refresh_loop(self) -> None:
        next_full = time.monotonic() + self._resync_s
        while True:
            try:
                async with asyncio.timeout(max(0.0, next_full - time.monotonic())):
                    await self._dirty.wait()
            except TimeoutError:
                pass
            full = time.monotonic() >= next_full
            if not full and not self._dirty.is_set():
                continue
            self._dirty.clear()
            lots, self._touched_lots = self._touched_lots, set()
            requests, self._requests_dirty = self._requests_dirty, False
            try:
                if full:
                    await self.refresh_all()
                    next_full = time.monotonic() + self._resync_s
                else:
                    await self.refresh(lots)
                    if requests:
                        await self.refresh_requests()
            except Exception as exc:  # ledger unreachable: keep the work, try again
                log.warning("opcua_lot_refresh_failed_retrying", error=str(exc))
                self._touched_lots |= lots
                self._requests_dirty |= requests
                self._dirty.set()
                await asyncio.sleep(RETRY_S)
                continue
            await asyncio.sleep(self._debounce_s)  # at most one refresh per interval

    async def refresh_all(self) -> None:
        """Every lot, the open advices and the pending requests from the ledger."""
        async with self._lots_lock:
            by_lot: dict[str, list[Balance]] = {}
            for balance in await self._ledger.balances():
                by_lot.setdefault(str(balance.lot), []).append(balance)
            links = await self._ledger.lot_links()
            for lot in await self._ledger.lots():
                await self._write_lot(lot, by_lot.get(str(lot.id), []), links)
        advices = await self._ledger.advices(state=str(AdviceState.OPEN))
        self._open_advices = {a.id: a.created_at for a in advices}
        await self._write_open_advices()
        await self.refresh_requests()

    async def refresh_requests(self) -> None:
        """Re-read the requests waiting for signatures; write `Ledger/PendingRequests`
        (their `request:` ids, oldest first). Serialised, so the newest read is the one
        written last."""
        async with self._requests_lock:
            pending = await self._ledger.pending_requests(state=RequestState.PENDING)
            await self._space.writer.write(
                self._space.ledger_variables["PendingRequests"],
                _texts([request.request_id for request in pending]),
                source_time=datetime.now(UTC),
            )

    async def refresh(self, lots: Iterable[str]) -> None:
        """Only the given lots (and the parents of those that were made from others), in
        a few reads: movements touch dozens of lots a second."""
        lot_ids = set(lots)
        if not lot_ids:
            return
        async with self._lots_lock:
            links = await self._ledger.lot_links(lot_ids)
            parents = {str(link.parent) for link in links if link.child in lot_ids} - lot_ids
            if parents:  # they gained a child: their own links, with their other children
                lot_ids |= parents
                links = await self._ledger.lot_links(lot_ids)
            by_lot: dict[str, list[Balance]] = {}
            for balance in await self._ledger.balances(lots=lot_ids):
                by_lot.setdefault(str(balance.lot), []).append(balance)
            for lot in await self._ledger.lots(ids=lot_ids):
                await self._write_lot(lot, by_lot.get(str(lot.id), []), links)

    async def _base_uom(self, material: str) -> str:
        if material not in self._materials:
            self._materials = {str(m.id): m for m in await self._ledger.materials()}
            for definition in self._materials.values():
                await self._space.add_material(definition)
        found = self._materials.get(material)
        return found.base_uom if found is not None else ""

    async def _write_lot(
        self, lot: Lot, balances: Sequence[Balance], links: Sequence[GenealogyLink]
    ) -> None:
        nodes = await self._space.ensure_lot(lot, await self._base_uom(str(lot.material)))
        quantity = sum((b.quantity for b in balances), Decimal(0))
        held = _totals((str(b.unit), b.quantity) for b in balances)
        held = {unit: q for unit, q in held.items() if q != 0}
        parents = _totals((str(k.parent), k.quantity) for k in links if k.child == lot.id)
        children = _totals((str(k.child), k.quantity) for k in links if k.parent == lot.id)
        now = datetime.now(UTC)
        write, variables = self._space.writer.write, nodes.variables
        await write(variables["Status"], _text(str(lot.status)), source_time=now)
        await write(variables["Quantity"], _double(quantity), source_time=now)
        await write(variables["StorageLocation"], _text(",".join(held)), source_time=now)
        await write(variables["MaterialDefinitionID"], _text(str(lot.material)), source_time=now)
        for ids_name, quantities_name, totals in (
            ("StorageUnits", "StorageUnitQuantities", held),
            ("ParentLotIDs", "ParentQuantities", parents),
            ("ChildLotIDs", "ChildQuantities", children),
        ):
            await write(variables[ids_name], _texts(list(totals)), source_time=now)
            numbers = [math.nan if q is None else float(q) for q in totals.values()]
            await write(variables[quantities_name], _doubles(numbers), source_time=now)
        await self._write_quality(lot, variables, now)

    async def _write_quality(
        self, lot: Lot, variables: Mapping[str, ua.NodeId], now: datetime
    ) -> None:
        """Expiry, retest date (and whether it is due today, UTC), certificate and the
        properties as three parallel arrays."""
        write, quality = self._space.writer.write, lot.quality
        expiry = ua.Variant() if lot.expiry is None else _date_time(midnight(lot.expiry))
        await write(variables["ExpirationDate"], expiry, source_time=now)  # null when none
        retest = quality.retest.isoformat() if quality.retest else ""
        await write(variables["RetestDate"], _text(retest), source_time=now)
        due = lot.retest_due(now.date())
        await write(
            variables["RetestDue"], ua.Variant(due, ua.VariantType.Boolean), source_time=now
        )
        await write(variables["Certificate"], _text(quality.certificate), source_time=now)
        for name, column in (
            ("PropertyNames", [p.name for p in quality.properties]),
            ("PropertyValues", [p.value for p in quality.properties]),
            ("PropertyUnits", [p.unit for p in quality.properties]),
        ):
            await write(variables[name], _texts(column), source_time=now)


def advice_message(advice: Advice) -> str:
    """One line a SCADA event list can show."""
    quantity = f"{format_decimal(advice.expected)} {advice.uom}"
    text = f"advice {advice.id} {advice.kind} {quantity} {advice.material} at {advice.unit}"
    if advice.lot:
        text += f" lot {advice.lot}"
    if advice.ref:
        text += f" ref {advice.ref}"
    if advice.state is AdviceState.MATCHED:
        variance = format_decimal(advice.variance or Decimal(0))
        return f"{text} matched: booked {format_decimal(advice.matched)}, variance {variance}"
    if advice.state is AdviceState.EXPIRED:
        return f"{text} expired unmatched"
    return f"{text} advised by {advice.user} ({advice.source})"


def _totals(pairs: Iterable[tuple[str, Decimal | None]]) -> dict[str, Decimal | None]:
    """Sum per key, sorted by key; None (not recorded) wins over any sum."""
    totals: dict[str, Decimal | None] = {}
    for key, quantity in pairs:
        if key in totals:
            before = totals[key]
            totals[key] = None if before is None or quantity is None else before + quantity
        else:
            totals[key] = quantity
    return dict(sorted(totals.items()))


def _date_time(value: datetime) -> ua.Variant:
    return ua.Variant(value, ua.VariantType.DateTime)


def _text(value: str) -> ua.Variant:
    return ua.Variant(value, ua.VariantType.String)


def _texts(values: list[str]) -> ua.Variant:
    return ua.Variant(values, ua.VariantType.String)


def _doubles(values: list[float]) -> ua.Variant:
    return ua.Variant(values, ua.VariantType.Double)


def _double(value: Decimal) -> ua.Variant:
    return ua.Variant(float(value), ua.VariantType.Double)
