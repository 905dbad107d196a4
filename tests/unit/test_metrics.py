"""invops.metrics: SPEC §6 names, types and labels; counters; storage gauges from the plant view."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest
from asyncua.server.internal_session import SessionState
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample as PromSample

from inventory_core.domain.advices import Advice, AdviceDirection
from inventory_core.domain.model import LotId, MaterialId, MovementKind, Source, StorageUnitId
from inventory_core.domain.quality import Quality
from inventory_core.logins import LOGIN_REFUSALS
from inventory_core.plant_view import Book, PlantView
from inventory_core.signing import SIGNING_OUTCOMES
from invops.config import load_config
from invops.metrics import (
    COMMIT_BUCKETS,
    POLL_BUCKETS,
    Metrics,
    MetricsSink,
    StorageCollector,
    StorageSample,
    bounded_reason,
    build_revision,
    storage_samples,
    ua_session_count,
)
from invops.wiring import measured_units
from opcua_server.limits import REFUSAL_REASONS
from plc_connectors import ERROR_REASONS, PlcError, PlcTimeout, Sample

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo-plant.toml"

# SPEC §6: family name (as the parser reports it) -> (type, label names without `le`).
SPEC_METRICS = {
    "invops_storage_fill_ratio": ("gauge", {"site", "area", "unit"}),
    "invops_storage_quantity": ("gauge", {"site", "area", "unit", "material", "kind", "uom"}),
    "invops_ledger_postings": ("counter", {"kind", "source"}),
    "invops_ledger_posting_seconds": ("histogram", set()),
    "invops_plc_poll_seconds": ("histogram", {"plc"}),
    "invops_plc_up": ("gauge", {"plc"}),
    "invops_plc_errors": ("counter", {"plc", "reason"}),
    "invops_opcua_sessions": ("gauge", set()),
    "invops_build_info": ("gauge", {"version", "revision", "python"}),
}

TK101 = StorageSample(
    site="PLANT1",
    area="TANKFARM",
    unit="TK-101",
    material="ETHANOL-96",
    uom="kg",
    capacity=40_000.0,
)
SI201 = StorageSample(
    site="PLANT1", area="SILOS", unit="SI-201", material="SUGAR", uom="kg", capacity=80_000.0
)


def _families(registry: CollectorRegistry) -> dict[str, Metric]:
    text = generate_latest(registry).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def _samples(registry: CollectorRegistry, name: str) -> list[PromSample]:
    text = generate_latest(registry).decode()
    return [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    for sample in _samples(registry, name):
        if sample.labels == labels:
            return float(sample.value)
    return None


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics(registry, version="1.2.3", revision="abc123", plcs=["PLC-MB", "PLC-S7"])


def demo_view() -> PlantView:
    config = load_config(DEMO)
    return PlantView(
        config.storage_unit_definitions(), config.material_definitions(), measured_units(config)
    )


@pytest.fixture
def view(metrics: Metrics) -> PlantView:
    """The demo's plant view (SI-201: 80 t of sugar, weighed in kg), scraped by `metrics`."""
    plant = demo_view()
    metrics.register_storage(storage_samples(plant))
    return plant


def _weigh(view: PlantView, unit: str, kg: float | None, quality: Quality = Quality.GOOD) -> None:
    view.apply_reading(unit, kg, quality, datetime.now(UTC))


def _exercise(metrics: Metrics, view: PlantView) -> None:
    """Touch every metric once so each family has samples."""
    metrics.posting(MovementKind.RECEIPT, Source.PLC)
    metrics.posting_committed(1, 0.002)
    metrics.poll("PLC-MB", 0.004, None)
    metrics.poll("PLC-MB", 1.0, "timeout")
    metrics.plc_up("PLC-MB", True)
    metrics.set_opcua_sessions(lambda: 3)
    view.apply_book("SI-201", Book(quantity=10_000.0))
    _weigh(view, "SI-201", 12_000.0)


# --------------------------------------------------------------------------- names, types


