"""The per-task runtime record: what a task needs while it runs, beside its model data.

A :class:`Runtime` is slotted and holds only what start and finish need (the span, the context
token, the starting measurements, the meter snapshots, the parent task object); everything a
file or an exporter wants is derived from the model's fields at finish. A finished task lets
its record go (the shared :data:`RELEASED` state), so a tree of 100,000 finished tasks holds
only the model data. Where a task's file goes is not here but in the tree's writer
(:mod:`tasktrace.tree.writer`).

The record lives in the task's pydantic private state; :func:`runtime` reads it for the modules
of the task layer (the façade, :mod:`tasktrace.task.lifecycle`, :mod:`tasktrace.task.processes`,
the live panel's reads of a running task). The measurement helpers read the process meters and
the registered meters; the refresh helpers are what the refresh thread and
:meth:`~tasktrace.Task.update` run.

Thread-safety, without a lock per task: a running task's measurements may be taken by the
refresh thread (or :meth:`~tasktrace.Task.update` in any thread) while another thread finishes
it. :func:`measure` only reads the record (each field once) and the meters, which are
thread-safe; its values are written into the task under the tree's lock, a refresh's only while
the task is still running
(:meth:`~tasktrace.tree.processor.TaskTreeProcessor.update_running`), while the finish writes
its final values and status under the same lock
(:meth:`~tasktrace.tree.processor.TaskTreeProcessor.finish_running`). So a refresh measured
before the finish and applied after it is dropped, every file snapshot (taken under that lock)
shows each task either running with figures so far or finished with its final figures, and of
two threads finishing one task only the first ends its span.
"""

from __future__ import annotations

import logging
import resource
import time
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace

from tasktrace.core.extra_data import restore_non_finite
from tasktrace.core.record import TaskRecord
from tasktrace.core.status import RUNNING
from tasktrace.core.warn import WarnOnce
from tasktrace.export.provider import get_tracer
from tasktrace.meters import active_meters
from tasktrace.meters.base import LateReading, read_final
from tasktrace.meters.gpu import cuda_marks
from tasktrace.meters.process import MAXRSS_UNIT, PEAK_BEFORE_KEY, Scope, rss_marks
from tasktrace.task import watch
from tasktrace.tree.processor import tree

REFRESH_COST_FACTOR = 20
"""A task file is refreshed at most once per this many times the last refresh's duration."""

__all__ = [
    "NO_SNAPSHOTS",
    "REFRESH_COST_FACTOR",
    "RELEASED",
    "Runtime",
    "cpu_split",
    "current_runtime",
    "measure",
    "refresh_task",
    "release",
    "running_cpu",
    "runtime",
    "start_meters",
    "update_running_subtasks",
    "update_task",
    "validated_private",
]

_warn = WarnOnce(logging.getLogger(__name__))
_getrusage: Final = resource.getrusage
_SELF: Final = resource.RUSAGE_SELF
_perf_counter: Final = time.perf_counter
NO_SNAPSHOTS: Final[tuple[tuple[Any, object], ...]] = ()
"""The meter snapshots of a task without registered meters (shared)."""


class Runtime:
    """Per-task state that is not part of the model (slots: cheap to create, no lock).

    Attributes:
        reset_hwm: The ``reset_hwm`` argument (``None``: reset when the task has no parent
            here, unless the ``reset_hwm`` setting is false).
        parent: The parent task object in this process, or ``None``.
        span: The running task's span (``None`` before start and after finish).
        span_context: Its span context (kept after finish; a stand-in's is its remote parent's).
        span_id: Its span id (``span_context.span_id``, a property: read once, at start; 0
            before start and for an invalid span).
        id_text: The task id as text (the span attribute), set at start for its subtasks'.
        parent_text: The parent's ``id_text`` when the parent is a task of this process.
        ctx: The context the task made current (holds the span; let go at finish).
        token: The token of that context's attachment.
        perf0: ``time.perf_counter()`` at start, in seconds.
        usage0: ``getrusage(RUSAGE_SELF)`` at start (CPU seconds, user and system).
        usage1: ``getrusage(RUSAGE_SELF)`` at the final measurement (``None`` before).
        rss_scope: The RSS high-water-mark scope (``None``: not measuring).
        gpu_scope: The CUDA high-water-mark scope, where torch uses CUDA.
        snapshots: ``(meter, snapshot)`` of each registered meter started for this task.
        remote: A stand-in for a task of another process (pickled, or inherited by ``fork``).
        next_refresh: ``time.monotonic()`` before which the refresh thread only measures.
        watched: Pending snapshot spans are emitted for this task (decided at start).
        data0: The extra data as the span started with it, encoded
            (:func:`~tasktrace.core.spans.start_data`), or ``None``.
        late: The late parts of the meters' final readings (Prometheus queries), set by the
            final :func:`measure`; run by the finish or off the task's path
            (:mod:`tasktrace.task.late`).
    """

    __slots__ = (
        "ctx",
        "data0",
        "gpu_scope",
        "id_text",
        "late",
        "next_refresh",
        "parent",
        "parent_text",
        "perf0",
        "remote",
        "reset_hwm",
        "rss_scope",
        "snapshots",
        "span",
        "span_context",
        "span_id",
        "token",
        "usage0",
        "usage1",
        "watched",
    )

    def __init__(self, parent: TaskRecord | None = None, reset_hwm: bool | None = None) -> None:
        """Create the record of a pending task."""
        self.parent = parent
        self.reset_hwm = reset_hwm
        self.span: trace.Span | None = None
        self.span_context: trace.SpanContext | None = None
        self.span_id = 0
        self.id_text: str | None = None
        self.parent_text: str | None = None
        self.ctx: otel_context.Context | None = None
        self.token: object = None
        self.perf0 = 0.0
        self.usage0: Any = None
        self.usage1: Any = None
        self.rss_scope: Scope | None = None
        self.gpu_scope: Scope | None = None
        self.snapshots: tuple[tuple[Any, object], ...] = NO_SNAPSHOTS
        self.remote = False
        self.next_refresh = 0.0
        self.watched = False
        self.late: tuple[LateReading, ...] = ()
        self.data0: dict[str, Any] | None = None


