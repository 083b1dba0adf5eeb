"""Tests of the loopback OTLP test receivers, fed by the OTel SDK's own exporters."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from .otlp_receivers import (
    OtlpGrpcReceiver,
    OtlpHttpReceiver,
    SpanRecord,
    closed_loopback_endpoint,
    decode_any_value,
)

grpc = pytest.importorskip("grpc")
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: E402
    OTLPSpanExporter as GrpcSpanExporter,
)

SERVICE = "receiver-selftest"


def _finished_tree() -> list[ReadableSpan]:
    """Build a small span tree with the plain SDK; return the finished spans (child first)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE, "deploy": "ci"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests.receivers", "1.2.3")
    with tracer.start_as_current_span("train", kind=SpanKind.INTERNAL) as parent:
        parent.set_attribute("epoch", 3)
        parent.set_attribute("rate", 0.5)
        parent.set_attribute("done", True)
        parent.set_attribute("tags", ["a", "b"])
        parent.set_attribute("sizes", [1, 2, 3])
        parent.set_status(Status(StatusCode.OK))
        with tracer.start_as_current_span("load") as child:
            child.add_event("retry", {"attempt": 2, "why": "flaky"})
            child.set_status(Status(StatusCode.ERROR, "disk full"))
    provider.shutdown()
    return list(memory.get_finished_spans())


def _export(exporter: SpanExporter, spans: list[ReadableSpan]) -> SpanExportResult:
    try:
        return exporter.export(spans)
    finally:
        exporter.shutdown()


def _assert_tree(records: list[SpanRecord], sent: list[ReadableSpan]) -> None:
    by_name = {record.name: record for record in records}
    assert set(by_name) == {"train", "load"}
    train, load = by_name["train"], by_name["load"]
    sent_train = next(span for span in sent if span.name == "train")
    assert train.trace_id == f"{sent_train.context.trace_id:032x}"
    assert train.span_id == f"{sent_train.context.span_id:016x}"
    assert train.parent_span_id is None
    assert load.trace_id == train.trace_id
    assert load.parent_span_id == train.span_id
    assert train.start_ns == sent_train.start_time
    assert train.end_ns == sent_train.end_time
    assert train.duration_ns >= load.duration_ns > 0
    assert train.kind == "INTERNAL"
    assert train.attributes == {
        "epoch": 3,
        "rate": 0.5,
        "done": True,
        "tags": ["a", "b"],
        "sizes": [1, 2, 3],
    }
    assert (train.status_code, train.status_message) == ("OK", "")
    assert (load.status_code, load.status_message) == ("ERROR", "disk full")
    assert [(e.name, e.attributes) for e in load.events] == [
        ("retry", {"attempt": 2, "why": "flaky"})
    ]
    assert load.events[0].time_ns > 0
    assert train.resource_attributes["service.name"] == SERVICE
    assert train.resource_attributes["deploy"] == "ci"
    assert train.resource_attributes["telemetry.sdk.language"] == "python"
    assert (train.scope_name, train.scope_version) == ("tests.receivers", "1.2.3")


def _receiver_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("otlp-")]


