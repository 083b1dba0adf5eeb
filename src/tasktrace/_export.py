"""Span export that never disturbs the user's program: warn once, count drops, bounded exit.

The OTel SDK's own OTLP exporters log every failed attempt and every retry (with backoff, up
to their timeout), and the SDK shuts its providers down at exit with a 30 s bound. tasktrace's
exports go through two thin layers instead:

- :class:`GuardedSpanExporter` wraps any SDK :class:`~opentelemetry.sdk.trace.export.SpanExporter`.
  It never raises, silences the OTel exporters' per-attempt log records *while it is the one
  exporting* (a :class:`logging.Filter` keyed on a thread-local flag, so the user's own
  exporters still log), keeps those messages to say why an export failed
  (:func:`describe_failure`: ``[Errno 111] Connection refused``, ``HTTP 413 ...``, ``gRPC
  RESOURCE_EXHAUSTED: ...``), counts exported and dropped spans, and logs **one** warning per
  process naming the endpoint (without credentials) the first time spans are dropped. Given a
  ``max_request_bytes``, it splits each batch into requests under that size
  (:mod:`tasktrace._request_size`), so one large span costs at most itself, never its batch.
- :class:`ExportPipeline` owns the :class:`~opentelemetry.sdk.trace.export.BatchSpanProcessor`
  of each guarded exporter. Export runs on the batch processor's thread, so a slow, refusing or
  black-holed endpoint adds nothing to a task's own overhead. :meth:`ExportPipeline.shutdown`
  flushes and shuts down within a deadline on a helper thread; past the deadline it gives up
  (the threads are daemons), and the one warning says how many spans were not exported.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry.sdk.environment_variables import OTEL_BSP_MAX_QUEUE_SIZE
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from tasktrace._export_failure import describe_failure, endpoint_secrets, redact_endpoint
from tasktrace._forksafe import renew_after_fork
from tasktrace._request_size import Oversized, split_by_request_size
from tasktrace._settings import get_settings
from tasktrace._status_hint import refusal_hint
from tasktrace.meters._base import WarnOnce

__all__ = ["ExportPipeline", "GuardedSpanExporter"]

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)
_EXPORT_FAILED = "export-failed"

SDK_EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.common._internal",
    "opentelemetry.sdk._shared_internal",
)
"""Loggers of the OTel exporters (and batch processor) whose records are silenced while a
:class:`GuardedSpanExporter` exports on the current thread."""

_exporting = threading.local()


_REFUSED = ("Connection refused", "ECONNREFUSED", "StatusCode.UNAVAILABLE")
_refused = threading.Event()
"""Set when a guarded export was refused outright (nothing listens at the endpoint)."""


def export_refused() -> bool:
    """Whether a guarded export was refused outright since :func:`clear_refused`."""
    return _refused.is_set()


def clear_refused() -> None:
    """Forget earlier refusals (before a flush, where only new ones count)."""
    _refused.clear()


_MAX_MESSAGES = 16
"""Messages kept per guarded export (the first ones and the last one)."""


class _QuietWhileGuarded(logging.Filter):
    """Drop records logged on a thread inside a guarded export; keep their messages."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(_exporting, "active", False):
            if record.levelno >= logging.WARNING:
                message = record.getMessage()
                if any(mark in message for mark in _REFUSED):
                    _refused.set()
                messages: list[str] = _exporting.messages
                if len(messages) >= _MAX_MESSAGES:
                    messages.pop()  # keep the first ones, and the latest as the last one
                messages.append(message[:1000])
            return False
        return True


_filter = _QuietWhileGuarded()
_filter_lock = threading.Lock()
renew_after_fork(sys.modules[__name__], '_filter_lock')
_filter_installed = False


def _install_filter() -> None:
    global _filter_installed  # noqa: PLW0603 - the filter is installed once per process
    with _filter_lock:
        if not _filter_installed:
            for name in SDK_EXPORTER_LOGGERS:
                logging.getLogger(name).addFilter(_filter)
            _filter_installed = True