RELEASED: Final[dict[str, Any]] = {"_rt": None}
"""The private state of every finished task that let its own go: shared, and only read
(:func:`runtime` gives a task a fresh dict before anything is written)."""


def runtime(task: TaskRecord) -> Runtime:
    """Return ``task``'s runtime record, creating it (and its private state) when missing.

    Reads the private dict directly: pydantic's ``__getattr__`` for private attributes costs
    about a microsecond, and this runs several times per task.
    """
    private = task.__pydantic_private__
    if private is None or private is RELEASED:  # no state yet, or let go at finish
        private = {"_rt": None}
        object.__setattr__(task, "__pydantic_private__", private)
    rt = private.get("_rt")
    if rt is None:  # built by model_validate / model_construct: no __init__ ran
        rt = private["_rt"] = Runtime()
    return rt  # type: ignore[no-any-return]


def current_runtime(task: TaskRecord) -> Runtime | None:
    """Return ``task``'s runtime record if it has one (never creates it)."""
    private = task.__pydantic_private__
    return private.get("_rt") if private is not None else None


def validated_private(task: TaskRecord, context: object, /) -> None:
    """``Task.model_post_init``: a validated task's private state and non-finite extra data.

    For a task built by validation (a task file, ``model_validate``). ``{"_rt": None}``: what
    pydantic's generic ``init_private_attributes`` makes of ``_rt``'s default, without its
    per-attribute ``get_default`` calls (about 2 µs a task; reading a 100,000-task file called
    it for each). pydantic calls ``model_post_init`` after validating each task; a subclass
    with private attributes of its own gets pydantic's initialisation first (its metaclass
    wraps this), which leaves nothing here to do. Extra data's ``"NaN"``, ``"Infinity"`` and
    ``"-Infinity"`` (a task file's form of those floats) become floats again
    (:func:`~tasktrace.core.extra_data.restore_non_finite`).
    """
    del context
    if getattr(task, "__pydantic_private__", None) is None:
        object.__setattr__(task, "__pydantic_private__", {"_rt": None})
    if task.__pydantic_extra__:  # "NaN" and the infinities, as a task file writes them
        restore_non_finite(task.__pydantic_extra__)


def release(task: TaskRecord) -> None:
    """Let a finished task's runtime record go (see :data:`RELEASED`)."""
    object.__setattr__(task, "__pydantic_private__", RELEASED)


def start_meters(meters: tuple[Any, ...] | None = None) -> tuple[tuple[Any, object], ...]:
    """Start every registered meter (or ``meters``) for a task; return ``(meter, snapshot)`` pairs.

    A meter that raises is left out with one warning (a meter must never break the task).
    """
    snapshots = []
    for meter in active_meters() if meters is None else meters:
        try:
            snapshots.append((meter, meter.start()))
        except Exception as e:  # noqa: BLE001, PERF203 - a meter must never break the task
            _warn(f"meter:{meter.name}", "tasktrace: meter %r failed: %r", meter.name, e)
    return tuple(snapshots)


