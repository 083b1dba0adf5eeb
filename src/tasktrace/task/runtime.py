"""The per-task runtime record: what a task needs while it runs, beside its model data.

A :class:`Runtime` is slotted and holds only what start and finish need (the span, the context
token, the starting measurements, the meter snapshots, the parent task object); everything a
file or an exporter wants is derived from the model's fields at finish. A finished task lets
its record go (the shared :data:`RELEASED` state), so a tree of 100,000 finished tasks holds
only the model data. Where a task's file goes is not here but in the tree's writer
(:mod:`tasktrace.tree.writer`).

The record lives in the task's pydantic private state; :func:`runtime` reads it for the modules
of the task layer (the façade, :mod:`tasktrace.task.processes`, the live panel's reads of a
running task). The measurement helpers read the process meters and the registered meters.

Thread-safety: a task's measurements are read and written under its record's ``lock``: the
refresh thread may refresh a task while another thread finishes it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace

from tasktrace.core.context import detach
from tasktrace.core.record import TaskRecord
from tasktrace.core.spans import finish_attributes, span_status
from tasktrace.core.status import TaskStatus
from tasktrace.core.warn import WarnOnce
from tasktrace.export.provider import get_tracer
from tasktrace.meters import active_meters
from tasktrace.meters.gpu import cuda_marks
from tasktrace.meters.process import Scope, rss_marks, self_usage
from tasktrace.task import watch
from tasktrace.tree.processor import tree

REFRESH_COST_FACTOR = 20
"""A task file is refreshed at most once per this many times the last refresh's duration."""

__all__ = [
    "REFRESH_COST_FACTOR",
    "RELEASED",
    "Runtime",
    "apply",
    "close_measurements",
    "current_runtime",
    "end_span",
    "measure",
    "open_measurements",
    "refresh_task",
    "release",
    "runtime",
    "start_meters",
    "start_span",
    "update_running_subtasks",
    "update_task",
]

_warn = WarnOnce(logging.getLogger(__name__))


class Runtime:
    """Per-task state that is not part of the model (slots: cheap to create).

    Attributes:
        reset_hwm: The ``reset_hwm`` argument (``None``: reset when the task has no parent).
        parent: The parent task object in this process, or ``None``.
        span: The running task's span (``None`` before start and after finish).
        span_context: Its span context (kept after finish; a stand-in's is its remote parent's).
        ctx: The context the task made current (holds the span; let go at finish).
        token: The token of that context's attachment.
        perf0: ``time.perf_counter()`` at start, in seconds.
        cpu0: This process's CPU seconds at start (``getrusage(RUSAGE_SELF)``).
        rss_scope: The RSS high-water-mark scope (``None``: not measuring).
        gpu_scope: The CUDA high-water-mark scope, where torch uses CUDA.
        snapshots: ``(meter, snapshot)`` of each registered meter started for this task.
        remote: A stand-in for a task of another process (pickled, or inherited by ``fork``).
        next_refresh: ``time.monotonic()`` before which the refresh thread only measures.
        lock: Guards the measurements (see the module docstring).
    """

    __slots__ = (
        "cpu0",
        "ctx",
        "gpu_scope",
        "lock",
        "next_refresh",
        "parent",
        "perf0",
        "remote",
        "reset_hwm",
        "rss_scope",
        "snapshots",
        "span",
        "span_context",
        "token",
    )

    def __init__(self) -> None:
        """Create the record of a pending task."""
        self.reset_hwm: bool | None = None
        self.parent: TaskRecord | None = None
        self.span: trace.Span | None = None
        self.span_context: trace.SpanContext | None = None
        self.ctx: otel_context.Context | None = None
        self.token: object = None
        self.perf0 = 0.0
        self.cpu0 = 0.0
        self.rss_scope: Scope | None = None
        self.gpu_scope: Scope | None = None
        self.snapshots: list[tuple[Any, object]] = []
        self.remote = False
        self.next_refresh = 0.0
        self.lock = threading.RLock()


RELEASED: Final[dict[str, Any]] = {"_rt": None, "_data_attrs": None}
"""The private state of every finished task that let its own go: shared, and only read
(:func:`runtime` gives a task a fresh dict before anything is written)."""


