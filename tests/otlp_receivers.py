"""Real OTLP receivers on loopback, for tests that export spans over the wire.

Two receivers share one recording core (:class:`_Recorder`):

- :class:`OtlpHttpReceiver`: OTLP/HTTP (protobuf) on a ``ThreadingHTTPServer``;
  ``POST /v1/traces`` and ``POST /v1/metrics``, ``gzip``/``deflate`` bodies.
- :class:`OtlpGrpcReceiver`: OTLP/gRPC on a real ``grpcio`` server (trace and
  metrics services).

Both bind ``127.0.0.1`` on an ephemeral port, decode requests with the official
``opentelemetry-proto`` classes, and can simulate a broken backend:

- ``mode="accept"`` (default): store the request, answer success.
- ``mode="refuse"``: answer HTTP 503 / gRPC ``UNAVAILABLE`` (both retryable
  for the OTel SDK exporters; pass ``refuse_status`` to choose another).
- ``mode="black_hole"``: accept the connection and the request, never answer
  until the receiver is stopped (or, for gRPC, until the client gives up).

The HTTP receiver speaks HTTPS when given a certificate (``tls=``; :func:`self_signed_tls`
makes one with the ``openssl`` command), which a client not told to trust it refuses.

Both refuse a request over a size limit, as real collectors do: the gRPC server keeps
gRPC's default 4 MiB message limit (``RESOURCE_EXHAUSTED``; ``max_message_bytes`` changes
it), and the HTTP server answers ``413`` above ``max_body_bytes`` when given.

Import them with ``from tests.otlp_receivers import ...`` (or ``from .otlp_receivers``
inside tests/). Use them as context managers or through the pytest fixtures
:func:`otlp_http_receiver` / :func:`otlp_grpc_receiver`::

    with OtlpHttpReceiver() as receiver:
        exporter = OTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces")
        ...
        spans = receiver.wait_for(3, timeout_s=5.0)

Thread-safety: every public method may be called from any thread while the
server threads record requests.
"""

from __future__ import annotations

import base64
import collections
import gzip
import http.server
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

if TYPE_CHECKING:
    import grpc

__all__ = [
    "EventRecord",
    "LinkRecord",
    "Mode",
    "OtlpGrpcReceiver",
    "OtlpHttpReceiver",
    "SpanRecord",
    "closed_loopback_endpoint",
    "decode_any_value",
    "decode_attributes",
    "decode_trace_request",
    "otlp_grpc_receiver",
    "otlp_http_receiver",
    "self_signed_tls",
]

LOOPBACK = "127.0.0.1"

Mode = Literal["accept", "refuse", "black_hole"]
"""How a receiver answers an export request (see the module docstring)."""

_MODES: tuple[str, ...] = ("accept", "refuse", "black_hole")


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class EventRecord:
    """One span event as received: name, timestamp (ns since epoch), attributes."""

    name: str
    time_ns: int
    attributes: dict[str, Any]


@dataclass(frozen=True)
class LinkRecord:
    """One span link as received: the linked trace/span ids (hex) and attributes."""

    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class SpanRecord:
    """One decoded span, in plain Python types.

    Attributes:
        name: span name.
        trace_id: 32 lowercase hex digits.
        span_id: 16 lowercase hex digits.
        parent_span_id: 16 hex digits, or ``None`` for a root span.
        start_ns: start time, nanoseconds since the Unix epoch.
        end_ns: end time, nanoseconds since the Unix epoch.
        kind: ``"INTERNAL"``, ``"SERVER"``, ``"CLIENT"``, ``"PRODUCER"``,
            ``"CONSUMER"`` or ``"UNSPECIFIED"``.
        attributes: span attributes; arrays become lists, key-value lists dicts,
            bytes stay bytes.
        status_code: ``"UNSET"``, ``"OK"`` or ``"ERROR"`` (the names of
            ``opentelemetry.trace.StatusCode``).
        status_message: the status description, ``""`` when none.
        events: span events in the order sent.
        links: span links in the order sent.
        resource_attributes: attributes of the span's resource.
        scope_name: instrumentation scope name.
        scope_version: instrumentation scope version, ``""`` when none.

    """

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    start_ns: int
    end_ns: int
    kind: str
    attributes: dict[str, Any]
    status_code: str
    status_message: str
    events: list[EventRecord] = field(default_factory=list)
    links: list[LinkRecord] = field(default_factory=list)
    resource_attributes: dict[str, Any] = field(default_factory=dict)
    scope_name: str = ""
    scope_version: str = ""

    @property
    def duration_ns(self) -> int:
        """End minus start, in nanoseconds."""
        return self.end_ns - self.start_ns


