"""Split a batch of spans into OTLP export requests under a size limit.

OTLP receivers cap the size of one request: gRPC servers (the OpenTelemetry Collector's OTLP
receiver among them) refuse messages over 4 MiB by default (``RESOURCE_EXHAUSTED``), and HTTP
servers and proxies answer ``413`` above their own limit. The SDK's batch span processor groups
spans by count (512 by default), not by size, so one large span, or many medium ones, pushed
the whole batch over the limit and every span of it was lost.

:func:`split_by_request_size` measures a batch with the OTel project's own protobuf encoder
(:func:`~opentelemetry.exporter.otlp.proto.common.trace_encoder.encode_spans`, the encoder the
OTLP exporters send with) and halves it until every part fits in :data:`MAX_REQUEST_BYTES`. A
span that alone is over the limit, or that the encoder cannot encode (a string that is not
valid Unicode), is set apart so that the others still go.

Encoding a batch costs about as much as sending it (~40 µs a task span, on the export thread,
which shares the GIL with the program). So a batch is first checked against
:func:`size_bound_bytes`, a cheap upper bound of its encoded size (string lengths and
generous constants for protobuf framing; no encoding), and measured with the encoder only when
that bound is over the limit: a batch of ordinary task spans is never encoded twice. That the
bound is never below the encoder's size is a property test
(``tests/test_export_size.py::test_size_bound_is_never_below_the_encoded_size``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan

__all__ = [
    "MAX_REQUEST_BYTES",
    "Oversized",
    "encoded_size_bytes",
    "size_bound_bytes",
    "split_by_request_size",
]

MAX_REQUEST_BYTES: Final = 3 * 1024 * 1024
"""Largest OTLP export request tasktrace sends, in bytes of encoded protobuf (before any
compression): 3 MiB, under the 4 MiB that gRPC servers accept by default, with room for the
request's framing."""


@dataclass(frozen=True)
class Oversized:
    """A span that cannot be sent in any request under the limit.

    Attributes:
        span: The span.
        size_bytes: Its encoded size in bytes, or ``None`` if the encoder failed on it.
        error: The encoder's error when it failed (e.g. a ``UnicodeEncodeError``), else ``None``.
    """

    span: ReadableSpan
    size_bytes: int | None
    error: Exception | None = None


def encoded_size_bytes(spans: Sequence[ReadableSpan]) -> int:
    """Return the size in bytes of one OTLP ``ExportTraceServiceRequest`` holding ``spans``.

    Raises:
        Exception: Whatever the OTel encoder raises for a span it cannot encode.
    """
    return int(encode_spans(spans).ByteSize())


# Upper bounds of protobuf framing, in bytes: a field's tag and length varint take at most
# 1 + 5 bytes (lengths under 32 GiB); a number at most 1 + 10.
_FIELD: Final = 16  # one string, bytes or message field's framing, rounded up
_NUMBER: Final = 24  # an AnyValue field holding a number or boolean
_SPAN: Final = 160  # ids, parent, flags, kind, times, status, dropped counts, framing (~115)
_EVENT: Final = 48  # framing, time, dropped count (~33)
_LINK: Final = 80  # framing, ids, flags, dropped count (~51)
_GROUP: Final = 128  # resource and scope framing, dropped counts (~72)


class _NotBounded(Exception):
    """A value the bound cannot size (a string that is not valid Unicode, an unknown type)."""


def _text(text: str) -> int:
    if text.isascii():
        return len(text) + _FIELD
    try:
        return len(text.encode("utf-8")) + _FIELD
    except UnicodeEncodeError:  # lone surrogates: the encoder will fail on it too
        raise _NotBounded from None


def _value(value: Any) -> int:
    if isinstance(value, str):
        return _text(value) + _FIELD
    if isinstance(value, bool | int | float):
        return _NUMBER
    if isinstance(value, bytes):
        return len(value) + 2 * _FIELD
    if isinstance(value, Mapping):
        return _attributes(value) + 2 * _FIELD
    if isinstance(value, Sequence):
        return sum(_value(item) for item in value) + 2 * _FIELD
    raise _NotBounded


_NUMBERS: Final = frozenset({bool, int, float})


def _attributes(attributes: Mapping[str, Any] | None) -> int:
    if not attributes:
        return 0
    size = 2 * _FIELD * len(attributes)  # each KeyValue's framing, and its key's
    for key, value in attributes.items():
        if key.isascii():
            size += len(key)
        else:
            size += _text(key)
        size += _NUMBER if type(value) in _NUMBERS else _value(value)
    return size


def _span(span: ReadableSpan) -> int:
    size = _SPAN + _text(span.name) + _attributes(span.attributes)
    if span.status.description:
        size += _text(span.status.description)
    context = span.get_span_context()
    if context is not None and context.trace_state:
        size += _text(context.trace_state.to_header())
    for event in span.events:
        size += _EVENT + _text(event.name) + _attributes(event.attributes)
    for link in span.links:
        size += _LINK + _attributes(link.attributes)
        if link.context.trace_state:
            size += _text(link.context.trace_state.to_header())
    return size


def _groups(spans: Iterable[ReadableSpan]) -> int:
    size = 0
    seen: set[tuple[int, int]] = set()
    for span in spans:
        resource, scope = span.resource, span.instrumentation_scope
        key = (id(resource), id(scope))
        if key in seen:
            continue
        seen.add(key)
        size += _GROUP + _attributes(resource.attributes) + _text(resource.schema_url or "")
        if scope is not None:
            size += _text(scope.name) + _text(scope.version or "") + _text(scope.schema_url or "")
            size += _attributes(scope.attributes)
    return size


def size_bound_bytes(spans: Sequence[ReadableSpan]) -> int | None:
    """Return an upper bound of :func:`encoded_size_bytes` of ``spans``, without encoding.

    Returns:
        Bytes; ``None`` when a value cannot be sized (not valid Unicode, an unknown type),
        so that only the encoder can tell.
    """
    try:
        return _groups(spans) + sum(_span(span) for span in spans)
    except _NotBounded:
        return None


def split_by_request_size(
    spans: Sequence[ReadableSpan], max_bytes: int
) -> tuple[list[Sequence[ReadableSpan]], list[Oversized]]:
    """Split ``spans`` into parts whose requests are at most ``max_bytes`` each.

    No encoding when :func:`size_bound_bytes` shows the batch fits (the common case); else one
    encoding of the whole batch, halved recursively while it is over the limit (about
    ``2·log2(n)`` encodings per span set apart).

    Args:
        spans: A batch from the batch span processor.
        max_bytes: The request limit in bytes (e.g. :data:`MAX_REQUEST_BYTES`).

    Returns:
        ``(parts, oversized)``: the parts in the batch's order, and the spans that cannot go.
    """
    bound = size_bound_bytes(spans)
    if bound is not None and bound <= max_bytes:
        return [spans], []  # surely fits: no encoding here
    parts: list[Sequence[ReadableSpan]] = []
    oversized: list[Oversized] = []
    pending: list[Sequence[ReadableSpan]] = [spans]
    while pending:
        batch = pending.pop()
        if not batch:
            continue
        try:
            size: int | None = encoded_size_bytes(batch)
            error: Exception | None = None
        except Exception as e:  # noqa: BLE001 - one span the encoder rejects must not sink all
            size, error = None, e
        if size is not None and size <= max_bytes:
            parts.append(batch)
        elif len(batch) == 1:
            oversized.append(Oversized(batch[0], size, error))
        else:
            middle = len(batch) // 2
            pending.extend((batch[middle:], batch[:middle]))  # first half next: keeps order
    return parts, oversized