def _post(url: str, body: bytes, content_type: str) -> tuple[int, bytes]:
    request = urllib.request.Request(  # noqa: S310 - loopback http URL built by the test
        url, data=body, headers={"Content-Type": content_type}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


# --------------------------------------------------------------------------- HTTP


def test_http_receiver_decodes_sdk_spans() -> None:
    """OTLP/HTTP spans from the SDK exporter decode to the tree that was sent."""
    sent = _finished_tree()
    with OtlpHttpReceiver() as receiver:
        assert receiver.endpoint == f"http://127.0.0.1:{receiver.port}"
        result = _export(HttpSpanExporter(endpoint=receiver.traces_endpoint, timeout=5), sent)
        assert result is SpanExportResult.SUCCESS
        records = receiver.wait_for(2, timeout_s=5)
    _assert_tree(records, sent)


def test_http_receiver_accepts_gzip_bodies() -> None:
    """A gzip-compressed export is decompressed and decoded."""
    sent = _finished_tree()
    with OtlpHttpReceiver() as receiver:
        exporter = HttpSpanExporter(
            endpoint=receiver.traces_endpoint, compression=Compression.Gzip, timeout=5
        )
        assert _export(exporter, sent) is SpanExportResult.SUCCESS
        records = receiver.wait_for(2, timeout_s=5)
        assert receiver.request_headers()[0]["content-encoding"] == "gzip"
    _assert_tree(records, sent)


def test_http_receiver_refuse_mode_fails_the_export() -> None:
    """In refuse mode the receiver answers 503, stores nothing, and counts the attempts."""
    with OtlpHttpReceiver(mode="refuse") as receiver:
        exporter = HttpSpanExporter(endpoint=receiver.traces_endpoint, timeout=1)
        assert _export(exporter, _finished_tree()) is SpanExportResult.FAILURE
        assert receiver.attempts >= 1
        assert receiver.spans() == []


def test_http_receiver_mode_can_change_while_running() -> None:
    """Switching from refuse to accept makes the next export succeed."""
    with OtlpHttpReceiver(mode="refuse", refuse_status=400) as receiver:
        sent = _finished_tree()
        failed = _export(HttpSpanExporter(endpoint=receiver.traces_endpoint, timeout=2), sent)
        assert failed is SpanExportResult.FAILURE
        receiver.mode = "accept"
        ok = _export(HttpSpanExporter(endpoint=receiver.traces_endpoint, timeout=2), sent)
        assert ok is SpanExportResult.SUCCESS
        assert receiver.attempts == 2
        assert len(receiver.wait_for(2, timeout_s=5)) == 2


def test_http_receiver_black_hole_holds_until_stopped() -> None:
    """A black-holed export times out on the client, and stop() still returns promptly."""
    receiver = OtlpHttpReceiver(mode="black_hole")
    try:
        exporter = HttpSpanExporter(endpoint=receiver.traces_endpoint, timeout=0.5)
        started = time.monotonic()
        assert _export(exporter, _finished_tree()) is SpanExportResult.FAILURE
        assert time.monotonic() - started < 5
        assert receiver.wait_for_attempts(1, timeout_s=5) >= 1
        assert receiver.spans() == []
    finally:
        started = time.monotonic()
        receiver.stop()
        assert time.monotonic() - started < 3
    assert _receiver_threads() == []


def test_http_receiver_requires_configured_headers() -> None:
    """With require_headers, a request without the token gets 401 and one with it is stored."""
    token = {"authorization": "Bearer s3cret"}
    with OtlpHttpReceiver(require_headers=token) as receiver:
        sent = _finished_tree()
        bare = HttpSpanExporter(endpoint=receiver.traces_endpoint, timeout=2)
        assert _export(bare, sent) is SpanExportResult.FAILURE
        authed = HttpSpanExporter(endpoint=receiver.traces_endpoint, headers=token, timeout=2)
        assert _export(authed, sent) is SpanExportResult.SUCCESS
        assert len(receiver.wait_for(2, timeout_s=5)) == 2
        assert receiver.request_headers()[-1]["authorization"] == "Bearer s3cret"


def test_http_receiver_stores_metrics_and_rejects_unknown_requests() -> None:
    """/v1/metrics is stored; an unknown path is 404 and a JSON body is 415."""
    with OtlpHttpReceiver() as receiver:
        body = metrics_service_pb2.ExportMetricsServiceRequest().SerializeToString()
        status, answer = _post(f"{receiver.endpoint}/v1/metrics", body, "application/x-protobuf")
        assert status == 200
        assert metrics_service_pb2.ExportMetricsServiceResponse.FromString(answer) is not None
        assert len(receiver.metrics_requests()) == 1
        assert _post(f"{receiver.endpoint}/v1/logs", body, "application/x-protobuf")[0] == 404
        assert _post(receiver.traces_endpoint, b"{}", "application/json")[0] == 415
        assert receiver.spans() == []


def test_http_receiver_stop_is_idempotent_and_leaks_no_threads() -> None:
    """stop() twice is harmless, and no receiver thread outlives it."""
    receiver = OtlpHttpReceiver()
    assert _receiver_threads() != []
    receiver.stop()
    receiver.stop()
    assert _receiver_threads() == []


def _handler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if "process_request_thread" in t.name]


def test_http_receiver_stop_joins_its_handler_threads() -> None:
    """stop() returns once every request's handler thread has ended, not before.

    A client that sent half a request holds its handler thread (reading); stop() waits for it
    until the client goes. Seen failing with ``daemon_threads = True`` (socketserver joins only
    threads that are not daemons): stop() returned at once, the handler thread still running.
    """
    receiver = OtlpHttpReceiver()
    client = socket.create_connection(("127.0.0.1", receiver.port))
    stopper = threading.Thread(target=receiver.stop)
    try:
        client.sendall(b"POST /v1/traces HTTP/1.0\r\n")
        deadline = time.monotonic() + 30
        while not _handler_threads():
            assert time.monotonic() < deadline, "no handler thread for the request"
            time.sleep(0.02)
        stopper.start()
        stopper.join(2.0)
        assert stopper.is_alive(), "stop() returned while a handler thread ran"
    finally:
        client.close()
    stopper.join(30)
    assert not stopper.is_alive()
    assert _handler_threads() == []


# --------------------------------------------------------------------------- gRPC


def test_grpc_receiver_decodes_sdk_spans() -> None:
    """OTLP/gRPC spans from the SDK exporter decode to the tree that was sent."""
    sent = _finished_tree()
    with OtlpGrpcReceiver() as receiver:
        assert receiver.endpoint == f"http://127.0.0.1:{receiver.port}"
        exporter = GrpcSpanExporter(endpoint=receiver.endpoint, insecure=True, timeout=5)
        assert _export(exporter, sent) is SpanExportResult.SUCCESS
        records = receiver.wait_for(2, timeout_s=5)
    _assert_tree(records, sent)


