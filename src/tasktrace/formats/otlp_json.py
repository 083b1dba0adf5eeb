"""OTLP JSON lines: a file span exporter, and reading such files back as spans.

The format is OpenTelemetry's file-exporter specification: one
``{"resourceSpans": [...]}`` object (an ``ExportTraceServiceRequest``) per line, with the
OTLP/JSON rules: lowerCamelCase keys, trace and span ids as lowercase hex, 64-bit integers
(timestamps, ``intValue``) as decimal strings, enums (span kind, status code) as integers.

Encoding is the OTel project's own JSON encoder,
``opentelemetry.exporter.otlp.json.common.trace_encoder.encode_spans`` (package
``opentelemetry-exporter-otlp-json-common``, the extra ``tasktrace[otlp-json]``); parsing is its
companion ``opentelemetry.proto_json`` (``ExportTraceServiceRequest.from_json``), which decodes
the hex ids. Nothing here encodes OTLP by hand.

Files suit the OpenTelemetry Collector's ``otlpjsonfile`` receiver: every line is under
:data:`MAX_LINE_BYTES` (a batch that would exceed it is split; a single span that alone exceeds
it is dropped with a warning), and the exporter writes a new file per run whose first line holds
that run's random span ids, so no two runs' files share a first line.

Settings: ``OTEL_TRACES_EXPORTER=tasktrace_otlp_json`` (the entry point registered by this
package) creates :class:`OtlpJsonFileSpanExporter` with no arguments; it writes into the folder
named by the ``otlp_json_dir`` setting (``TASKTRACE_OTLP_JSON_DIR``), else the working folder.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Final

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from tasktrace.core.forksafe import renew_after_fork
from tasktrace.core.settings import get_settings
from tasktrace.core.warn import quoted

__all__ = [
    "MAX_LINE_BYTES",
    "OtlpJsonFileSpanExporter",
    "OtlpJsonFormatError",
    "encode_lines",
    "read_spans",
]

_log = logging.getLogger(__name__)

MAX_LINE_BYTES: Final = 1024 * 1024 - 1
"""Largest line written, in bytes including the newline (the collector's limit is 1 MiB)."""

OTLP_JSON_DIR_ENV: Final = "TASKTRACE_OTLP_JSON_DIR"
"""Environment variable of the ``otlp_json_dir`` setting: the folder of new OTLP JSON files."""

_EXTRA_HINT = "pip install 'tasktrace[otlp-json]'"


class OtlpJsonFormatError(ValueError):
    """A line of an OTLP JSON-lines file is not an ``ExportTraceServiceRequest``.

    The message names the file (when known) and the 1-based line number.
    """


def _encoder() -> Any:
    try:
        from opentelemetry.exporter.otlp.json.common.trace_encoder import (  # noqa: PLC0415
            encode_spans,
        )
    except ImportError as e:
        raise ImportError(
            f"OTLP JSON needs the OpenTelemetry JSON encoder: {_EXTRA_HINT} ({e})"
        ) from None
    return encode_spans


def _line(spans: Sequence[ReadableSpan]) -> bytes:
    request = _encoder()(spans)
    return json.dumps(request.to_dict(), separators=(",", ":")).encode() + b"\n"


def encode_lines(
    spans: Sequence[ReadableSpan], max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[bytes]:
    r"""Encode spans as OTLP JSON lines (each ends with ``\n``), splitting oversized batches.

    Args:
        spans: The spans, in the order they should appear.
        max_line_bytes: Largest line in bytes, newline included.

    Yields:
        One UTF-8 line per batch of spans (a batch never mixes resources, so that the spans
        read back in the order given), each at most ``max_line_bytes`` long. A span that
        alone exceeds the limit is left out with a warning naming it.

    Raises:
        ImportError: The OTel JSON encoder is missing (names the extra to install).
    """
    # One request per run of consecutive spans sharing a resource: a request groups its spans
    # by resource, which would reorder spans of interleaved resources (a tree whose tasks ran
    # on several hosts), and the spans must come back in the order given.
    runs: list[Sequence[ReadableSpan]] = []
    start = 0
    for i in range(1, len(spans) + 1):
        if i == len(spans) or spans[i].resource != spans[start].resource:
            runs.append(spans[start:i])
            start = i
    pending = runs[::-1]
    while pending:
        batch = pending.pop()
        line = _line(batch)
        if len(line) <= max_line_bytes:
            yield line
        elif len(batch) == 1:
            _log.warning(
                "tasktrace: span %s encodes to %d bytes of OTLP JSON, over the %d-byte line "
                "limit; left out",
                quoted(batch[0].name),
                len(line),
                max_line_bytes,
            )
        else:
            half = len(batch) // 2
            pending.extend((batch[half:], batch[:half]))  # the first half is written first


def default_folder() -> Path:
    """Return the folder for new OTLP JSON files: the ``otlp_json_dir`` setting, else ``.``."""
    folder = getattr(get_settings(), "otlp_json_dir", None) or os.environ.get(OTLP_JSON_DIR_ENV)
    return Path(folder) if folder else Path()


def _new_file_path(folder: Path) -> Path:
    """Return ``folder/tasktrace-<UTC date-time>-<pid>-<random hex>.otlp.jsonl``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return folder / f"tasktrace-{stamp}-{os.getpid()}-{secrets.token_hex(4)}.otlp.jsonl"


class OtlpJsonFileSpanExporter(SpanExporter):
    """A span exporter that appends OTLP JSON lines to a new file per run.

    Args:
        path: The file to write. Default: a new file
            ``tasktrace-<UTC date-time>-<pid>-<random hex>.otlp.jsonl`` in ``folder``.
        folder: Where the default file goes (default: :func:`default_folder`); created with
            its parents at the first export where missing (side by side processes may race
            to create it: each succeeds).
        max_line_bytes: Largest line in bytes (see :func:`encode_lines`).

    The file is created (exclusively, so an existing file is never appended to) at the first
    export that has spans, and its folder with it where missing. A process forked from the one
    that made the exporter (a fork pool's worker, ``os.fork``) writes a new file of its own,
    named as the default one with its own pid, in the same folder (the exporter checks
    ``os.getpid()`` once per batch): the file it inherited is its parent's. :meth:`export`
    returns ``FAILURE`` instead of raising when the file cannot be written (the error is
    logged). Thread-safe: one lock around each batch's write.
    """

    def __init__(
        self,
        path: os.PathLike[str] | str | None = None,
        *,
        folder: os.PathLike[str] | str | None = None,
        max_line_bytes: int = MAX_LINE_BYTES,
    ) -> None:
        """Create the exporter (see the class docstring); no file is opened yet."""
        if path is None:
            path = _new_file_path(Path(folder if folder is not None else default_folder()))
        self.path = Path(path)
        """The file this exporter writes (in a forked child: the child's own, see above)."""
        self._pid = os.getpid()
        self._max_line_bytes = max_line_bytes
        self._lock = threading.Lock()
        renew_after_fork(self, "_lock")
        self._stream: IO[bytes] | None = None
        self._shutdown = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Append ``spans`` as one or more lines and flush; ``FAILURE`` if not written."""
        if self._shutdown:
            _log.warning("tasktrace: OTLP JSON exporter already shut down; spans dropped")
            return SpanExportResult.FAILURE
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            data = b"".join(encode_lines(spans, self._max_line_bytes))
            with self._lock:
                pid = os.getpid()
                if pid != self._pid:  # a forked child: the inherited file is the parent's
                    self._pid = pid
                    self._stream = None  # the parent's (flushed at each write): closes our fd only
                    self.path = _new_file_path(self.path.parent)
                if self._stream is None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)  # a per-job folder
                    self._stream = open(self.path, "xb")  # noqa: SIM115 - kept open for the run
                self._stream.write(data)
                self._stream.flush()
        except (OSError, ImportError, ValueError, TypeError) as e:
            _log.warning("tasktrace: cannot write OTLP JSON to %s (%s)", self.path, e)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Every export is flushed already: ``True``."""
        del timeout_millis
        return True

    def shutdown(self) -> None:
        """Close the file; later exports fail."""
        with self._lock:
            self._shutdown = True
            if self._stream is not None:
                self._stream.close()
                self._stream = None


# ----- reading ---------------------------------------------------------------------------------


def _value(v: Any) -> Any:
    """Convert a parsed ``AnyValue`` (``opentelemetry.proto_json``) to a Python attribute value."""
    if v is None:
        return None
    for name in ("string_value", "bool_value", "int_value", "double_value", "bytes_value"):
        x = getattr(v, name)
        if x is not None:
            return x
    if v.array_value is not None:
        return tuple(_value(item) for item in v.array_value.values)
    if v.kvlist_value is not None:
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return None


def _attributes(key_values: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in key_values or ()}


def _ns(value: int | None) -> int | None:
    return int(value) if value else None


def _context(trace_id: bytes | None, span_id: bytes | None) -> SpanContext:
    return SpanContext(
        int.from_bytes(trace_id or b"", "big"),
        int.from_bytes(span_id or b"", "big"),
        is_remote=False,
        trace_flags=TraceFlags(1),
    )


def _request_spans(request: Any) -> Iterator[ReadableSpan]:
    for resource_spans in request.resource_spans:
        res = resource_spans.resource
        resource = Resource(
            _attributes(res.attributes if res else ()), resource_spans.schema_url or None
        )
        for scope_spans in resource_spans.scope_spans:
            sc = scope_spans.scope
            scope = InstrumentationScope(
                (sc.name if sc else "") or "",
                (sc.version if sc else None) or None,
                scope_spans.schema_url or None,
                _attributes(sc.attributes) if sc else None,
            )
            for span in scope_spans.spans:
                status = span.status
                parent = span.parent_span_id
                yield ReadableSpan(
                    name=span.name or "",
                    context=_context(span.trace_id, span.span_id),
                    parent=_context(span.trace_id, parent) if parent else None,
                    resource=resource,
                    attributes=_attributes(span.attributes),
                    events=[
                        Event(e.name or "", _attributes(e.attributes), _ns(e.time_unix_nano))
                        for e in span.events
                    ],
                    links=[
                        Link(_context(link.trace_id, link.span_id), _attributes(link.attributes))
                        for link in span.links
                    ],
                    kind=SpanKind(max(int(span.kind or 1) - 1, 0)),
                    status=Status(
                        StatusCode(int(status.code or 0)) if status else StatusCode.UNSET,
                        (status.message or None) if status else None,
                    ),
                    start_time=_ns(span.start_time_unix_nano),
                    end_time=_ns(span.end_time_unix_nano),
                    instrumentation_scope=scope,
                )


def read_spans(lines: Sequence[bytes] | IO[bytes], source: str = "<input>") -> list[ReadableSpan]:
    """Parse OTLP JSON lines (blank lines skipped) into spans with resource, scope and status.

    The last line may be cut short: its process was still writing it (a run or a Collector in
    progress) or was killed while writing. A last line that is not complete JSON is skipped
    with one warning naming the file and line; the spans of every line before it are returned.

    Args:
        lines: The file's lines (or a binary stream).
        source: The file name, for error messages.

    Returns:
        Every span, in file order.

    Raises:
        OtlpJsonFormatError: A line other than the last is not valid JSON, or a line is not an
            ``ExportTraceServiceRequest`` (names ``source`` and the line number).
        ImportError: ``opentelemetry-proto-json`` is missing (names the extra to install).
    """
    try:
        from opentelemetry.proto_json.collector.trace.v1.trace_service import (  # noqa: PLC0415
            ExportTraceServiceRequest,
        )
    except ImportError as e:
        raise ImportError(f"reading OTLP JSON needs {_EXTRA_HINT} ({e})") from None
    spans: list[ReadableSpan] = []
    cut: OtlpJsonFormatError | None = None  # the previous line, if it was not complete JSON
    cut_number = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if cut is not None:  # a bad line with a line after it: not a cut, an error
            raise cut
        try:
            data = json.loads(line)
        except json.JSONDecodeError as e:
            cut, cut_number = _bad_line(source, number, e), number
            continue
        try:
            if not isinstance(data, dict) or "resourceSpans" not in data:
                raise ValueError("no resourceSpans key")  # noqa: TRY301 - one message below
            spans.extend(_request_spans(ExportTraceServiceRequest.from_dict(data)))
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise _bad_line(source, number, e) from None
    if cut is not None:
        _log.warning(
            "tasktrace: %s: line %d is incomplete (its process was still writing it, or was "
            "killed while writing); it is skipped",
            source,
            cut_number,
        )
    return spans


def _bad_line(source: str, number: int, error: Exception) -> OtlpJsonFormatError:
    return OtlpJsonFormatError(
        f"{source}: line {number}: not an OTLP JSON ExportTraceServiceRequest: {error}"
    )
