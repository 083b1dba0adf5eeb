"""Tasks across processes: the environment carrier, stand-ins for pickled tasks, fork safety.

A task in a child process joins its parent's tree (``subprocess=True``) and its parent's trace.
What the child needs travels one of two ways:

- **In the environment** (``subprocess.run``, ``tasktrace run``): :func:`child_environment`
  returns a *copy* of the environment with the W3C trace context as ``TRACEPARENT`` /
  ``TRACESTATE`` (OpenTelemetry's environment-variable carrier, written by the SDK's own
  :class:`~opentelemetry.trace.propagation.tracecontext.TraceContextTextMapPropagator`), the
  parent task's id as :data:`PARENT_TASK_ENV` and the spool folder as
  :data:`~tasktrace.tree.spool.SPOOL_ENV`.
- **With a pickled task** (``multiprocessing``, ``ProcessPoolExecutor``): a *running* task
  pickles (``Task.__reduce__``, :func:`reduce_task`) to a stand-in that carries the same trace
  context and spool folder; ``Task("work", parent=stand_in)`` in the child is a subprocess task.
  With the ``fork`` start method the running tasks the child inherits become such stand-ins.

A task whose parent is in another process (a *subprocess root*, :func:`join_parent_process`)
writes its record to the spool (a target of the tree's writer; :mod:`tasktrace.tree.spool`
merges it into the parent's tree) and flushes the tracer provider when it finishes, so its
spans are exported even when the child ends through ``os._exit`` (as forked
``multiprocessing`` workers do).

**Fork safety**: after ``os.fork`` the child forgets the parent's running tasks
(:meth:`~tasktrace.tree.processor.TaskTreeProcessor.forget_running`), never writes their task
files nor ends their spans; they stay usable as parents of subprocess tasks.

Thread-safety: all functions may be called from any thread.
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tasktrace.core.context import live_context
from tasktrace.core.record import TaskRecord, new_node
from tasktrace.core.status import RUNNING, TaskStatus
from tasktrace.core.warn import WarnOnce
from tasktrace.task.runtime import Runtime, current_runtime, runtime
from tasktrace.tree import spool
from tasktrace.tree.processor import tree
from tasktrace.tree.writer import RecordSink

__all__ = [
    "PARENT_TASK_ENV",
    "child_environment",
    "join_parent_process",
    "reduce_task",
    "remote_parent",
    "remote_task",
]

_warn = WarnOnce(logging.getLogger(__name__))
_propagator = TraceContextTextMapPropagator()

PARENT_TASK_ENV: Final = "TASKTRACE_PARENT_TASK_ID"
"""Environment variable holding the UUID of the parent task of a child process's tasks."""


# ----- handing the context to a child ----------------------------------------------------------


def child_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """Return a copy of ``base`` (default ``os.environ``) that lets a child process join.

    Adds the current trace context as ``TRACEPARENT`` / ``TRACESTATE`` (OpenTelemetry's
    environment-variable carrier) and, when a task is active, its id (:data:`PARENT_TASK_ENV`)
    and the spool folder (``TASKTRACE_SPOOL``), so tasks of a Python program using tasktrace
    become subprocess subtasks of the current task. ``os.environ`` is not modified.

    Example::

        subprocess.run([sys.executable, "eval.py"], env=child_environment(), check=True)

    Raises:
        OSError: The spool folder cannot be created.

    """
    env = dict(os.environ if base is None else base)
    for key in ("TRACEPARENT", "TRACESTATE", PARENT_TASK_ENV):
        env.pop(key, None)
    carrier: dict[str, str] = {}
    task, ctx = live_context(otel_context.get_current())
    _propagator.inject(carrier, context=ctx)
    for key, value in carrier.items():
        env[key.upper()] = value
    if task is not None:
        env[spool.SPOOL_ENV] = str(spool.export(task))
        env[PARENT_TASK_ENV] = str(task.task_id)
    return env


def reduce_task(task: TaskRecord) -> tuple[Any, tuple[Any, ...]]:
    """``Task.__reduce__``: a running task pickles to a stand-in that children can use as parent.

    A task that is not running pickles as its data (subtasks included). A running one pickles
    without its subtasks, with its span's ``traceparent`` / ``tracestate`` and the spool folder.
    """
    rt = current_runtime(task)
    sctx = rt.span_context if rt is not None else None
    if task.status is not TaskStatus.RUNNING or sctx is None or not sctx.is_valid:
        return (type(task).model_validate, (task.model_dump(),))
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=trace.set_span_in_context(trace.NonRecordingSpan(sctx)))
    folder = str(spool.export(task))
    data = task.model_dump(exclude={"subtasks"})
    return (remote_task, (type(task), data, carrier, folder))


def remote_task(
    cls: type[TaskRecord], data: dict[str, Any], carrier: dict[str, str], folder: str
) -> TaskRecord:
    """Rebuild a pickled running task as a stand-in for its parent in another process."""
    task = cls.model_validate(data)
    rt = runtime(task)
    rt.remote = True
    rt.id_text = str(task.task_id)  # its subtasks' parent id attribute, once
    sctx = trace.get_current_span(_propagator.extract(carrier)).get_span_context()
    rt.span_context = sctx if sctx.is_valid else None
    spool.set_spool_folder(folder)
    return task


