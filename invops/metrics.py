"""Prometheus metrics of one invops instance (SPEC §6, REFERENCE §7, STYLE §9).

Wiring creates one `CollectorRegistry` and hands it to `Metrics`, which
registers every metric on it (never the global registry, so tests and several
demo instances can live in one process). The service reports events:

- `Metrics.posting(kind, source)` for every durable movement (`Ledger.subscribe`),
- `Metrics.posting_committed(batch_size, seconds)` for every group commit
  (`open_ledger(..., on_commit=...)`),
- `Metrics.poll` / `Metrics.plc_up` for every PLC poll, most simply by putting a
  `MetricsSink` between each `PlcPoller` and its real sink.

Per-unit gauges (fill ratio, book and measured quantity, discrepancy) come from
a custom collector, `StorageCollector`, that reads the plant view's states as
`StorageSample`s (`storage_samples(view)`): a scrape copies numbers and never
waits for the ledger, a PLC or the event loop.

Label values are bounded sets only (site, area, unit, material, uom, plc, kind,
source, reason): never lot ids, movement ids, users or free text.
"""

from __future__ import annotations

import math
import os
import platform
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol, TypeGuard

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from inventory_core.domain.advices import Advice, AdviceState
from inventory_core.domain.model import MovementKind, Source
from inventory_core.log import get_logger
from inventory_core.logins import API_LOGIN_REFUSALS, LOCKOUT_SCOPES, LOGIN_REFUSALS
from inventory_core.plant_view import PlantView, UnitState
from inventory_core.signing import SIGNING_OUTCOMES
from opcua_server.limits import REFUSAL_REASONS
from plc_connectors import ERROR_REASONS, PlcError, Sample
from plc_connectors.poller import SampleSink

if TYPE_CHECKING:
    from asyncua.server.server import Server

__all__ = [
    "COMMIT_BUCKETS",
    "POLL_BUCKETS",
    "LinkHealthListener",
    "Metrics",
    "MetricsSink",
    "StorageCollector",
    "StorageSample",
    "bounded_reason",
    "build_revision",
    "storage_samples",
    "ua_session_count",
]

log = get_logger(__name__)

# Commit latency of a ledger posting: 0.5 ms (SQLite, warm) .. 5 s (a struggling server).
ADVICE_OUTCOMES: Final = ("advised", "matched", "expired")
VARIANCE_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1)
COMMIT_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
# One PLC poll cycle (connect and/or read): 1 ms .. 5 s (REFERENCE §7).
POLL_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

# Labelled counters show every series whose label values are known at start at 0, so
# `rate()` and alerts see 0 rather than nothing (SPEC §6). Series at start (each counter
# series also exposes a `_created` sample in the default text format):
#   invops_plc_errors_total{plc,reason}:      len(ERROR_REASONS) = 16 per configured PLC
#   invops_ledger_postings_total{kind,source}: 9 movement kinds x 5 sources = 45
#   invops_opcua_login_failures_total{reason}: 6; invops_opcua_lockouts_total{scope}: 2
#   invops_opcua_refusals_total{reason}: 10, one per opcua_server.limits.REFUSAL_REASONS
#   invops_api_login_failures_total{reason}: 4; invops_api_lockouts_total{scope}: 2
#   invops_signature_attempts_total{outcome}: len(SIGNING_OUTCOMES)
# The demo (2 PLCs): 32 + 45 + 8 + 10 + 6 + the signature outcomes. Postings with kind
# or source "other" (never produced by the ledger) appear only when counted.
_REASONS: Final = frozenset(ERROR_REASONS)  # `plc_connectors.error_reason` labels
_KINDS: Final = frozenset(k.value for k in MovementKind)
_SOURCES: Final = frozenset(s.value for s in Source)
_REFUSALS: Final = frozenset(REFUSAL_REASONS)
_OTHER: Final = "other"


def bounded_reason(reason: str) -> str:
    """The error label for `reason`: one of `plc_connectors.ERROR_REASONS` (timeout,
    connect, exception_XX, decode, protocol, config, other), else "other"."""
    return reason if reason in _REASONS else _OTHER