def test_every_spec_metric_has_its_type_and_exact_labels(
    registry: CollectorRegistry, metrics: Metrics, view: PlantView
) -> None:
    _exercise(metrics, view)
    families = _families(registry)
    for name, (kind, labels) in SPEC_METRICS.items():
        family = families[name]
        assert family.type == kind, name
        samples = [s for s in family.samples if not s.name.endswith("_created")]
        assert samples, f"{name} has no samples"
        for sample in samples:
            assert set(sample.labels) - {"le"} == labels, (name, sample.labels)


def test_every_invops_metric_has_help_and_the_prefix(
    registry: CollectorRegistry, metrics: Metrics, view: PlantView
) -> None:
    _exercise(metrics, view)
    text = generate_latest(registry).decode()
    names = {f.name for f in text_string_to_metric_families(text)}
    for family in text_string_to_metric_families(text):
        if family.name.startswith("invops_"):
            assert family.documentation.strip(), family.name
    counters = {
        line.split()[2]
        for line in text.splitlines()
        if line.startswith("# TYPE invops_") and line.endswith(" counter")
    }
    assert counters == {
        "invops_ledger_postings_total",
        "invops_api_requests_total",
        "invops_ledger_advices_total",
        "invops_plc_errors_total",
        "invops_opcua_login_failures_total",
        "invops_opcua_lockouts_total",
        "invops_opcua_denied_calls_total",
        "invops_opcua_refusals_total",
        "invops_api_login_failures_total",
        "invops_api_lockouts_total",
        "invops_signature_attempts_total",
        "invops_signature_lockouts_total",
    }
    assert not {n for n in names if n.endswith(("_ms", "_kb", "_percent"))}


