"""Prometheus meter: the seed's power queries against a real server, and failing servers."""

from __future__ import annotations

import base64
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


def _recording(body: dict) -> tuple[FakePrometheus, list[tuple[str, str | None]]]:
    """Start a fake server answering ``body``; record each request's path and Authorization."""
    answering = FakePrometheus(body=json.dumps(body).encode())
    seen: list[tuple[str, str | None]] = []
    original = answering.server.RequestHandlerClass.do_GET

    def record(handler) -> None:
        seen.append((handler.path, handler.headers.get("Authorization")))
        original(handler)

    answering.server.RequestHandlerClass.do_GET = record
    return answering, seen


def test_elapsed_is_truncated_milliseconds_and_scalar_results_are_used() -> None:
    """{elapsed} is the duration in ms truncated as LensKit does (1.2349 s: 1234); scalars used."""
    body = {"status": "success", "data": {"resultType": "scalar", "result": [0, "12.5"]}}
    answering, seen = _recording(body)
    try:
        meter = _system_meter(answering.url, "x[{elapsed}ms]")
        reading = meter.read(None, 1.2349, final=True)
    finally:
        answering.close()
    assert reading["system_power"] == pytest.approx(12.5)
    assert "x%5B1234ms%5D" in seen[0][0]


def test_several_series_give_the_first_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    """As LensKit: of a result of several series the first is used, and said once per query."""
    series = [{"metric": {"i": str(i)}, "value": [0, str(v)]} for i, v in enumerate((7.0, 5.0))]
    body = {"status": "success", "data": {"resultType": "vector", "result": series}}
    answering, _ = _recording(body)
    try:
        meter = _system_meter(answering.url, "x[{elapsed}ms]")
        with caplog.at_level(logging.WARNING):
            readings = [meter.read(None, 1.0, final=True) for _ in range(2)]
    finally:
        answering.close()
    assert [r["system_power"] for r in readings] == [7.0, 7.0]
    (record,) = caplog.records
    assert "returned 2 series; using the first, as LensKit does" in record.getMessage()


def test_url_credentials_are_sent_as_basic_auth_and_never_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """http://user:pw@host: basic authentication, as LensKit's requests; the password unlogged."""
    body = {"status": "success", "data": {"resultType": "scalar", "result": [0, "3"]}}
    answering, seen = _recording(body)
    url = answering.url.replace("http://", "http://alice:hunter2@")
    try:
        assert _system_meter(url, "up").read(None, 1.0, final=True)["system_power"] == 3.0
    finally:
        answering.close()
    assert seen[0][1] == "Basic " + base64.b64encode(b"alice:hunter2").decode()
    down = _system_meter(f"http://alice:hunter2@127.0.0.1:{free_port()}", "up")
    with caplog.at_level(logging.WARNING):
        assert down.read(None, 1.0, final=True)["system_power"] is None
    (record,) = caplog.records
    assert "alice:***@127.0.0.1" in record.getMessage()
    assert "hunter2" not in record.getMessage()


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


def test_without_a_machine_the_reason_says_none_is_selected_and_how() -> None:
    """A URL but no machine: the reason says no machine is selected, not ``machine None``."""
    meter = PrometheusMeter("http://127.0.0.1:9", {}, None)
    assert meter.reason is not None
    assert "None" not in meter.reason
    assert meter.reason.startswith("no machine is selected")
    assert "LK_MACHINE=NAME" in meter.reason
    named = PrometheusMeter("http://127.0.0.1:9", {}, "spare")
    assert named.reason == "machine 'spare' has no power_queries ([machines.NAME])"
