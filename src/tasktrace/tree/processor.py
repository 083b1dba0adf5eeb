"""The task-tree processor: one pydantic task tree per process, built from span events.

:class:`TaskTreeProcessor` is an OpenTelemetry :class:`~opentelemetry.sdk.trace.SpanProcessor`
added to whichever SDK tracer provider is in use. It keeps the running tree nodes keyed by span
id and attaches every child to its parent:

- **Tasks** reach it directly from the :class:`~tasktrace.Task` façade (:meth:`task_started`,
  :meth:`task_finished`), so that the tree is complete even when the sampler drops a span (a
  dropped span reaches no processor), when the provider is not an SDK provider, when another
  processor raises before ours, and whatever the span attribute limits are.
- **Other spans** (a user's ``tracer.start_as_current_span``, an instrumented library) arrive
  through :meth:`on_start` / :meth:`on_end`; one whose parent is a node of the tree becomes a
  subtask node (``foreign_span=True``), unless the ``include_spans`` setting is off.
- **Records of other processes** come from *record sources* (:meth:`register_record_source`;
  the spool of :mod:`tasktrace.tree.spool` is one), pulled before each file is written and
  when a task finishes.

Task files are written from this tree: the processor decides when (a task with a file starts,
is refreshed, finishes), its :attr:`~TaskTreeProcessor.files` writer where
(:mod:`tasktrace.tree.writer`). The processor is thread-safe (one lock around the tree's
structure) and never raises into user code.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any, Final

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from tasktrace.core.attributes import PENDING_SPAN_ID, TASK_ID
from tasktrace.core.forksafe import renew_after_fork
from tasktrace.core.ids import span_task_id
from tasktrace.core.record import TaskRecord, dump_json, new_node
from tasktrace.core.settings import get_settings
from tasktrace.core.spans import span_fields
from tasktrace.core.status import RUNNING, TaskStatus
from tasktrace.core.warn import WarnOnce, raise_errors, set_raise_errors
from tasktrace.tree.refresh import RefreshMonitor
from tasktrace.tree.writer import FileTargets, TaskFileWriter

__all__ = ["RecordSource", "TaskSpanStart", "TaskTreeProcessor", "tree"]

_warn = WarnOnce(logging.getLogger(__name__))
_FIELDS: Final = frozenset(TaskRecord.model_fields)


class TaskSpanStart(threading.local):
    """Per thread: whether the span now starting is a task's.

    A task's span starts without its identity attributes (they come at finish, see
    :mod:`tasktrace.core.spans`), so this flag is how :meth:`TaskTreeProcessor.on_start` tells
    it from a user's span inside the task: a task's start
    (:func:`tasktrace.task.lifecycle.start_task`) sets it around its ``tracer.start_span``
    call. Tasks join the tree through :meth:`TaskTreeProcessor.task_started`.
    """

    active = False
    """Set by the task's start around its ``tracer.start_span`` call (this thread's only)."""


RecordSource = Callable[[TaskRecord | None], None]
"""A source of records of other processes: called with the task that is finishing (or
``None`` before a file is written), it merges the records it has into the tree
(:meth:`TaskTreeProcessor.add_subtask`)."""


class TaskTreeProcessor(SpanProcessor):
    """Builds the task tree from task and span start/end events (see the module docstring).

    Thread-safe. Every method swallows its own errors (logged once per kind) so that tracing
    never breaks the user's program, unless :func:`tasktrace.core.warn.set_raise_errors` asked
    for them to be re-raised (the test suite does).
    """

    def __init__(self) -> None:
        """Create an empty tree."""
        self.lock = threading.RLock()
        """Guards the tree's structure; hold it to serialise a consistent snapshot."""
        renew_after_fork(self, "lock")
        self._nodes: dict[int, TaskRecord] = {}
        self._foreign: dict[int, TaskRecord] = {}  # the running nodes of spans not tasks'
        self._tasks: dict[int, TaskRecord] = {}  # running tasks by task_id.int (hashed in C)
        self._sources: tuple[RecordSource, ...] = ()
        self.task_span_start = TaskSpanStart()
        """Per thread: set while a task's span starts (see :class:`TaskSpanStart`)."""
        self.monitor = RefreshMonitor(lambda: get_settings().refresh_interval_s)
        """The refresh thread (running tasks with files, and watched tasks)."""
        self.files = TaskFileWriter(lambda: self.lock, self.pull_records, self.monitor)
        """Which tasks have files, and writing them (see :mod:`tasktrace.tree.writer`)."""

    @property
    def raise_errors(self) -> bool:
        """Whether internal errors are re-raised (:func:`tasktrace.core.warn.raise_errors`)."""
        return raise_errors()

    @raise_errors.setter
    def raise_errors(self, value: bool) -> None:
        set_raise_errors(value)

    # ----- the direct path for tasks -----------------------------------------------------------

    def task_started(
        self,
        task: TaskRecord,
        parent: TaskRecord | None,
        span_id: int,
        targets: FileTargets | None,
    ) -> None:
        """Register a running task, attach it to ``parent`` (``None``: a root), write its file.

        The task's fields are complete before it is attached (a snapshot shows it running, or
        not yet). The append is under the tree's lock, as every change to a subtasks list is
        (a list sorted meanwhile, by the spool, would drop it). ``targets``: the task's
        ``files.targets(task)``, read by the caller before the start (``None``: no file).
        """
        if span_id:
            self._nodes[span_id] = task
        self._tasks[task.__dict__["task_id"].int] = task
        if parent is not None:
            # acquire/release rather than `with`: its special-method lookups cost as much again
            lock = self.lock
            lock.acquire()
            try:
                parent.subtasks.append(task)
            finally:
                lock.release()
        if targets is not None:
            self.files.started(task)

    def update_running(self, task: TaskRecord, values: dict[str, Any]) -> None:
        """Write measurements so far into a running task's fields (under the tree lock).

        Nothing is written once the task has left ``running``: a refresh measured before the
        task finished never overwrites its final figures (see :meth:`finish_running`).
        """
        if not values:
            return
        with self.lock:
            if task.__dict__["status"] is RUNNING:
                _apply(task, values)

    def update_finished(self, task: TaskRecord, values: dict[str, Any]) -> None:
        """Write a finished task's late final measurements (its Prometheus energy), under the lock.

        See :mod:`tasktrace.task.late`: a snapshot shows the task without them, or with them.
        """
        if values:
            with self.lock:
                _apply(task, values)

    def finish_running(self, task: TaskRecord, span_id: int, fields: dict[str, Any]) -> bool:
        """Write a finishing task's final fields and drop it from the running registry.

        Under the tree lock, so that every snapshot shows the task either running or finished
        with its final figures, never a mix. ``fields`` holds its final measurements, its
        ``status`` and ``finish_time`` (and ``error``).

        Returns:
            ``False`` (nothing written) when the task is not running: another thread finished
            it first.
        """
        d = task.__dict__
        lock = self.lock  # acquire/release rather than `with` (see task_started)
        lock.acquire()
        try:
            if d["status"] is not RUNNING:
                return False
            if fields.keys() <= _FIELDS:  # _apply's usual case, inline: every task
                d.update(fields)
            else:
                _apply(task, fields)
        finally:
            lock.release()
        if span_id:
            self._nodes.pop(span_id, None)
        self._tasks.pop(d["task_id"].int, None)
        return True

    def task_finished(self, task: TaskRecord) -> FileTargets | None:
        """After :meth:`finish_running` and the span's end: merge records, write the file.

        Returns:
            The task's file targets (``None``: it has none).
        """
        if self._sources:
            self.pull_records(task)
        files = self.files
        if files.late:  # a subtask of a task with a file that finished before it
            files.late_finished(task)
        targets = files.targets(task)
        if targets is not None:
            files.finished(task)
        return targets

    def running_task(self, task_id: uuid.UUID) -> TaskRecord | None:
        """Return the running task with this id in this process, if any."""
        return self._tasks.get(task_id.int)

    def node_for_span(self, span_id: int) -> TaskRecord | None:
        """Return the running tree node (task or span) of a span id, if any."""
        return self._nodes.get(span_id)

    def running_tasks(self) -> list[TaskRecord]:
        """Return a snapshot of the tasks running in this process (any thread), oldest first."""
        return list(self._tasks.values())  # one C call: atomic under the GIL

    def forget_running(self) -> list[TaskRecord]:
        """After ``os.fork``, in the child: drop the parent's running nodes and return its tasks.

        The lock is replaced too: another thread of the parent may have held it at the fork.
        The tasks' files are the parent's: the child forgets them.
        """
        self.lock = threading.RLock()
        tasks = list(self._tasks.values())
        self._tasks = {}
        self._nodes = {}
        self._foreign = {}
        self.files.forget_all()
        return tasks

    def add_subtask(self, parent: TaskRecord, task: TaskRecord) -> None:
        """Add or replace (by ``task_id``) a subtask of ``parent``; set its ``parent_id``."""
        with self.lock:
            if task.parent_id is None:
                task.parent_id = parent.task_id
            for i, existing in enumerate(parent.subtasks):
                if existing.task_id == task.task_id:
                    parent.subtasks[i] = task
                    return
            parent.subtasks.append(task)

    def snapshot(self, task: TaskRecord) -> bytes | None:
        """Return ``task``'s tree as task-file JSON (one line), serialised under the tree lock.

        ``None`` (with one warning) when it cannot be serialised; see
        :func:`~tasktrace.core.record.dump_json`.
        """
        with self.lock:
            return dump_json(task)

    # ----- records of other processes ----------------------------------------------------------

    def register_record_source(self, pull: RecordSource) -> Callable[[], None]:
        """Pull ``pull`` before each file is written and when a task finishes; return undo."""
        with self.lock:
            self._sources = (*self._sources, pull)

        def unregister() -> None:
            with self.lock:
                self._sources = tuple(s for s in self._sources if s is not pull)

        return unregister

    def pull_records(self, finished: TaskRecord | None = None) -> None:
        """Merge the records every source has into the tree now.

        Args:
            finished: The task that is finishing, if any (a source may stop watching it).
        """
        for pull in self._sources:
            try:
                pull(finished)
            except Exception as e:  # noqa: BLE001, PERF203 - a source must not break the task
                self._error("record source", e)

    # ----- the SpanProcessor interface, for spans that are not tasks ---------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Add a non-task span whose parent is a tree node as a subtask node (RUNNING)."""
        try:
            if self.task_span_start.active:  # a task's span: the task joins through task_started
                return
            span_parent = span.parent
            if span_parent is None:  # cheapest test first: a root span is never a subtask
                return
            parent = self._nodes.get(span_parent.span_id)
            if parent is None:
                return
            attrs = span.attributes
            if attrs and (TASK_ID in attrs or PENDING_SPAN_ID in attrs):
                return  # tasks arrive through task_started; snapshots never join the tree
            if not get_settings().include_spans:
                return
            ctx = span.get_span_context()
            node = new_node(
                task_id=span_task_id(ctx.trace_id, ctx.span_id),
                parent_id=parent.task_id,
                label=span.name,
                hostname=parent.hostname,
                machine=parent.machine,
                status=TaskStatus.RUNNING,
                start_time=(span.start_time or 0) / 1_000_000_000,
                trace_id=format(ctx.trace_id, "032x"),
                span_id=format(ctx.span_id, "016x"),
                foreign_span=True,
            )
            with self.lock:
                self._nodes[ctx.span_id] = node
                self._foreign[ctx.span_id] = node
                parent.subtasks.append(node)
        except Exception as e:  # noqa: BLE001 - the processor never raises into user code
            self._error("on_start", e)

    def on_end(self, span: ReadableSpan) -> None:
        """Complete the node of a non-task span from its timestamps, status and attributes.

        A task's span ends after :meth:`finish_running` took its node out: nothing to do (and
        nothing is looked at while no such span is open, the usual case).
        """
        try:
            if not self._foreign:  # tasks finish through finish_running and task_finished
                return
            ctx = span.get_span_context()
            if ctx is None:
                return
            with self.lock:
                node = self._foreign.pop(ctx.span_id, None)
                if node is None:
                    return
                self._nodes.pop(ctx.span_id, None)
            _complete_from_span(node, span)
        except Exception as e:  # noqa: BLE001 - the processor never raises into user code
            self._error("on_end", e)

    def shutdown(self) -> None:
        """Nothing to release: the tree lives in the Task objects."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered: always ``True``."""
        del timeout_millis
        return True

    def _error(self, where: str, e: Exception) -> None:
        if raise_errors():
            raise e
        _warn(where, "tasktrace: task-tree processor error in %s: %r", where, e)


def _apply(task: TaskRecord, values: dict[str, Any]) -> None:
    """Write ``values`` into ``task``'s fields (extra data, checked, for unknown names)."""
    d = task.__dict__
    if values.keys() <= _FIELDS:  # the usual: declared fields only, in one C call
        d.update(values)
        return
    for key, value in values.items():
        if key in d:  # a declared field: measurements have the right types, skip validation
            d[key] = value
        else:
            setattr(task, key, value)


def _complete_from_span(node: TaskRecord, span: ReadableSpan) -> None:
    """Set a non-task node's fields from its ended span (``core.spans.span_fields``)."""
    fields: dict[str, Any] = span_fields(span)
    for key in ("task_id", "parent_id"):
        fields.pop(key, None)
    node.status = TaskStatus(fields.pop("status"))
    d = node.__dict__
    for key in [k for k in fields if k in d]:  # declared fields: values of the right types
        d[key] = fields.pop(key)
    extra = node.__pydantic_extra__
    if extra is None:
        node.__pydantic_extra__ = extra = {}
    extra.update(fields)


tree = TaskTreeProcessor()
"""The process's task-tree processor (added to tracer providers by
:mod:`tasktrace.export.provider`)."""
