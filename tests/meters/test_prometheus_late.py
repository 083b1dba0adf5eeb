"""Prometheus queries never inside a task's figures, nor its parent's: real server, slow network.

A stand-in proxy adds latency in front of the real Prometheus of the suite (Debian's
``prometheus``, see ``conftest.prometheus_server``). Before the queries ran off the task's
path, each child's ``finish_time`` and span included its round trips, and its parent's
duration and energy window included all of its children's.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tasktrace import Task
from tasktrace.core import attributes as attr
from tasktrace.core.settings import Settings, reset_settings
from tasktrace.meters.prometheus import PrometheusMeter

from .conftest import EXPORTER_RATE_W, PROMETHEUS_JOB, PROMETHEUS_SCRAPE_S
from .energy_helpers import FakePrometheus, JoulesExporter, PrometheusServer
from .latency_proxy import LatencyProxy

LATENCY_S = 0.3
"""Added to every query by the proxy: far above the tasks' own timing noise."""

CHILD_S = 3 * PROMETHEUS_SCRAPE_S
"""Each child's work: its window holds at least two samples, so its query has a value."""

QUERY = "sum(increase({metric}{{{{job='{{machine}}'}}}}[{{elapsed}}ms]))"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep loopback queries off any HTTP proxy of the environment."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def slow_prometheus(
    prometheus_server: tuple[PrometheusServer, JoulesExporter], install_energy: None
) -> Iterator[JoulesExporter]:
    """Install settings querying the real Prometheus through a proxy adding ``LATENCY_S``."""
    del install_energy
    server, exporter = prometheus_server
    proxy = LatencyProxy(server.url, LATENCY_S)
    reset_settings(
        Settings.model_validate(
            {
                "machine": PROMETHEUS_JOB,
                "meters": ["prometheus"],
                "prometheus": {
                    "url": proxy.url,
                    "timeout_s": 5.0,
                    "scrape_interval_s": PROMETHEUS_SCRAPE_S,
                },
                "machines": {
                    PROMETHEUS_JOB: {
                        "power_queries": {"system": QUERY.format(metric=exporter.metric)}
                    }
                },
            }
        )
    )
    try:
        yield exporter
    finally:
        reset_settings()
        proxy.close()