def _counter_at_zero(
    registry: CollectorRegistry, name: str, documentation: str, label: str, values: Iterable[str]
) -> Counter:
    """A counter with one label whose values are known at start, each series at 0 from
    the first scrape (SPEC §6: `rate()` then sees 0 rather than nothing)."""
    counter = Counter(name, documentation, [label], registry=registry)
    for value in values:
        counter.labels(**{label: value})
    return counter


def build_revision(start: Path | None = None) -> str:
    """The source revision for `invops_build_info`: `INVOPS_REVISION` if set (packagers,
    CI), else the commit of the git checkout holding this package (read from `.git`, no
    subprocess), else "unknown". Called once at start, never during a scrape."""
    env = os.environ.get("INVOPS_REVISION", "").strip()
    if env:
        return env
    here = (start or Path(__file__)).resolve()
    for directory in (here, *here.parents)[:5]:
        dot_git = directory / ".git"
        try:
            if dot_git.is_file():  # a worktree: "gitdir: <path>"
                text = dot_git.read_text(encoding="utf-8").strip()
                dot_git = (directory / text.removeprefix("gitdir:").strip()).resolve()
            if dot_git.is_dir():
                return _git_head(dot_git) or "unknown"
        except OSError:
            return "unknown"
    return "unknown"


def _git_head(git_dir: Path) -> str | None:
    head = (git_dir / "HEAD").read_text(encoding="utf-8").strip()
    if not head.startswith("ref:"):
        return head[:12] if re.fullmatch(r"[0-9a-f]{40,64}", head) else None
    ref = head.removeprefix("ref:").strip()
    common = git_dir
    commondir = git_dir / "commondir"  # linked worktrees keep refs in the main .git
    if commondir.is_file():
        common = (git_dir / commondir.read_text(encoding="utf-8").strip()).resolve()
    for base in (git_dir, common):
        loose = base / ref
        if loose.is_file():
            return loose.read_text(encoding="utf-8").strip()[:12]
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text(encoding="utf-8").splitlines():
            sha, _, name = line.partition(" ")
            if name == ref:
                return sha[:12]
    return None


# --------------------------------------------------------------------------- event metrics