def test_process_and_platform_collectors_are_on_the_same_registry(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    families = _families(registry)
    assert "python_info" in families
    if Path("/proc/self/stat").exists():
        assert "process_resident_memory_bytes" in families


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="no /proc on this OS")
def test_the_ledger_writer_process_is_shown_while_there_is_one(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    writer: list[int | None] = [None]
    metrics.watch_ledger_writer(lambda: writer[0])
    assert "invops_ledger_writer_process_resident_memory_bytes" not in _families(registry)
    writer[0] = os.getpid()  # any live process: its /proc entry is what is read
    families = _families(registry)
    [rss] = families["invops_ledger_writer_process_resident_memory_bytes"].samples
    [own] = families["process_resident_memory_bytes"].samples
    assert rss.value > 0 and abs(rss.value - own.value) < 64 * 2**20
    assert "invops_ledger_writer_process_cpu_seconds" in families  # a counter: no _total


def test_build_info_is_one_with_version_revision_and_python(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    [sample] = _samples(registry, "invops_build_info")
    assert sample.value == 1
    assert sample.labels["version"] == "1.2.3"
    assert sample.labels["revision"] == "abc123"
    assert sample.labels["python"].count(".") == 2


def test_histogram_buckets_span_the_expected_range(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    metrics.poll("PLC-MB", 0.003, None)
    metrics.posting_committed(1, 0.001)
    poll = [s.labels["le"] for s in _samples(registry, "invops_plc_poll_seconds_bucket")]
    commit = [s.labels["le"] for s in _samples(registry, "invops_ledger_posting_seconds_bucket")]
    assert POLL_BUCKETS[0] == 0.001 and POLL_BUCKETS[-1] == 5
    assert COMMIT_BUCKETS[0] == 0.0005 and COMMIT_BUCKETS[-1] == 5
    assert {float(le) for le in poll if le != "+Inf"} == {float(b) for b in POLL_BUCKETS}
    assert {float(le) for le in commit if le != "+Inf"} == {float(b) for b in COMMIT_BUCKETS}
    assert "+Inf" in poll and "+Inf" in commit


def test_two_registries_do_not_collide_but_one_registry_takes_metrics_once() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    Metrics(first, version="1")
    Metrics(second, version="1")
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Metrics(first, version="1")


# --------------------------------------------------------------------------- counters


def test_postings_counter_increases_per_kind_and_source(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    metrics.posting(MovementKind.RECEIPT, Source.PLC)
    metrics.posting(MovementKind.RECEIPT, Source.PLC)
    metrics.posting(MovementKind.ISSUE, Source.OPCUA)
    name = "invops_ledger_postings_total"
    assert _value(registry, name, kind="receipt", source="plc") == 2
    assert _value(registry, name, kind="issue", source="opcua") == 1


def test_movement_posted_listener_counts_a_movement(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    movement = SimpleNamespace(kind=MovementKind.LOT_STATUS, source=Source.CLI)
    metrics.movement_posted(movement)
    name = "invops_ledger_postings_total"
    assert _value(registry, name, kind="lot-status", source="cli") == 1


def test_advices_are_counted_by_outcome_with_their_variance(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    name = "invops_ledger_advices_total"
    assert {o: _value(registry, name, outcome=o) for o in ("advised", "matched", "expired")} == {
        "advised": 0, "matched": 0, "expired": 0,
    }  # fmt: skip
    advice = Advice(
        "a1", StorageUnitId("TK-102"), AdviceDirection.IN, MovementKind.RECEIPT,
        MaterialId("GLYCOL"), LotId("G1"), Decimal(500), "kg", "DN-1", "erp", Source.CLI, "",
        "2026-12-02T08:00:00.000000Z", "2026-12-02T10:00:00.000000Z", "k1",
    )  # fmt: skip
    metrics.advice_changed(advice)
    partly = advice.matched_by(Decimal(300), flow_stopped=False, at="t")
    metrics.advice_changed(partly)  # still open: counted neither as advised nor as matched
    metrics.advice_changed(partly.matched_by(Decimal(185), flow_stopped=True, at="t"))
    metrics.advice_changed(advice.expired("t"))
    assert _value(registry, name, outcome="advised") == 1
    assert _value(registry, name, outcome="matched") == 1
    assert _value(registry, name, outcome="expired") == 1
    variance = "invops_ledger_advice_variance_ratio"
    assert _value(registry, f"{variance}_count") == 1
    assert _value(registry, f"{variance}_sum") == pytest.approx(0.03)  # 15 kg of 500 kg
    assert _value(registry, f"{variance}_bucket", le="0.02") == 0
    assert _value(registry, f"{variance}_bucket", le="0.05") == 1


def test_commit_latency_is_observed_once_per_posting_in_the_batch(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    metrics.posting_committed(4, 0.003)
    metrics.posting_committed(1, 0.5)
    assert _value(registry, "invops_ledger_posting_seconds_count") == 5
    assert _value(registry, "invops_ledger_posting_seconds_sum") == pytest.approx(0.512)
    assert _value(registry, "invops_ledger_posting_seconds_bucket", le="0.005") == 4


def test_polls_are_timed_and_errors_counted_by_reason(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    metrics.poll("PLC-MB", 0.004, None)
    metrics.poll("PLC-MB", 1.2, "timeout")
    metrics.poll("PLC-MB", 0.01, "exception_02")
    metrics.poll("PLC-MB", 0.01, "timeout")
    assert _value(registry, "invops_plc_poll_seconds_count", plc="PLC-MB") == 4
    errors = "invops_plc_errors_total"
    assert _value(registry, errors, plc="PLC-MB", reason="timeout") == 2
    assert _value(registry, errors, plc="PLC-MB", reason="exception_02") == 1
    last = _value(registry, "invops_plc_last_success_timestamp_seconds", plc="PLC-MB")
    assert last is not None and last > 1.6e9


def _series(registry: CollectorRegistry, name: str) -> dict[tuple[str, ...], float]:
    """Label values (in label-name order) -> value of every sample of `name`."""
    return {
        tuple(v for _k, v in sorted(s.labels.items())): float(s.value)
        for s in _samples(registry, name)
    }


def test_a_fresh_instance_shows_every_plc_error_reason_at_zero(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    errors = _series(registry, "invops_plc_errors_total")  # (plc, reason)
    expected = {(plc, reason) for plc in ("PLC-MB", "PLC-S7") for reason in ERROR_REASONS}
    assert set(errors) == expected
    assert set(errors.values()) == {0.0}
    assert len(errors) == 2 * 16


def test_a_fresh_instance_shows_every_posting_kind_and_source_at_zero(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    postings = _series(registry, "invops_ledger_postings_total")  # (kind, source)
    expected = {(kind.value, source.value) for kind in MovementKind for source in Source}
    assert set(postings) == expected
    assert set(postings.values()) == {0.0}
    assert len(postings) == len(MovementKind) * len(Source) == 10 * 7  # blend, erp, api included


def test_a_fresh_instance_shows_login_refusals_and_lockouts_at_zero(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    failures = "invops_opcua_login_failures_total"
    reasons = {s.labels["reason"] for s in _samples(registry, failures)}
    assert reasons == set(LOGIN_REFUSALS)
    assert reasons == {"bad_password", "unknown_user", "locked_out", "busy"} | {
        "unsecured_channel",
        "anonymous_off",
    }
    assert {s.value for s in _samples(registry, failures)} == {0.0}
    lockouts = _samples(registry, "invops_opcua_lockouts_total")
    assert {s.labels["scope"]: s.value for s in lockouts} == {"user": 0.0, "source": 0.0}
    assert _value(registry, "invops_opcua_denied_calls_total") == 0


def test_login_refusals_lockouts_and_denied_calls_are_counted(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    for reason in ("bad_password", "bad_password", "locked_out", "free text"):
        metrics.opcua_login_refused(reason)
    metrics.opcua_lockout("user")
    metrics.opcua_denied_call()
    metrics.opcua_denied_call()
    failures = "invops_opcua_login_failures_total"
    assert _value(registry, failures, reason="bad_password") == 2
    assert _value(registry, failures, reason="locked_out") == 1
    assert _value(registry, failures, reason="other") == 1  # never free text as a label
    assert _value(registry, "invops_opcua_lockouts_total", scope="user") == 1
    assert _value(registry, "invops_opcua_lockouts_total", scope="source") == 0
    assert _value(registry, "invops_opcua_denied_calls_total") == 2


def test_api_login_refusals_and_lockouts_start_at_zero_and_count(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    failures = "invops_api_login_failures_total"
    assert {s.labels["reason"]: s.value for s in _samples(registry, failures)} == {
        "bad_password": 0.0,
        "unknown_user": 0.0,
        "locked_out": 0.0,
        "busy": 0.0,
    }
    for reason in ("bad_password", "unknown_user", "bad_password", "anonymous_off"):
        metrics.api_login_refused(reason)
    metrics.api_lockout("source")
    assert _value(registry, failures, reason="bad_password") == 2
    assert _value(registry, failures, reason="unknown_user") == 1
    assert _value(registry, failures, reason="other") == 1  # not an HTTP refusal
    assert _value(registry, "invops_api_lockouts_total", scope="source") == 1
    assert _value(registry, "invops_api_lockouts_total", scope="user") == 0
    assert _value(registry, "invops_opcua_lockouts_total", scope="source") == 0


def test_signature_attempts_and_lockouts_are_counted_every_outcome_from_zero(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    attempts = "invops_signature_attempts_total"
    assert {s.labels["outcome"]: s.value for s in _samples(registry, attempts)} == dict.fromkeys(
        SIGNING_OUTCOMES, 0.0
    )
    for outcome in ("bad_password", "bad_password", "signed", "made up"):
        metrics.signature_attempt(outcome)
    metrics.signature_lockout("user")
    assert _value(registry, attempts, outcome="bad_password") == 2
    assert _value(registry, attempts, outcome="signed") == 1
    assert _value(registry, attempts, outcome="other") == 1  # never free text as a label
    assert _value(registry, "invops_signature_lockouts_total") == 1


def test_a_fresh_instance_shows_every_opcua_refusal_reason_at_zero(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    refusals = _series(registry, "invops_opcua_refusals_total")
    assert set(refusals) == {(reason,) for reason in REFUSAL_REASONS}
    assert set(refusals.values()) == {0.0}
    metrics.opcua_refused("monitored_item_limit", 3)
    metrics.opcua_refused("handshake_timeout", 1)
    metrics.opcua_refused("made-up reason", 1)  # never a new label value from outside
    refusals = _series(registry, "invops_opcua_refusals_total")
    assert refusals[("monitored_item_limit",)] == 3.0
    assert refusals[("handshake_timeout",)] == 1.0
    assert refusals[("other",)] == 1.0


def test_the_demo_plcs_start_with_every_error_reason_at_zero() -> None:
    registry = CollectorRegistry()
    plcs = [s.name for s in load_config(DEMO).plc_settings()]
    assert sorted(plcs) == ["PLC-MODBUS", "PLC-S7"]
    Metrics(registry, version="1", revision="r", plcs=plcs)
    errors = _series(registry, "invops_plc_errors_total")
    assert set(errors) == {(plc, reason) for plc in plcs for reason in ERROR_REASONS}
    assert set(errors.values()) == {0.0}
    counters = len(errors) + len(_series(registry, "invops_ledger_postings_total"))
    assert counters == 2 * 16 + 10 * 7  # PLCs x error reasons + kinds x sources


def test_a_plc_added_later_gets_its_error_series_and_counts_from_zero(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    metrics.add_plcs(["PLC-NEW"])
    errors = "invops_plc_errors_total"
    assert {r for p, r in _series(registry, errors) if p == "PLC-NEW"} == set(ERROR_REASONS)
    metrics.poll("PLC-NEW", 0.5, "connect")
    assert _value(registry, errors, plc="PLC-NEW", reason="connect") == 1
    assert _value(registry, errors, plc="PLC-NEW", reason="timeout") == 0


def test_a_fresh_instance_passes_promtool(registry: CollectorRegistry, metrics: Metrics) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not on PATH (see .ci/run)")
    text = generate_latest(registry).decode()
    lint = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_configured_plcs_start_down_with_empty_histograms(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    assert _value(registry, "invops_plc_up", plc="PLC-MB") == 0
    assert _value(registry, "invops_plc_up", plc="PLC-S7") == 0
    assert _value(registry, "invops_plc_poll_seconds_count", plc="PLC-S7") == 0
    metrics.plc_up("PLC-S7", True)
    assert _value(registry, "invops_plc_up", plc="PLC-S7") == 1


def test_opcua_sessions_are_read_from_the_callable_at_scrape(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    sessions = [0]
    metrics.set_opcua_sessions(lambda: sessions[0])
    assert _value(registry, "invops_opcua_sessions") == 0
    sessions[0] = 2
    assert _value(registry, "invops_opcua_sessions") == 2


def test_opcua_sessions_read_zero_when_the_server_is_not_running(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    def not_started() -> int:
        raise RuntimeError("the OPC UA server has not been started")

    metrics.set_opcua_sessions(not_started)
    assert _value(registry, "invops_opcua_sessions") == 0


def test_ua_session_count_counts_only_activated_client_sessions() -> None:
    sessions = {
        1: SimpleNamespace(state=SessionState.Activated),
        2: SimpleNamespace(state=SessionState.Created),
        3: SimpleNamespace(state=SessionState.Activated),
    }
    server = SimpleNamespace(iserver=SimpleNamespace(_external_sessions=sessions))
    assert ua_session_count(server) == 2  # type: ignore[arg-type]


# --------------------------------------------------------------------------- bounded labels


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        ("timeout", "timeout"),
        ("connect", "connect"),
        ("decode", "decode"),
        ("protocol", "protocol"),
        ("config", "config"),
        ("exception_0b", "exception_0b"),
        ("exception_zz", "other"),
        ("exception_ff", "other"),  # error_reason() says "protocol" for codes outside the spec
        ("connection refused by 10.0.0.7", "other"),
        ("", "other"),
    ],
)
def test_error_reasons_are_a_bounded_set(reason: str, label: str) -> None:
    assert bounded_reason(reason) == label


@pytest.mark.parametrize("reason", ERROR_REASONS)
def test_every_reason_the_links_report_is_its_own_label(reason: str) -> None:
    assert bounded_reason(reason) == reason


def test_free_text_never_becomes_a_label_value(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    metrics.posting("LOT-4711", "user alice")
    metrics.poll("PLC-MB", 0.1, "PLC-MB: read hr:10 timed out after 1.0 s")
    text = generate_latest(registry).decode()
    assert "LOT-4711" not in text and "alice" not in text and "hr:10" not in text
    assert _value(registry, "invops_ledger_postings_total", kind="other", source="other") == 1
    assert _value(registry, "invops_plc_errors_total", plc="PLC-MB", reason="other") == 1


# --------------------------------------------------------------------------- storage gauges


def test_storage_gauges_come_from_the_plant_view(
    registry: CollectorRegistry, view: PlantView
) -> None:
    view.apply_book("SI-201", Book(quantity=38_000.0))
    _weigh(view, "SI-201", 40_000.0)
    where = {"site": "PLANT1", "area": "SILOS", "unit": "SI-201"}
    assert _value(registry, "invops_storage_fill_ratio", **where) == 0.5
    quantity = "invops_storage_quantity"
    labels = {**where, "material": "SUGAR", "uom": "kg"}
    assert _value(registry, quantity, **labels, kind="book") == 38_000
    assert _value(registry, quantity, **labels, kind="measured") == 40_000
    assert _value(registry, "invops_storage_discrepancy_ratio", **where) == 0.025
    assert _value(registry, "invops_storage_capacity", **labels) == 80_000


def test_unknown_quantities_are_left_out_not_reported_as_zero(
    registry: CollectorRegistry, view: PlantView
) -> None:
    view.apply_book("SI-201", Book(quantity=100.0))
    units = {s.labels["unit"] for s in _samples(registry, "invops_storage_fill_ratio")}
    assert units == set()
    kinds = {
        (s.labels["unit"], s.labels["kind"]) for s in _samples(registry, "invops_storage_quantity")
    }
    assert kinds == {("SI-201", "book")}


def test_quantity_help_states_the_base_unit(registry: CollectorRegistry, view: PlantView) -> None:
    family = _families(registry)["invops_storage_quantity"]
    assert "base unit" in family.documentation
    assert "uom" in family.documentation


def test_storage_collector_never_reports_a_non_finite_value() -> None:
    registry = CollectorRegistry()
    bad = StorageSample("S", "A", "U", "M", "kg", 10.0, math.nan, math.inf, math.nan)
    registry.register(StorageCollector(lambda: [bad]))
    text = generate_latest(registry).decode()
    assert "NaN" not in text and "Inf" not in text


def test_a_scrape_reads_the_snapshot_and_nothing_else() -> None:
    calls: list[int] = []

    def snapshot() -> list[StorageSample]:
        calls.append(1)
        return [TK101]

    registry = CollectorRegistry()
    registry.register(StorageCollector(snapshot))
    assert calls == []  # registering uses describe(), not the snapshot
    generate_latest(registry)
    assert calls == [1]


def test_gauges_follow_the_plant_view_through_a_link_outage(
    registry: CollectorRegistry, view: PlantView
) -> None:
    where = {"site": "PLANT1", "area": "SILOS", "unit": "SI-201"}
    _weigh(view, "SI-201", 40_000.0)
    view.apply_book("SI-201", Book(quantity=39_000.0))  # ledger refresh
    assert _value(registry, "invops_storage_fill_ratio", **where) == 0.5
    held = next(s for s in storage_samples(view)() if s.unit == "SI-201")
    assert (held.book, held.measured, held.discrepancy) == (39_000.0, 40_000.0, 1_000.0)
    _weigh(view, "SI-201", 40_000.0, Quality.UNCERTAIN_LAST_USABLE)  # retrying: keep values
    assert _value(registry, "invops_storage_quantity", **where, material="SUGAR", uom="kg",
                  kind="measured") == 40_000.0  # fmt: skip
    _weigh(view, "SI-201", None, Quality.BAD_NO_COMMUNICATION)  # down: unknown
    assert _value(registry, "invops_storage_fill_ratio", **where) is None
    assert _value(registry, "invops_storage_discrepancy_ratio", **where) is None
    down = next(s for s in storage_samples(view)() if s.unit == "SI-201")
    assert (down.measured, down.book) == (None, 39_000.0)


def test_the_demo_view_has_every_unit_in_base_units() -> None:
    samples = {s.unit: s for s in storage_samples(demo_view())()}
    assert set(samples) == {
        "TK-101",
        "TK-102",
        "SI-201",
        "SI-202",
        "BN-301",
        "BN-302",
        "BN-303",
        "BN-304",
        "WH-401",
    }
    tank = samples["TK-101"]
    assert (tank.site, tank.area, tank.material, tank.uom) == (
        "PLANT1",
        "TANKFARM",
        "ETHANOL-96",
        "kg",
    )
    assert tank.capacity == pytest.approx(40_000.0)  # 50 000 L x 0.80 kg/L


# --------------------------------------------------------------------------- sink adapter


class _RecordingSink:
    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    def publish(self, sample: Sample) -> None:
        self.calls.append(("publish", sample.plc))

    def link_state(self, plc: str, up: bool, error: PlcError | None) -> None:
        self.calls.append(("link_state", plc, up, error))

    def poll_finished(self, plc: str, seconds: float, error_reason: str | None) -> None:
        self.calls.append(("poll_finished", plc, seconds, error_reason))


class _Board:
    def __init__(self) -> None:
        self.plcs: dict[str, tuple[bool, str | None]] = {}

    def set_plc(self, plc: str, up: bool, error: str | None = None) -> None:
        self.plcs[plc] = (up, error)


def test_metrics_sink_records_and_forwards_everything(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    inner, board = _RecordingSink(), _Board()
    sink = MetricsSink(inner, metrics, health=board)
    error = PlcTimeout("PLC-MB: read hr:0 timed out")
    sink.poll_finished("PLC-MB", 0.5, "timeout")
    sink.link_state("PLC-MB", False, error)
    assert _value(registry, "invops_plc_up", plc="PLC-MB") == 0
    assert board.plcs["PLC-MB"] == (False, "PLC-MB: read hr:0 timed out")
    sink.poll_finished("PLC-MB", 0.01, None)
    sink.link_state("PLC-MB", True, None)
    now = datetime.now(UTC)
    sink.publish(Sample("PLC-MB", now, Quality.BAD_WAITING, now, {}))
    assert _value(registry, "invops_plc_up", plc="PLC-MB") == 1
    assert board.plcs == {"PLC-MB": (True, None)}
    assert _value(registry, "invops_plc_errors_total", plc="PLC-MB", reason="timeout") == 1
    assert _value(registry, "invops_plc_poll_seconds_count", plc="PLC-MB") == 2
    assert inner.calls == [
        ("poll_finished", "PLC-MB", 0.5, "timeout"),
        ("link_state", "PLC-MB", False, error),
        ("poll_finished", "PLC-MB", 0.01, None),
        ("link_state", "PLC-MB", True, None),
        ("publish", "PLC-MB"),
    ]


# --------------------------------------------------------------------------- build revision


def test_revision_comes_from_the_environment_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INVOPS_REVISION", "v1.0-rc1")
    assert build_revision() == "v1.0-rc1"


def test_revision_reads_a_git_checkout_without_git(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INVOPS_REVISION", raising=False)
    sha = "0123456789abcdef0123456789abcdef01234567"
    (tmp_path / ".git" / "refs" / "heads").mkdir(parents=True)
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (tmp_path / ".git" / "refs" / "heads" / "main").write_text(sha + "\n")
    (tmp_path / "pkg").mkdir()
    assert build_revision(tmp_path / "pkg" / "metrics.py") == sha[:12]


def test_revision_is_unknown_outside_a_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INVOPS_REVISION", raising=False)
    deep = tmp_path / "a" / "b" / "c" / "d" / "e" / "f"
    deep.mkdir(parents=True)
    assert build_revision(deep / "metrics.py") == "unknown"
