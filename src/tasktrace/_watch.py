"""Hooks of the façade for watching running tasks: pending spans, task metrics, live folder.

The façade (:mod:`tasktrace._task`) calls :func:`active` at every task start; only when it is
true does it call :func:`started`, register the task with the refresh thread (which then calls
:func:`refreshed`) and call :func:`finished`. With every feature off (the default) a task start
costs one settings read more. The features:

- pending snapshot spans (setting ``pending_spans``; :mod:`tasktrace._pending`);
- task metrics (setting ``metrics`` or ``OTEL_METRICS_*``; :mod:`tasktrace._metrics`);
- the live folder (setting ``live_dir``, set by ``tasktrace run`` for its command): each
  top-level task of this process is written, with its running subtasks, to
  ``<live_dir>/<pid>-<task_id>.json`` at start, at each refresh and at finish, for the live
  panel of :mod:`tasktrace._live` to read.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from opentelemetry import trace

from tasktrace import _metrics, _pending
from tasktrace._files import save_atomic
from tasktrace._processor import tree
from tasktrace._settings import get_settings

if TYPE_CHECKING:
    from tasktrace._task import Task

__all__ = ["active", "finished", "refreshed", "started"]


def active() -> bool:
    """Whether any watching feature is on (one settings read, plus a cached metrics flag)."""
    s = get_settings()
    return s.pending_spans or s.live_dir is not None or _metrics.enabled()


def _save_live(task: Task) -> None:
    folder = get_settings().live_dir
    if folder is None or not folder.is_dir():
        return
    with tree.lock:
        data = task.model_dump_json().encode()
    save_atomic(folder / f"{os.getpid()}-{task.task_id}.json", data + b"\n")


def started(
    task: Task, tracer: trace.Tracer, span_context: trace.SpanContext | None, *, root: bool
) -> None:
    """Handle a started task (its span is current; the task's lock need not be held)."""
    if get_settings().pending_spans:
        _pending.emit_snapshot(task, tracer, span_context)
    recorder = _metrics.task_metrics()
    if recorder is not None:
        recorder.started(task)
    if root:
        _save_live(task)


def refreshed(
    task: Task, tracer: trace.Tracer, span_context: trace.SpanContext | None, *, root: bool
) -> None:
    """Handle a refresh of a running task (by the refresh thread, with the task's lock held)."""
    if get_settings().pending_spans:
        _pending.emit_snapshot(task, tracer, span_context)
    recorder = _metrics.task_metrics()
    if recorder is not None:
        recorder.refreshed(task)
    if root:
        _save_live(task)


def finished(task: Task, *, root: bool) -> None:
    """Handle a finished task (its span has ended; its fields hold the final measurements)."""
    recorder = _metrics.task_metrics()
    if recorder is not None:
        recorder.finished(task)
    if root:
        _save_live(task)