class Metrics:
    """Every invops metric, registered on the injected `registry` (one per instance).

    Also registers the process (`process_*`, from /proc on Linux), platform
    (`python_info`) and garbage collector (`python_gc_*`) collectors on the same
    registry. Methods are quick and thread-safe; call them from the event loop.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        version: str,
        revision: str | None = None,
        plcs: Iterable[str] = (),
    ) -> None:
        self.registry = registry
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)

        self.build_info = Gauge(
            "invops_build_info",
            "Build of this invops instance; always 1.",
            ["version", "revision", "python"],
            registry=registry,
        )
        self.build_info.labels(
            version=version,
            revision=revision if revision is not None else build_revision(),
            python=platform.python_version(),
        ).set(1)

        self.postings = Counter(
            "invops_ledger_postings_total",
            "Ledger movements posted by this instance and durable, by movement kind and "
            "by source (manual, cli, opcua, plc, system, erp, api).",
            ["kind", "source"],
            registry=registry,
        )
        for kind in MovementKind:
            for source in Source:
                self.postings.labels(kind=kind.value, source=source.value)
        self.advices = _counter_at_zero(
            registry,
            "invops_ledger_advices_total",
            "Advices (manual changes of measured units) by outcome: advised (recorded by "
            "this instance), matched (closed with the measured quantity booked to it), "
            "expired (nothing measured within its window).",
            "outcome",
            ADVICE_OUTCOMES,
        )
        self.advice_variance = Histogram(
            "invops_ledger_advice_variance_ratio",
            "Receiving or shipping variance of each matched advice: |measured - advised| "
            "divided by the advised quantity.",
            buckets=VARIANCE_BUCKETS,
            registry=registry,
        )
        self.posting_seconds = Histogram(
            "invops_ledger_posting_seconds",
            "Time to durably commit a ledger write (posting, lot status, measurement or "
            "audit record): the duration of the group commit that included it, observed "
            "once per write, in seconds.",
            buckets=COMMIT_BUCKETS,
            registry=registry,
        )
        self.api_requests = Counter(
            "invops_api_requests_total",
            "HTTP API requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.api_seconds = Histogram(
            "invops_api_request_seconds",
            "HTTP API request duration by route template, in seconds (a stream: until it ends).",
            ["route"],
            buckets=POLL_BUCKETS,
            registry=registry,
        )
        self.poll_seconds = Histogram(
            "invops_plc_poll_seconds",
            "Duration of one PLC poll attempt (connect and/or read), good or failed, in seconds.",
            ["plc"],
            buckets=POLL_BUCKETS,
            registry=registry,
        )
        self.up = Gauge(
            "invops_plc_up",
            "1 when the PLC link is connected and its last poll was good, else 0.",
            ["plc"],
            registry=registry,
        )
        self.errors = Counter(
            "invops_plc_errors_total",
            "Failed PLC poll attempts by reason: timeout, connect, exception_XX (Modbus "
            "exception code, hex: 01-08, 0a, 0b), decode, protocol, config, other.",
            ["plc", "reason"],
            registry=registry,
        )
        self.last_success = Gauge(
            "invops_plc_last_success_timestamp_seconds",
            "Unix time of the last good poll of the PLC.",
            ["plc"],
            registry=registry,
        )
        self.opcua_sessions = Gauge(
            "invops_opcua_sessions",
            "OPC UA client sessions currently activated on this server.",
            registry=registry,
        )
        self._opcua_security(registry)
        self._api_security(registry)
        self._signatures(registry)
        self.opcua_refusals = _counter_at_zero(
            registry,
            "invops_opcua_refusals_total",
            "What the OPC UA server's [opcua] limits refused or closed, by reason: "
            "connection_limit, connection_evicted, handshake_timeout, activation_timeout, "
            "session_limit, anonymous_session_limit, message_too_large, subscription_limit, "
            "monitored_item_limit, anonymous_monitored_item_limit (one per refused monitored "
            "item).",
            "reason",
            REFUSAL_REASONS,
        )
        self._plcs: set[str] = set()
        self._plcs_lock = threading.Lock()
        self.add_plcs(plcs)

    # -- PLCs -------------------------------------------------------------------------

    def add_plcs(self, plcs: Iterable[str]) -> None:
        """Create the series of configured PLCs up front: `invops_plc_up` 0, empty poll
        histograms until the first poll and `invops_plc_errors_total` 0 for every reason,
        so dashboards and alerts see every PLC at once."""
        for plc in plcs:
            self._known(plc)

    def _known(self, plc: str) -> None:
        if plc in self._plcs:
            return
        with self._plcs_lock:
            if plc not in self._plcs:
                self.up.labels(plc=plc).set(0)
                self.poll_seconds.labels(plc=plc)
                for reason in ERROR_REASONS:
                    self.errors.labels(plc=plc, reason=reason)
                self._plcs.add(plc)

    def poll(self, plc: str, seconds: float, error_reason: str | None) -> None:
        """One poll attempt (`SampleSink.poll_finished`); `error_reason` None = good."""
        self._known(plc)
        self.poll_seconds.labels(plc=plc).observe(max(0.0, seconds))
        if error_reason is None:
            self.last_success.labels(plc=plc).set(time.time())
        else:
            self.errors.labels(plc=plc, reason=bounded_reason(error_reason)).inc()

    def plc_up(self, plc: str, up: bool) -> None:
        self._known(plc)
        self.up.labels(plc=plc).set(1 if up else 0)

    # -- ledger -----------------------------------------------------------------------

    def posting(self, kind: str, source: str) -> None:
        """One durable movement (kind and source are bounded enums; others -> "other")."""
        kind = kind if kind in _KINDS else _OTHER
        source = source if source in _SOURCES else _OTHER
        self.postings.labels(kind=kind, source=source).inc()

    def movement_posted(self, movement: _MovementLike) -> None:
        """`Ledger.subscribe` listener: `ledger.subscribe(metrics.movement_posted)`."""
        self.posting(str(movement.kind), str(movement.source))

    def advice_changed(self, advice: Advice) -> None:
        """`Ledger.subscribe_advices` listener: count advices and their variances."""
        if advice.state is AdviceState.OPEN:
            if not advice.matches:
                self.advices.labels(outcome="advised").inc()
            return
        self.advices.labels(outcome=str(advice.state)).inc()
        variance = advice.variance
        if variance is not None and advice.expected:
            self.advice_variance.observe(float(abs(variance) / advice.expected))

    def api_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """`http_api.create_app(observe=...)`: one finished HTTP API request."""
        self.api_requests.labels(route=route, method=method, status=str(status)).inc()
        self.api_seconds.labels(route=route).observe(max(0.0, seconds))

    def watch_ledger_writer(self, pid: Callable[[], int | None]) -> None:
        """`invops_ledger_writer_process_*` (CPU, memory, start time, open files) of the
        ledger's writer process, the standard process collector on its `pid`; nothing
        while there is none (a PostgreSQL ledger, or between a crash and the restart)."""
        ProcessCollector(
            namespace="invops_ledger_writer",
            pid=lambda: pid() or "absent",  # no /proc/absent: no samples
            registry=self.registry,
        )

    def posting_committed(self, batch_size: int, seconds: float) -> None:
        """`open_ledger(on_commit=...)`: one group commit of `batch_size` writes (postings,
        and also master data, measurements, audit events: every command of the batch)."""
        seconds = max(0.0, seconds)
        for _ in range(max(0, batch_size)):
            self.posting_seconds.observe(seconds)

    # -- OPC UA and storage -----------------------------------------------------------

    def _opcua_security(self, registry: CollectorRegistry) -> None:
        self.login_failures = _counter_at_zero(
            registry,
            "invops_opcua_login_failures_total",
            "OPC UA session activations refused, by reason: bad_password, unknown_user, "
            "locked_out (not checked: the user name or client address is locked out), busy "
            "(every password check slot and queue place taken), unsecured_channel, "
            "anonymous_off.",
            "reason",
            LOGIN_REFUSALS,
        )
        self.lockouts = _counter_at_zero(
            registry,
            "invops_opcua_lockouts_total",
            "OPC UA login lockouts begun, by scope: user (one user name) or source (one "
            "client address).",
            "scope",
            LOCKOUT_SCOPES,
        )
        self.denied_calls = Counter(
            "invops_opcua_denied_calls_total",
            "OPC UA method calls refused with Bad_UserAccessDenied (each one; the audit "
            "trail keeps the first per session and minute in full and a summary of the rest).",
            registry=registry,
        )

    def _api_security(self, registry: CollectorRegistry) -> None:
        self.api_login_failures = _counter_at_zero(
            registry,
            "invops_api_login_failures_total",
            "HTTP Basic logins refused, by reason: bad_password, unknown_user, locked_out "
            "(not checked: the user name or client address is locked out), busy.",
            "reason",
            API_LOGIN_REFUSALS,
        )
        self.api_lockouts = _counter_at_zero(
            registry,
            "invops_api_lockouts_total",
            "HTTP Basic login lockouts begun, by scope: user (one user name) or source (one "
            "client address).",
            "scope",
            LOCKOUT_SCOPES,
        )

    def api_login_refused(self, reason: str) -> None:
        """One refused HTTP Basic login (`reason`: an API_LOGIN_REFUSALS value)."""
        label = reason if reason in API_LOGIN_REFUSALS else _OTHER
        self.api_login_failures.labels(reason=label).inc()

    def api_lockout(self, scope: str) -> None:
        """One HTTP Basic lockout begun (`scope`: user or source)."""
        self.api_lockouts.labels(scope=scope if scope in LOCKOUT_SCOPES else _OTHER).inc()

    def _signatures(self, registry: CollectorRegistry) -> None:
        self.signature_attempts = _counter_at_zero(
            registry,
            "invops_signature_attempts_total",
            "Electronic signature attempts (21 CFR 11.300(d)), by outcome: signed, "
            "bad_password (wrong user name or password), locked_out (refused unchecked "
            "after repeated failures), busy, refused (the rules: role, meaning, same person).",
            "outcome",
            SIGNING_OUTCOMES,
        )
        self.signature_lockouts = Counter(
            "invops_signature_lockouts_total",
            "User names locked out of signing after repeated failed signatures.",
            registry=registry,
        )

    def signature_attempt(self, outcome: str) -> None:
        """One signature attempt (`outcome`: a SIGNING_OUTCOMES value; others -> "other")."""
        label = outcome if outcome in SIGNING_OUTCOMES else _OTHER
        self.signature_attempts.labels(outcome=label).inc()

    def signature_lockout(self, scope: str) -> None:
        """One signing lockout begun."""
        self.signature_lockouts.inc()

    def opcua_login_refused(self, reason: str) -> None:
        """One refused session activation (`reason`: a `LoginRefusal`; others -> "other")."""
        self.login_failures.labels(reason=reason if reason in LOGIN_REFUSALS else _OTHER).inc()

    def opcua_lockout(self, scope: str) -> None:
        """One lockout begun (`scope`: user or source)."""
        self.lockouts.labels(scope=scope if scope in LOCKOUT_SCOPES else _OTHER).inc()

    def opcua_denied_call(self) -> None:
        """One method call refused for a missing role."""
        self.denied_calls.inc()

    def set_opcua_sessions(self, count: Callable[[], int | float]) -> None:
        """Read the session count from `count` at each scrape (from the HTTP thread:
        it must be quick, lock-free and must not do I/O). An exception reads as 0."""

        def value() -> float:
            try:
                return float(count())
            except Exception:  # server not started yet, or stopped: no sessions to report
                log.debug("opcua_session_count_unavailable", exc_info=True)
                return 0.0

        self.opcua_sessions.set_function(value)

    def opcua_refused(self, reason: str, count: int = 1) -> None:
        """`InvopsOpcUaServer(on_refusal=...)`: `count` refusals for `reason`."""
        reason = reason if reason in _REFUSALS else _OTHER
        self.opcua_refusals.labels(reason=reason).inc(max(0, count))

    def register_storage(self, snapshot: Callable[[], Iterable[StorageSample]]) -> None:
        """Register a `StorageCollector` reading `snapshot` on this registry."""
        self.registry.register(StorageCollector(snapshot))


class _MovementLike(Protocol):
    @property
    def kind(self) -> str: ...

    @property
    def source(self) -> str: ...


def ua_session_count(ua_server: Server) -> int:
    """Activated client sessions of an asyncua server, for `Metrics.set_opcua_sessions`:

        metrics.set_opcua_sessions(lambda: ua_session_count(opcua.ua_server))

    asyncua 2.1 has no public count: `InternalServer._external_sessions` maps the
    auth token of every client session from CreateSession to CloseSession (or
    timeout); only Activated ones count. `list()` copies the values in one C call
    (under the GIL), so this is safe from the scrape thread. Cheap: no I/O.
    """
    from asyncua.server.internal_session import SessionState

    sessions = getattr(ua_server.iserver, "_external_sessions", {})
    return sum(1 for s in list(sessions.values()) if s.state == SessionState.Activated)


# --------------------------------------------------------------------------- PLC sink


class LinkHealthListener(Protocol):
    """Receives PLC link transitions for /healthz (`invops.http.HealthBoard` is one)."""

    def set_plc(self, plc: str, up: bool, error: str | None = None) -> None: ...


class MetricsSink:
    """A `SampleSink` that records poll metrics and link state, then forwards every
    call to `inner` (the ledger bridge, or the service's own sink):

        PlcPoller(link, settings, MetricsSink(PlantFeed(...), metrics, health=board))
    """

    def __init__(
        self,
        inner: SampleSink,
        metrics: Metrics,
        *,
        health: LinkHealthListener | None = None,
    ) -> None:
        self._inner = inner
        self._metrics = metrics
        self._health = health

    def publish(self, sample: Sample) -> None:
        self._inner.publish(sample)

    def link_state(self, plc: str, up: bool, error: PlcError | None) -> None:
        self._metrics.plc_up(plc, up)
        if self._health is not None:
            self._health.set_plc(plc, up, None if error is None else str(error))
        self._inner.link_state(plc, up, error)

    def poll_finished(self, plc: str, seconds: float, error_reason: str | None) -> None:
        self._metrics.poll(plc, seconds, error_reason)
        self._metrics.plc_up(plc, error_reason is None)
        self._inner.poll_finished(plc, seconds, error_reason)


# --------------------------------------------------------------------------- storage gauges


@dataclass(frozen=True, slots=True)
class StorageSample:
    """One storage unit as the metrics show it. Quantities and capacity are in the
    material's base unit `uom`; `fill_ratio` is measured / capacity (0..1, may exceed 1
    when overfilled). None = not known (no good measurement yet, link down): the series
    is left out of the scrape rather than reported stale."""

    site: str
    area: str
    unit: str
    material: str
    uom: str
    capacity: float
    book: float | None = None
    measured: float | None = None
    fill_ratio: float | None = None
    discrepancy: float | None = None  # measured - book, as the plant view computed it


_QUANTITY_HELP: Final = (
    "Quantity of material in a storage unit, in the material's base unit (named by the "
    "uom label: kg, L, ...); kind=book from the ledger, kind=measured from the PLC. "
    "Never sum across uom."
)


class StorageCollector(Collector):
    """Per-unit gauges from an in-memory snapshot (no I/O during a scrape):
    invops_storage_fill_ratio{site,area,unit},
    invops_storage_quantity{site,area,unit,material,kind,uom},
    invops_storage_capacity{site,area,unit,material,uom},
    invops_storage_discrepancy_ratio{site,area,unit} ((measured - book) / capacity)."""

    def __init__(self, snapshot: Callable[[], Iterable[StorageSample]]) -> None:
        self._snapshot = snapshot

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        fill, quantity, capacity, discrepancy = self._families()
        for s in self._snapshot():
            where = [s.site, s.area, s.unit]
            if _finite(s.fill_ratio):
                fill.add_metric(where, s.fill_ratio)
            if s.material:
                for kind, value in (("book", s.book), ("measured", s.measured)):
                    if _finite(value):
                        quantity.add_metric([*where, s.material, kind, s.uom], value)
            capacity.add_metric([*where, s.material, s.uom], s.capacity)
            if _finite(s.discrepancy) and s.capacity > 0:
                discrepancy.add_metric(where, s.discrepancy / s.capacity)
        return [fill, quantity, capacity, discrepancy]

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(
                "invops_storage_fill_ratio",
                "Measured fill of a storage unit, measured quantity / capacity (0..1).",
                labels=["site", "area", "unit"],
            ),
            GaugeMetricFamily(
                "invops_storage_quantity",
                _QUANTITY_HELP,
                labels=["site", "area", "unit", "material", "kind", "uom"],
            ),
            GaugeMetricFamily(
                "invops_storage_capacity",
                "Capacity of a storage unit in its material's base unit (uom label).",
                labels=["site", "area", "unit", "material", "uom"],
            ),
            GaugeMetricFamily(
                "invops_storage_discrepancy_ratio",
                "Measured minus book quantity of a storage unit, as a fraction of its capacity.",
                labels=["site", "area", "unit"],
            ),
        ]


def _finite(value: float | None) -> TypeGuard[float]:
    return value is not None and math.isfinite(value)


def storage_samples(view: PlantView) -> Callable[[], list[StorageSample]]:
    """What `StorageCollector` reads: the plant view's units, as numbers (safe from the
    scrape thread: the view replaces each unit's frozen state whole)."""

    def samples() -> list[StorageSample]:
        return [_storage_sample(state) for state in view.states()]

    return samples


def _storage_sample(state: UnitState) -> StorageSample:
    info, measured = state.info, state.measured
    usable = measured.quality.usable
    percent = measured.fill_percent if usable else None
    return StorageSample(
        site=info.site,
        area=info.area,
        unit=info.unit,
        material=info.material,
        uom=info.uom,
        capacity=info.capacity,
        book=state.book.quantity,
        measured=measured.quantity if usable else None,
        fill_ratio=None if percent is None else percent / 100,
        discrepancy=state.discrepancy if usable else None,
    )
