"""OTLP exporter settings: argument, per-signal variable, generic one, default (export.otlp)."""

from __future__ import annotations

import logging

import pytest

from tasktrace.core.warn import reset_warnings
from tasktrace.export.otlp import DEFAULT_TIMEOUT_S, otlp_settings


def test_endpoint_protocol_and_timeout_follow_the_precedence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The argument wins; then the per-signal variable (used as is); then the generic one."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "3")
    assert otlp_settings("traces").endpoint == "http://generic:4318/v1/traces"
    assert otlp_settings("metrics").endpoint == "http://generic:4318/v1/metrics"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4318/custom")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "4")
    traces = otlp_settings("traces")
    assert (traces.endpoint, traces.timeout_s) == ("http://traces:4318/custom", 4.0)
    assert otlp_settings("metrics").timeout_s == 3.0
    given = otlp_settings("traces", endpoint="http://arg:4318/", protocol="grpc", timeout_s=1)
    assert (given.endpoint, given.protocol, given.timeout_s) == ("http://arg:4318/", "grpc", 1)


def test_an_invalid_timeout_or_protocol_warns_once_and_uses_the_default(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bad variable is named in one warning; the default applies."""
    reset_warnings()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")
    with caplog.at_level(logging.WARNING):
        first = otlp_settings("traces")
        otlp_settings("traces")
    assert (first.timeout_s, first.protocol) == (DEFAULT_TIMEOUT_S, "http/protobuf")
    messages = sorted(r.getMessage() for r in caplog.records)
    assert len(messages) == 2
    assert "OTEL_EXPORTER_OTLP_PROTOCOL='carrier-pigeon'" in messages[0]
    assert "OTEL_EXPORTER_OTLP_TIMEOUT='soon'" in messages[1]


@pytest.mark.parametrize("raw", ["inf", "1e300"])
def test_a_timeout_no_wait_can_take_warns_and_uses_the_default(
    raw: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``OTEL_EXPORTER_OTLP_TIMEOUT=1e300`` is refused, the variable named.

    Before: used, and every export then failed with "timestamp out of range for platform time_t".
    """
    reset_warnings()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", raw)
    with caplog.at_level(logging.WARNING):
        settings = otlp_settings("traces")
    assert settings.timeout_s == DEFAULT_TIMEOUT_S
    (message,) = [r.getMessage() for r in caplog.records]
    assert f"OTEL_EXPORTER_OTLP_TIMEOUT={raw!r}" in message


@pytest.mark.parametrize(
    ("variable", "endpoint"),
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4318"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector.lab/v1/traces"),
    ],
)
def test_an_http_endpoint_without_a_scheme_is_named_once(
    variable: str,
    endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """OTLP/HTTP to ``localhost:4318`` (no ``http://``): one warning naming the variable.

    Before: nothing until every export failed with "No connection adapters were found for
    'localhost:4318/v1/traces'", which names neither the variable nor the fix.
    """
    reset_warnings()
    monkeypatch.setenv(variable, endpoint)
    with caplog.at_level(logging.WARNING):
        otlp_settings("traces")
        otlp_settings("traces")
    (message,) = [r.getMessage() for r in caplog.records]
    assert variable in message
    assert "http://" in message
    reset_warnings()
    caplog.clear()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")  # host:port is gRPC's own form
    with caplog.at_level(logging.WARNING):
        otlp_settings("traces")
    assert caplog.records == []


def test_the_signal_path_goes_before_a_query(monkeypatch: pytest.MonkeyPatch) -> None:
    """A base URL with a query gets ``/v1/traces`` in its path, the query kept after it.

    Before: ``http://h:4318/?tenant=a`` became ``http://h:4318/?tenant=a/v1/traces``: the
    requests went to ``/`` with a mangled query.
    """
    given = otlp_settings("traces", endpoint="http://h:4318/?tenant=a")
    assert given.endpoint == "http://h:4318/v1/traces?tenant=a"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h:4318?tenant=b")
    assert otlp_settings("metrics").endpoint == "http://h:4318/v1/metrics?tenant=b"


def test_header_values_are_secrets_never_to_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every header value, from the variable and the argument, is listed as a secret."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20tok-1")
    settings = otlp_settings("traces", headers={"X-Key": "key-2"})
    assert settings.headers == {"authorization": "Bearer tok-1", "x-key": "key-2"}
    assert {"Bearer tok-1", "key-2"} <= set(settings.secrets)


def test_each_value_names_its_source(monkeypatch: pytest.MonkeyPatch) -> None:
    """sources: the argument's function, the variable that gave the value, or default."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "a=1,b=2")
    traces = otlp_settings("traces", headers={"B": "3"}, timeout_s=2)
    assert dict(traces.sources) == {
        "endpoint": "OTEL_EXPORTER_OTLP_ENDPOINT",
        "protocol": "default",
        "timeout_s": "configure(timeout_s=...)",
        "headers.a": "OTEL_EXPORTER_OTLP_HEADERS",
        "headers.b": "configure(headers=...)",
    }
    metrics = otlp_settings("metrics", endpoint="http://arg:4317", given_by="replay")
    assert metrics.sources["protocol"] == "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"
    assert metrics.sources["endpoint"] == "replay(endpoint=...)"