def runtime(task: TaskRecord) -> Runtime:
    """Return ``task``'s runtime record, creating it (and its private state) when missing.

    Reads the private dict directly: pydantic's ``__getattr__`` for private attributes costs
    about a microsecond, and this runs several times per task.
    """
    private = task.__pydantic_private__
    if private is None or private is RELEASED:  # no state yet, or let go at finish
        private = {"_rt": None, "_data_attrs": None}
        object.__setattr__(task, "__pydantic_private__", private)
    rt = private.get("_rt")
    if rt is None:  # built by model_validate / model_construct: no __init__ ran
        rt = private["_rt"] = Runtime()
    return rt  # type: ignore[no-any-return]


def current_runtime(task: TaskRecord) -> Runtime | None:
    """Return ``task``'s runtime record if it has one (never creates it)."""
    private = task.__pydantic_private__
    return private.get("_rt") if private is not None else None


def release(task: TaskRecord) -> None:
    """Let a finished task's runtime record go (see :data:`RELEASED`)."""
    object.__setattr__(task, "__pydantic_private__", RELEASED)


def start_span(
    tracer: trace.Tracer,
    label: str,
    context: otel_context.Context | None,
    attributes: dict[str, Any],
    start_ns: int,
) -> trace.Span:
    """Start a task's span; a span processor raising gives an invalid span (one warning)."""
    try:
        return tracer.start_span(label, context=context, attributes=attributes, start_time=start_ns)
    except Exception as e:  # noqa: BLE001 - another span processor raised: measure anyway
        _warn("span-start", "tasktrace: starting the span of %r failed: %r", label, e)
        return trace.INVALID_SPAN


def open_measurements(rt: Runtime, *, reset: bool) -> None:
    """Take a starting task's measurements (last, so that tracing is outside its figures).

    Opens the RSS and CUDA high-water-mark scopes (resetting the marks when ``reset``),
    starts the registered meters, then reads ``perf_counter`` and this process's CPU seconds.
    """
    rt.rss_scope = rss_marks.open(reset=reset)
    rt.gpu_scope = cuda_marks.open_if_used(reset=reset)
    rt.snapshots = start_meters()
    rt.perf0 = time.perf_counter()
    rt.cpu0 = self_usage()[0]


def close_measurements(rt: Runtime) -> None:
    """Let a finished task's span, context and scopes go; leave its context where it may."""
    detach(rt.token, rt.ctx)
    rt.token = None
    rt.span = rt.ctx = None  # the context holds the span: let both go
    rt.snapshots = []
    rt.rss_scope = rt.gpu_scope = None


def start_meters() -> list[tuple[Any, object]]:
    """Start every registered meter for a task; return ``(meter, snapshot)`` pairs.

    A meter that raises is left out with one warning (a meter must never break the task).
    """
    snapshots = []
    for meter in active_meters():
        try:
            snapshots.append((meter, meter.start()))
        except Exception as e:  # noqa: BLE001, PERF203 - a meter must never break the task
            _warn(f"meter:{meter.name}", "tasktrace: meter %r failed: %r", meter.name, e)
    return snapshots


def measure(rt: Runtime, *, final: bool) -> dict[str, Any]:
    """Return a running task's measurements so far (or final ones), by field name.

    ``duration`` (``time.perf_counter``), ``cpu_time`` (``getrusage(RUSAGE_SELF)``),
    ``peak_memory`` and ``peak_gpu_memory`` (the high-water-mark scopes, closed when ``final``)
    and every registered meter's reading. A meter that raises gives nothing (one warning).
    """
    perf = time.perf_counter()
    cpu, maxrss = self_usage()
    elapsed = perf - rt.perf0
    values: dict[str, Any] = {"duration": elapsed, "cpu_time": cpu - rt.cpu0}
    if rt.rss_scope is not None:
        mark = maxrss if rss_marks.use_rusage else None
        values["peak_memory"] = rss_marks.peak(rt.rss_scope, mark, close=final)
    if rt.gpu_scope is not None:
        values["peak_gpu_memory"] = cuda_marks.peak(rt.gpu_scope, close=final)
    for meter, snapshot in rt.snapshots:
        try:
            values.update(meter.read(snapshot, elapsed, final=final))
        except Exception as e:  # noqa: BLE001, PERF203 - a meter must never break the task
            _warn(f"meter:{meter.name}", "tasktrace: meter %r failed: %r", meter.name, e)
    return values


