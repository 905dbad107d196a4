"""The invops OPC UA server: asyncua Server + invops address space + value writer + ledger mirror.

Security is plugged in through plain constructor arguments (user manager,
permission ruleset, policies, certificate, key, identity tokens, certificate
validator, `current_user` hook); other modules (history, alarms) extend the
server through `add_setup_hook` (runs once the address space exists, before
the endpoint opens and before `gc.freeze()`). Values come from the plant view
(`inventory_core.plant_view`): the server subscribes and writes each unit's
newest state as it is; it converts nothing, holds no last good value and
computes no discrepancy of its own.
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Final, Protocol
from urllib.parse import urlparse

from asyncua import ua
from asyncua.crypto.permission_rules import SimpleRoleRuleset
from asyncua.crypto.validator import CertificateValidatorMethod
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager

from information_model import APPLICATION_URI, TYPE_MODEL
from inventory_core.cancel import cancel_and_wait
from inventory_core.domain.model import MaterialDefinition
from inventory_core.ledger import Ledger
from inventory_core.log import get_logger
from inventory_core.plant_view import MovementSeen, PlantChange, PlantView, UnitChanged, UnitState
from inventory_core.signing import SigningService
from opcua_server import asyncua_patches
from opcua_server.address_space import (
    AddressSpace,
    OpcuaServerError,
    build_address_space,
)
from opcua_server.denied_calls import DeniedCallAudit
from opcua_server.events import DEBOUNCE_S, RESYNC_S, LedgerMirror
from opcua_server.limits import RefusalListener, ServerLimits
from opcua_server.methods import CurrentUser, LedgerMethods, default_current_user
from opcua_server.security import SecuritySetupError, select_policies
from opcua_server.settings import OpcuaSettings
from opcua_server.values import (
    LEDGER_TEXT_FIELDS,
    PLC_FIELDS,
    QUALITY_STATUS,
    make_node_id,
)

log = get_logger(__name__)

PRODUCT_URI: Final = "urn:invops"
_BAD: Final = 0x80000000


class Feature(Protocol):
    """Something the server is built with (value history, alarms: `opcua_server.features`)."""

    async def setup(self, server: InvopsOpcUaServer) -> None:
        """Add nodes, historize variables, set storages: after the address space and the
        first ledger read, before gc.freeze() and before clients can connect."""

    async def run(self) -> None:
        """Work until cancelled (one of the server's tasks)."""

    async def close(self) -> None:
        """Release what `setup` took; the ledger and the asyncua server are still up."""


KeyMaterial = str | bytes | os.PathLike[str]


class InvopsOpcUaServer:
    """The OPC UA face of one invops instance (SPEC §4). Use `async with` or start/stop."""

    application_uri: Final = APPLICATION_URI

    def __init__(
        self,
        settings: OpcuaSettings,
        ledger: Ledger,
        *,
        view: PlantView | None = None,
        features: Sequence[Feature] = (),
        on_refusal: RefusalListener | None = None,
        endpoint: str | None = None,
        user_manager: UserManager | None = None,
        permission_ruleset: SimpleRoleRuleset | None = None,
        security_policies: Sequence[ua.SecurityPolicyType] | None = None,
        certificate: KeyMaterial | None = None,
        private_key: KeyMaterial | None = None,
        identity_tokens: Sequence[type] | None = None,
        certificate_validator: CertificateValidatorMethod | None = None,
        current_user: CurrentUser | None = None,
        denied_calls: DeniedCallAudit | None = None,
        freeze_gc: bool = True,
        refresh_debounce_s: float = DEBOUNCE_S,
        resync_interval_s: float = RESYNC_S,
        signing: SigningService | None = None,
    ) -> None:
        self._settings = settings
        self._ledger = ledger
        self._signing = signing  # ApproveRequest / RejectRequest re-authenticate through it
        self._view = view
        self._endpoint = endpoint or settings.endpoint
        self._user_manager = user_manager
        self._permission_ruleset = permission_ruleset
        self._security_policies = None if security_policies is None else list(security_policies)
        self._certificate = certificate
        self._private_key = private_key
        self._identity_tokens = None if identity_tokens is None else list(identity_tokens)
        self._certificate_validator = certificate_validator
        self._current_user = current_user or default_current_user
        # Denied calls: the first per caller and window in full, then one summary.
        self._denied_calls = denied_calls or DeniedCallAudit(
            ledger.record_event, window_s=settings.denied_audit_window_s
        )
        self._freeze_gc = freeze_gc
        self._debounce_s = refresh_debounce_s
        self._resync_s = resync_interval_s
        self._features = tuple(features)
        self._started_features = False
        self._limits = settings.limits
        self._on_refusal = on_refusal
        self._pending: dict[str, UnitState] = {}  # newest state per unit, not yet written
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._unknown_units: set[str] = set()
        self._written: dict[str, UnitState] = {}  # per unit, the state last written
        self._ua: Server | None = None
        self._space: AddressSpace | None = None
        self._mirror: LedgerMirror | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._bound_port: int | None = None
        self._started = False
        self._listening = False
        self._frozen = False

    # --- public API ----------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        """The endpoint clients use; with a configured port 0, the port actually bound."""
        if self._bound_port is None:
            return self._endpoint
        parsed = urlparse(self._endpoint)
        host = parsed.hostname or "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        return parsed._replace(netloc=f"{host}:{self._bound_port}").geturl()

    @property
    def ua_server(self) -> Server:
        """The asyncua Server (exists from the start of `start()`), for plug-in modules."""
        if self._ua is None:
            raise OpcuaServerError("the OPC UA server has not been started")
        return self._ua

    @property
    def address_space(self) -> AddressSpace:
        """The invops nodes: `units[unit].variables[name]` -> NodeId, `ledger_id`, lots, ..."""
        if self._space is None:
            raise OpcuaServerError("the address space is not built yet")
        return self._space

    @property
    def ledger_mirror(self) -> LedgerMirror:
        if self._mirror is None:
            raise OpcuaServerError("the OPC UA server has not been started")
        return self._mirror

    @property
    def limits(self) -> ServerLimits:
        """The connection, session, message and subscription limits (`[opcua]`)."""
        return self._limits

    def _on_change(self, change: PlantChange) -> None:
        """Plant view subscriber: queue the unit's newest state (a unit changed twice
        between two writes is written once, as it is now); movements go to the mirror."""
        if isinstance(change, UnitChanged):
            self._pending[change.state.unit] = change.state
            self._idle.clear()
            self._wake.set()
        elif isinstance(change, MovementSeen) and self._mirror is not None:
            self._mirror.on_movement(change.movement, own=change.own)

    async def flush(self) -> None:
        """Wait until every queued state has been written (tests, orderly shutdown)."""
        await self._idle.wait()

    async def __aenter__(self) -> InvopsOpcUaServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def serve(self) -> None:
        """Start, run until cancelled (e.g. by the service's TaskGroup), then stop."""
        async with self:
            await asyncio.Event().wait()

    async def start(self) -> None:
        """Build everything, then open the endpoint. On failure nothing is left running."""
        asyncua_patches.apply()
        if self._started:
            raise OpcuaServerError("an InvopsOpcUaServer starts once; make a new one")
        self._started = True
        self._policies()  # a security misconfiguration fails before anything is built
        server = Server(user_manager=self._user_manager)
        self._ua = server
        asyncua_patches.install_limits(server, self._limits, self._refused)
        try:
            await server.init()
            await self._configure(server)
            materials = await self._materials()
            self._space = space = await build_address_space(server, self._settings, materials)
            self._link_methods(server, space)
            self._set_deadbands(space)
            asyncua_patches.refuse_client_writes(server)
            self._mirror = LedgerMirror(
                server,
                self._ledger,
                space,
                debounce_s=self._debounce_s,
                resync_s=self._resync_s,
            )
            await self._mirror.setup()
            if self._view is not None:
                self._view.subscribe(self._on_change)
                for state in self._view.states():  # what the view holds now, before anyone reads
                    self._pending[state.unit] = state
            await self._apply_pending()
            self._started_features = True  # closed in stop(), also when a setup failed
            for feature in self._features:
                await feature.setup(self)
            if self._freeze_gc:  # REFERENCE 9.2: GC pauses make most of the tail latency
                gc.collect()
                gc.freeze()
                self._frozen = True
            try:
                await server.start()
            except OSError as exc:
                raise OpcuaServerError(
                    f"cannot listen on {self._endpoint}: {exc.strerror or exc}"
                ) from exc
            self._listening = True
            self._record_bound_port(server)
            self._tasks = [
                asyncio.create_task(self._write_loop(), name="opcua-writer"),
                asyncio.create_task(self._mirror.run(), name="opcua-ledger-mirror"),
                *(
                    asyncio.create_task(f.run(), name=f"opcua-{type(f).__name__}")
                    for f in self._features
                ),
            ]
        except BaseException:
            await self.stop()
            raise
        log.info(
            "opcua_listening",
            endpoint=self.endpoint_url,
            units=len(space.units),
            security=", ".join(p.name for p in self._policies()),
        )

    async def stop(self) -> None:
        """Stop the writer and mirror tasks, then the asyncua server (idempotent)."""
        if self._mirror is not None:
            self._mirror.close()
        await self._denied_calls.close()  # the ledger is still open: open summaries land
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(tasks)
        for task in tasks:
            if not task.cancelled() and task.exception() is not None:
                log.error("opcua_task_failed", task=task.get_name(), exc_info=task.exception())
        if self._started_features:
            self._started_features = False
            for feature in self._features:
                try:
                    await feature.close()
                except Exception:
                    log.exception("opcua_feature_close_failed", feature=type(feature).__name__)
        server, self._ua = self._ua, None
        if server is not None:
            try:
                await server.stop()
            except Exception:  # a half-started server may not stop cleanly; nothing to keep
                log.exception("opcua_stop_failed", endpoint=self.endpoint_url)
            if self._listening:
                log.info("opcua_stopped", endpoint=self.endpoint_url)
        self._listening = False
        if self._frozen:
            gc.unfreeze()
            self._frozen = False

    def _refused(self, reason: str, count: int) -> None:
        if self._on_refusal is None:
            return
        try:
            self._on_refusal(reason, count)
        except Exception:
            log.exception("opcua_refusal_listener_failed", reason=reason)

    # --- start-up pieces -------------------------------------------------------------

    def _policies(self) -> list[ua.SecurityPolicyType]:
        try:
            return select_policies(
                self._security_policies,
                allow_none=self._settings.allow_security_none,
                has_key=self._certificate is not None and self._private_key is not None,
            )
        except SecuritySetupError as exc:
            raise OpcuaServerError(str(exc)) from exc

    async def _configure(self, server: Server) -> None:
        server.set_endpoint(self._endpoint)
        server.set_server_name(f"invops {self._settings.site}")
        await server.set_application_uri(APPLICATION_URI)
        server.product_uri = PRODUCT_URI
        server.allow_remote_admin(False)  # no client may add or delete nodes
        version = _version()
        await server.set_build_info(
            PRODUCT_URI, "invops", "invops", version, version, datetime.now(UTC)
        )
        server.set_security_policy(self._policies(), permission_ruleset=self._permission_ruleset)
        if self._certificate is not None:
            await server.load_certificate(_key_material(self._certificate))
        if self._private_key is not None:
            await server.load_private_key(_key_material(self._private_key))
        if self._certificate_validator is not None:
            server.set_certificate_validator(self._certificate_validator)
        tokens = self._identity_tokens
        if tokens is None:  # without a user manager, any password would pass: anonymous only
            tokens = [ua.AnonymousIdentityToken]
            if self._user_manager is not None:
                tokens.append(ua.UserNameIdentityToken)
        server.set_identity_tokens(tokens)

    async def _materials(self) -> list[MaterialDefinition]:
        """Materials of the config, plus any the ledger knows beyond them."""
        found = {str(m.id): m for m in self._settings.materials}
        for material in await self._ledger.materials():
            found.setdefault(str(material.id), material)
        return list(found.values())

    def _set_deadbands(self, space: AddressSpace) -> None:
        """PLC-backed analog values: `[opcua] value_deadband_pct` of their EURange."""
        fraction = self._settings.value_deadband_pct / 100
        for nodes in space.units.values():
            for name in PLC_FIELDS.values():
                node_id = nodes.variables.get(name)
                span = space.eu_spans.get(node_id) if node_id is not None else None
                if node_id is not None and span:
                    space.writer.set_deadband(node_id, span * fraction)

    def _link_methods(self, server: Server, space: AddressSpace) -> None:
        methods = LedgerMethods(
            self._ledger,
            space.ledger_id,
            self._current_user,
            self._denied_calls,
            signing=self._signing,
            requests_changed=self._refresh_requests,
            lots_changed=self._refresh_lots,
        )
        type_ids = TYPE_MODEL.node_ids()
        for name, node_id in space.ledger_methods.items():
            handler = methods.handler(name)
            server.link_method(server.get_node(node_id), handler)
            # Some clients call the type's method on the instance: same handler.
            type_method = make_node_id(type_ids[f"LedgerType.{name}"], space.types_ns)
            server.link_method(server.get_node(type_method), handler)

    async def _refresh_requests(self) -> None:
        """Ledger/PendingRequests, after a method call held or signed a request."""
        if self._mirror is not None:
            await self._mirror.refresh_requests()

    async def _refresh_lots(self, lots: Collection[str]) -> None:
        """Lots/<LotID>, after a method call changed lots without a movement."""
        if self._mirror is not None:
            await self._mirror.refresh(lots)

    def _record_bound_port(self, server: Server) -> None:
        configured = urlparse(self._endpoint).port
        bound = server.bserver.port if server.bserver is not None else None
        if configured != 0 or bound is None:
            return
        self._bound_port = bound
        url = self.endpoint_url
        # Endpoints were described before the socket existed (with port 0).
        for endpoint in server.iserver.endpoints:
            endpoint.EndpointUrl = url
            endpoint.Server.DiscoveryUrls = [url]
        server.set_endpoint(url)

    # --- value writer ------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._apply_pending()

    async def _apply_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, {}
            server_time = datetime.now(UTC)
            for state in batch.values():
                try:
                    await self._apply(state, server_time)
                except Exception:  # one bad update must not stop the writer
                    log.exception("opcua_unit_write_failed", unit=state.unit)
        self._idle.set()

    async def _apply(self, state: UnitState, server_time: datetime) -> None:
        """Write one unit's state: PLC-backed values with their quality and source time
        (null with the Bad code while the link is down), then the book values."""
        space = self.address_space
        nodes = space.units.get(state.unit)
        if nodes is None:
            if state.unit not in self._unknown_units:
                self._unknown_units.add(state.unit)
                log.warning("opcua_update_for_unknown_unit_ignored", unit=state.unit)
            return
        measured = state.measured
        code = QUALITY_STATUS[measured.quality]
        t = measured.source_time
        writer = space.writer
        variables = nodes.variables
        # The view replaces only the part that changed: an identical object was written.
        written = self._written.get(state.unit)
        self._written[state.unit] = state
        measured_changed = written is None or written.measured is not measured
        book_changed = written is None or written.book is not state.book
        if t is not None and measured_changed:  # had a reading (else: as built, waiting)
            if code & _BAD:
                for name in (*PLC_FIELDS.values(), "Discrepancy"):
                    if name in variables:
                        await writer.write(variables[name], ua.Variant(), code, t, server_time)
            else:
                for field_name, name in PLC_FIELDS.items():
                    node_id = variables.get(name)  # Level exists on tanks only
                    number = getattr(measured, field_name)
                    if node_id is not None and number is not None:
                        await writer.write_double(node_id, number, code, t, server_time)
        book = state.book
        if book.quantity is None:
            return  # not read from the ledger yet
        if book_changed:
            now = server_time
            await writer.write_double(variables["BookQuantity"], book.quantity, source_time=now,
                                      server_time=now)  # fmt: skip
            for field_name, name in LEDGER_TEXT_FIELDS.items():
                text = ua.Variant(getattr(book, field_name), ua.VariantType.String)
                await writer.write(variables[name], text, source_time=now, server_time=now)
            lots = ua.Variant(list(book.lots), ua.VariantType.String)
            await writer.write(variables["LotIDs"], lots, source_time=now, server_time=now)
            quantities = ua.Variant(list(book.lot_quantities), ua.VariantType.Double)
            await writer.write(
                variables["LotQuantities"], quantities, source_time=now, server_time=now
            )
        if state.discrepancy is not None and not code & _BAD:
            await writer.write_double(
                variables["Discrepancy"], state.discrepancy, code, t, server_time
            )


def _key_material(value: KeyMaterial) -> str | bytes | Path:
    return value if isinstance(value, str | bytes) else Path(value)


def _version() -> str:
    try:
        return metadata.version("invops")
    except metadata.PackageNotFoundError:
        return "0+unknown"
