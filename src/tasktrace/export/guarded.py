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
  (:mod:`tasktrace.export.request_size`), so one large span costs at most itself, never its batch.
- :class:`~tasktrace.export.pipeline.ExportPipeline` owns the batch processor of each guarded
  exporter, with a bounded shutdown (:mod:`tasktrace.export.pipeline`).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from tasktrace.core.forksafe import renew_after_fork
from tasktrace.core.warn import WarnOnce
from tasktrace.export.failure import (
    describe_failure,
    endpoint_secrets,
    redact_endpoint,
    short_reason,
)
from tasktrace.export.request_size import Oversized, split_by_request_size
from tasktrace.export.status_hint import refusal_hint

__all__ = ["GuardedSpanExporter", "clear_refused", "export_refused"]

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
                owner = getattr(_exporting, "owner", None)
                if owner is not None:  # an attempt failed: the OTel exporter is retrying
                    owner._failed_attempt = message[:1000]
                if any(mark in message for mark in _REFUSED):
                    _refused.set()
                    if owner is not None:
                        owner.refused = True
                messages: list[str] = _exporting.messages
                if len(messages) >= _MAX_MESSAGES:
                    messages.pop()  # keep the first ones, and the latest as the last one
                messages.append(message[:1000])
            return False
        return True


_filter = _QuietWhileGuarded()
_filter_lock = threading.Lock()
renew_after_fork(sys.modules[__name__], "_filter_lock")
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
            encoded OTLP protobuf (see :mod:`tasktrace.export.request_size`); a span that alone is
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
        self.refused = False
        """Whether an export of this exporter was refused outright (nothing listens at its
        endpoint: retrying cannot help an exiting process); set from the OTel exporter's own
        messages, cleared by the pipeline's shutdown before its flush."""
        self.on_state_change: Callable[[str, str | None], None] | None = None
        """Called as ``(where, reason)`` when the endpoint becomes known to fail (``reason``),
        and as ``(where, None)`` when an export succeeds again; on the exporting thread."""
        self._failing: str | None = None  # why the endpoint is known to fail, while it is
        self._exporting_now = False
        self._failed_attempt: str | None = None  # the message of a failed attempt, this export
        secrets = [*secrets, *endpoint_secrets(where)]
        words = {w for s in secrets for w in (s, *s.split()) if len(w) >= 4}
        self._secrets = sorted(words, key=len, reverse=True)
        self._lock = threading.Lock()
        renew_after_fork(self, "_lock")
        self._shut_down = False

    @contextmanager
    def _guarded(self) -> Iterator[list[str]]:
        """Silence the OTel exporters' records on this thread; yield their messages."""
        _exporting.active = True
        _exporting.messages = []
        _exporting.owner = self
        try:
            yield _exporting.messages
        finally:
            _exporting.active = False
            _exporting.owner = None

    @property
    def failing(self) -> bool:
        """Whether the endpoint is known to fail now, so that a flush should not wait for it.

        True after an export that dropped spans, while an export is under way one of whose
        attempts failed (the OTel exporter retries with backoff), and after
        :meth:`mark_failing` (a flush that got no answer in time); false again once an export
        sends every span. Read from any thread.
        """
        return self._failing is not None or (
            self._exporting_now and self._failed_attempt is not None
        )

    @property
    def failing_reason(self) -> str | None:
        """Why the endpoint is known to fail (see :attr:`failing`), or ``None``."""
        if self._failing is not None:
            return self._failing
        attempt = self._failed_attempt if self._exporting_now else None
        return self._scrub(short_reason(attempt)) if attempt is not None else None

    def mark_failing(self, reason: str) -> None:
        """Record that the endpoint fails (``reason``) until an export sends every span.

        For a flush that got no answer within its bound: later flushes do not wait. Thread-safe.
        """
        self._set_state(reason)

    def _set_state(self, reason: str | None) -> None:
        with self._lock:
            changed = (self._failing is None) != (reason is None)
            self._failing = reason
        callback = self.on_state_change
        if changed and callback is not None:
            try:
                callback(self.where, reason)
            except Exception as e:  # noqa: BLE001 - never break the export
                _log.debug("tasktrace: export state callback failed: %r", e)

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
        self._failed_attempt = None
        self._exporting_now = True
        try:
            sent, failed = self._export_parts(spans, reasons)
        finally:
            self._exporting_now = False
        dropped = len(spans) - sent
        with self._lock:
            self.exported_spans += sent
            if dropped:
                self.dropped_spans += dropped
                self.last_error = self._scrub("; ".join(dict.fromkeys(reasons)))
        if failed and not sent:  # no request went through: the endpoint fails
            self._set_state(self.last_error or "no answer")
        elif spans:  # it took requests (a span too large to send is no failure of its own)
            self._set_state(None)
        if not dropped:
            return SpanExportResult.SUCCESS
        self.report(f"{dropped} of {len(spans)} spans dropped")
        return SpanExportResult.FAILURE

    def _export_parts(self, spans: Sequence[ReadableSpan], reasons: list[str]) -> tuple[int, int]:
        """Send ``spans`` in requests under the size limit; return (spans sent, requests failed)."""
        sent = failed = 0
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
                    failed += 1
                    reasons.append(describe_failure(messages, self.max_request_bytes))
        return sent, failed

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
        (:func:`tasktrace.export.status_hint.refusal_hint`: headers, endpoint path; never a
        value).
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
