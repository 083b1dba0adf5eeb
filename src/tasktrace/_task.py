"""The Task model and façade: LensKit's ``Task`` API, where each task is an OpenTelemetry span.

A :class:`Task` is a pydantic model (the seed's fields, loadable from LensKit task files) and,
while it runs, an OpenTelemetry span: :meth:`Task.start` starts the span as a child of the
explicit ``parent``, else of the current task or span, and makes it current; :meth:`Task.finish`
reads the meters, writes the measurements as span attributes, sets the span status and ends it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, Status, StatusCode
from pydantic import (
    PrivateAttr,
)

from tasktrace import _subprocess, _watch
from tasktrace._files import RefreshMonitor, check_folder, check_replaceable, save_atomic
from tasktrace._processor import tree
from tasktrace._setup import get_tracer
from tasktrace._signals import install_sigterm_handler
from tasktrace.core import attributes as attr
from tasktrace.core.budget import bounded_data_attributes
from tasktrace.core.context import RUNNING, TASK_KEY, is_on_top, live_context, task_context
from tasktrace.core.ids import new_task_id
from tasktrace.core.record import (
    FIELD_DEFAULTS,
    TaskRecord,
    TaskStatus,
    bind_task_class,
    dump_json,
)
from tasktrace.core.settings import get_settings
from tasktrace.core.status import Outcome, outcome_of
from tasktrace.core.warn import WarnOnce
from tasktrace.meters import active_meters
from tasktrace.meters.gpu import cuda_marks
from tasktrace.meters.process import Scope, rss_marks, self_usage

__all__ = ["Task", "TaskStatus"]

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)
REFRESH_COST_FACTOR = 20
"""A task file is refreshed at most once per this many times the last refresh's duration."""
_monitor = RefreshMonitor(lambda: get_settings().refresh_interval_s)
_FORCE_HINT = "remove it, or call task.save_to_file(path, force=True) to replace it"


class _Runtime:
    """Per-task state that is not part of the model (slots: cheap to create)."""

    __slots__ = (
        "cpu0",
        "ctx",
        "file",
        "file_checked",
        "gpu_scope",
        "lock",
        "monitor",
        "next_refresh",
        "parent",
        "perf0",
        "remote",
        "reset_hwm",
        "rss_scope",
        "snapshots",
        "span",
        "span_context",
        "spool_file",
        "token",
    )

    def __init__(self) -> None:
        self.file: Path | None = None
        self.file_checked = False  # check_replaceable passed (or was overridden) for file
        self.monitor = True
        self.reset_hwm: bool | None = None
        self.parent: Task | None = None
        self.span: trace.Span | None = None
        self.span_context: trace.SpanContext | None = None
        self.ctx: otel_context.Context | None = None
        self.token: object = None
        self.perf0 = 0.0
        self.cpu0 = 0.0
        self.rss_scope: Scope | None = None
        self.gpu_scope: Scope | None = None
        self.snapshots: list[tuple[Any, object]] = []
        self.remote = False  # a stand-in for a task of another process (pickled or forked)
        self.spool_file: Path | None = None  # this subprocess root's record in the spool
        self.lock = threading.RLock()
        self.next_refresh = 0.0  # time.monotonic() before which the refresh thread skips us