# ----- the child side --------------------------------------------------------------------------


_ENV_NAMES: Final = ("TRACEPARENT", "TRACESTATE", PARENT_TASK_ENV, spool.SPOOL_ENV)
_env_values: tuple[str | None, ...] | None = None


def _environment() -> tuple[str | None, ...]:
    """``TRACEPARENT``, ``TRACESTATE``, the parent task id and the spool from the environment.

    Read once per process (the environment a process was started with is what carries its
    parent): every top-level task start needs them, and ``os.environ`` lookups cost about a
    microsecond each.
    """
    global _env_values  # noqa: PLW0603 - a per-process cache
    values = _env_values
    if values is None:
        values = _env_values = tuple(os.environ.get(name) for name in _ENV_NAMES)
    return values


def join_parent_process(
    task: TaskRecord,
    parent: TaskRecord | None,
    parent_ctx: otel_context.Context | None,
) -> otel_context.Context | None:
    """At start: make ``task`` a subprocess root when its parent is in another process.

    The parent is another process's when ``parent`` is a stand-in (unpickled, inherited
    through ``fork``, or a remote scope's: :func:`remote_parent`), or when there is no parent
    task, no span in ``parent_ctx`` (``None``: the current context) and the environment carries
    :data:`PARENT_TASK_ENV` (the task's parent) with ``TASKTRACE_SPOOL`` (where its record
    goes) or ``TRACEPARENT`` (the span's parent). With no spool in the environment the task is
    still a subprocess subtask of that parent, but its record travels only as its span (the
    collector route of :doc:`/clusters`: ``tasktrace show`` rebuilds the tree from the spans).

    Returns:
        The context to start the span in (``parent_ctx``, or the one from the environment).

    """
    if parent is not None:
        prt = current_runtime(parent)
        if prt is not None and prt.remote:
            _join_stand_in(task, parent)
        return parent_ctx
    if task.parent_id is not None:
        return parent_ctx
    if trace.get_current_span(parent_ctx).get_span_context().is_valid:
        return parent_ctx
    traceparent, state, parent_id, folder = _environment()
    ctx = None
    if traceparent:
        carrier = {"traceparent": traceparent}
        if state:
            carrier["tracestate"] = state
        ctx = _propagator.extract(carrier)
    if parent_id and (folder or ctx is not None):
        try:
            task.parent_id = uuid.UUID(parent_id)
        except ValueError:
            _warn("parent-env", "tasktrace: invalid %s=%r; ignored", PARENT_TASK_ENV, parent_id)
        else:
            if folder:
                _make_root(task)
            else:  # no spool (another node, a Slurm array): the record travels only as spans
                task.subprocess = True
    return ctx if ctx is not None else parent_ctx


def _join_stand_in(task: TaskRecord, parent: TaskRecord) -> None:
    targets = tree.files.targets(parent)
    sink = targets.sink if targets is not None else None
    if sink is None:
        _make_root(task)
    else:  # a remote scope's root: handed to the scope as it joins, never to a spool
        task.__dict__["subprocess"] = True  # a declared bool field: no validation needed
        sink(task)


def remote_parent(
    task_id: uuid.UUID,
    span_context: trace.SpanContext | None,
    sink: RecordSink | None = None,
) -> TaskRecord:
    """Return a stand-in for the task ``task_id`` of another process (a remote scope's parent).

    A task started with the stand-in as its parent (put in a context as the current task) is
    a subprocess subtask of ``task_id``, its span a child of ``span_context``; it is handed to
    ``sink`` as it joins (at its start; the stand-in's sink is kept by
    :meth:`~tasktrace.tree.writer.TaskFileWriter.set_sink`), never written to the spool.
    Without a sink the record goes to the spool, as for an
    unpickled parent.
    """
    stand_in = new_node(task_id=task_id, label="(remote parent)", status=RUNNING)
    rt = runtime(stand_in)
    rt.remote = True
    rt.id_text = str(task_id)  # its subtasks' parent id attribute, once (not once a subtask)
    rt.span_context = span_context
    if sink is not None:
        tree.files.set_sink(stand_in, sink)  # the sink of the roots started under it
    return stand_in


def is_subprocess_root(task: TaskRecord) -> bool:
    """Whether ``task`` reports to a parent in another process (its record is in the spool)."""
    targets = tree.files.targets(task)
    return targets is not None and targets.spool_record is not None


def _make_root(task: TaskRecord) -> None:
    task.subprocess = True
    try:
        tree.files.set_spool_record(task, spool.record_path(task))
    except OSError as e:
        _warn("spool", "tasktrace: cannot create the task spool (%s); subprocess task lost", e)


# ----- fork safety -----------------------------------------------------------------------------


def _after_fork_in_child() -> None:
    for task in tree.forget_running():
        rt: Runtime = runtime(task)
        rt.remote = True


os.register_at_fork(after_in_child=_after_fork_in_child)
