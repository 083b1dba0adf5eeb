"""Span export that never disturbs the user's program: warn once, count drops, bounded exit.

The OTel SDK's own OTLP exporters log every failed attempt and every retry (with backoff, up
to their timeout), and the SDK shuts its providers down at exit with a 30 s bound. tasktrace's
exports go through two thin layers instead:

- :class:`GuardedSpanExporter` wraps any SDK :class:`~opentelemetry.sdk.trace.export.SpanExporter`.
  It never raises, silences the OTel exporters' per-attempt log records *while it is the one
  exporting* (:func:`~tasktrace.export.quiet.quiet_export`: a :class:`logging.Filter` keyed on
  a thread-local, so the user's own exporters still log), keeps those messages to say why an
  export failed (:func:`~tasktrace.export.failure.describe_failure`: ``[Errno 111] Connection
  refused``, ``HTTP 503 Service Unavailable``, ``TLS: certificate verify failed: ...``),
  counts exported and dropped spans, and logs **one** warning per process naming the endpoint
  (without credentials) the first time spans are dropped. A failure retrying cannot mend (a
  TLS certificate refused, a gRPC port spoken to in HTTP/1.1) shuts the OTel exporter down at
  its first attempt instead of letting it retry until its timeout. Given a
  ``max_request_bytes``, it splits each batch into requests under that size
  (:mod:`tasktrace.export.request_size`), so one large span costs at most itself, never its batch.
- :class:`~tasktrace.export.pipeline.ExportPipeline` owns the batch processor of each guarded
  exporter, with a bounded shutdown (:mod:`tasktrace.export.pipeline`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from tasktrace.core.forksafe import renew_after_fork
from tasktrace.core.warn import WarnOnce, quoted
from tasktrace.export.failure import (
    NO_ANSWER,
    describe_failure,
    endpoint_secrets,
    is_permanent,
    redact_endpoint,
    short_reason,
)
from tasktrace.export.losses import ExportLosses
from tasktrace.export.quiet import ExportMessages, quiet_export
from tasktrace.export.request_size import Oversized, split_by_request_size
from tasktrace.export.status_hint import refusal_hint, tls_hint

__all__ = ["GuardedSpanExporter", "clear_refused", "export_refused", "is_refusal"]

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)
_EXPORT_FAILED = "export-failed"

_REFUSED = ("Connection refused", "ECONNREFUSED", "StatusCode.UNAVAILABLE")
_refused = threading.Event()
"""Set when a guarded export was refused outright (nothing listens at the endpoint)."""


def export_refused() -> bool:
    """Whether a guarded export was refused outright since :func:`clear_refused`."""
    return _refused.is_set()


def clear_refused() -> None:
    """Forget earlier refusals (before a flush, where only new ones count)."""
    _refused.clear()


def is_refusal(message: str) -> bool:
    """Whether an OTel exporter's ``message`` says nothing listens at the endpoint."""
    return any(mark in message for mark in _REFUSED)


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
        losses: When exports first failed and answered again, and the spans the batch
            processor dropped from its full queue (:mod:`tasktrace.export.losses`), for the
            report at exit.

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
        self.inner = inner
        """The wrapped exporter."""
        self.where = redact_endpoint(where)
        """The destination named in the warning (no credentials)."""
        self.max_request_bytes = max_request_bytes
        """The request size limit in bytes, or ``None`` (see the class docstring)."""
        self.exported_spans = 0
        self.dropped_spans = 0
        self.losses = ExportLosses()
        self.last_error: str | None = None
        """The last failure reason (from the OTel exporter's own messages, or the exception)."""
        secrets = [*secrets, *endpoint_secrets(where)]
        words = {w for s in secrets for w in (s, *s.split()) if len(w) >= 4}
        self._secrets = sorted(words, key=len, reverse=True)
        self._lock = threading.Lock()
        renew_after_fork(self, "_lock")
        self._shut_down = False
        self._current: ExportMessages | None = None  # the request being sent now
        self._permanent: str | None = None  # a failure retrying cannot mend (TLS, gRPC port)
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

    def _noticed(self, message: str) -> None:
        """On the exporting thread, as the OTel exporter logs ``message`` (a failed attempt)."""
        self._failed_attempt = message[:1000]  # the exporter is retrying: see ``failing``
        if is_refusal(message):
            _refused.set()
            self.refused = True
        if self._permanent is None and is_permanent(message):
            self._permanent = describe_failure([message])
            self.shutdown()  # its retries would meet the same certificate or server

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
        with quiet_export(ExportMessages()):
            return getattr(self.inner, method)(*args)

    def in_flight_reason(self) -> str | None:
        """Return why the request being sent now failed so far, or ``None``.

        The reason of the attempts the exporter retries; ``None`` when no request is in
        flight or none of its attempts failed yet. Any thread.
        """
        current = self._current
        messages = list(current.messages) if current is not None else []
        return describe_failure(messages, self.max_request_bytes) if messages else None

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
        self.losses.note_export(sent=sent, failure=self.last_error if dropped else None)
        if failed and not sent:  # no request went through: the endpoint fails
            self._set_state(self.last_error or NO_ANSWER)
        elif spans:  # it took requests (a span too large to send is no failure of its own)
            self._set_state(None)
        if not dropped:
            return SpanExportResult.SUCCESS
        self.report(f"{dropped} of {len(spans)} spans dropped", dropped)
        return SpanExportResult.FAILURE

    def _export_parts(self, spans: Sequence[ReadableSpan], reasons: list[str]) -> tuple[int, int]:
        """Send ``spans`` in requests under the size limit; return (spans sent, requests failed)."""
        sent = failed = 0
        with quiet_export(ExportMessages()):  # encoding (the request split) logs too
            if self.max_request_bytes is None:
                parts: list[Sequence[ReadableSpan]] = [spans]
                oversized: list[Oversized] = []
            else:
                parts, oversized = split_by_request_size(spans, self.max_request_bytes)
            reasons.extend(self._oversized_reason(item) for item in oversized[:1])
            for part in parts:
                if self._permanent is not None:  # shut down: retrying cannot mend it
                    failed += 1
                    reasons.append(self._permanent)
                    continue
                messages = self._export_part(part)
                if messages is None:
                    sent += len(part)
                else:
                    failed += 1
                    reasons.append(describe_failure(messages, self.max_request_bytes))
        return sent, failed

    def _export_part(self, part: Sequence[ReadableSpan]) -> list[str] | None:
        """Send one request; ``None`` on success, else the exporter's messages about it."""
        collector = ExportMessages(self._noticed)
        self._current = collector
        try:
            with quiet_export(collector):
                try:
                    result = self.inner.export(part)
                except Exception as e:  # noqa: BLE001 - export must never break the program
                    result = SpanExportResult.FAILURE
                    collector.messages.append(f"{type(e).__name__}: {e}")
        finally:
            self._current = None
        return None if result is SpanExportResult.SUCCESS else collector.messages

    def _oversized_reason(self, item: Oversized) -> str:
        if item.size_bytes is None:
            return f"span {quoted(item.span.name)} cannot be encoded ({type(item.error).__name__})"
        return (
            f"span {quoted(item.span.name)} is {item.size_bytes:,} bytes encoded, over the "
            f"{self.max_request_bytes:,}-byte request limit"
        )

    def report(self, what: str, lost: int = 0) -> None:
        """Log the one export warning of this process (if not logged yet), naming ``what``.

        ``lost``: the spans ``what`` says were lost; the exit's total is not repeated when it is
        no more (:attr:`~tasktrace.export.losses.ExportLosses.said`).

        The reason is the last failed request's, else the one being sent now (an attempt that
        failed and is being retried, at exit), else :data:`~tasktrace.export.failure.NO_ANSWER`.
        For a backend's 4xx answer the warning also says what to check
        (:func:`tasktrace.export.status_hint.refusal_hint`: headers, endpoint path; never a
        value). It adds that later failures are not reported one by one: their spans are
        counted, and the total said at exit (:mod:`tasktrace.export.losses`).
        """
        if self._warning(what, "; further failures are counted and reported at exit"):
            self.losses.said = lost

    def report_at_exit(self, what: str) -> bool:
        """Log the warning of :meth:`report` at the process's end, if not logged yet.

        Returns:
            Whether it logged it (``False``: this process logged its export warning already).
        """
        return self._warning(what, "")

    def _warning(self, what: str, later: str) -> bool:
        reason = self.last_error or self.in_flight_reason() or NO_ANSWER
        hint = refusal_hint(reason) or tls_hint(reason)
        return _warn(
            _EXPORT_FAILED,
            "tasktrace: span export to %s failed (%s); %s.%s Task files are complete%s",
            self.where,
            self._scrub(reason),
            what,
            f" {hint}." if hint else "",
            later,
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