class GuardedSpanExporter(SpanExporter):
    """A span exporter wrapper that never raises and reports failure once per process.

    Args:
        inner: The exporter doing the work (the OTel project's OTLP exporter, usually).
        where: Where the spans go, for the warning (an endpoint URL; credentials are removed).
        max_request_bytes: Split each batch into requests of at most this many bytes of
            encoded OTLP protobuf (see :mod:`tasktrace._request_size`); a span that alone is
            larger is dropped and named in the warning. ``None``: send batches whole (for
            exporters that do not speak OTLP).
        secrets: Values never to appear in a warning (the request headers): a failure message
            quoting one has it replaced by ``***``, as are the password and query of
            ``where``.

    Attributes:
        exported_spans: Spans the inner exporter accepted (count).
        dropped_spans: Spans in requests that failed or raised, and spans too large to send
            (count).

    Thread-safety: ``export`` is called by one batch-processor thread; the counters are
    updated under a lock and may be read from any thread.

    """

    def __init__(
        self,
        inner: SpanExporter,
        where: str,
        *,
        max_request_bytes: int | None = None,
        secrets: Iterable[str] = (),
    ) -> None:
        """Wrap ``inner`` (see the class docstring)."""
        _install_filter()
        self.inner = inner
        """The wrapped exporter."""
        self.where = redact_endpoint(where)
        """The destination named in the warning (no credentials)."""
        self.max_request_bytes = max_request_bytes
        """The request size limit in bytes, or ``None`` (see the class docstring)."""
        self.exported_spans = 0
        self.dropped_spans = 0
        self.last_error: str | None = None
        """The last failure reason (from the OTel exporter's own messages, or the exception)."""
        secrets = [*secrets, *endpoint_secrets(where)]
        words = {w for s in secrets for w in (s, *s.split()) if len(w) >= 4}
        self._secrets = sorted(words, key=len, reverse=True)
        self._lock = threading.Lock()
        renew_after_fork(self, '_lock')
        self._shut_down = False

    @contextmanager
    def _guarded(self) -> Iterator[list[str]]:
        """Silence the OTel exporters' records on this thread; yield their messages."""
        _exporting.active = True
        _exporting.messages = []
        try:
            yield _exporting.messages
        finally:
            _exporting.active = False

    def _call(self, method: str, *args: Any) -> Any:
        with self._guarded():
            return getattr(self.inner, method)(*args)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Export ``spans`` with the inner exporter, in requests under the size limit.

        Never raises. The other requests of a batch are still sent when one fails.

        Returns:
            ``SUCCESS`` when every span was accepted, else ``FAILURE``.

        """
        sent = 0
        reasons: list[str] = []
        with self._guarded() as messages:
            if self.max_request_bytes is None:
                parts: list[Sequence[ReadableSpan]] = [spans]
                oversized: list[Oversized] = []
            else:
                parts, oversized = split_by_request_size(spans, self.max_request_bytes)
            reasons.extend(self._oversized_reason(item) for item in oversized[:1])
            for part in parts:
                messages.clear()
                try:
                    result = self.inner.export(part)
                except Exception as e:  # noqa: BLE001 - export must never break the program
                    result = SpanExportResult.FAILURE
                    messages.append(f"{type(e).__name__}: {e}")
                if result is SpanExportResult.SUCCESS:
                    sent += len(part)
                else:
                    reasons.append(describe_failure(messages, self.max_request_bytes))
        dropped = len(spans) - sent
        with self._lock:
            self.exported_spans += sent
            if not dropped:
                return SpanExportResult.SUCCESS
            self.dropped_spans += dropped
            self.last_error = self._scrub("; ".join(dict.fromkeys(reasons)))
        self.report(f"{dropped} of {len(spans)} spans dropped")
        return SpanExportResult.FAILURE

    def _oversized_reason(self, item: Oversized) -> str:
        if item.size_bytes is None:
            return f"span {item.span.name!r} cannot be encoded ({type(item.error).__name__})"
        return (
            f"span {item.span.name!r} is {item.size_bytes:,} bytes encoded, over the "
            f"{self.max_request_bytes:,}-byte request limit"
        )

    def report(self, what: str) -> None:
        """Log the one export warning of this process (if not logged yet), naming ``what``.

        For a backend's 4xx answer the warning also says what to check
        (:func:`tasktrace._status_hint.refusal_hint`: headers, endpoint path; never a value).
        """
        hint = refusal_hint(self.last_error)
        _warn(
            _EXPORT_FAILED,
            "tasktrace: span export to %s failed (%s); %s.%s Task files are complete; "
            "further export failures are not reported",
            self.where,
            self.last_error or "no answer",
            what,
            f" {hint}." if hint else "",
        )

    def shutdown(self) -> None:
        """Shut the inner exporter down (stops its retries); idempotent, never raises."""
        with self._lock:
            if self._shut_down:
                return
            self._shut_down = True
        try:
            self._call("shutdown")
        except Exception as e:  # noqa: BLE001 - shutdown must never break the program
            _log.debug("tasktrace: exporter shutdown failed: %r", e)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the inner exporter; never raises."""
        try:
            return bool(self._call("force_flush", timeout_millis))
        except Exception:  # noqa: BLE001 - flush must never break the program
            return False


DEFAULT_MAX_QUEUE_SIZE = 16384
"""Span queue of tasktrace's batch processors unless ``OTEL_BSP_MAX_QUEUE_SIZE`` is set.

The SDK's default (2048) drops spans from a tight loop of short tasks faster than one export
thread sends them; 16,384 queued spans hold a few tens of MB at most.
"""


