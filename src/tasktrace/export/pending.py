"""Pending spans: zero-duration snapshots of a running task's span, for live views in backends.

A span reaches Jaeger or Tempo only when it ends, hours later for a training run. With the
``pending_spans`` setting on (``TASKTRACE_PENDING_SPANS=1``), the façade exports, when a task
starts and at each refresh while it runs, a *snapshot* span:

- a new span id each time (backends reject a repeated span id), the same trace;
- parented to the real (still running) span, with the task's label as its name;
- start time = end time = the moment of the snapshot (zero duration);
- the attribute :data:`PENDING_SPAN_ID` naming the real span's id (16 hex digits) and the
  measurements so far (the attributes a finished task carries, from
  :func:`~tasktrace.core.spans.finish_attributes`, with ``tasktrace.task.status =
  "running"``), but not the task id (:data:`~tasktrace.core.attributes.TASK_ID`), so that tools
  rebuilding tasks from spans never see a snapshot as a second copy of the task.

The task-tree processor ignores snapshots, so task files never contain them.
:class:`PendingSpanFilter` wraps any span exporter and drops the snapshots that became
redundant: those whose real span is in the same batch or was exported recently.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import NonRecordingSpan

from tasktrace.core import attributes as attr
from tasktrace.core.forksafe import renew_after_fork
from tasktrace.core.record import TaskRecord
from tasktrace.core.spans import finish_attributes
from tasktrace.core.warn import WarnOnce, raise_errors

__all__ = ["PENDING_SPAN_ID", "PendingSpanFilter", "emit_snapshot", "is_snapshot"]

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)

PENDING_SPAN_ID: Final = attr.PENDING_SPAN_ID
"""On a snapshot span only: the id (16 lowercase hex digits) of the running span it describes."""


def is_snapshot(attributes: Any) -> bool:
    """Whether span ``attributes`` (a mapping or ``None``) mark a pending snapshot span."""
    return bool(attributes) and PENDING_SPAN_ID in attributes


def emit_snapshot(task: TaskRecord, tracer: trace.Tracer, real: trace.SpanContext | None) -> None:
    """Start and end one zero-duration snapshot span of the running ``task`` now.

    Args:
        task: A running task; its current field values (the measurements so far, as updated by
            :meth:`~tasktrace.Task.update_resources`) become the snapshot's attributes.
        tracer: The tracer the task's own span came from (same provider, same processors).
        real: The real span's context; nothing is emitted when it is ``None`` or invalid.

    Thread-safety: call with the task's lock held (the façade and the refresh thread do).
    Errors are logged once and never raised (re-raised when the task-tree processor's
    ``raise_errors`` is set, as under the test suite).

    """
    if real is None or not real.is_valid:
        return
    try:
        attrs = finish_attributes(task, data=False, identity=False)
        attrs[PENDING_SPAN_ID] = format(real.span_id, "016x")
        now_ns = time.time_ns()
        parent = trace.set_span_in_context(NonRecordingSpan(real))
        span = tracer.start_span(task.label, context=parent, attributes=attrs, start_time=now_ns)
        span.end(end_time=now_ns)
    except Exception as e:
        if raise_errors():
            raise
        _warn("pending-snapshot", "tasktrace: cannot emit a pending span: %r", e)


class PendingSpanFilter(SpanExporter):
    """A span exporter wrapper that drops snapshot spans whose real span is known to be done.

    A snapshot is dropped when its real span (named by :data:`PENDING_SPAN_ID`) is in the same
    batch, or was exported by this wrapper within its last ``memory`` real spans. Every other
    span is passed on, in order, to the wrapped exporter, whose result is returned.

    Args:
        exporter: The exporter to wrap (an OTLP exporter, for example).
        memory: How many exported span ids to remember (oldest forgotten first).

    Thread-safety: :meth:`export` may be called from several threads.

    """

    def __init__(self, exporter: SpanExporter, memory: int = 4096) -> None:
        """Wrap ``exporter`` (see the class docstring)."""
        self.exporter = exporter
        """The wrapped exporter."""
        self._memory = memory
        self._done: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        renew_after_fork(self, "_lock")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Export ``spans`` less the redundant snapshots (see the class docstring)."""
        batch_ids = set()
        for span in spans:
            ctx = span.get_span_context()
            if ctx is not None and not is_snapshot(span.attributes):
                batch_ids.add(format(ctx.span_id, "016x"))
        with self._lock:
            kept = [
                span
                for span in spans
                if not is_snapshot(span.attributes)
                or (
                    (real := str(span.attributes[PENDING_SPAN_ID]))  # type: ignore[index]
                    not in batch_ids
                    and real not in self._done
                )
            ]
            for span_id in batch_ids:
                self._done[span_id] = None
            while len(self._done) > self._memory:
                self._done.popitem(last=False)
        if not kept:
            return SpanExportResult.SUCCESS
        return self.exporter.export(kept)

    def shutdown(self) -> None:
        """Shut the wrapped exporter down."""
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the wrapped exporter."""
        return self.exporter.force_flush(timeout_millis)
