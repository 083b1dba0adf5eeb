"""The Grafana dashboard of task metrics agrees with the metric names tasktrace exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tasktrace.core import attributes as attr
from tasktrace.export import metrics as _metrics

yaml = pytest.importorskip("yaml")

CONFIG_DIR = Path(__file__).resolve().parent.parent / "collector-config"
DASHBOARD = CONFIG_DIR / "grafana/dashboards/tasktrace-tasks.json"


def _prometheus_name(name: str) -> str:
    """Prometheus's OTLP translation of a metric or attribute name (dots -> underscores)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


EXPORTED = {
    _prometheus_name(_metrics.DURATION) + "_seconds_bucket",
    _prometheus_name(_metrics.DURATION) + "_seconds_sum",
    _prometheus_name(_metrics.DURATION) + "_seconds_count",
    _prometheus_name(_metrics.ENERGY) + "_joules_total",
    _prometheus_name(_metrics.CPU_TIME) + "_seconds_total",
    _prometheus_name(_metrics.RUNNING_RSS) + "_bytes",
    _prometheus_name(_metrics.RUNNING_CPU_TIME) + "_seconds",
}
LABELS = {
    _prometheus_name(k)
    for k in (_metrics.LABEL, _metrics.HW_TYPE, _metrics.CPU_MODE, attr.MACHINE, attr.STATUS)
} | {"job", "le"}


def _exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]] + [
        v["query"]["query"] for v in dashboard["templating"]["list"]
    ]


def test_dashboard_queries_use_only_exported_metric_and_label_names() -> None:
    """Every series and grouping label in the dashboard is one that tasktrace's metrics produce."""
    for expr in _exprs():
        series = set(re.findall(r"\b(tasktrace_\w+|hw_\w+|process_\w+)\b", expr))
        series -= LABELS
        assert series, expr
        assert series <= EXPORTED, (expr, series - EXPORTED)
        for group in re.findall(r"by \(([^)]*)\)", expr):
            assert {g.strip() for g in group.split(",")} <= LABELS, expr


def test_dashboard_charts_duration_and_energy_by_label() -> None:
    """Some panel groups task duration by label, and some groups energy by label."""
    exprs = _exprs()
    label = _prometheus_name(_metrics.LABEL)
    assert any("duration" in e and f"{label})" in e for e in exprs)
    assert any("energy" in e and label in e.split("by (")[1] for e in exprs if "by (" in e)


def test_grafana_provisions_the_dashboard_and_its_data_source() -> None:
    """Compose mounts the dashboard folder where the provider reads it; the data source exists."""
    compose = yaml.safe_load((CONFIG_DIR / "docker-compose.yaml").read_text())
    mounts = dict(v.split(":")[1::-1] for v in compose["services"]["grafana"]["volumes"])
    provider = yaml.safe_load(
        (CONFIG_DIR / "grafana/provisioning/dashboards/tasktrace.yaml").read_text()
    )["providers"][0]
    assert (CONFIG_DIR / mounts[provider["options"]["path"]]).resolve() == DASHBOARD.parent
    uids = {
        source["uid"]
        for path in (CONFIG_DIR / "grafana/provisioning/datasources").glob("*.yaml")
        for source in yaml.safe_load(path.read_text())["datasources"]
    }
    dashboard = json.loads(DASHBOARD.read_text())
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} <= uids
    assert "prometheus" in compose["services"]
