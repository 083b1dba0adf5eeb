"""The Task façade: LensKit's ``Task`` API, where each task is an OpenTelemetry span.

A :class:`Task` is a pydantic model (the seed's fields, loadable from LensKit task files) and,
while it runs, an OpenTelemetry span: :meth:`Task.start` starts the span as a child of the
explicit ``parent``, else of the current task or span, and makes it current; :meth:`Task.finish`
reads the meters, writes the measurements as span attributes, sets the span status and ends it.

The façade drives the layers below it: it gets the tracer (:mod:`tasktrace.export.provider`),
reads the meters (:mod:`tasktrace.task.runtime`), writes the span by the one task ⇄ span mapping
(:mod:`tasktrace.core.spans`) and tells the tree processor (:mod:`tasktrace.tree.processor`)
that a task started and finished; the processor writes task files from the tree.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import context as otel_context
from pydantic import BaseModel, PrivateAttr, ValidationError

from tasktrace.core import attributes as attr
from tasktrace.core.context import TASK_KEY, live_context
from tasktrace.core.ids import new_task_id
from tasktrace.core.problems import invalid_task_error, path_argument
from tasktrace.core.record import (
    FIELD_DEFAULTS,
    LABEL_ONLY,
    NO_EXTRA,
    TaskRecord,
    bind_task_class,
    own_containers,
)
from tasktrace.core.settings import get_settings
from tasktrace.core.status import RUNNING, Outcome, TaskStatus
from tasktrace.core.views import tree_html
from tasktrace.core.warn import WarnOnce, quoted
from tasktrace.export import metrics
from tasktrace.task import processes
from tasktrace.task.assignment import assigned_value
from tasktrace.task.lifecycle import finish_task, start_task
from tasktrace.task.runtime import (
    Runtime,
    current_runtime,
    measure,
    refresh_task,
    running_cpu,
    update_task,
    validated_private,
)
from tasktrace.tree.processor import tree

__all__ = ["Task", "TaskStatus"]

_warn = WarnOnce(logging.getLogger(__name__))
_FINAL_STATUSES: Final = {
    key: status
    for status in (TaskStatus.FINISHED, TaskStatus.FAILED, TaskStatus.CANCELLED)
    for key in (status, status.value)
}  # what Task.finish accepts (a str Enum: the member and its value hash alike)
_copy_defaults: Final = FIELD_DEFAULTS.copy
# BaseModel's slot descriptors, set directly: object.__setattr__ looks each up first.
_set_dict: Final = vars(BaseModel)["__dict__"].__set__
_set_fields_set: Final = vars(BaseModel)["__pydantic_fields_set__"].__set__
_set_extra: Final = vars(BaseModel)["__pydantic_extra__"].__set__
_set_private: Final = vars(BaseModel)["__pydantic_private__"].__set__

# Users subclass Task and build it as a Task: ``MyTask("x")``. Type checkers give a class made
# by a ``dataclass_transform`` metaclass (pydantic's) that defines no ``__init__`` a keyword-only
# one of its fields, but only for that metaclass itself, not a subclass of it (PEP 681, as mypy
# and pyright read it). For type checkers Task's metaclass is such a subclass, so a user's
# subclass inherits Task's ``__init__``; at run time it is pydantic's own metaclass, unchanged.
# (pydantic's mypy plugin, where enabled, still makes it keyword-only: ``MyTask(label="x")``.)
if TYPE_CHECKING:
    from pydantic import Field
    from pydantic._internal._model_construction import ModelMetaclass

    class _TaskMeta(ModelMetaclass):
        """For type checkers only: pydantic's metaclass, without its ``dataclass_transform``."""

else:
    _TaskMeta = type(BaseModel)


