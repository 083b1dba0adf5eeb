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

Task files are written from this tree (:mod:`tasktrace._files`). The processor is thread-safe
(one lock around the tree's structure) and never raises into user code.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import TYPE_CHECKING, Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import StatusCode

from tasktrace.core.attributes import PENDING_SPAN_ID, TASK_ID, attributes_to_fields
from tasktrace.core.forksafe import renew_after_fork
from tasktrace.core.ids import span_task_id
from tasktrace.core.settings import get_settings
from tasktrace.core.warn import WarnOnce

if TYPE_CHECKING:
    from tasktrace._task import Task

__all__ = ["TaskTreeProcessor", "tree"]

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)


class TaskTreeProcessor(SpanProcessor):
    """Builds the task tree from task and span start/end events (see the module docstring).

    Thread-safe. Every method swallows its own errors (logged once per kind) so that tracing
    never breaks the user's program; set ``raise_errors`` to re-raise them (the test suite does).
    """

    def __init__(self) -> None:
        """Create an empty tree."""
        self.lock = threading.RLock()
        renew_after_fork(self, "lock")
        """Guards the tree's structure; hold it to serialise a consistent snapshot."""
        self._nodes: dict[int, Task] = {}
        self._tasks: dict[uuid.UUID, Task] = {}
        self.raise_errors = False
        """Re-raise internal errors instead of logging them (for tests)."""

    # ----- the direct path for tasks -----------------------------------------------------------

    def task_started(self, task: Task, parent: Task | None, span_id: int) -> None:
        """Register a running task and attach it to ``parent`` (``None``: a root of the tree)."""
        with self.lock:
            if span_id:
                self._nodes[span_id] = task
            self._tasks[task.task_id] = task
            if parent is not None:
                parent._attach(task)  # the processor owns the tree's links

    def task_finished(self, task: Task, span_id: int) -> None:
        """Forget a finished task's running node (the task stays in its parent's subtasks)."""
        with self.lock:
            if span_id:
                self._nodes.pop(span_id, None)
            self._tasks.pop(task.task_id, None)

    def running_task(self, task_id: uuid.UUID) -> Task | None:
        """Return the running task with this id in this process, if any."""
        return self._tasks.get(task_id)

    def node_for_span(self, span_id: int) -> Task | None:
        """Return the running tree node (task or span) of a span id, if any."""
        return self._nodes.get(span_id)

    def running_tasks(self) -> list[Task]:
        """Return a snapshot of the tasks running in this process (any thread)."""
        with self.lock:
            return list(self._tasks.values())

    def forget_running(self) -> list[Task]:
        """After ``os.fork``, in the child: drop the parent's running nodes and return its tasks.

        The lock is replaced too: another thread of the parent may have held it at the fork.
        """
        self.lock = threading.RLock()
        renew_after_fork(self, "lock")
        tasks = list(self._tasks.values())
        self._tasks = {}
        self._nodes = {}
        return tasks

    # ----- the SpanProcessor interface, for spans that are not tasks ---------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Add a non-task span whose parent is a tree node as a subtask node (RUNNING)."""
        try:
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
            from tasktrace._task import Task, TaskStatus  # noqa: PLC0415 - import cycle

            ctx = span.get_span_context()
            node = Task.model_construct(
                task_id=span_task_id(ctx.trace_id, ctx.span_id),
                parent_id=parent.task_id,
                label=span.name,
                hostname=parent.hostname,
                machine=parent.machine,
                status=TaskStatus.RUNNING,
                start_time=(span.start_time or 0) / 1e9,
                trace_id=format(ctx.trace_id, "032x"),
                span_id=format(ctx.span_id, "016x"),
                foreign_span=True,
            )
            with self.lock:
                self._nodes[ctx.span_id] = node
                parent._attach(node)  # the processor owns the tree's links
        except Exception as e:  # noqa: BLE001 - the processor never raises into user code
            self._error("on_start", e)

    def on_end(self, span: ReadableSpan) -> None:
        """Complete the node of a non-task span from its timestamps, status and attributes."""
        try:
            ctx = span.get_span_context()
            if ctx is None or not self._nodes:
                return
            node = self._nodes.get(ctx.span_id)
            if node is None or not node.foreign_span:  # tasks finish through task_finished
                return
            with self.lock:
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
        if self.raise_errors:
            raise e
        _warn(where, "tasktrace: task-tree processor error in %s: %r", where, e)


def _complete_from_span(node: Task, span: ReadableSpan) -> None:
    from tasktrace._task import TaskStatus  # noqa: PLC0415 - import cycle

    fields: dict[str, Any] = attributes_to_fields(span.attributes or {})
    for key in ("task_id", "parent_id", "status"):
        fields.pop(key, None)
    if span.end_time is not None and span.start_time is not None:
        node.finish_time = span.end_time / 1e9
        node.duration = (span.end_time - span.start_time) / 1e9
    failed = span.status.status_code is StatusCode.ERROR
    node.status = TaskStatus.FAILED if failed else TaskStatus.FINISHED
    extra = node.__pydantic_extra__
    if extra is None:
        node.__pydantic_extra__ = extra = {}
    extra.update(fields)


tree = TaskTreeProcessor()
"""The process's task-tree processor (added to the tracer provider by :mod:`tasktrace._setup`)."""