# --------------------------------------------------------------------------- decoding


def decode_any_value(value: common_pb2.AnyValue) -> Any:
    """Convert an OTLP ``AnyValue`` to a plain Python value.

    Arrays become lists, key-value lists become dicts, an empty value becomes ``None``.
    """
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [decode_any_value(item) for item in value.array_value.values]
    if which == "kvlist_value":
        return decode_attributes(value.kvlist_value.values)
    return getattr(value, which)


def decode_attributes(key_values: Iterator[common_pb2.KeyValue] | Any) -> dict[str, Any]:
    """Convert repeated OTLP ``KeyValue`` messages to a dict (later keys win)."""
    return {kv.key: decode_any_value(kv.value) for kv in key_values}


_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId"})


def _hex_ids(value: Any) -> Any:
    """Return ``value`` (protobuf JSON) with every trace / span id turned from base64 to hex."""
    if isinstance(value, dict):
        return {
            k: base64.b64decode(v).hex() if k in _ID_KEYS else _hex_ids(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_hex_ids(v) for v in value]
    return value


def _hex_or_none(raw: bytes) -> str | None:
    return raw.hex() if raw and any(raw) else None


def _enum_suffix(enum_name: str, prefix: str) -> str:
    return enum_name.removeprefix(prefix)


def _decode_span(
    span: trace_pb2.Span,
    resource_attributes: dict[str, Any],
    scope: common_pb2.InstrumentationScope,
) -> SpanRecord:
    return SpanRecord(
        name=span.name,
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=_hex_or_none(span.parent_span_id),
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
        kind=_enum_suffix(trace_pb2.Span.SpanKind.Name(span.kind), "SPAN_KIND_"),
        attributes=decode_attributes(span.attributes),
        status_code=_enum_suffix(
            trace_pb2.Status.StatusCode.Name(span.status.code), "STATUS_CODE_"
        ),
        status_message=span.status.message,
        events=[
            EventRecord(
                name=event.name,
                time_ns=event.time_unix_nano,
                attributes=decode_attributes(event.attributes),
            )
            for event in span.events
        ],
        links=[
            LinkRecord(
                trace_id=link.trace_id.hex(),
                span_id=link.span_id.hex(),
                attributes=decode_attributes(link.attributes),
            )
            for link in span.links
        ],
        resource_attributes=dict(resource_attributes),
        scope_name=scope.name,
        scope_version=scope.version,
    )


def decode_trace_request(request: trace_service_pb2.ExportTraceServiceRequest) -> list[SpanRecord]:
    """Flatten an ``ExportTraceServiceRequest`` into :class:`SpanRecord` objects, in order."""
    return [
        _decode_span(span, decode_attributes(resource_spans.resource.attributes), scope_spans.scope)
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]


# --------------------------------------------------------------------------- recorder


class _Recorder:
    """Shared state of a receiver: mode, stored requests, attempt count, stop signal."""

    def __init__(self, mode: Mode, require_headers: Mapping[str, str] | None) -> None:
        _check_mode(mode)
        self._mode: Mode = mode
        self._require_headers = {k.lower(): v for k, v in (require_headers or {}).items()}
        self._changed = threading.Condition()
        self._trace_requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self._metrics_requests: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self._headers: list[dict[str, str]] = []
        self._sizes: list[int] = []
        self._attempts = 0
        self._stopping = threading.Event()

    # -- configuration ------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        """How export requests are answered now; may be changed at any time."""
        return self._mode

    @mode.setter
    def mode(self, mode: Mode) -> None:
        _check_mode(mode)
        self._mode = mode

    def _authorized(self, headers: Mapping[str, str]) -> bool:
        return all(headers.get(key) == value for key, value in self._require_headers.items())

    # -- recording (server threads) -----------------------------------------------

    def _note_attempt(self, headers: Mapping[str, str]) -> None:
        with self._changed:
            self._attempts += 1
            self._headers.append(dict(headers))
            self._changed.notify_all()

    def _store(self, request: Any) -> None:
        with self._changed:
            if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
                self._trace_requests.append(request)
                self._sizes.append(request.ByteSize())
            else:
                self._metrics_requests.append(request)
            self._changed.notify_all()

    def _hold(self, give_up: Any = None) -> None:
        """Block a black-holed request until stop (or until ``give_up()`` is true)."""
        while not self._stopping.wait(0.05):
            if give_up is not None and give_up():
                return

    # -- reading (test thread) ----------------------------------------------------

    @property
    def attempts(self) -> int:
        """Number of export requests that arrived, whatever the answer (refused too)."""
        with self._changed:
            return self._attempts

    def request_headers(self) -> list[dict[str, str]]:
        """Headers (HTTP, lower-case names) or metadata (gRPC) of every attempt, in order."""
        with self._changed:
            return [dict(h) for h in self._headers]

    def trace_request_bytes(self) -> list[int]:
        """Return the encoded size in bytes of each accepted trace request, in arrival order."""
        with self._changed:
            return list(self._sizes)

    def trace_requests(self) -> list[trace_service_pb2.ExportTraceServiceRequest]:
        """Return the accepted ``ExportTraceServiceRequest`` messages, in arrival order."""
        with self._changed:
            return list(self._trace_requests)

    def metrics_requests(self) -> list[metrics_service_pb2.ExportMetricsServiceRequest]:
        """Return the accepted ``ExportMetricsServiceRequest`` messages, in arrival order."""
        with self._changed:
            return list(self._metrics_requests)

    def write_collector_file(self, path: Path) -> int:
        """Write the accepted trace requests as the OpenTelemetry Collector's file exporter does.

        One ``ExportTraceServiceRequest`` per line in OTLP/JSON: protobuf's JSON mapping
        (``json_format``: lowerCamelCase keys, 64-bit integers as strings, enums as integers),
        with trace and span ids as lowercase hex as OTLP/JSON requires (the mapping writes bytes
        as base64). Returns the number of lines written.
        """
        lines = []
        for request in self.trace_requests():
            data = json_format.MessageToDict(request, use_integers_for_enums=True)
            lines.append(json.dumps(_hex_ids(data), separators=(",", ":")) + "\n")
        path.write_text("".join(lines))
        return len(lines)

    def spans(self) -> list[SpanRecord]:
        """Every accepted span, decoded, in arrival order."""
        spans: list[SpanRecord] = []
        for request in self.trace_requests():
            spans.extend(decode_trace_request(request))
        return spans

    def _span_count(self) -> int:
        return sum(
            len(scope.spans)
            for request in self._trace_requests
            for resource in request.resource_spans
            for scope in resource.scope_spans
        )

    def wait_for(self, n: int, timeout_s: float = 10.0) -> list[SpanRecord]:
        """Wait until at least ``n`` spans were accepted; return all spans.

        Raises:
            TimeoutError: fewer than ``n`` spans arrived within ``timeout_s`` seconds;
                the message gives the count and the number of attempts.

        """
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while self._span_count() < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{self._span_count()} of {n} spans received within {timeout_s} s "
                        f"({self._attempts} export attempts, mode={self._mode!r})"
                    )
                self._changed.wait(remaining)
        return self.spans()

    def wait_for_names(self, names: Iterable[str], timeout_s: float = 10.0) -> list[SpanRecord]:
        """Wait until spans of every name in ``names`` arrived (a name twice: two spans).

        Unlike :meth:`wait_for`, spans of other names (an engine's own) do not count.

        Raises:
            TimeoutError: some were missing after ``timeout_s`` seconds; the message names them.
        """
        wanted = collections.Counter(names)
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                missing = wanted - collections.Counter(s.name for s in self.spans())
                if not missing:
                    return self.spans()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"spans missing after {timeout_s} s: {sorted(missing)}")
                self._changed.wait(remaining)

    def wait_for_attempts(self, n: int, timeout_s: float = 10.0) -> int:
        """Wait until at least ``n`` export requests arrived (any mode); return the count.

        Raises:
            TimeoutError: fewer than ``n`` attempts within ``timeout_s`` seconds.

        """
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while self._attempts < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{self._attempts} of {n} export attempts within {timeout_s} s"
                    )
                self._changed.wait(remaining)
            return self._attempts

    def clear(self) -> None:
        """Forget every stored request, header and attempt."""
        with self._changed:
            self._trace_requests.clear()
            self._metrics_requests.clear()
            self._headers.clear()
            self._sizes.clear()
            self._attempts = 0


