"""Span export that never disturbs the user's program: warn once, count drops, bounded exit.

The OTel SDK's own OTLP exporters log every failed attempt and every retry (with backoff, up
to their timeout), and the SDK shuts its providers down at exit with a 30 s bound. tasktrace's
exports go through two thin layers instead:

- :class:`GuardedSpanExporter` wraps any SDK :class:`~opentelemetry.sdk.trace.export.SpanExporter`.
  It never raises, silences the OTel exporters' per-attempt log records *while it is the one
  exporting* (a :class:`logging.Filter` keyed on a thread-local flag, so the user's own
  exporters still log), keeps the last such message as the failure reason, counts exported and
  dropped spans, and logs **one** warning per process naming the endpoint (without credentials)
  the first time a batch is dropped.
- :class:`ExportPipeline` owns the :class:`~opentelemetry.sdk.trace.export.BatchSpanProcessor`
  of each guarded exporter. Export runs on the batch processor's thread, so a slow, refusing or
  black-holed endpoint adds nothing to a task's own overhead. :meth:`ExportPipeline.shutdown`
  flushes and shuts down within a deadline on a helper thread; past the deadline it gives up
  (the threads are daemons), and the one warning says how many spans were not exported.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from tasktrace._forksafe import renew_after_fork
from tasktrace._settings import get_settings
from tasktrace._status_hint import refusal_hint
from tasktrace.meters._base import WarnOnce

__all__ = ["ExportPipeline", "GuardedSpanExporter", "redact_endpoint"]

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)
_EXPORT_FAILED = "export-failed"

SDK_EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
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


class _QuietWhileGuarded(logging.Filter):
    """Drop records logged on a thread inside a guarded export; keep the first warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(_exporting, "active", False):
            if record.levelno >= logging.WARNING:
                message = record.getMessage()
                if any(mark in message for mark in _REFUSED):
                    _refused.set()
                if not getattr(_exporting, "message", None):
                    _exporting.message = message[:300]
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


def short_reason(message: str | None) -> str:
    """Return the gist of an exporter's failure message (``[Errno 111] Connection refused``).

    The OTel exporters' messages embed whole exception chains; the errno part, when there is
    one, says what happened. Otherwise the first 160 characters.
    """
    if not message:
        return "the exporter reported failure"
    errno = re.search(r"\[Errno -?\d+\] [^\"')(]+", message)
    return errno.group(0).strip() if errno else message[:160]


def redact_endpoint(endpoint: str) -> str:
    """Return ``endpoint`` without user name, password, query or fragment (safe to log)."""
    try:
        parts = urlsplit(endpoint)
    except ValueError:
        return "<invalid endpoint>"
    if not parts.scheme or not parts.netloc:
        return endpoint.split("?", 1)[0].rsplit("@", 1)[-1]
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class GuardedSpanExporter(SpanExporter):
    """A span exporter wrapper that never raises and reports failure once per process.

    Args:
        inner: The exporter doing the work (the OTel project's OTLP exporter, usually).
        where: Where the spans go, for the warning (an endpoint URL; credentials are removed).

    Attributes:
        exported_spans: Spans the inner exporter accepted (count).
        dropped_spans: Spans in batches that failed or raised (count).

    Thread-safety: ``export`` is called by one batch-processor thread; the counters are
    updated under a lock and may be read from any thread.

    """

    def __init__(self, inner: SpanExporter, where: str) -> None:
        """Wrap ``inner`` (see the class docstring)."""
        _install_filter()
        self.inner = inner
        """The wrapped exporter."""
        self.where = redact_endpoint(where)
        """The destination named in the warning (no credentials)."""
        self.exported_spans = 0
        self.dropped_spans = 0
        self.last_error: str | None = None
        """The last failure reason (the OTel exporter's own message, or the exception)."""
        self._lock = threading.Lock()
        renew_after_fork(self, '_lock')
        self._shut_down = False

    def _call(self, method: str, *args: Any) -> Any:
        _exporting.active = True
        _exporting.message = None
        try:
            return getattr(self.inner, method)(*args)
        finally:
            _exporting.active = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Export ``spans`` with the inner exporter; never raises.

        Returns:
            The inner result; ``FAILURE`` if it raised.

        """
        try:
            result = self._call("export", spans)
        except Exception as e:  # noqa: BLE001 - export must never break the program
            result = SpanExportResult.FAILURE
            _exporting.message = f"{type(e).__name__}: {e}"
        with self._lock:
            if result is SpanExportResult.SUCCESS:
                self.exported_spans += len(spans)
                return result
            self.dropped_spans += len(spans)
            self.last_error = short_reason(_exporting.message)
        self.report(f"{len(spans)} spans dropped")
        return result

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
        queue = None if os.environ.get("OTEL_BSP_MAX_QUEUE_SIZE") else DEFAULT_MAX_QUEUE_SIZE
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
