"""A task's start and finish: the hot path of every ``with Task(...)``.

:func:`start_task` and :func:`finish_task` are :meth:`~tasktrace.Task.start` and
:meth:`~tasktrace.Task.finish`, and ``Task.__enter__`` and ``Task.__exit__`` themselves (so a
``with`` block runs no frame of the façade's). Each does what a task must, once, and nothing
that can wait:

- start: find the parent (the usual, nested in the running task whose span is current, is
  checked first; anything else goes through :mod:`tasktrace.task.parents`), start the span with
  no attributes but the extra data (:func:`~tasktrace.core.spans.start_data`: the identity
  comes at finish, so the SDK cleans one attribute set per task, not two), make it current,
  open the measurements, attach the task to the tree
  (:meth:`~tasktrace.tree.processor.TaskTreeProcessor.task_started`);
- finish: take the end time and the final measurements (the clocks, then the meters), run
  the meters' late readings (Prometheus queries) or, for a task nested in a running task of
  this process, hand them to :mod:`tasktrace.task.late` with the open span, so that they are
  in neither the task's figures nor its parent's; write the measurements, the status and
  ``finish_time`` into the task
  under the tree's lock (:meth:`~tasktrace.tree.processor.TaskTreeProcessor.finish_running`),
  write the span's attributes (identity, fields, data) and status by the one mapping and end
  it, leave the context, write the file if the task has one, hand the task's own figures to the
  task metrics when they are on, and let the runtime record go.

A top-level task looks for the tracer provider (and the meter provider of the task metrics,
created then where they are on); a nested one goes through its root's
(:func:`~tasktrace.export.provider.current_tracer`). Nothing is registered with the refresh
thread unless the task has a file or pending spans are on.

Thread-safety: see :mod:`tasktrace.task.runtime` (no lock per task; the tree's lock orders a
finish against refreshes, and of two threads finishing one task only the first ends its span).
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from types import TracebackType
from typing import Final, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from pydantic import BaseModel

from tasktrace.core.context import (
    OUTER_KEY,
    SPAN_KEY,
    TASK_KEY,
    attach,
    detach,
    get_current,
    task_context,
)
from tasktrace.core.ids import task_id_text
from tasktrace.core.record import LABEL_ONLY, TaskRecord
from tasktrace.core.settings import get_settings
from tasktrace.core.spans import STATUS_OK, finish_attributes, span_ids, span_status, start_data
from tasktrace.core.status import FINISHED, Outcome, TaskStatus
from tasktrace.core.warn import WarnOnce, quoted
from tasktrace.export.metrics_setup import task_metrics, top_level_metrics
from tasktrace.export.provider import current_tracer, flush_spans, get_tracer
from tasktrace.meters import active_meters
from tasktrace.meters.gpu import cuda_marks
from tasktrace.meters.process import rss_marks
from tasktrace.task import late as late_readings
from tasktrace.task import processes, watch
from tasktrace.task.closing import exit_outcome
from tasktrace.task.parents import note_process_root, resolve_parent, warn_if_cut_off
from tasktrace.task.runtime import (
    NO_SNAPSHOTS,
    RELEASED,
    Runtime,
    cpu_split,
    current_runtime,
    measure,
    runtime,
    start_meters,
)
from tasktrace.task.signals import install_sigterm_handler
from tasktrace.tree.processor import tree

__all__ = ["finish_task", "start_task"]

_warn = WarnOnce(logging.getLogger(__name__))
_Context: Final = otel_context.Context
_time_ns: Final = time.time_ns
_modules: Final = sys.modules
_perf_counter: Final = time.perf_counter
_getrusage: Final = resource.getrusage
_SELF: Final = resource.RUSAGE_SELF
_RUNNING: Final = TaskStatus.RUNNING
_PENDING: Final = TaskStatus.PENDING
_FINISHED: Final = TaskStatus.FINISHED
_FAILED: Final = TaskStatus.FAILED
_TaskT = TypeVar("_TaskT", bound=TaskRecord)
_span_start: Final = tree.task_span_start
# BaseModel's slot descriptor of the private state, set directly (as runtime.release does).
_set_private: Final = vars(BaseModel)["__pydantic_private__"].__set__


def start_task(task: _TaskT) -> _TaskT:  # noqa: PLR0912, PLR0915 - the hot path, in one frame
    """``Task.start`` and ``Task.__enter__`` (this function is it): start and return ``task``.

    Starts its span, makes it current, takes the starting measurements.

    Raises:
        RuntimeError: The task was already started.
        FileNotFoundError: The task file's folder does not exist (before any work runs).
        FileExistsError: The task file exists and is not tasktrace output, before any work runs.
    """
    private = task.__pydantic_private__
    rt = private.get("_rt") if private is not None else None
    if rt is None:  # built by model_validate / model_construct, or let go at a finish
        rt = runtime(task)
    d = task.__dict__  # plain writes below: these fields are ours, validation is not needed
    if d["status"] is not _PENDING:
        raise RuntimeError(f"task {quoted(task.label)} was already started ({task.status.value})")
    files = tree.files
    targets = files.targets(task)
    if targets is not None:  # a task with a file: its folder, and a user's file, first
        files.check(task)
    current = get_current()
    # The usual: no explicit parent, nested in the running task of this process whose span is
    # the current span. Anything else (an explicit parent, a user's span on top, a parent in
    # another process or none) goes through _find_parent.
    parent: TaskRecord | None = (
        current.get(TASK_KEY)  # type: ignore[assignment]
        if rt.parent is None and d["parent_id"] is None
        else None
    )
    pprivate = parent.__pydantic_private__ if parent is not None else None
    prt = pprivate.get("_rt") if pprivate is not None else None
    if (
        prt is not None
        and not prt.remote  # a stand-in (fork, pool worker): see processes
        and prt.span is not None
        and prt.span is current.get(SPAN_KEY)  # type: ignore[arg-type]  # None: never equal
        and parent.__dict__["status"] is _RUNNING  # type: ignore[union-attr]
    ):
        rt.parent = parent
        parent_ctx: otel_context.Context | None = current
        reset = rt.reset_hwm is True  # the seed's rule: a task with a parent here keeps the mark
        tracer = current_tracer()  # a nested task goes through its root's provider
        outer: otel_context.Context | None = current  # the context to leave to at finish
        # The SIGTERM handler: the root of this task's tree in this process already tried to
        # install it (only the main thread can).
    else:
        parent, parent_ctx, prt, reset = _find_parent(task, rt, current)
        # A top-level task looks for the providers (set-up kept out of its times): the tracer
        # provider, and the meter provider where metrics are on, so that the running-task
        # gauges report it while it runs (not only from the first finish on). The meters are
        # built below, before the start time, for the same reason.
        if parent is None:
            tracer = get_tracer()
            top_level_metrics()  # a meter provider installed since is found
            rss_marks.prepare()  # its first-use check reads /proc: set-up too
            warn_if_cut_off(task, current)  # a plain thread pool's task, outside the tree
        else:
            tracer = current_tracer()
            note_process_root(task, prt)  # a parent elsewhere: a pool worker's carried root
        outer = None  # task_context finds it
        install_sigterm_handler()
        targets = files.targets(task)  # a subprocess's root has a spool record now
    if parent is not None:
        d["parent_id"] = parent.__dict__["task_id"]
    rt.id_text = task_id_text(d["task_id"])  # the span attribute, and its subtasks' parent id
    rt.parent_text = prt.id_text if prt is not None else None
    # No identity attributes at start (they come at finish, with the measurements: see
    # core.spans); only extra data, which a sampler may want.
    attrs = None
    if task.__pydantic_extra__:  # kept encoded: unchanged at finish, it is not written twice
        rt.data0, attrs = start_data(task)
    # The meters first: the first task after they are (re)built builds them (RAPL and NVML
    # checks, milliseconds), set-up that is no more the task's than the tracing's.
    meters = active_meters()
    start_ns = _time_ns()
    # The flag tells the tree's on_start that this span is a task's (see TaskSpanStart).
    flag = _span_start
    flag.active = True
    try:
        span = tracer.start_span(
            d["label"], context=parent_ctx, attributes=attrs, start_time=start_ns
        )
    except Exception as e:  # noqa: BLE001 - another span processor raised: measure anyway
        _warn("span-start", "tasktrace: starting the span of %s failed: %r", quoted(d["label"]), e)
        span = trace.INVALID_SPAN
    finally:
        flag.active = False
    sctx = span.get_span_context()
    rt.span = span
    rt.span_context = sctx
    trace_id, span_id = span_ids(sctx)
    rt.span_id = span_id
    if span_id:  # a valid span (an invalid one has span id 0)
        # The trace id as 32 hex digits: the parent's own string in the same trace (one string
        # for a whole tree, not 81 bytes a task).
        text = parent.__dict__["trace_id"] if prt is not None and parent is not None else None
        psc = prt.span_context if text is not None else None  # type: ignore[union-attr]
        if psc is None or span_ids(psc)[0] != trace_id:
            text = "%032x" % trace_id  # noqa: UP031 - a quarter of format()'s cost
        d["trace_id"] = text
        d["span_id"] = "%016x" % span_id  # noqa: UP031 - a quarter of format()'s cost
    ctx = rt.ctx = (
        task_context(task, span, current)
        if outer is None
        # The usual start: the current task is the running parent, so no stale context to skip
        # (task_context's one copy of the current context, with the three keys).
        else _Context({**current, SPAN_KEY: span, TASK_KEY: task, OUTER_KEY: outer})  # type: ignore[dict-item,misc]
    )
    rt.token = attach(ctx)
    d["start_time"] = start_ns / 1e9
    d["status"] = _RUNNING
    # The measurements: the high-water-mark scopes and the meters, then the clocks last, so
    # that tracing is outside the task's figures (perf_counter, getrusage(RUSAGE_SELF)).
    rt.rss_scope = rss_marks.open(reset=reset)
    if "torch" in _modules:  # a CUDA scope only where torch may use CUDA
        rt.gpu_scope = cuda_marks.open_if_used(reset=reset)
    if meters:
        rt.snapshots = start_meters(meters)
    rt.perf0 = _perf_counter()
    rt.usage0 = _getrusage(_SELF)
    tree.task_started(task, parent, span_id, targets)  # writes the file, if the task has one
    if get_settings().pending_spans:  # pending snapshot spans: off by default
        rt.watched = True
        watch.started(task, tracer, sctx)
        tree.monitor.add(id(task), task.monitor_refresh)  # type: ignore[attr-defined]
    return task


def _find_parent(
    task: TaskRecord, rt: Runtime, current: otel_context.Context
) -> tuple[TaskRecord | None, otel_context.Context | None, Runtime | None, bool]:
    """Return a starting task's parent node, span context, parent's runtime and reset rule.

    For every start but the usual one (see :func:`start_task`): an explicit parent, a user's
    span on top of the current task, a parent in another process (a pool worker's stand-in,
    the environment of a subprocess) or none.
    """
    parent, parent_ctx = resolve_parent(task, rt, current)
    prt = current_runtime(parent) if parent is not None else None
    remote = prt is not None and prt.remote
    if parent is None or remote:  # the parent may be elsewhere
        parent_ctx = processes.join_parent_process(task, parent, parent_ctx)
    # The seed's rule: reset the high-water mark when the task has no parent, here or where
    # its parent is another process's (a pool worker's, a subprocess's): there the mark is
    # this process's own, and without a reset it would be the worker's lifetime peak. The
    # reset_hwm setting turns that rule off; a task's own reset_hwm argument wins.
    reset = rt.reset_hwm
    if reset is None:
        reset = (parent is None or remote) and get_settings().reset_hwm
    return parent, parent_ctx, prt, reset


def finish_task(  # noqa: PLR0912, PLR0915 - the hot path, in one frame
    task: TaskRecord,
    exc_type: type[BaseException] | None = None,
    exc: BaseException | None = None,
    traceback: TracebackType | None = None,
    outcome: Outcome | None = None,
) -> None:
    """``Task.__exit__`` (this function is it) and ``Task.finish``: measure, write, end, save.

    Measures the task, writes its measurements, status and ``finish_time`` into it and its span,
    ends the span, leaves its context and writes its file. Finishing a task that is not running
    logs a warning and does nothing.

    Args:
        task: The running task.
        exc_type: The type of the exception that ended the task's block (unused: ``exc``).
        exc: That exception, or ``None``; recorded as a span event unless the task finished.
        traceback: Its traceback (unused).
        outcome: The task's outcome (``Task.finish``); ``None``: the one ``exc`` calls for
            (:func:`~tasktrace.task.closing.exit_outcome`).
    """
    del exc_type, traceback
    private = task.__pydantic_private__
    rt = private.get("_rt") if private is not None else None
    if rt is None:  # never started here (built from a file, or finished already)
        _warn(f"finish:{id(task)}", "tasktrace: task %s is not running", quoted(task.label))
        return
    if rt.remote:  # another process's task (inherited by fork): only leave its context
        _close(rt)
        return
    span = rt.span
    d = task.__dict__
    if d["status"] is not _RUNNING or span is None:
        _warn(f"finish:{id(task)}", "tasktrace: task %s is not running", quoted(task.label))
        return
    if outcome is None:
        outcome = FINISHED if exc is None else exit_outcome(exc)
    # The end first, then the clocks (in measure), then the meters: no meter's read (a
    # Prometheus query) is inside the task's finish_time, duration or span.
    end_ns = _time_ns()
    end_s = end_ns / 1e9
    final = measure(rt, final=True, end_time_s=end_s)
    late = rt.late
    deferred = False
    if late:  # Prometheus queries: off the task's path where a running parent would wait
        rt.late = ()
        deferred = _nested_in_running(rt)
        if not deferred:  # the answers its subtasks wait for first, then its own
            late_readings.wait(late_readings.stall_s())
            final.update(late_readings.run_late(late))
    final["finish_time"] = end_s
    final["status"] = status = outcome.status
    if outcome.error is not None and d["error"] is None:
        final["error"] = outcome.error
    if outcome.exit_code is not None:
        final["exit_code"] = outcome.exit_code  # as `tasktrace run` records a command's
    if not tree.finish_running(task, rt.span_id, final):
        _warn(f"finish:{id(task)}", "tasktrace: task %s is not running", quoted(task.label))
        return  # finished meanwhile by another thread, which ends the span
    try:
        # The span, by the one mapping (core.spans: identity and the fields; a failed task's
        # error is the status description); unless the task finished, the exception that
        # ended it is a span event. Another span processor raising is warned about once.
        # The rarely set fields (energy, GPU, error, children's figures) are looked at only
        # where one may be set: a task built from more than its label or assigned to (its
        # fields set is no longer the shared LABEL_ONLY), one measured by meters or a CUDA
        # scope, or one with an error. Nothing else writes them.
        # A deferred task's attributes and end come from the late thread, with the answers.
        if not deferred:
            rare = (
                task.__pydantic_fields_set__ is not LABEL_ONLY
                or rt.snapshots is not NO_SNAPSHOTS  # (rare=True is never wrong)
                or rt.gpu_scope is not None
                or d["error"] is not None
            )
            try:
                attrs = finish_attributes(
                    task,
                    task_id=rt.id_text,
                    parent_id=rt.parent_text,
                    rare=rare,
                    data_at_start=rt.data0,
                )
            except TypeError as e:  # extra data set after construction that cannot be encoded
                _warn(f"data:{e}", "tasktrace: %s; left out of the span", e)
                attrs = finish_attributes(
                    task, data=False, task_id=rt.id_text, parent_id=rt.parent_text, rare=rare
                )
            span.set_attributes(attrs)
        if status is _FINISHED:
            span.set_status(STATUS_OK)
        else:
            if exc is not None:
                span.record_exception(exc, timestamp=end_ns)
            if status is _FAILED:
                span.set_status(span_status(status, d["error"]))
        if not deferred:
            span.end(end_time=end_ns)  # the tree took the task out of its nodes already
    except Exception as e:  # noqa: BLE001 - another span processor raised in on_end
        _warn("span-end", "tasktrace: ending the span of %s failed: %r", quoted(task.label), e)
    finally:
        # After the span ended: leave the task's context (where it may), write its file, let
        # its state go (the context holds the span).
        detach(rt.token, rt.ctx)
        if deferred:
            owner = late_readings.file_owner(rt)
            job = late_readings.LateJob(
                task, span, end_ns, late, rt.id_text, rt.parent_text, cpu_split(rt), owner
            )
        targets = tree.task_finished(task)  # records of other processes merged, file written
        if targets is not None:  # the task keeps its record (its file's): empty it
            rt.token = rt.span = rt.ctx = rt.rss_scope = rt.gpu_scope = rt.data0 = None
            rt.snapshots = NO_SNAPSHOTS
            if targets.spool_record is not None:
                flush_spans()  # a subprocess's root: the child may end by os._exit
        else:
            # Nothing left to do for a finished task: drop its runtime state, so that a tree
            # of 100,000 finished tasks holds only the model data (nothing else holds it).
            _set_private(task, RELEASED)  # runtime.release, inline
        if rt.watched:
            tree.monitor.remove(id(task))
        if deferred:
            late_readings.defer(job)  # the task metrics get its figures with the answers
        else:
            recorder = task_metrics()
            if recorder is not None:
                recorder.finished(task, *cpu_split(rt))


def _nested_in_running(rt: Runtime) -> bool:
    """Whether the finishing task's parent is a running task of this process (not a stand-in).

    Then its late readings go off its path (:mod:`tasktrace.task.late`): run here, they would
    be inside the parent's duration and energy window.
    """
    parent = rt.parent
    if parent is None:
        return False
    prt = current_runtime(parent)
    return prt is not None and not prt.remote and parent.__dict__["status"] is _RUNNING


def _close(rt: Runtime) -> None:
    """Let a stand-in's context go, where it may (see :func:`~tasktrace.core.context.detach`)."""
    detach(rt.token, rt.ctx)
    rt.token = rt.span = rt.ctx = None
