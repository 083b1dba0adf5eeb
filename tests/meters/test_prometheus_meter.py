"""Prometheus meter: the seed's power queries against a real server, and failing servers."""

from __future__ import annotations

import json
import logging
import time

import pytest

from tasktrace.core.settings import Settings
from tasktrace.meters.energy import default_energy_meters
from tasktrace.meters.prometheus import PrometheusMeter

from .conftest import EXPORTER_RATE_W, PROMETHEUS_JOB, PROMETHEUS_SCRAPE_S
from .energy_helpers import FakePrometheus, JoulesExporter, PrometheusServer, free_port

SEED_STYLE_QUERY = "sum(increase({metric}{{{{job='{{machine}}'}}}}[{{elapsed}}ms]))"
"""A power query as LensKit users write them, with ``{machine}`` and ``{elapsed}`` (ms)."""


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep loopback queries off any HTTP proxy of the environment."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)


def _system_meter(url: str, query: str, **kwargs: float) -> PrometheusMeter:
    return PrometheusMeter(url, {"system": query}, PROMETHEUS_JOB, **kwargs)


@pytest.mark.slow
def test_system_energy_matches_the_counter_rate_within_scrape_resolution(
    prometheus_server: tuple[PrometheusServer, JoulesExporter],
) -> None:
    """system_power is the exporter's rate times the duration, within one scrape interval."""
    server, exporter = prometheus_server
    meter = _system_meter(
        server.url,
        SEED_STYLE_QUERY.format(metric=exporter.metric),
        scrape_interval_s=PROMETHEUS_SCRAPE_S,
    )
    assert meter.available()
    snap = meter.start()
    t0 = time.perf_counter()
    time.sleep(2.0)
    assert meter.read(snap, time.perf_counter() - t0, final=False) == {}  # queried at finish only
    elapsed_s = time.perf_counter() - t0
    reading = meter.read(snap, elapsed_s, final=True)
    expected_j = EXPORTER_RATE_W * elapsed_s
    assert reading["system_power"] == pytest.approx(
        expected_j, abs=EXPORTER_RATE_W * PROMETHEUS_SCRAPE_S
    )
    assert reading["system_energy_source"] == "prometheus"
    assert reading["system_energy_scope"] == "query"
    assert reading["system_energy_short_task"] is False