@pytest.mark.slow
def test_queries_are_outside_every_figure_of_the_task_and_its_parent(
    slow_prometheus: JoulesExporter, task_spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    """Children's and parent's times exclude the queries; energies and spans still get them."""
    del slow_prometheus
    path = tmp_path / "task.json"
    with Task("parent", file=path) as parent:
        children = []
        for i in range(3):
            with Task(f"child-{i}") as child:
                time.sleep(CHILD_S)
            children.append(child)
    margin_s = LATENCY_S / 3  # timing noise of a loaded machine, well below one round trip
    spans = {s.name: s for s in task_spans.get_finished_spans()}
    for task in [*children, parent]:
        assert task.duration is not None
        assert task.finish_time is not None
        assert task.finish_time - task.start_time < task.duration + margin_s, task.label
        span = spans[task.label]
        assert span.start_time is not None
        assert span.end_time is not None
        assert (span.end_time - span.start_time) / 1e9 < task.duration + margin_s, task.label
        # The energy over the task's own window, within one scrape interval of the truth.
        assert task.system_power == pytest.approx(
            EXPORTER_RATE_W * task.duration, abs=EXPORTER_RATE_W * PROMETHEUS_SCRAPE_S
        ), task.label
        assert span.attributes is not None
        assert span.attributes[attr.SYSTEM_ENERGY_J] == pytest.approx(task.system_power)
        assert span.attributes[attr.SYSTEM_ENERGY_SOURCE] == "prometheus"
    children_s = sum(c.duration for c in children if c.duration is not None)
    assert parent.duration is not None
    assert parent.duration < children_s + margin_s  # no child's round trip inside it
    # Each child's span ends before its parent's, and the file has every answer.
    assert all(spans[c.label].end_time <= spans["parent"].end_time for c in children)  # type: ignore[operator]
    saved = json.loads(path.read_text())
    assert [s["system_power"] for s in saved["subtasks"]] == [c.system_power for c in children]
    assert saved["system_power"] == parent.system_power


@pytest.mark.slow
def test_a_window_shorter_than_the_scrape_interval_is_said_to_be_the_cause(
    prometheus_server: tuple[PrometheusServer, JoulesExporter], caplog: pytest.LogCaptureFixture
) -> None:
    """A 1 ms task: no series, warned once as too short for increase(), not as unscraped."""
    server, exporter = prometheus_server
    meter = PrometheusMeter(
        server.url,
        {"system": QUERY.format(metric=exporter.metric)},
        PROMETHEUS_JOB,
        scrape_interval_s=PROMETHEUS_SCRAPE_S,
    )
    with caplog.at_level(logging.WARNING):
        readings = [meter.read(None, 0.001, final=True) for _ in range(2)]
    assert [r["system_power"] for r in readings] == [None, None]
    assert all(r["system_energy_short_task"] is True for r in readings)
    (record,) = [r for r in caplog.records if r.name == "tasktrace.meters.prometheus"]
    message = record.getMessage()
    assert "1 ms window, shorter than the scrape interval" in message
    assert "increase() needs two samples in its window, which it never holds" in message
    assert "is the metric scraped" not in message


@pytest.mark.slow
def test_no_series_over_a_long_window_still_asks_whether_the_metric_is_scraped(
    prometheus_server: tuple[PrometheusServer, JoulesExporter], caplog: pytest.LogCaptureFixture
) -> None:
    """A metric nobody scrapes, over a window longer than the scrape interval: the old cause."""
    server, _ = prometheus_server
    meter = PrometheusMeter(
        server.url,
        {"system": QUERY.format(metric="tasktrace_no_such_metric_total")},
        PROMETHEUS_JOB,
        scrape_interval_s=PROMETHEUS_SCRAPE_S,
    )
    with caplog.at_level(logging.WARNING):
        reading = meter.read(None, 4 * PROMETHEUS_SCRAPE_S, final=True)
    assert reading["system_power"] is None
    (record,) = [r for r in caplog.records if r.name == "tasktrace.meters.prometheus"]
    assert "is the metric scraped" in record.getMessage()


EXIT_PROGRAM = """\
import sys, time
from tasktrace import Task
from tasktrace.core.settings import Settings, reset_settings

reset_settings(Settings.model_validate({
    "machine": "box",
    "meters": ["prometheus"],
    "prometheus": {"url": sys.argv[1], "timeout_s": 5.0},
    "machines": {"box": {"power_queries": {"system": "x[{elapsed}ms]"}}},
}))
parent = Task("parent", file=sys.argv[2]).start()  # never finished: saved at exit
with Task("child") as child:
    time.sleep(0.05)
print(child.system_power)  # not answered yet: the query is off the child's path
"""


def test_interpreter_exit_waits_for_the_answers_of_finished_subtasks(tmp_path: Path) -> None:
    """A slow stand-in server: the running parent's file, saved at exit, has the child's answer."""
    body = {"status": "success", "data": {"resultType": "scalar", "result": [0, "7.5"]}}
    slow = FakePrometheus(delay_s=0.5, body=json.dumps(body).encode())
    path = tmp_path / "task.json"
    try:
        done = subprocess.run(
            [sys.executable, "-c", EXIT_PROGRAM, slow.url, str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")},
        )
    finally:
        slow.close()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "None"
    saved = json.loads(path.read_text())
    assert saved["status"] == "running"
    assert [s["system_power"] for s in saved["subtasks"]] == [7.5]
    assert slow.requests == 1


def test_the_scopes_are_queried_together_one_round_trip_for_all() -> None:
    """Three scopes behind a slow stand-in cost about one delay, not three."""
    delay_s = 0.5
    body = {"status": "success", "data": {"resultType": "scalar", "result": [0, "2.5"]}}
    slow = FakePrometheus(delay_s=delay_s, body=json.dumps(body).encode())
    try:
        queries = {"system": "s[{elapsed}ms]", "cpu": "c[{elapsed}ms]", "gpu": "g[{elapsed}ms]"}
        meter = PrometheusMeter(slow.url, queries, "box")
        t0 = time.perf_counter()
        reading = meter.read(None, 1.0, final=True)
        waited_s = time.perf_counter() - t0
    finally:
        slow.close()
    assert [reading[f"{s}_power"] for s in ("system", "cpu", "gpu")] == [2.5, 2.5, 2.5]
    assert slow.requests == 3
    assert delay_s <= waited_s < 2 * delay_s  # one after the other: 3 delays