def test_grpc_receiver_refuse_mode_fails_the_export() -> None:
    """In refuse mode the receiver aborts with the chosen code and stores nothing."""
    with OtlpGrpcReceiver(mode="refuse", refuse_code=grpc.StatusCode.PERMISSION_DENIED) as rx:
        exporter = GrpcSpanExporter(endpoint=rx.endpoint, insecure=True, timeout=2)
        assert _export(exporter, _finished_tree()) is SpanExportResult.FAILURE
        assert rx.attempts == 1  # PERMISSION_DENIED is not retried by the exporter
        assert rx.spans() == []


def test_grpc_receiver_black_hole_holds_until_deadline() -> None:
    """A black-holed gRPC export fails at the client's deadline; stop() returns promptly."""
    receiver = OtlpGrpcReceiver(mode="black_hole")
    try:
        exporter = GrpcSpanExporter(endpoint=receiver.endpoint, insecure=True, timeout=0.5)
        started = time.monotonic()
        assert _export(exporter, _finished_tree()) is SpanExportResult.FAILURE
        assert time.monotonic() - started < 5
        assert receiver.attempts >= 1
        assert receiver.spans() == []
    finally:
        started = time.monotonic()
        receiver.stop()
        assert time.monotonic() - started < 3
    assert _receiver_threads() == []


def test_grpc_receiver_requires_configured_metadata() -> None:
    """With require_headers, a call without the token is refused and one with it is stored."""
    token = {"authorization": "Bearer s3cret"}
    with OtlpGrpcReceiver(require_headers=token) as receiver:
        sent = _finished_tree()
        bare = GrpcSpanExporter(endpoint=receiver.endpoint, insecure=True, timeout=2)
        assert _export(bare, sent) is SpanExportResult.FAILURE
        authed = GrpcSpanExporter(
            endpoint=receiver.endpoint, insecure=True, headers=token, timeout=2
        )
        assert _export(authed, sent) is SpanExportResult.SUCCESS
        assert len(receiver.wait_for(2, timeout_s=5)) == 2
        assert receiver.request_headers()[-1]["authorization"] == "Bearer s3cret"


def test_grpc_receiver_stop_is_idempotent_and_leaks_no_threads() -> None:
    """stop() twice is harmless, and no receiver worker thread outlives it."""
    with OtlpGrpcReceiver() as receiver:
        exporter = GrpcSpanExporter(endpoint=receiver.endpoint, insecure=True, timeout=5)
        assert _export(exporter, _finished_tree()) is SpanExportResult.SUCCESS
        receiver.stop()
    assert _receiver_threads() == []


# --------------------------------------------------------------------------- shared


@pytest.mark.parametrize("receiver_type", [OtlpHttpReceiver, OtlpGrpcReceiver])
def test_wait_for_raises_when_too_few_spans(receiver_type: type[Any]) -> None:
    """wait_for() raises TimeoutError naming the count when fewer spans arrive in time."""
    with receiver_type() as receiver:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="0 of 1 spans"):
            receiver.wait_for(1, timeout_s=0.2)
        assert time.monotonic() - started < 2


def test_receivers_reject_unknown_modes() -> None:
    """An unknown mode is a ValueError, at construction and when set later."""
    with pytest.raises(ValueError, match="mode must be one of"):
        OtlpHttpReceiver(mode="sometimes")  # type: ignore[arg-type]
    with OtlpHttpReceiver() as receiver, pytest.raises(ValueError, match="mode must be one of"):
        receiver.mode = "sometimes"  # type: ignore[assignment]


def test_clear_forgets_received_spans() -> None:
    """clear() empties spans, requests, headers and the attempt count."""
    with OtlpHttpReceiver() as receiver:
        exporter = HttpSpanExporter(endpoint=receiver.traces_endpoint, timeout=5)
        assert _export(exporter, _finished_tree()) is SpanExportResult.SUCCESS
        receiver.wait_for(2, timeout_s=5)
        receiver.clear()
        assert (receiver.spans(), receiver.attempts, receiver.request_headers()) == ([], 0, [])


def test_closed_loopback_endpoint_refuses_connections() -> None:
    """Exporting to closed_loopback_endpoint() fails (nothing listens there)."""
    endpoint = closed_loopback_endpoint()
    assert endpoint.startswith("http://127.0.0.1:")
    exporter = HttpSpanExporter(endpoint=f"{endpoint}/v1/traces", timeout=1)
    started = time.monotonic()
    assert _export(exporter, _finished_tree()) is SpanExportResult.FAILURE
    assert time.monotonic() - started < 5


def test_decode_any_value_handles_nested_and_empty_values() -> None:
    """Key-value lists become dicts, bytes stay bytes, and an empty AnyValue is None."""
    nested = common_pb2.AnyValue(
        kvlist_value=common_pb2.KeyValueList(
            values=[
                common_pb2.KeyValue(key="raw", value=common_pb2.AnyValue(bytes_value=b"\x00\x01")),
                common_pb2.KeyValue(key="none", value=common_pb2.AnyValue()),
            ]
        )
    )
    assert decode_any_value(nested) == {"raw": b"\x00\x01", "none": None}