class Task(TaskRecord):
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
            :meth:`save_to_file` with ``force=True`` to replace it).
        parent: The parent task, as a :class:`Task` or its ``task_id``. If unspecified, the
            currently-active task.
        reset_hwm: Whether to reset the process's RSS (and CUDA) high-water marks at start, so
            that ``peak_memory`` is this task's own peak. Only effective on Linux. If
            unspecified, resets when the task has no parent.
        **data: Extra data kept in the model, the task file and the span (``tags=["train"]``,
            ``epoch=3``); must be JSON-serialisable.

    Raises:
        TypeError: A value in ``data`` cannot be serialised (the message names the key), or
            ``parent`` is neither a Task nor a UUID.

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

    Thread-safety: a task may be started in one thread and finished in another; its
    measurements are updated under a per-task lock. The active task is per thread and per
    asyncio task; a task that finished elsewhere (a generator closed by another thread or
    asyncio task, or by the garbage collector) is never the active task: :meth:`current` and
    the parent of a new task (and of its span) skip to the innermost task still running.
    """

    _rt: _Runtime | None = PrivateAttr(default=None)
    _data_attrs: dict[str, Any] | None = PrivateAttr(default=None)

    _seed_args: ClassVar[frozenset[str]] = frozenset({"file", "parent", "reset_hwm"})

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
        if parent is not None and not isinstance(parent, Task | uuid.UUID):
            raise TypeError(
                f"parent must be a Task or a UUID, not {type(parent).__name__}: {parent!r}"
            )
        if isinstance(parent, Task):
            data["parent_id"] = parent.task_id
        elif isinstance(parent, uuid.UUID):
            data["parent_id"] = parent
        if data or type(label) is not str or type(self) is not Task:
            super().__init__(label=label, **data)
            extra = self.__pydantic_extra__
            if extra:
                for key, value in extra.items():  # numpy / torch scalars become numbers
                    extra[key] = attr.normalise_data(key, value)  # TypeError naming the key
                self._data_attrs = attr.data_to_attributes(extra)
        else:
            # The common case, Task("label"): every other field takes its default, so build
            # the instance as model_construct does, without the validator (~3 µs a task).
            fields = dict(FIELD_DEFAULTS)
            fields["task_id"] = new_task_id()
            fields["label"] = label
            fields["machine"] = get_settings().machine
            fields["subtasks"] = []
            object.__setattr__(self, "__dict__", fields)
            object.__setattr__(self, "__pydantic_fields_set__", {"label"})
            object.__setattr__(self, "__pydantic_extra__", {})
            object.__setattr__(self, "__pydantic_private__", {"_rt": None, "_data_attrs": None})
        rt = _Runtime()
        self.__pydantic_private__["_rt"] = rt  # type: ignore[index]
        rt.reset_hwm = reset_hwm
        rt.parent = parent if isinstance(parent, Task) else None
        if file is not None:
            rt.file = Path(file)

    # Validation (model_validate, nested subtasks, JSON files) must not call __init__: its
    # signature is the seed's, for people; pydantic treats a "base" __init__ as plain fields.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    def __setattr__(self, name: str, value: Any) -> None:
        """Set a field, or extra data (``t.loss = 0.3``) checked like the constructor's.

        Raises:
            TypeError: Extra data that cannot be stored (names the key); NumPy and PyTorch
                scalars and arrays are converted to Python numbers and lists first.
        """
        if name[0] != "_" and name not in type(self).model_fields:
            value = attr.normalise_data(name, value)
        super().__setattr__(name, value)

    def _runtime(self) -> _Runtime:
        # Read the private dict directly: pydantic's __getattr__ for private attributes costs
        # about a microsecond, and this runs several times per task.
        private = self.__pydantic_private__
        if private is None or private is _RELEASED:  # no state yet, or let go at finish
            private = {"_rt": None, "_data_attrs": None}
            object.__setattr__(self, "__pydantic_private__", private)
        rt = private.get("_rt")
        if rt is None:  # built by model_validate / model_construct: no __init__ ran
            rt = private["_rt"] = _Runtime()
        return rt

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
        return live_context(otel_context.get_current())[0]

    @staticmethod
    def root() -> Task | None:
        """Return the root of the active task's tree in this process, or ``None``."""
        task = Task.current()
        while task is not None:
            parent = task._rt.parent if task._rt is not None else None
            if parent is None:
                return task
            task = parent
        return None

    # ----- measurements ------------------------------------------------------------------------

    def update_resources(self) -> dict[str, Any]:
        """Update the running task's measurements so far; return them.

        Reads ``perf_counter``, ``getrusage``, the high-water marks and the registered meters
        (as a refresh, ``final=False``). Called by :meth:`update` with the task's lock held.

        Returns:
            Field name → value of what was measured (``duration``, ``cpu_time``,
            ``peak_memory``, ``peak_gpu_memory`` and meter fields); empty if not running.
        """
        rt = self._runtime()
        if self.status is not TaskStatus.RUNNING or rt.rss_scope is None:
            return {}
        values = self._measure(rt, final=False)
        self._apply(values)
        return values

    def _measure(self, rt: _Runtime, *, final: bool) -> dict[str, Any]:
        perf = time.perf_counter()
        cpu, maxrss = self_usage()
        elapsed = perf - rt.perf0
        values: dict[str, Any] = {
            "duration": elapsed,
            "cpu_time": cpu - rt.cpu0,
        }
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

    def _apply(self, values: dict[str, Any]) -> None:
        d = self.__dict__
        for key, value in values.items():
            if key in d:  # a declared field: meters give the right types, skip validation
                d[key] = value
            else:
                setattr(self, key, value)

    def update(self) -> None:
        """Update the task's resource measurements and save the file (if one is set)."""
        rt = self._runtime()
        with rt.lock:
            if rt.file is not None:
                # Subtasks first, then this task: a parent's figures so far are never below
                # its children's in the file.
                _update_running_subtasks(self)  # the file shows their measurements so far too
            self.update_resources()
            self._save(rt)

    def monitor_refresh(self) -> None:
        """Refresh, run by the refresh thread every ``refresh_interval_s`` (see :meth:`update`).

        A refresh re-writes the whole tree, so its cost grows with the tree: after one that
        took ``c`` seconds, the next waits at least ``REFRESH_COST_FACTOR × c`` seconds, which
        keeps refreshes under 1/20 of the run's wall time however large the tree grows (and
        the run linear in the number of tasks).
        """
        rt = self._runtime()
        with rt.lock:
            started = time.monotonic()
            if started >= rt.next_refresh:
                self.update()
                rt.next_refresh = started + REFRESH_COST_FACTOR * (time.monotonic() - started)
            else:
                self.update_resources()  # cheap: the figures so far, without re-writing
            if self.status is TaskStatus.RUNNING and _watch.active():
                _watch.refreshed(self, get_tracer(), rt.span_context, root=rt.parent is None)

    # ----- the tree ----------------------------------------------------------------------------

    def add_subtask(self, task: Task) -> None:
        """Add or update a subtask (matched by ``task_id``); sets its ``parent_id`` if unset."""
        with tree.lock:
            if task.parent_id is None:
                task.parent_id = self.task_id
            for i, existing in enumerate(self.subtasks):
                if existing.task_id == task.task_id:
                    self.subtasks[i] = task
                    return
            self.subtasks.append(task)

    def _attach(self, task: Task) -> None:
        # Called by the processor with the tree lock held: a new child, no search needed.
        self.subtasks.append(task)
        child_rt = task._runtime()
        if child_rt.parent is None:
            child_rt.parent = self

    # ----- files -------------------------------------------------------------------------------

    def save_to_file(
        self, path: os.PathLike[str] | str, monitor: bool = True, *, force: bool = False
    ) -> None:
        """Save this task to ``path`` now, and re-save it while it runs and when it finishes.

        Args:
            path: The task file (JSON, :meth:`model_dump_json`), replaced atomically.
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
        rt = self._runtime()
        path = Path(path)
        check_folder(path)
        check_replaceable(path, force=force, override=_FORCE_HINT)
        rt.file = path
        rt.file_checked = True
        rt.monitor = monitor
        self._save(rt)
        if monitor and self.status is TaskStatus.RUNNING:
            _monitor.add(id(self), self.monitor_refresh)

    def _save(self, rt: _Runtime) -> None:
        if rt.file is None and rt.spool_file is None:
            return
        _subprocess.collect()  # children's records in other processes join the tree first
        with tree.lock:
            data = dump_json(self)
        if data is None:
            return
        for path in (rt.file, rt.spool_file):
            if path is not None:
                save_atomic(path, data)

    # ----- life cycle --------------------------------------------------------------------------

    def start(self) -> None:  # noqa: PLR0915 - one ordered sequence; each step is a line
        """Start the task: start its span, make it current, take the starting measurements.

        Raises:
            RuntimeError: The task was already started.
            FileNotFoundError: The task file's folder does not exist (before any work runs).
            FileExistsError: The task file exists and is not tasktrace output (see the class
                docstring), before any work runs.
        """
        rt = self._runtime()
        if self.status is not TaskStatus.PENDING:
            raise RuntimeError(f"task {self.label!r} was already started ({self.status.value})")
        if rt.file is not None:
            check_folder(rt.file)
            if not rt.file_checked:
                check_replaceable(rt.file, override=_FORCE_HINT)
                rt.file_checked = True

        parent, parent_ctx = self._resolve_parent(rt)
        parent_ctx = _subprocess.join_parent_process(self, rt, parent, parent_ctx)
        d = self.__dict__  # plain writes below: these fields are ours, validation is not needed
        if parent is not None:
            d["parent_id"] = parent.task_id
        reset = rt.reset_hwm if rt.reset_hwm is not None else d["parent_id"] is None

        # Identity at start (the processor tells tasks from other spans by TASK_ID); host name
        # and machine label are resource attributes; measurements come at finish.
        start_attrs: dict[str, Any] = {attr.TASK_ID: str(d["task_id"])}
        if d["parent_id"] is not None:
            start_attrs[attr.PARENT_ID] = str(d["parent_id"])
        if d["subprocess"]:
            start_attrs[attr.SUBPROCESS] = True
        if self.__pydantic_extra__:
            start_attrs.update(self._limited_data_attrs())
        install_sigterm_handler()
        tracer = get_tracer()  # the first task sets tracing up: keep that out of its times
        start_ns = time.time_ns()
        try:
            span = tracer.start_span(
                d["label"], context=parent_ctx, attributes=start_attrs, start_time=start_ns
            )
        except Exception as e:  # noqa: BLE001 - another span processor raised: measure anyway
            _warn("span-start", "tasktrace: starting the span of %r failed: %r", d["label"], e)
            span = trace.INVALID_SPAN
        sctx = span.get_span_context()
        rt.span = span
        rt.span_context = sctx
        if sctx.is_valid:
            d["trace_id"] = format(sctx.trace_id, "032x")
            d["span_id"] = format(sctx.span_id, "016x")
        ctx = task_context(self, span)
        rt.ctx = ctx
        rt.token = otel_context.attach(ctx)

        d["start_time"] = start_ns / 1e9
        d["status"] = TaskStatus.RUNNING
        rt.rss_scope = rss_marks.open(reset=reset)
        rt.gpu_scope = cuda_marks.open_if_used(reset=reset)
        rt.snapshots = self._start_meters()
        rt.perf0 = time.perf_counter()
        rt.cpu0 = self_usage()[0]

        tree.task_started(self, parent, sctx.span_id)
        if rt.file is not None or rt.spool_file is not None:
            self._save(rt)
            if rt.monitor:
                _monitor.add(id(self), self.monitor_refresh)
        if _watch.active():  # pending spans, task metrics, live panel: off by default
            _watch.started(self, get_tracer(), sctx, root=rt.parent is None)
            _monitor.add(id(self), self.monitor_refresh)

    def _resolve_parent(self, rt: _Runtime) -> tuple[Task | None, otel_context.Context | None]:
        """Return (parent tree node, context for the span) by the rules in the class docstring."""
        parent = rt.parent
        if parent is None and self.parent_id is not None:
            parent = tree.running_task(self.parent_id)  # parent given as a UUID
            rt.parent = parent
        if parent is not None:
            pctx = parent._span_context()
            if pctx is not None:
                return parent, trace.set_span_in_context(NonRecordingSpan(pctx))
            return parent, None
        if self.parent_id is not None:
            return None, None  # a parent elsewhere (another process): keep its id
        current: Task | None = otel_context.get_value(TASK_KEY)  # type: ignore[assignment]
        span_parent = None
        if current is not None and current.status is not RUNNING:
            # a task that finished elsewhere (a generator closed by another thread): skip it
            current, span_parent = live_context(otel_context.get_current())
        span_ctx = trace.get_current_span(span_parent).get_span_context()
        node = tree.node_for_span(span_ctx.span_id) if span_ctx.is_valid else None
        if node is None:
            node = current
        rt.parent = current
        return node, span_parent

    def _span_context(self) -> trace.SpanContext | None:
        """Return the span context, rebuilt from its hex ids once the runtime state is gone."""
        private = self.__pydantic_private__
        rt = private.get("_rt") if private is not None else None
        if rt is not None and rt.span_context is not None:
            return rt.span_context
        d = self.__dict__
        if d.get("trace_id") and d.get("span_id"):
            return trace.SpanContext(
                int(d["trace_id"], 16),
                int(d["span_id"], 16),
                is_remote=False,
                trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
            )
        return None

    def _limited_data_attrs(self) -> dict[str, Any]:
        """Return the data attributes within the span's budget (see :mod:`_data_budget`)."""
        return bounded_data_attributes(self.label, self._data_attrs or {})

    def _final_data_attrs(self) -> dict[str, Any]:
        """Compute the data attributes at finish: the user may have set more (``t.loss = 0.3``)."""
        try:
            self._data_attrs = attr.data_to_attributes(self.__pydantic_extra__ or {})
        except TypeError as e:
            _warn(f"data:{e}", "tasktrace: %s; left out of the span", e)
            return {}
        return self._limited_data_attrs()

    @staticmethod
    def _start_meters() -> list[tuple[Any, object]]:
        snapshots = []
        for meter in active_meters():
            try:
                snapshots.append((meter, meter.start()))
            except Exception as e:  # noqa: BLE001, PERF203 - a meter must never break the task
                _warn(f"meter:{meter.name}", "tasktrace: meter %r failed: %r", meter.name, e)
        return snapshots

    def finish(self, status: TaskStatus = TaskStatus.FINISHED) -> None:
        """Finish the task: measure, write span attributes and status, end the span, save.

        Args:
            status: The final status (``FINISHED``, ``FAILED`` or ``CANCELLED``).

        Finishing a task that is not running logs a warning and does nothing.
        """
        self._finish(Outcome(TaskStatus(status), None), None)

    def _finish(self, outcome: Outcome, exc: BaseException | None) -> None:  # noqa: PLR0912, PLR0915 - one locked sequence
        rt = self._runtime()
        with rt.lock:
            if rt.remote:  # another process's task (inherited by fork): only leave its context
                self._detach(rt)
                return
            if self.status is not TaskStatus.RUNNING or rt.span is None:
                _warn(f"finish:{id(self)}", "tasktrace: task %r is not running", self.label)
                return
            values = self._measure(rt, final=True)
            end_ns = time.time_ns()
            self._apply(values)
            d = self.__dict__
            d["finish_time"] = end_ns / 1e9
            status = d["status"] = outcome.status
            if outcome.error is not None and d["error"] is None:
                d["error"] = outcome.error
            if outcome.exit_code is not None:
                self.exit_code = outcome.exit_code  # as `tasktrace run` records a command's
            span = rt.span
            try:
                final_attrs = attr.fields_to_attributes(values)
                final_attrs[attr.STATUS] = status.value
                if d["error"] is not None:
                    final_attrs[attr.ERROR] = d["error"]
                if self.__pydantic_extra__:
                    final_attrs.update(self._final_data_attrs())
                span.set_attributes(final_attrs)
                if exc is not None and status is not TaskStatus.FINISHED:
                    span.record_exception(exc, timestamp=end_ns)
                if status is TaskStatus.FAILED:
                    span.set_status(Status(StatusCode.ERROR, outcome.error))
                elif status is TaskStatus.FINISHED:
                    span.set_status(Status(StatusCode.OK))
                span.end(end_time=end_ns)
            except Exception as e:  # noqa: BLE001 - another span processor raised in on_end
                _warn("span-end", "tasktrace: ending the span of %r failed: %r", self.label, e)
            finally:
                self._detach(rt)
                rt.span = rt.ctx = None  # the context holds the span: let both go
                rt.snapshots = []
                rt.rss_scope = rt.gpu_scope = None
                tree.task_finished(self, rt.span_context.span_id if rt.span_context else 0)
                if _subprocess.is_exported(self):
                    _subprocess.collect(self)
                if rt.file is not None or rt.spool_file is not None:
                    _monitor.remove(id(self))
                    self._save(rt)
                if rt.spool_file is not None:
                    _subprocess.flush_spans()  # the child may end by os._exit
                if _watch.active():
                    _monitor.remove(id(self))
                    _watch.finished(self, root=rt.parent is None)
                if rt.file is None and rt.spool_file is None and not rt.remote:
                    # Nothing left to do for a finished task: drop its runtime state, so that
                    # a tree of 100,000 finished tasks holds only the model data.
                    object.__setattr__(self, "__pydantic_private__", _RELEASED)

    @staticmethod
    def _detach(rt: _Runtime) -> None:
        token, rt.token = rt.token, None
        if token is None or not is_on_top(rt.ctx):  # type: ignore[arg-type]
            # A running task's or a user's span's context is above ours, or we finish in
            # another thread or asyncio task: leave it. This task is skipped as stale where
            # it is found (see _context.live_context).
            return
        reset = getattr(getattr(token, "var", None), "reset", None)
        if reset is None:  # a context runtime other than OpenTelemetry's contextvars one
            otel_context.detach(token)  # type: ignore[arg-type]
            return
        # Our context is current here, but this may be a copy of the Context that attached it
        # (an asyncio task or thread started while the task ran: ValueError): then leave it.
        # OpenTelemetry's detach would log "Failed to detach context" at ERROR for that.
        with contextlib.suppress(ValueError, RuntimeError):
            reset(token)

    # ----- context manager and protocols -------------------------------------------------------

    def __enter__(self) -> Task:
        """Start the task and return it."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Finish with the status the exception (if any) calls for; see the class docstring.

        The exception propagates unchanged; unless the task finished (``sys.exit(0)``), it is
        recorded as a span event.
        """
        del exc_type, traceback
        self._finish(outcome_of(exc_value), exc_value)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickle as the task's data; a running task as a parent for another process.

        A task that is not running pickles as its data (``Task.model_validate`` of
        :meth:`model_dump`). A running task pickles without its subtasks but with its trace
        context and the spool folder, so that ``Task("work", parent=task)`` in the process that
        unpickles it is a subprocess subtask in the same trace (see :doc:`/parallel`).
        """
        return _subprocess.reduce_task(self)

    def __str__(self) -> str:
        """``<Task ID: label>``, as LensKit prints it."""
        return f"<Task {self.task_id}: {self.label}>"

    def _repr_html_(self) -> str:
        """Return the task tree with human units as HTML: how Jupyter displays a task.

        Finished or running (a running task shows the measurements of its last refresh or
        :meth:`update`); repeated siblings of a tree over 1,000 tasks are collapsed.
        """
        from tasktrace import _show  # noqa: PLC0415 - rich's tree rendering, only for notebooks

        return _show.tree_html(self)


_RELEASED: dict[str, Any] = {"_rt": None, "_data_attrs": None}
"""The private state of every finished task that let its own go: shared, and only read
(``_runtime`` gives a task a fresh dict before anything is written)."""

bind_task_class(Task)  # subtasks are typed as Task in TaskRecord (a forward reference)


def _update_running_subtasks(task: Task) -> None:
    """Refresh the measurements of ``task``'s running descendants measured in this process."""
    with tree.lock:
        stack = list(task.subtasks)
    while stack:
        sub = stack.pop()
        private = sub.__pydantic_private__
        rt = private.get("_rt") if private is not None else None
        if rt is not None and rt.rss_scope is not None:
            with rt.lock:
                sub.update_resources()
        with tree.lock:
            stack.extend(sub.subtasks)