class Task(TaskRecord, metaclass=_TaskMeta):
    """A task for logging and resource measurement, recorded as an OpenTelemetry span.

    A task may be *top-level* (no parent) or a *subtask*. By default a new task's parent is the
    active task of the current thread or asyncio task (the OpenTelemetry context); the span's
    parent is the current span, so tasks nest inside spans that are not tasks and join a trace
    propagated from elsewhere. Tasks are not active until started; use the task as a context
    manager (the recommended way) or call :meth:`start` and :meth:`finish`.

    Args:
        label: Human-readable task label; also the span name.
        file: A file to save the task to at start, at each refresh while it runs, and at finish
            (written by atomic replacement). Its folder must exist when the task starts, and an
            existing file there must be tasktrace output (a task file, OTLP JSON lines, a
            tasktrace Chrome trace) or empty: anything else is never replaced (use
            :meth:`save_to_file` with ``force=True`` to replace it). A relative path is taken
            from the working folder when the task is created, for every write.
        parent: The parent task, as a :class:`Task` or its ``task_id``. If unspecified, the
            currently-active task.
        reset_hwm: Whether to reset the process's RSS (and CUDA) high-water marks at start, so
            that ``peak_memory`` is this task's own peak. Only effective on Linux. If
            unspecified, resets when the task has no parent in this process (none at all, or
            one in another process: a pool worker's or a subprocess's task), unless the
            ``reset_hwm`` setting is false (``TASKTRACE_RESET_HWM=false``).
        **data: Extra data kept in the model, the task file and the span (``tags=["train"]``,
            ``epoch=3``), stored in its JSON form as pydantic writes it (a ``datetime`` as ISO
            text; NumPy, PyTorch and pandas values, anywhere in lists and dicts, as numbers,
            lists and dicts: :func:`tasktrace.core.extra_data.normalise_data`).

    Raises:
        TypeError: A ``data`` value has no JSON form or is an iterator, ``tags`` are not
            strings, ``parent`` is not a Task or UUID, ``file`` not a path (each named).
        tasktrace.core.problems.InvalidTaskError: A field's value is not valid (``label=5``):
            a :class:`ValueError`, as LensKit's pydantic error is, naming the field and what
            was expected (``Task label: expected a string, got 5``).

    :meth:`start` raises :class:`FileExistsError` when ``file`` holds something that is not
    tasktrace output (see ``file``).

    Used as a context manager, a task's status follows what ended its block (span status in
    brackets; the error text goes to ``error`` and the span's status description):

    - nothing, or ``sys.exit(0)`` / ``sys.exit()`` / ``sys.exit(None)``: ``finished`` (OK);
    - ``sys.exit(n)`` with any other code: ``failed`` (ERROR, ``"SystemExit: n"``);
    - ``KeyboardInterrupt``, ``asyncio.CancelledError`` (``task.cancel()``, a ``wait_for``
      timeout, a ``TaskGroup`` aborting), ``concurrent.futures.CancelledError`` and
      ``GeneratorExit`` (a generator holding the task closed before its end):
      ``cancelled`` (UNSET);
    - any other exception: ``failed`` (ERROR, ``"ValueError: ..."``).

    A ``SystemExit`` also records the exit status as the ``exit_code`` extra data (0 for
    ``None``, 1 for a message), as ``tasktrace run`` does. Unless the task finished, the
    exception is recorded as a span event; it always propagates unchanged.

    Thread-safety: a task may be started in one thread and finished in another, and refreshed
    (the refresh thread, :meth:`update`) while it finishes: its measurements are written under
    the task tree's lock, a refresh's only while the task runs, so its final figures are never
    overwritten (see :mod:`tasktrace.task.runtime`). The active task is per thread and per
    asyncio task; a task that finished elsewhere (a generator closed by another thread or
    asyncio task, or by the garbage collector) is never the active task: :meth:`current` and
    the parent of a new task (and of its span) skip to the innermost task still running. A
    task finished while a task started in it runs (``a.finish()`` under ``b``) cannot leave its
    context then: ``b``'s finish goes back past it to the live context (docs/parallel.md).

    Typing: a subclass (``class MyTask(Task): epoch: int = 0``) is built like a Task,
    ``MyTask("x", epoch=3)``, for mypy and pyright too; ``subtasks`` are :class:`Task` objects.
    Where pydantic's mypy plugin is enabled, it gives a subclass pydantic's keyword-only
    constructor instead (``MyTask(label="x")``), unless the subclass defines ``__init__``.
    """

    _rt: Runtime | None = PrivateAttr(default=None)
    if TYPE_CHECKING:
        # The record types subtasks as records (the core layer cannot name Task); every
        # subtask is a Task at run time (bind_task_class below), and users call Task methods
        # on them. Not an assignment at run time; the default keeps pydantic's mypy plugin
        # from making ``subtasks`` a required argument of a subclass's generated __init__.
        subtasks: list[Task] = Field(default_factory=list)  # type: ignore[assignment]

    def __init__(
        self,
        label: str,
        *,
        file: os.PathLike[str] | str | None = None,
        parent: Task | uuid.UUID | None = None,
        reset_hwm: bool | None = None,
        **data: Any,
    ) -> None:
        """Create a pending task (see the class docstring for the arguments)."""
        if parent is None and not data and type(label) is str and type(self) is Task:
            # The common case, Task("label"): every other field takes its default, so build
            # the instance as model_construct does, without the validator (~3 µs a task), with
            # the read-only fields set and extra data every such task shares until it is
            # assigned to (see __setattr__).
            fields = _copy_defaults()
            fields["task_id"] = new_task_id()
            fields["label"] = label
            fields["machine"] = get_settings().machine
            fields["subtasks"] = []
            _set_dict(self, fields)
            _set_fields_set(self, LABEL_ONLY)
            _set_extra(self, NO_EXTRA)
            _set_private(self, {"_rt": Runtime(None, reset_hwm)})
        else:
            if parent is not None and not isinstance(parent, Task | uuid.UUID):
                raise TypeError(
                    f"parent must be a Task or a UUID, not {type(parent).__name__}: {parent!r}"
                )
            if parent is not None:
                data["parent_id"] = parent.task_id if isinstance(parent, Task) else parent
            try:
                super().__init__(label=label, **data)
            except ValidationError as e:  # Task label: expected a string, got 5
                raise invalid_task_error(e) from None
            extra = self.__pydantic_extra__
            if extra:
                for key, value in extra.items():  # numpy / torch scalars become numbers
                    extra[key] = attr.normalise_data(key, value)  # TypeError naming the key
            self.__pydantic_private__["_rt"] = Runtime(  # type: ignore[index]
                parent if isinstance(parent, Task) else None, reset_hwm
            )
        if file is not None:  # absolute now: a program changing folder (Hydra) writes it still
            tree.files.set_file(self, path_argument("file", file).absolute())

    # Validation (model_validate, nested subtasks, JSON files) must not call __init__: its
    # signature is the seed's, for people; pydantic treats a "base" __init__ as plain fields.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    def __setattr__(self, name: str, value: Any) -> None:
        """Set extra data (``t.loss = 0.3``) or a field, checked as the constructor checks them.

        Raises :class:`TypeError` (extra data) or InvalidTaskError (a field), naming the key:
        :func:`tasktrace.task.assignment.assigned_value`.
        """
        if name[0] != "_":
            value = assigned_value(self, name, value)
        if self.__pydantic_fields_set__ is LABEL_ONLY or self.__pydantic_extra__ is NO_EXTRA:
            own_containers(self)  # before pydantic writes to them
        super().__setattr__(name, value)

    # ----- the active task ---------------------------------------------------------------------

    @staticmethod
    def current() -> Task | None:
        """Return the active task of this thread / asyncio task, or ``None``.

        A task that finished elsewhere (see the class docstring) is never returned: the
        innermost task of this context still running is.
        """
        task: Task | None = otel_context.get_value(TASK_KEY)  # type: ignore[assignment]
        if task is None or task.status is RUNNING:
            return task
        return live_context(otel_context.get_current())[0]  # type: ignore[return-value]

    @staticmethod
    def root() -> Task | None:
        """Return the root of the active task's tree in this process, or ``None``."""
        task = Task.current()
        while task is not None:
            rt = current_runtime(task)
            parent = rt.parent if rt is not None else None
            if parent is None:
                return task
            task = parent  # type: ignore[assignment]
        return None

    # ----- measurements ------------------------------------------------------------------------

    def update_resources(self) -> dict[str, Any]:
        """Update the running task's measurements so far; return them.

        Reads ``perf_counter``, ``getrusage``, the high-water marks and the registered meters
        (as a refresh, ``final=False``); the values are written into the task's fields while
        it is still running (never over a finished task's final figures).

        Returns:
            Field name → value of what was measured (``duration``, ``cpu_time``,
            ``peak_memory``, ``peak_gpu_memory`` and meter fields); empty if not running.
        """
        rt = current_runtime(self)
        if rt is None or self.status is not TaskStatus.RUNNING:
            return {}
        values = measure(rt, final=False)
        tree.update_running(self, values)
        return values

    def update(self) -> None:
        """Update the task's resource measurements and save the file (if one is set)."""
        update_task(self)

    def monitor_refresh(self) -> None:
        """Refresh, run by the refresh thread every ``refresh_interval_s`` (see :meth:`update`).

        A refresh re-writes the whole tree, so its cost grows with the tree: after one that
        took ``c`` seconds, the next waits at least ``REFRESH_COST_FACTOR × c`` seconds, which
        keeps refreshes under 1/20 of the run's wall time however large the tree grows (and
        the run linear in the number of tasks).
        """
        refresh_task(self)

    # ----- the tree ----------------------------------------------------------------------------

    def add_subtask(self, task: Task) -> None:
        """Add or update a subtask (matched by ``task_id``); sets its ``parent_id`` if unset."""
        tree.add_subtask(self, task)

    # ----- files -------------------------------------------------------------------------------

    def save_to_file(
        self, path: os.PathLike[str] | str, monitor: bool = True, *, force: bool = False
    ) -> None:
        """Save this task to ``path`` now, and re-save it while it runs and when it finishes.

        Args:
            path: The task file (JSON, :meth:`model_dump_json`), replaced atomically; a
                relative path is taken from the working folder of this call, for every save.
            monitor: Re-save at every refresh interval while the task runs.
            force: Replace ``path`` even when it holds something that is not tasktrace output
                (keyword only; LensKit's ``save_to_file`` has no such argument).

        Raises:
            FileNotFoundError: The file's folder does not exist.
            FileExistsError: ``path`` exists and is not empty, a task file, OTLP JSON lines or
                a tasktrace Chrome trace (the message says what it holds), and ``force`` is
                false; or ``path`` is a folder or a special file (a device, FIFO or socket),
                whatever ``force``. Nothing is written then.
        """
        tree.files.save(self, Path(path).absolute(), force=force, monitor=monitor)

    # ----- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the task: start its span, make it current, take the starting measurements.

        Raises:
            RuntimeError: The task was already started.
            FileNotFoundError: The task file's folder does not exist (before any work runs).
            FileExistsError: The task file exists and is not tasktrace output (see the class
                docstring), before any work runs.
        """
        start_task(self)

    def finish(self, status: TaskStatus = TaskStatus.FINISHED) -> None:
        """Finish the task: measure, write span attributes and status, end the span, save.

        Args:
            status: The final status (``FINISHED``, ``FAILED`` or ``CANCELLED``, or its value).

        Raises:
            ValueError: ``status`` is not one of those three (``PENDING``, ``RUNNING`` or not a
                status at all); the task is left as it was.

        Finishing a task that is not running logs a warning and does nothing.
        """
        try:
            final = _FINAL_STATUSES.get(status)
        except TypeError:  # unhashable: not a status either
            final = None
        if final is None:
            raise ValueError(
                f"status must be finished, failed or cancelled to finish task {quoted(self.label)},"
                f" not {status!r}"
            )
        finish_task(self, outcome=Outcome(final, None))

    # ----- context manager and protocols -------------------------------------------------------

    # The context manager is start_task and finish_task themselves: ``with`` calls them with
    # no frame of the façade's in between (a frame is ~500 instructions, on every task).
    # __enter__ starts the task and returns it. __exit__ finishes it with the status the
    # exception (if any) calls for (see the class docstring); the exception propagates
    # unchanged and, unless the task finished (``sys.exit(0)``), is recorded as a span event.
    __enter__ = start_task
    __exit__ = finish_task

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickle as the task's data; a running task as a parent for another process.

        A task that is not running pickles as its data (``Task.model_validate`` of
        :meth:`model_dump`). A running task pickles without its subtasks but with its trace
        context and the spool folder, so that ``Task("work", parent=task)`` in the process that
        unpickles it is a subprocess subtask in the same trace (see :doc:`/parallel`).
        """
        return processes.reduce_task(self)

    def __str__(self) -> str:
        """``<Task ID: label>``, as LensKit prints it."""
        return f"<Task {self.task_id}: {self.label}>"

    def _repr_html_(self) -> str:
        """Return the task tree with human units as HTML: how Jupyter displays a task.

        Finished or running (a running task shows the measurements of its last refresh or
        :meth:`update`); repeated siblings of a tree over 1,000 tasks are collapsed.
        """
        return tree_html(self)


Task.model_post_init = validated_private  # type: ignore[method-assign,assignment]
bind_task_class(Task)  # subtasks are Task objects; lower layers build tree nodes of this class
tree.files.set_refresher(refresh_task)
metrics.set_running_source(running_cpu)  # the running-task gauges, read at each collection
