"""Export failures of task metrics and spans: one warning each, naming the real cause, bounded exit.

Real OTLP receivers (HTTP and gRPC, refusing, silent, HTTPS with an untrusted certificate) and
a real program in a fresh interpreter; the warnings are read from its stderr.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ..export_helpers import EXIT_MARGIN_S, NESTED_WORKLOAD, ScriptRun, clean_env, run_script
from ..otlp_receivers import (
    OtlpGrpcReceiver,
    OtlpHttpReceiver,
    closed_loopback_endpoint,
    self_signed_tls,
)

EXIT_BOUND_S = 2.0
METRIC_WARNING = "tasktrace: metric export to "
SPAN_WARNING = "tasktrace: span export to "


@contextmanager
def _backend(protocol: str, backend: str) -> Iterator[str]:
    """Yield the endpoint of a collector that is down (closed port), refusing or silent."""
    if backend == "closed port":
        yield closed_loopback_endpoint()
        return
    mode = "refuse" if backend == "refuse" else "black_hole"
    receiver_class = OtlpGrpcReceiver if protocol == "grpc" else OtlpHttpReceiver
    with receiver_class(mode=mode) as receiver:
        yield receiver.endpoint


def _warnings(run: ScriptRun, start: str) -> list[str]:
    return [line for line in run.stderr.splitlines() if line.startswith(start)]


def _only_tasktrace_lines(run: ScriptRun) -> None:
    """Nothing on stderr but tasktrace's own lines: no OTel exporter message of any kind."""
    others = [line for line in run.stderr.splitlines() if not line.startswith("tasktrace: ")]
    assert others == [], run.stderr


@pytest.mark.parametrize(
    ("protocol", "backend", "metrics", "reason"),
    [
        ("grpc", "closed port", True, "Connection refused"),
        ("grpc", "black hole", True, "(no answer)"),
        ("grpc", "black hole", False, "(no answer)"),
        ("http/protobuf", "refuse", True, "(HTTP 503 Service Unavailable)"),
        ("http/protobuf", "refuse", False, "(HTTP 503 Service Unavailable)"),
        ("http/protobuf", "black hole", True, "(no answer)"),
    ],
)
def test_a_failing_collector_is_one_warning_per_signal_naming_the_cause(
    protocol: str, backend: str, metrics: bool, reason: str, tmp_path: Path
) -> None:
    """Spans (and task metrics): one warning each, with the cause; exit within the one bound.

    Before (user report): with task metrics on, the gRPC exporter's own "Transient error
    StatusCode.UNAVAILABLE ... retrying in 1.18s" and "Shutdown in progress, aborting retry."
    were printed (and the SDK's DuplicateFilter then hid the span export's message, so its
    warning said "no answer"), and the exit took 6.6 s; a 503 was reported as "no answer" for
    spans (the metrics' exit used the whole bound first) and metrics to a silent HTTP collector
    were dropped without a word; a silent gRPC collector was "gRPC CANCELLED: Channel
    closed!" (tasktrace's own shutdown of the exporter); a 503 without metrics was the SDK's
    "Transient error Service Unavailable encountered while exporting spans batch".
    """
    with _backend(protocol, backend) as endpoint:
        env = clean_env(
            OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
            OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
            OTEL_METRICS_EXPORTER="otlp" if metrics else "none",
            TASKTRACE_EXIT_TIMEOUT_S=str(EXIT_BOUND_S),
        )
        run = run_script(NESTED_WORKLOAD, tmp_path, env, str(tmp_path / "task.json"))
    assert run.returncode == 0, run.stderr
    _only_tasktrace_lines(run)
    spans = _warnings(run, SPAN_WARNING)
    assert len(spans) == 1, run.stderr
    assert reason in spans[0]
    metric_warnings = _warnings(run, METRIC_WARNING)
    assert len(metric_warnings) == (1 if metrics else 0), run.stderr
    if metrics:
        assert reason in metric_warnings[0]
        assert endpoint in metric_warnings[0]
    assert run.exit_s is not None
    assert run.exit_s < EXIT_BOUND_S + EXIT_MARGIN_S, run.stderr
    assert (tmp_path / "task.json").exists()


PROMPT_EXIT_S = 3.0
"""Well under the 10 s exit bound these tests set, which a retried failure would use up."""


