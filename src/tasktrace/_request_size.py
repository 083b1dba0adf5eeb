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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan

__all__ = ["MAX_REQUEST_BYTES", "Oversized", "encoded_size_bytes", "split_by_request_size"]

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


def split_by_request_size(
    spans: Sequence[ReadableSpan], max_bytes: int
) -> tuple[list[Sequence[ReadableSpan]], list[Oversized]]:
    """Split ``spans`` into parts whose requests are at most ``max_bytes`` each.

    One encoding of the whole batch when it fits (the common case); otherwise the batch is
    halved recursively, so about ``2·log2(n)`` encodings per span set apart.

    Args:
        spans: A batch from the batch span processor.
        max_bytes: The request limit in bytes (e.g. :data:`MAX_REQUEST_BYTES`).

    Returns:
        ``(parts, oversized)``: the parts in the batch's order, and the spans that cannot go.
    """
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
