"""How a starting task finds its parent: the explicit one, else the current task or span.

Thread-safety: reads the caller's context and the tree's running registry (thread-safe).
"""

from __future__ import annotations

import logging
import threading
import weakref

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan

from tasktrace.core.context import SPAN_KEY, TASK_KEY, live_context
from tasktrace.core.record import TaskRecord
from tasktrace.core.status import RUNNING
from tasktrace.core.warn import WarnOnce, quoted
from tasktrace.task.runtime import Runtime, current_runtime
from tasktrace.tree.processor import tree

__all__ = ["note_process_root", "resolve_parent", "span_context_of", "warn_if_cut_off"]

_warn = WarnOnce(logging.getLogger(__name__))


def resolve_parent(
    task: TaskRecord, rt: Runtime, current: otel_context.Context
) -> tuple[TaskRecord | None, otel_context.Context | None]:
    """Return ``(parent tree node, context to start the span in)`` for a starting task.

    The explicit ``parent`` (a task object, or a running task's UUID), else the current task
    or span of ``current`` (the caller's current context): the span's parent is the current
    span (a user's span inside a task is a tree node too), skipping a task that finished
    elsewhere (see :func:`~tasktrace.core.context.live_context`).
    Sets ``rt.parent`` to the parent task object in this process, if any. A parent id of
    another process is kept (no node, no context: :mod:`tasktrace.task.processes` decides).
    """
    parent = rt.parent
    parent_id = task.__dict__["parent_id"]
    if parent is None and parent_id is not None:
        parent = tree.running_task(parent_id)  # parent given as a UUID
        rt.parent = parent
    if parent is not None:
        pctx = span_context_of(parent)
        if pctx is not None:
            return parent, trace.set_span_in_context(NonRecordingSpan(pctx))
        return parent, None
    if parent_id is not None:
        return None, None  # a parent elsewhere (another process): keep its id
    current_task: TaskRecord | None = current.get(TASK_KEY)  # type: ignore[assignment]
    span_parent = current
    if current_task is not None and current_task.status is not RUNNING:
        # a task that finished elsewhere (a generator closed by another thread): skip it
        current_task, span_parent = live_context(current)
    node: TaskRecord | None = None
    if current_task is not None:
        crt = current_runtime(current_task)
        # The usual: nothing opened inside the task, whose span is the current one.
        span = crt.span if crt is not None else None
        if span is not None and SPAN_KEY is not None and span is span_parent.get(SPAN_KEY):
            node = current_task
    if node is None:
        span_ctx = trace.get_current_span(span_parent).get_span_context()
        node = tree.node_for_span(span_ctx.span_id) if span_ctx.is_valid else None
        if node is None:
            node = current_task
    rt.parent = current_task if current_task is not None else node
    return node, span_parent


def span_context_of(task: TaskRecord) -> trace.SpanContext | None:
    """Return a task's span context, rebuilt from its hex ids once the runtime state is gone."""
    rt = current_runtime(task)
    if rt is not None and rt.span_context is not None:
        return rt.span_context
    d = task.__dict__
    if d.get("trace_id") and d.get("span_id"):
        return trace.SpanContext(
            int(d["trace_id"], 16),
            int(d["span_id"], 16),
            is_remote=False,
            trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
        )
    return None


def warn_if_cut_off(task: TaskRecord, current: otel_context.Context) -> None:
    """Note a top-level task; warn once per process when a thread's task is cut off.

    A top-level task of the main thread is kept (while it runs) as one the program's other
    threads may mean to work under (so is a pool worker's carried root: see
    :func:`note_process_root`). ``task`` starting as a top-level task (no parent found) in
    another thread, with no span current (a plain ``ThreadPoolExecutor``: a new thread starts
    from an empty context), while such a task runs, becomes a tree and a trace of its own,
    missing from that task's tree and file, which is rarely what was meant: one warning names both
    tasks and the fixes. Nothing is said under a current span (a web framework's request span:
    the task joins that trace) nor for threads' tasks when no task of the main thread runs
    (a Dask or Ray worker's threads, each with its own top-level tasks).

    Thread-safety: the registry of the main thread's running top-level tasks is written by
    the main thread only; other threads take a snapshot of it (one C call).
    """
    thread = threading.current_thread()
    if thread is threading.main_thread():
        _keep_main_root(task)
        return
    if not _main_roots or trace.get_current_span(current).get_span_context().is_valid:
        return
    running = [t for ref in list(_main_roots.values()) if (t := _running(ref)) is not None]
    if not running:
        return
    _warn(
        "cut-off-thread",
        "tasktrace: task %s started in thread %r with no parent while task %s runs in the "
        "main thread, so it is a separate tree and trace, not in %s's tree or file: a new thread "
        "starts from an empty context. To make it a subtask, use "
        "tasktrace.ContextThreadPoolExecutor or with_current_context(fn) for an executor, "
        "tasktrace.ContextThread for a thread, or pass parent=. (Said once per process.)",
        quoted(task.label),
        thread.name,
        quoted(running[0].label),
        quoted(running[0].label),
    )


def note_process_root(task: TaskRecord, prt: Runtime | None) -> None:
    """Note a starting task with a parent, whose runtime is ``prt``: kept if a root here.

    A task whose parent is another process's (``prt.remote``: a stand-in), started in the
    main thread, is kept, while it runs, like a top-level task
    (:func:`warn_if_cut_off`): a pool worker (joblib's loky and ``multiprocessing`` workers,
    a ``ProcessPoolExecutor``'s) runs its carried work there, and a task started meanwhile in
    one of the worker's threads with no parent (a plain thread pool, joblib's ``threading``
    backend named explicitly) is cut off from it, missing from the submitting process's tree
    and file: the same warning says so. Before, only tasks with no parent at all were kept,
    so nothing was said in a worker. Other threads: nothing to do.
    """
    if prt is not None and prt.remote and threading.current_thread() is threading.main_thread():
        _keep_main_root(task)


def _keep_main_root(task: TaskRecord) -> None:
    # Finished ones go (_running, inline): the registry stays as small as the nesting.
    for key in [
        k
        for k, ref in _main_roots.items()
        if (t := ref()) is None or t.__dict__["status"] is not RUNNING
    ]:
        del _main_roots[key]
    _main_roots[id(task)] = weakref.ref(task)  # never what keeps a finished tree alive


_main_roots: dict[int, weakref.ref[TaskRecord]] = {}
"""The main thread's top-level tasks that may still run, by ``id`` (see :func:`warn_if_cut_off`)."""


def _running(ref: weakref.ref[TaskRecord]) -> TaskRecord | None:
    task = ref()
    return task if task is not None and task.__dict__["status"] is RUNNING else None