def measure(rt: Runtime, *, final: bool, end_time_s: float = 0.0) -> dict[str, Any]:
    """Return a running task's measurements so far (or final ones), by field name.

    ``duration`` (``time.perf_counter``), ``cpu_time`` (``getrusage(RUSAGE_SELF)``: user +
    system), ``peak_memory`` and ``peak_gpu_memory`` (the high-water-mark scopes, closed when
    ``final``) and every registered meter's reading; for a task whose start reset the RSS
    mark, the peak outside every task that the reset took, as the extra data
    :data:`~tasktrace.meters.process.PEAK_BEFORE_KEY`, where above the task's own. A meter
    that raises gives nothing (one warning). An empty dict when the task is not measuring (not
    started, or finished). The clocks are read first, so the meters' reads are outside the
    task's figures.

    When ``final``, each meter is read by :func:`~tasktrace.meters.base.read_final` as of
    ``end_time_s`` (the task's end, Unix seconds, taken by the caller before this call): what
    it gives now is in the result, its late part (a Prometheus query) goes to ``rt.late``,
    for the caller to run.

    Reads each field of ``rt`` once, so a finish closing the record meanwhile (another thread)
    never makes it fail; writes only ``rt.usage1`` and ``rt.late``, when ``final``.
    """
    perf0, usage0, rss_scope = rt.perf0, rt.usage0, rt.rss_scope
    gpu_scope, snapshots = rt.gpu_scope, rt.snapshots
    perf = _perf_counter()
    usage = _getrusage(_SELF)
    if usage0 is None or rss_scope is None:
        return {}
    elapsed = perf - perf0
    peak = rss_marks.peak(
        rss_scope, usage.ru_maxrss * MAXRSS_UNIT if rss_marks.use_rusage else None, close=final
    )
    values: dict[str, Any] = {
        "duration": elapsed,
        "cpu_time": (usage.ru_utime + usage.ru_stime) - (usage0.ru_utime + usage0.ru_stime),
        "peak_memory": peak,
    }
    before = rss_scope.before  # a peak outside every task its reset took (usually 0)
    if before and peak is not None and before > peak:
        values[PEAK_BEFORE_KEY] = before
    if gpu_scope is not None:
        values["peak_gpu_memory"] = cuda_marks.peak(gpu_scope, close=final)
    if not final:
        for meter, snapshot in snapshots:
            try:
                values.update(meter.read(snapshot, elapsed, final=False))
            except Exception as e:  # noqa: BLE001, PERF203 - a meter must never break the task
                _warn(f"meter:{meter.name}", "tasktrace: meter %r failed: %r", meter.name, e)
        return values
    rt.usage1 = usage
    if not snapshots:  # no registered meter (the usual): nothing late either
        return values
    late: list[LateReading] = []
    for meter, snapshot in snapshots:
        try:
            now, later = read_final(meter, snapshot, elapsed, end_time_s)
        except Exception as e:  # noqa: BLE001 - a meter must never break the task
            _warn(f"meter:{meter.name}", "tasktrace: meter %r failed: %r", meter.name, e)
            continue
        values.update(now)
        if later is not None:
            late.append(later)
    if late:
        rt.late = tuple(late)
    return values


def cpu_split(rt: Runtime) -> tuple[float, float]:
    """Return the finished task's ``(user, system)`` CPU seconds, from its two ``getrusage``."""
    u0, u1 = rt.usage0, rt.usage1
    if u0 is None or u1 is None:
        return 0.0, 0.0
    return u1.ru_utime - u0.ru_utime, u1.ru_stime - u0.ru_stime


def running_cpu() -> list[tuple[TaskRecord, float | None]]:
    """Return each task running in this process with its CPU seconds so far.

    One ``getrusage(RUSAGE_SELF)`` now, less each task's at start; for the running-task gauges
    of :mod:`tasktrace.export.metrics`, read when the metrics are collected.
    """
    usage = _getrusage(_SELF)
    now_s = usage.ru_utime + usage.ru_stime
    out: list[tuple[TaskRecord, float | None]] = []
    for task in tree.running_tasks():
        rt = current_runtime(task)
        usage0 = rt.usage0 if rt is not None else None
        cpu_s = None if usage0 is None else now_s - (usage0.ru_utime + usage0.ru_stime)
        out.append((task, cpu_s))
    return out


def _measure_so_far(task: TaskRecord, rt: Runtime) -> None:
    if task.status is RUNNING and rt.rss_scope is not None:
        tree.update_running(task, measure(rt, final=False))


def update_running_subtasks(task: TaskRecord) -> None:
    """Refresh the measurements of ``task``'s running descendants measured in this process."""
    with tree.lock:
        stack = list(task.subtasks)
    while stack:
        sub = stack.pop()
        rt = current_runtime(sub)
        if rt is not None:
            _measure_so_far(sub, rt)
        with tree.lock:
            stack.extend(sub.subtasks)


def update_task(task: TaskRecord) -> None:
    """``Task.update``: measure the task (and its running subtasks, for its file) and write it."""
    rt = runtime(task)
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
    the run linear in the number of tasks). A task that is no longer running is not refreshed
    (the refresh thread may call this just after the task finished and wrote its file).
    """
    if task.status is not RUNNING:
        return
    rt = runtime(task)
    started = time.monotonic()
    if started >= rt.next_refresh:
        update_task(task)
        rt.next_refresh = started + REFRESH_COST_FACTOR * (time.monotonic() - started)
    else:
        _measure_so_far(task, rt)  # cheap: the figures so far, without re-writing
    if rt.watched and task.status is RUNNING:
        watch.refreshed(task, get_tracer(), rt.span_context)
