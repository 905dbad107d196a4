"""The files in `examples/`: both plant configs validate, the Prometheus config passes
promtool, and the Grafana dashboard only queries metrics that invops exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from inventory_core.domain.passwords import verify_password
from invops.config import load_config
from invops.metrics import Metrics, StorageSample

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CONFIGS = ["demo-plant.toml", "plant-template.toml"]
DASHBOARD = EXAMPLES / "grafana-dashboard.json"
PROMTOOL = shutil.which("promtool") or (
    "/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None
)
INVOPS = Path(sys.executable).with_name("invops")
METRIC_NAME = re.compile(r"\binvops_[a-z0-9_]*[a-z0-9]\b")


def _invops(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOPS_")}
    command = [str(INVOPS)] if INVOPS.exists() else [sys.executable, "-m", "invops.cli"]
    return subprocess.run(
        [*command, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize("name", CONFIGS)
def test_example_config_passes_check_config(name: str) -> None:
    result = _invops("check-config", str(EXAMPLES / name))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(")") and ": ok (site " in result.stdout
    assert result.stderr == ""


def test_the_template_is_a_real_plant_not_the_demo() -> None:
    config = load_config(EXAMPLES / "plant-template.toml", environ={})
    assert config.ledger.url.startswith("postgresql+asyncpg://")
    assert config.ledger.writer_id
    assert not config.opcua.allow_security_none
    assert all(p.value != "None" for p in config.opcua.security_policies)
    assert {p.protocol.value for p in config.plcs} == {"modbus", "s7"}
    kinds = {u.kind.value for u in config.storage_units}
    assert kinds == {"tank", "silo", "bin"}
    tank = next(u for u in config.storage_units if u.kind.value == "tank")
    assert tank.strapping is not None and len(tank.strapping.points) >= 10
    orders = {t.word_order.value for u in config.storage_units for t in u.tags().values()}
    assert "CDAB" in orders
    assert any(t.scale != 1.0 for u in config.storage_units for t in u.tags().values())
    # Placeholder accounts: real hashes, but not of any password someone could guess.
    for user in config.users:
        for guess in (user.name, "password", "changeme", "change-me", "admin", ""):
            assert not verify_password(guess, user.password_hash), user.name


# --------------------------------------------------------------------------- Prometheus


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")
def test_prometheus_config_passes_promtool() -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "config", str(EXAMPLES / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_config_scrapes_the_demo_endpoint() -> None:
    text = (EXAMPLES / "prometheus.yml").read_text(encoding="utf-8")
    assert '"127.0.0.1:9840"' in text
    assert re.search(r"^\s*metrics_path: /metrics\s*$", text, re.MULTILINE)
    assert re.search(r"^\s*scrape_interval: 5s", text, re.MULTILINE)


# --------------------------------------------------------------------------- Grafana


def _dashboard() -> dict[str, Any]:
    document = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def _expressions(dashboard: dict[str, Any]) -> list[str]:
    found = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    found += [
        variable["definition"]
        for variable in dashboard["templating"]["list"]
        if variable["type"] == "query"
    ]
    return found


def _exported_names() -> set[str]:
    """Every sample name a scrape of a busy invops instance shows."""
    registry = CollectorRegistry()
    metrics = Metrics(registry, version="0.0.0", revision="test", plcs=["PLC-1"])
    sample = StorageSample(
        "SITE",
        "AREA",
        "TK-1",
        "WATER",
        "kg",
        1000.0,
        book=500.0,
        measured=510.0,
        fill_ratio=0.51,
        discrepancy=10.0,
    )
    metrics.register_storage(lambda: [sample])
    metrics.poll("PLC-1", 0.01, None)
    metrics.poll("PLC-1", 0.5, "timeout")
    metrics.plc_up("PLC-1", True)
    metrics.posting("receipt", "plc")
    metrics.posting_committed(1, 0.002)
    metrics.set_opcua_sessions(lambda: 2)
    text = generate_latest(registry).decode()
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def test_dashboard_is_grafana_json_with_a_prometheus_datasource_variable() -> None:
    dashboard = _dashboard()
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))


def test_dashboard_has_the_panels_operators_need() -> None:
    expressions = "\n".join(_expressions(_dashboard()))
    for needle in (
        "invops_storage_fill_ratio",
        "invops_storage_quantity",
        "sum by (kind, source) (rate(invops_ledger_postings_total",
        "histogram_quantile(0.5, sum by (le) (rate(invops_ledger_posting_seconds_bucket",
        "histogram_quantile(0.99, sum by (le) (rate(invops_ledger_posting_seconds_bucket",
        "histogram_quantile(0.99, sum by (le, plc) (rate(invops_plc_poll_seconds_bucket",
        "invops_plc_up",
        "sum by (plc, reason) (rate(invops_plc_errors_total",
        "invops_opcua_sessions",
    ):
        assert needle in expressions, needle


def test_every_metric_the_dashboard_queries_is_exported() -> None:
    used = {name for expr in _expressions(_dashboard()) for name in METRIC_NAME.findall(expr)}
    assert used
    missing = used - _exported_names()
    assert not missing, f"the dashboard queries metrics invops does not export: {missing}"


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each panel query as a recording rule (Grafana variables filled in)."""
    assert PROMTOOL is not None
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    panel_exprs = [
        target["expr"] for panel in _dashboard()["panels"] for target in panel.get("targets", [])
    ]
    for number, expr in enumerate(panel_exprs):
        promql = (
            expr.replace("$__rate_interval", "1m")
            .replace("$instance", ".*")
            .replace("$site", ".*")
            .replace("$unit", ".*")
            .replace("$plc", ".*")
        )
        assert "$" not in promql, expr
        lines += [
            f"      - record: dashboard:query_{number}",
            f"        expr: {json.dumps(promql)}",
        ]
    rules = tmp_path / "rules.yml"
    rules.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(rules)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