def apply(task: TaskRecord, values: dict[str, Any]) -> None:
    """Write measured ``values`` into ``task``'s fields (extra data for unknown names)."""
    d = task.__dict__
    for key, value in values.items():
        if key in d:  # a declared field: meters give the right types, skip validation
            d[key] = value
        else:
            setattr(task, key, value)


def end_span(task: TaskRecord, span: trace.Span, exc: BaseException | None, end_ns: int) -> None:
    """Write the finish attributes and status on ``task``'s span and end it (never raises).

    The attributes and status come from the finished task's fields by the one mapping
    (:func:`~tasktrace.core.spans.finish_attributes`, :func:`~tasktrace.core.spans.span_status`:
    a failed task's ``error`` is the status description). Unless it finished, the exception
    that ended it is recorded as a span event. A span processor raising is warned about once.
    """
    d = task.__dict__
    status = d["status"]
    try:
        try:
            final_attrs = finish_attributes(task)
        except TypeError as e:  # extra data set after construction that cannot be encoded
            _warn(f"data:{e}", "tasktrace: %s; left out of the span", e)
            final_attrs = finish_attributes(task, data=False)
        span.set_attributes(final_attrs)
        if exc is not None and status is not TaskStatus.FINISHED:
            span.record_exception(exc, timestamp=end_ns)
        if status is TaskStatus.FINISHED or status is TaskStatus.FAILED:
            span.set_status(span_status(status, d["error"]))
        span.end(end_time=end_ns)
    except Exception as e:  # noqa: BLE001 - another span processor raised in on_end
        _warn("span-end", "tasktrace: ending the span of %r failed: %r", task.label, e)


def update_running_subtasks(task: TaskRecord) -> None:
    """Refresh the measurements of ``task``'s running descendants measured in this process."""
    with tree.lock:
        stack = list(task.subtasks)
    while stack:
        sub = stack.pop()
        rt = current_runtime(sub)
        if rt is not None and rt.rss_scope is not None:
            with rt.lock:
                if sub.status is TaskStatus.RUNNING and rt.rss_scope is not None:
                    apply(sub, measure(rt, final=False))
        with tree.lock:
            stack.extend(sub.subtasks)


def _measure_so_far(task: TaskRecord, rt: Runtime) -> None:
    if task.status is TaskStatus.RUNNING and rt.rss_scope is not None:
        apply(task, measure(rt, final=False))


def update_task(task: TaskRecord) -> None:
    """``Task.update``: measure the task (and its running subtasks, for its file) and write it."""
    rt = runtime(task)
    with rt.lock:
        has_file = tree.files.targets(task) is not None
        if has_file:
            # Subtasks first, then this task: a parent's figures so far are never below
            # its children's in the file.
            update_running_subtasks(task)  # the file shows their measurements so far too
        _measure_so_far(task, rt)
        if has_file:
            tree.files.write(task)


def refresh_task(task: TaskRecord) -> None:
    """``Task.monitor_refresh``: what the refresh thread runs for a task every interval.

    A refresh re-writes the whole tree, so its cost grows with the tree: after one that
    took ``c`` seconds, the next waits at least ``REFRESH_COST_FACTOR × c`` seconds, which
    keeps refreshes under 1/20 of the run's wall time however large the tree grows (and
    the run linear in the number of tasks).
    """
    rt = runtime(task)
    with rt.lock:
        started = time.monotonic()
        if started >= rt.next_refresh:
            update_task(task)
            rt.next_refresh = started + REFRESH_COST_FACTOR * (time.monotonic() - started)
        else:
            _measure_so_far(task, rt)  # cheap: the figures so far, without re-writing
        if task.status is TaskStatus.RUNNING and watch.active():
            watch.refreshed(task, get_tracer(), rt.span_context, root=rt.parent is None)