def _check_mode(mode: str) -> None:
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, not {mode!r}")


# --------------------------------------------------------------------------- HTTP


_HTTP_PATHS: dict[str, tuple[type[Any], type[Any]]] = {
    "/v1/traces": (
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
    ),
    "/v1/metrics": (
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
    ),
}

_PROTOBUF = "application/x-protobuf"


class _OtlpHttpHandler(http.server.BaseHTTPRequestHandler):
    """Answers OTLP/HTTP protobuf exports; one connection per request (HTTP/1.0)."""

    server: _OtlpHttpServer
    timeout = 10.0  # seconds a silent client may hold a handler thread

    def do_POST(self) -> None:
        """Decode, record and answer one export request."""
        recorder = self.server.recorder
        headers = {key.lower(): value for key, value in self.headers.items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        recorder._note_attempt(headers)
        if recorder.mode == "black_hole":
            recorder._hold()
            self.close_connection = True
            return
        status = self._rejection(recorder, headers, body)
        if status is not None:
            self._answer(status, b"", "text/plain")
            return
        messages = _HTTP_PATHS[self.path.split("?", 1)[0]]
        request_type, response_type = messages
        try:
            request = request_type.FromString(_decompress(body, headers))
        except Exception:  # noqa: BLE001 - any undecodable body is the client's error
            self._answer(400, b"", "text/plain")
            return
        recorder._store(request)
        self._answer(200, response_type().SerializeToString(), _PROTOBUF)

    def _rejection(
        self, recorder: _Recorder, headers: Mapping[str, str], body: bytes
    ) -> int | None:
        """Return the error status to answer, or ``None`` to decode the request."""
        limit = self.server.max_body_bytes
        if recorder.mode == "refuse":
            status: int | None = self.server.refuse_status
        elif limit is not None and len(body) > limit:
            status = 413
        elif not recorder._authorized(headers):
            status = 401
        elif self.path.split("?", 1)[0] not in _HTTP_PATHS:
            status = 404
        elif headers.get("content-type", "").split(";")[0].strip() != _PROTOBUF:
            status = 415
        else:
            status = None
        return status

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""


def _decompress(body: bytes, headers: Mapping[str, str]) -> bytes:
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding in ("", "identity"):
        return body
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


class _OtlpHttpServer(http.server.ThreadingHTTPServer):
    # Handler threads are joined by server_close() (block_on_close stays True); socketserver
    # joins only threads that are not daemons. stop() releases black-holed requests first; a
    # client that went silent mid-request holds its thread until it goes or for the handler's
    # timeout (10 s).
    daemon_threads = False

    allow_reuse_address = True  # a restarted receiver can take its predecessor's port

    def __init__(
        self,
        recorder: _Recorder,
        refuse_status: int,
        port: int = 0,
        max_body_bytes: int | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        super().__init__((LOOPBACK, port), _OtlpHttpHandler)
        self.recorder = recorder
        self.refuse_status = refuse_status
        self.max_body_bytes = max_body_bytes
        if tls is not None:  # the handshake runs in the handler thread, at its first read
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.socket = context.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Keep test output quiet (a client refusing the certificate ends the handshake)."""


class OtlpHttpReceiver(_Recorder):
    """An OTLP/HTTP (protobuf) receiver on ``127.0.0.1``, an ephemeral port.

    Args:
        mode: ``"accept"``, ``"refuse"`` or ``"black_hole"``; settable later via ``.mode``.
        refuse_status: HTTP status sent in ``"refuse"`` mode (503 by default, which
            the OTel SDK exporter retries until its timeout).
        require_headers: headers (e.g. ``{"authorization": "Bearer t"}``) an
            accepted request must carry; otherwise the answer is 401 and nothing
            is stored.
        port: The port to bind (0: an ephemeral one); a stopped receiver's port can be
            bound again, to stand for a collector restarting.
        max_body_bytes: Answer ``413 Request Entity Too Large`` (and store nothing) for a
            request body over this many bytes; ``None``: no limit.
        tls: ``(certificate file, key file)``: serve HTTPS (:attr:`endpoint` is then
            ``https://...``); see :func:`self_signed_tls`.

    The server starts in the constructor and serves until :meth:`stop`.

    """

    def __init__(
        self,
        mode: Mode = "accept",
        *,
        refuse_status: int = 503,
        require_headers: Mapping[str, str] | None = None,
        port: int = 0,
        max_body_bytes: int | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        """Bind 127.0.0.1 (on ``port``, or an ephemeral one) and start serving in a thread."""
        super().__init__(mode, require_headers)
        self._scheme = "http" if tls is None else "https"
        self._server = _OtlpHttpServer(self, refuse_status, port, max_body_bytes, tls)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"otlp-http-receiver-{self.port}",
            daemon=True,
        )
        self._thread.start()
        self._stopped = False

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        """Return ``http://127.0.0.1:PORT`` (``https`` with ``tls``), for the endpoint variable.

        The value for ``OTEL_EXPORTER_OTLP_ENDPOINT``.
        """
        return f"{self._scheme}://{LOOPBACK}:{self.port}"

    @property
    def traces_endpoint(self) -> str:
        """``{endpoint}/v1/traces``, the value for ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``."""
        return f"{self.endpoint}/v1/traces"

    def stop(self, timeout_s: float = 5.0) -> None:
        """Release black-holed requests, stop serving, close the socket, join threads.

        Idempotent. Raises ``RuntimeError`` if the serving thread does not end
        within ``timeout_s`` seconds.
        """
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()  # joins the handler threads
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise RuntimeError("OTLP/HTTP receiver thread did not stop")

    def __enter__(self) -> OtlpHttpReceiver:
        """Return the running receiver."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop the receiver."""
        self.stop()


# --------------------------------------------------------------------------- gRPC


def _grpc_servicers(receiver: OtlpGrpcReceiver) -> tuple[Any, Any]:
    import grpc
    from opentelemetry.proto.collector.metrics.v1 import (
        metrics_service_pb2_grpc,
    )
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    def handle(request: Any, context: grpc.ServicerContext, response: Any) -> Any:
        metadata = {item.key.lower(): str(item.value) for item in context.invocation_metadata()}
        receiver._note_attempt(metadata)
        if receiver.mode == "black_hole":
            receiver._hold(give_up=lambda: not context.is_active())
            context.abort(grpc.StatusCode.UNAVAILABLE, "receiver stopped")
        if receiver.mode == "refuse":
            context.abort(receiver._refuse_code, "refused by test receiver")
        if not receiver._authorized(metadata):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong credentials")
        receiver._store(request)
        return response

    class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(
            self, request: Any, context: grpc.ServicerContext
        ) -> trace_service_pb2.ExportTraceServiceResponse:
            return handle(request, context, trace_service_pb2.ExportTraceServiceResponse())

    class MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
        def Export(
            self, request: Any, context: grpc.ServicerContext
        ) -> metrics_service_pb2.ExportMetricsServiceResponse:
            return handle(request, context, metrics_service_pb2.ExportMetricsServiceResponse())

    return TraceService(), MetricsService()


class OtlpGrpcReceiver(_Recorder):
    """An OTLP/gRPC receiver (``grpcio`` server) on ``127.0.0.1``, an ephemeral port.

    Args:
        mode: ``"accept"``, ``"refuse"`` or ``"black_hole"``; settable later via ``.mode``.
        refuse_code: ``grpc.StatusCode`` sent in ``"refuse"`` mode (``UNAVAILABLE`` by
            default, which the OTel SDK exporter retries until its timeout).
        require_headers: metadata an accepted request must carry; otherwise the
            answer is ``UNAUTHENTICATED`` and nothing is stored.
        max_workers: server threads, i.e. how many requests can be held at once.
        max_message_bytes: the server's limit on a received message, in bytes; over it the
            answer is ``RESOURCE_EXHAUSTED``. ``None``: gRPC's default, 4 MiB.

    The server starts in the constructor and serves until :meth:`stop`.

    """

    def __init__(
        self,
        mode: Mode = "accept",
        *,
        refuse_code: grpc.StatusCode | None = None,
        require_headers: Mapping[str, str] | None = None,
        max_workers: int = 8,
        max_message_bytes: int | None = None,
    ) -> None:
        """Bind 127.0.0.1 on an ephemeral port and start the gRPC server."""
        import grpc
        from opentelemetry.proto.collector.metrics.v1 import (
            metrics_service_pb2_grpc,
        )
        from opentelemetry.proto.collector.trace.v1 import (
            trace_service_pb2_grpc,
        )

        super().__init__(mode, require_headers)
        self._refuse_code = refuse_code or grpc.StatusCode.UNAVAILABLE
        self._executor = futures.ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="otlp-grpc-receiver"
        )
        options = (
            [("grpc.max_receive_message_length", max_message_bytes)]
            if max_message_bytes is not None
            else []
        )
        self._server = grpc.server(self._executor, options=options)
        trace_servicer, metrics_servicer = _grpc_servicers(self)
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(trace_servicer, self._server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(
            metrics_servicer, self._server
        )
        self._port = self._server.add_insecure_port(f"{LOOPBACK}:0")
        if self._port == 0:
            raise RuntimeError("could not bind an OTLP/gRPC receiver on 127.0.0.1")
        self._server.start()
        self._stopped = False

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        return self._port

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``; the ``http`` scheme tells OTel exporters to use plaintext."""
        return f"http://{LOOPBACK}:{self._port}"

    @property
    def traces_endpoint(self) -> str:
        """Same as :attr:`endpoint` (gRPC has no per-signal path)."""
        return self.endpoint

    def stop(self, timeout_s: float = 5.0) -> None:
        """Release black-holed calls, stop the server, shut down its thread pool.

        Idempotent. Raises ``RuntimeError`` if the server has not stopped within
        ``timeout_s`` seconds.
        """
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        if not self._server.stop(grace=None).wait(timeout_s):
            raise RuntimeError("OTLP/gRPC receiver did not stop")
        self._executor.shutdown(wait=True)

    def __enter__(self) -> OtlpGrpcReceiver:
        """Return the running receiver."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop the receiver."""
        self.stop()


# --------------------------------------------------------------------------- helpers


def closed_loopback_endpoint() -> str:
    """Return ``http://127.0.0.1:PORT`` for a port nothing listens on (for "endpoint down").

    The port was bound and released by this call; another process could take it
    in between, which is unlikely within one test.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port = sock.getsockname()[1]
    return f"http://{LOOPBACK}:{port}"


def self_signed_tls(folder: Path) -> tuple[Path, Path]:
    """Write a self-signed certificate for 127.0.0.1 and its key into ``folder``.

    Returns:
        ``(certificate file, key file)``, PEM, for ``OtlpHttpReceiver(tls=...)``.

    Skips the test when the ``openssl`` command is missing.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", f"/CN={LOOPBACK}", "-addext", f"subjectAltName=IP:{LOOPBACK}"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@pytest.fixture
def otlp_http_receiver() -> Iterator[OtlpHttpReceiver]:
    """Yield a running :class:`OtlpHttpReceiver` in accept mode; stop it after the test."""
    with OtlpHttpReceiver() as receiver:
        yield receiver


@pytest.fixture
def otlp_grpc_receiver() -> Iterator[OtlpGrpcReceiver]:
    """Yield a running :class:`OtlpGrpcReceiver` in accept mode; stop it after the test."""
    with OtlpGrpcReceiver() as receiver:
        yield receiver
