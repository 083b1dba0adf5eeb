"""Hooks of the façade for watching running tasks: pending spans and task metrics.

- Pending snapshot spans (setting ``pending_spans``; :mod:`tasktrace.export.pending`): the
  façade checks :func:`pending_spans` at every task start (one settings read); only a task
  started while it is on is registered with the refresh thread, which calls :func:`refreshed`.
- Task metrics (setting ``metrics`` or ``OTEL_METRICS_*``; :mod:`tasktrace.export.metrics`): a
  finished task's own measurements are handed over at finish (:func:`finished`: one cached
  check when metrics are off). Nothing happens at start and no thread is woken: the gauges of
  running tasks are read from the tree's running registry when the metrics are collected.

(The live panel of ``tasktrace run`` needs no hook: it reads the child-task spool of
:mod:`tasktrace.tree.spool`.)
"""

from __future__ import annotations

from opentelemetry import trace

from tasktrace.core.record import TaskRecord as Task
from tasktrace.core.settings import get_settings
from tasktrace.export import metrics_setup, pending

__all__ = ["finished", "pending_spans", "refreshed", "started"]


def pending_spans() -> bool:
    """Whether pending snapshot spans are on (one settings read)."""
    return get_settings().pending_spans


def started(task: Task, tracer: trace.Tracer, span_context: trace.SpanContext | None) -> None:
    """Emit the pending snapshot span of a task that just started (its span is current)."""
    pending.emit_snapshot(task, tracer, span_context)


def refreshed(task: Task, tracer: trace.Tracer, span_context: trace.SpanContext | None) -> None:
    """Emit a pending snapshot span of a running task (by the refresh thread)."""
    if get_settings().pending_spans:
        pending.emit_snapshot(task, tracer, span_context)


def finished(task: Task, user_s: float, system_s: float) -> None:
    """Record a finished task's metrics, when metrics are on (its fields hold its figures).

    Args:
        task: The finished task.
        user_s: Its user CPU seconds (``getrusage`` at start and finish).
        system_s: Its system CPU seconds (same source).
    """
    recorder = metrics_setup.task_metrics()
    if recorder is not None:
        recorder.finished(task, user_s, system_s)