@pytest.mark.slow
def test_machine_label_selects_the_series(
    prometheus_server: tuple[PrometheusServer, JoulesExporter],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """{machine} is substituted: another machine's label matches no series, giving None."""
    server, exporter = prometheus_server
    query = SEED_STYLE_QUERY.format(metric=exporter.metric).replace("sum(", "(")
    meter = PrometheusMeter(server.url, {"cpu": query}, "elsewhere")
    with caplog.at_level(logging.WARNING):
        reading = meter.read(meter.start(), 1.0, final=True)
    assert reading["cpu_power"] is None
    assert reading["cpu_energy_source"] is None
    assert "no series" in caplog.records[0].getMessage()


@pytest.mark.slow
def test_bad_query_warns_once_and_does_not_silence_the_server(
    prometheus_server: tuple[PrometheusServer, JoulesExporter],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A query Prometheus rejects gives None and one warning; other scopes still query."""
    server, exporter = prometheus_server
    good = SEED_STYLE_QUERY.format(metric=exporter.metric)
    meter = PrometheusMeter(server.url, {"cpu": "sum(", "system": good}, PROMETHEUS_JOB)
    with caplog.at_level(logging.WARNING):
        first = meter.read(None, 1.0, final=True)
        second = meter.read(None, 1.0, final=True)
    assert first["cpu_power"] is None
    assert second["cpu_power"] is None
    assert second["system_power"] is not None
    assert second["system_power"] > 0
    assert len(caplog.records) == 1
    assert "sum(" in caplog.records[0].getMessage()


def test_server_down_gives_none_and_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing listening at the URL: None for each task, warned about once."""
    meter = _system_meter(f"http://127.0.0.1:{free_port()}", "up", retry_after_s=0)
    with caplog.at_level(logging.WARNING):
        readings = [meter.read(meter.start(), 1.0, final=True) for _ in range(3)]
    assert [r["system_power"] for r in readings] == [None, None, None]
    assert len(caplog.records) == 1
    assert "failed" in caplog.records[0].getMessage()


def test_slow_server_times_out_to_none(caplog: pytest.LogCaptureFixture) -> None:
    """A server slower than timeout_s gives None quickly, with one warning."""
    slow = FakePrometheus(delay_s=10.0)
    try:
        meter = _system_meter(slow.url, "up", timeout_s=0.3, retry_after_s=0)
        t0 = time.perf_counter()
        with caplog.at_level(logging.WARNING):
            first = meter.read(None, 1.0, final=True)
            second = meter.read(None, 1.0, final=True)
        waited_s = time.perf_counter() - t0
    finally:
        slow.close()
    assert first["system_power"] is None
    assert second["system_power"] is None
    assert slow.requests == 2
    assert waited_s < 2 * 0.3 + 1.0
    assert len(caplog.records) == 1


def test_failed_server_is_not_queried_again_until_retry_after() -> None:
    """After a server error, tasks within retry_after_s send no query at all."""
    now = [0.0]
    failing = FakePrometheus(status=503, body=b"upstream down")
    try:
        meter = _system_meter(failing.url, "up", retry_after_s=30.0, clock=lambda: now[0])
        assert meter.read(None, 1.0, final=True)["system_power"] is None
        now[0] = 29.0
        assert meter.read(None, 1.0, final=True)["system_power"] is None
        assert failing.requests == 1
        now[0] = 31.0
        meter.read(None, 1.0, final=True)
        assert failing.requests == 2
    finally:
        failing.close()


def test_elapsed_is_milliseconds_and_scalar_results_are_used() -> None:
    """{elapsed} is the duration in whole milliseconds; a scalar result is the value."""
    body = {"status": "success", "data": {"resultType": "scalar", "result": [0, "12.5"]}}
    answering = FakePrometheus(body=json.dumps(body).encode())
    seen: list[str] = []
    original = answering.server.RequestHandlerClass.do_GET

    def record(handler) -> None:
        seen.append(handler.path)
        original(handler)

    answering.server.RequestHandlerClass.do_GET = record
    try:
        meter = _system_meter(answering.url, "x[{elapsed}ms]")
        reading = meter.read(None, 1.2345, final=True)
    finally:
        answering.close()
    assert reading["system_power"] == pytest.approx(12.5)
    assert "x%5B1234ms%5D" in seen[0] or "x%5B1235ms%5D" in seen[0]


def test_unknown_placeholder_in_a_query_gives_none_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A query using a placeholder other than {elapsed}/{machine} is reported, not raised."""
    meter = _system_meter("http://127.0.0.1:9", "x[{duration}]")
    with caplog.at_level(logging.WARNING):
        reading = meter.read(None, 1.0, final=True)
    assert reading["system_power"] is None
    assert "{elapsed}" in caplog.records[0].getMessage()


def test_short_task_flag_uses_the_scrape_interval() -> None:
    """Tasks shorter than the configured scrape interval are flagged as below resolution."""
    meter = _system_meter("http://127.0.0.1:9", "x[{duration}]", scrape_interval_s=15.0)
    assert meter.read(None, 14.0, final=True)["system_energy_short_task"] is True
    assert meter.read(None, 16.0, final=True)["system_energy_short_task"] is False


def test_prometheus_asked_for_without_a_url_says_why_once(caplog: pytest.LogCaptureFixture) -> None:
    """TASKTRACE_METERS=prometheus with no URL: one warning that names the missing setting."""
    settings = Settings(meters=["prometheus"])
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            assert default_energy_meters(settings) == []
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1, messages
    assert "no Prometheus URL" in messages[0]