class _CountingBatchProcessor(BatchSpanProcessor):
    """A BatchSpanProcessor that counts the spans it was given."""

    def __init__(self, exporter: SpanExporter) -> None:
        queue = None if os.environ.get(OTEL_BSP_MAX_QUEUE_SIZE) else DEFAULT_MAX_QUEUE_SIZE
        super().__init__(exporter, max_queue_size=queue)
        self._count_lock = threading.Lock()
        renew_after_fork(self, '_count_lock')
        self.ended_spans = 0

    def on_end(self, span: ReadableSpan) -> None:
        with self._count_lock:
            self.ended_spans += 1
        super().on_end(span)

    def force_flush(self, timeout_millis: int | None = None) -> bool:
        """Export what is queued, waiting at most ``timeout_millis`` (default 30 000) ms.

        The SDK's own ``force_flush`` ignores its timeout and blocks for as long as the
        exporter does (retries included); here it runs on a daemon thread and is waited for
        within the bound. Returns whether it finished in time (``False`` during interpreter
        shutdown, where Python 3.12 cannot start the thread).
        """
        done = threading.Event()

        def flush() -> None:
            try:
                BatchSpanProcessor.force_flush(self, timeout_millis)
            finally:
                done.set()

        try:
            threading.Thread(target=flush, name="tasktrace-export-flush", daemon=True).start()
        except RuntimeError:  # can't create new thread at interpreter shutdown
            return False
        return done.wait((timeout_millis if timeout_millis is not None else 30000) / 1000)


class ExportPipeline:
    """The batch processors of tasktrace's guarded exporters, with a bounded shutdown.

    Args:
        exporters: Guarded exporters; each gets its own batch processor.

    Attributes:
        processors: One :class:`~opentelemetry.sdk.trace.export.BatchSpanProcessor` per
            exporter, to add to a tracer provider.

    The shutdown runs on a daemon thread started with the pipeline (idle until needed):
    Python 3.12 refuses to start threads from :mod:`atexit` handlers.

    Thread-safety: :meth:`begin_shutdown` and :meth:`shutdown` may be called from any thread,
    more than once.

    """

    def __init__(self, exporters: Sequence[GuardedSpanExporter]) -> None:
        """Create one batch processor per exporter and the idle shutdown thread."""
        self.exporters = list(exporters)
        """The guarded exporters."""
        if get_settings().pending_spans:  # drop snapshots whose real span is in the batch
            from tasktrace._pending import PendingSpanFilter  # noqa: PLC0415 - opt-in feature

            for exporter in self.exporters:
                exporter.inner = PendingSpanFilter(exporter.inner)
        self.processors: list[BatchSpanProcessor] = [
            _CountingBatchProcessor(e) for e in self.exporters
        ]
        self._go = threading.Event()
        self._done = threading.Event()
        threading.Thread(
            target=self._shutdown_all, name="tasktrace-export-shutdown", daemon=True
        ).start()

    def _shutdown_all(self) -> None:
        self._go.wait()
        try:
            for processor in self.processors:
                processor.shutdown()  # exports what is queued, then shuts the exporter down
        finally:
            self._done.set()

    def begin_shutdown(self) -> None:
        """Start exporting what is queued and shutting down, in the background; return now."""
        self._go.set()

    def shutdown(self, timeout_s: float) -> bool:
        """Export what is queued and shut down, waiting at most ``timeout_s`` seconds.

        After 80 % of the bound, or as soon as an export was refused outright (nothing listens
        at the endpoint, so retrying cannot help an exiting process), the exporters are shut
        down to stop their retries (so that a failure is still reported with its reason); past
        the bound the flush is abandoned on its daemon thread. If any span was not exported,
        the one export warning says how many.

        Returns:
            Whether every span given to the pipeline was exported.

        """
        clear_refused()  # only a refusal during this flush counts: the collector may be back
        self._go.set()
        deadline = time.monotonic() + timeout_s * 0.8
        finished = False
        while not finished:
            # Nothing listening (connection refused): the exporter's retries, seconds long,
            # cannot succeed before a process exits; stop them at once.
            left = deadline - time.monotonic()
            if left <= 0 or export_refused():
                break
            finished = self._done.wait(min(left, 0.05))
        if not finished:
            for exporter in self.exporters:
                exporter.shutdown()
            finished = self._done.wait(timeout_s * 0.2)
        ok = True
        for exporter, processor in zip(self.exporters, self.processors, strict=True):
            ended = getattr(processor, "ended_spans", 0)
            unsent = ended - exporter.exported_spans
            if unsent > 0:
                ok = False
                state = "" if finished else f", export unfinished after {timeout_s:.3g} s at exit"
                exporter.report(f"{unsent} of {ended} spans not exported{state}")
        return ok
