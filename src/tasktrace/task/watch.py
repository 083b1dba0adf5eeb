"""Hooks of the façade for watching running tasks: pending spans and task metrics.

The façade (:mod:`tasktrace.task.facade`) calls :func:`active` at every task start; only when it is
true does it call :func:`started`, register the task with the refresh thread (which then calls
:func:`refreshed`) and call :func:`finished`. With every feature off (the default) a task start
costs one settings read and one cached flag more. The features:

- pending snapshot spans (setting ``pending_spans``; :mod:`tasktrace.export.pending`);
- task metrics (setting ``metrics`` or ``OTEL_METRICS_*``; :mod:`tasktrace.export.metrics`).

(The live panel of ``tasktrace run`` needs no hook: it reads the child-task spool of
:mod:`tasktrace.tree.spool`.)
"""

from __future__ import annotations

from opentelemetry import trace

from tasktrace.core.record import TaskRecord as Task
from tasktrace.core.settings import get_settings
from tasktrace.export import metrics, pending

__all__ = ["active", "finished", "refreshed", "started"]


def active() -> bool:
    """Whether any watching feature is on (one settings read, plus a cached metrics flag)."""
    return get_settings().pending_spans or metrics.enabled()


def started(
    task: Task, tracer: trace.Tracer, span_context: trace.SpanContext | None, *, root: bool
) -> None:
    """Handle a started task (its span is current; the task's lock need not be held).

    ``root`` (the task has no parent task in this process) is unused for now.
    """
    del root
    if get_settings().pending_spans:
        pending.emit_snapshot(task, tracer, span_context)
    recorder = metrics.task_metrics()
    if recorder is not None:
        recorder.started(task)


def refreshed(
    task: Task, tracer: trace.Tracer, span_context: trace.SpanContext | None, *, root: bool
) -> None:
    """Handle a refresh of a running task (by the refresh thread, with the task's lock held)."""
    del root
    if get_settings().pending_spans:
        pending.emit_snapshot(task, tracer, span_context)
    recorder = metrics.task_metrics()
    if recorder is not None:
        recorder.refreshed(task)


def finished(task: Task, *, root: bool) -> None:
    """Handle a finished task (its span has ended; its fields hold the final measurements)."""
    del root
    recorder = metrics.task_metrics()
    if recorder is not None:
        recorder.finished(task)