def test_otlp_http_sent_to_a_grpc_port_says_so_once_without_retrying(tmp_path: Path) -> None:
    r"""OTLP/HTTP to an OTLP/gRPC receiver: one warning naming the protocol, a prompt exit.

    Before: the warning quoted the raw bytes of the HTTP/2 answer (``BadStatusLine('\x00
    \x00\x18\x04...``), and the exporter retried them as a connection error.
    """
    with OtlpGrpcReceiver() as receiver:
        env = clean_env(
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_METRICS_EXPORTER="otlp",
            TASKTRACE_EXIT_TIMEOUT_S="10",
        )
        run = run_script(NESTED_WORKLOAD, tmp_path, env, str(tmp_path / "task.json"))
    assert run.returncode == 0, run.stderr
    _only_tasktrace_lines(run)
    assert "\\x00" not in run.stderr
    for start in (SPAN_WARNING, METRIC_WARNING):
        (line,) = _warnings(run, start)
        assert "OTLP/gRPC" in line
        assert "OTEL_EXPORTER_OTLP_PROTOCOL=grpc" in line
    assert run.exit_s is not None
    assert run.exit_s < PROMPT_EXIT_S, run.stderr


CA_BUNDLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


def _env_without_ca_bundles(**extra: str) -> dict[str, str]:
    env = clean_env(**extra)
    for name in CA_BUNDLES:
        env.pop(name, None)
    return env


def test_an_untrusted_certificate_is_named_and_not_retried(tmp_path: Path) -> None:
    """HTTPS with a self-signed certificate: the TLS reason (not cut off), a prompt exit.

    Before: the reason was the first 160 characters of requests' wrapper ("...(Caused by
    SSLError(SSLCertVerificationError(1, '[S"), and the exporter retried it until the exit's
    bound.
    """
    with OtlpHttpReceiver(tls=self_signed_tls(tmp_path)) as receiver:
        env = _env_without_ca_bundles(
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_METRICS_EXPORTER="otlp",
            TASKTRACE_EXIT_TIMEOUT_S="10",
        )
        run = run_script(NESTED_WORKLOAD, tmp_path, env, str(tmp_path / "task.json"))
    assert run.returncode == 0, run.stderr
    _only_tasktrace_lines(run)
    for start in (SPAN_WARNING, METRIC_WARNING):
        (line,) = _warnings(run, start)
        assert "(TLS: certificate verify failed: self-signed certificate)" in line
        assert "CA_BUNDLE" not in line  # none set: no hint about them
    assert run.exit_s is not None
    assert run.exit_s < PROMPT_EXIT_S, run.stderr


def test_a_ca_bundle_variable_overriding_the_certificate_is_named(tmp_path: Path) -> None:
    """OTEL_EXPORTER_OTLP_CERTIFICATE is right, but REQUESTS_CA_BUNDLE replaces it over HTTP.

    The spans arrive once the variable is unset (requests' behaviour, also for a plain OTel
    exporter); while it is set, the warning names it (and never its value).
    """
    cert, key = self_signed_tls(tmp_path)
    (tmp_path / "other").mkdir()
    other_cert, _ = self_signed_tls(tmp_path / "other")  # a bundle without the collector's CA
    with OtlpHttpReceiver(tls=(cert, key)) as receiver:
        trusted = _env_without_ca_bundles(
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_EXPORTER_OTLP_CERTIFICATE=str(cert),
            OTEL_METRICS_EXPORTER="none",
        )
        ok = run_script(NESTED_WORKLOAD, tmp_path, trusted, str(tmp_path / "ok.json"))
        overridden = {**trusted, "REQUESTS_CA_BUNDLE": str(other_cert)}
        run = run_script(NESTED_WORKLOAD, tmp_path, overridden, str(tmp_path / "task.json"))
        received = len(receiver.wait_for(5, timeout_s=5.0))
    assert ok.returncode == 0, ok.stderr
    assert ok.stderr.strip() == ""
    assert received == 5
    (line,) = _warnings(run, SPAN_WARNING)
    assert "TLS: certificate verify failed" in line
    assert "REQUESTS_CA_BUNDLE is set" in line
    assert "OTEL_EXPORTER_OTLP_CERTIFICATE" in line
    assert str(other_cert) not in run.stderr
