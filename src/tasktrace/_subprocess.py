"""Tasks across processes: the environment carrier, the child-task spool, and fork safety.

A task in a child process joins its parent's tree (``subprocess=True``) and its parent's trace.
What the child needs travels one of two ways:

- **In the environment** (``subprocess.run``, ``tasktrace run``): :func:`child_environment`
  returns a *copy* of the environment with the W3C trace context as ``TRACEPARENT`` /
  ``TRACESTATE`` (OpenTelemetry's environment-variable carrier, written by the SDK's own
  :class:`~opentelemetry.trace.propagation.tracecontext.TraceContextTextMapPropagator`), the
  parent task's id as :data:`PARENT_TASK_ENV` and the spool folder as :data:`SPOOL_ENV`.
- **With a pickled task** (``multiprocessing``, ``ProcessPoolExecutor``): a *running* task
  pickles (``Task.__reduce__``) to a stand-in that carries the same trace context and spool
  folder; ``Task("work", parent=stand_in)`` in the child is a subprocess task. With the ``fork``
  start method the running tasks the child inherits become such stand-ins (see below).

**The spool** is a folder (a temporary one, or the one named by :data:`SPOOL_ENV`, which may be
on a file system shared between nodes). A task whose parent is in another process (a
*subprocess root*) writes its whole record, subtasks included, to ``<task_id>.json`` in the spool
by atomic replacement when it starts, at each refresh while it runs and when it finishes; so a
child killed by ``SIGKILL`` leaves its last record. The parent process merges every record whose
``parent_id`` is one of its exported tasks (the tasks whose context it handed out) into that
task's subtasks, replacing the previous record of the same task: at each save of a task file
(start, refresh, finish) and when the exported task finishes. Each process merges only its own
children's records; a grandchild reaches the root inside its parent's record.

A subprocess root also flushes the tracer provider when it finishes, so its spans are exported
even when the child ends through ``os._exit`` (as forked ``multiprocessing`` workers do).

**Fork safety**: after ``os.fork`` the child forgets the parent's running tasks
(:meth:`~tasktrace._processor.TaskTreeProcessor.forget_running`), never writes their task files
nor ends their spans; they stay usable as parents of subprocess tasks.

Thread-safety: all functions may be called from any thread.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import ValidationError

from tasktrace._processor import tree
from tasktrace.core.context import live_context
from tasktrace.core.warn import WarnOnce

if TYPE_CHECKING:
    from tasktrace._task import Task, _Runtime

__all__ = [
    "PARENT_TASK_ENV",
    "SPOOL_ENV",
    "child_environment",
    "collect",
    "join_parent_process",
    "reduce_task",
    "unreported_cpu_s",
]

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)
_propagator = TraceContextTextMapPropagator()

SPOOL_ENV: Final = "TASKTRACE_SPOOL"
"""Environment variable naming the spool folder where subprocess tasks write their records."""
PARENT_TASK_ENV: Final = "TASKTRACE_PARENT_TASK_ID"
"""Environment variable holding the UUID of the parent task of a child process's tasks."""
FLUSH_TIMEOUT_MS: Final = 5000
"""How long a finishing subprocess root waits for the tracer provider's flush, in ms."""

_lock = threading.RLock()
_spool: Path | None = None
_owned_spool: Path | None = None
_owner_pid = 0
_exported: dict[uuid.UUID, Task] = {}
_seen: dict[str, tuple[int, int]] = {}


# ----- the spool folder --------------------------------------------------------------------------


def spool_folder() -> Path:
    """Return this process's spool folder, creating a temporary one on first use.

    The folder named by :data:`SPOOL_ENV` wins (created if missing); otherwise a private
    ``tasktrace-spool-*`` folder from :func:`tempfile.mkdtemp`, removed when this process exits.

    Raises:
        OSError: The folder cannot be created.

    """
    global _spool, _owned_spool, _owner_pid  # noqa: PLW0603 - one spool per process
    with _lock:
        if _spool is not None:
            return _spool
        named = os.environ.get(SPOOL_ENV)
        if named:
            path = Path(named)
            path.mkdir(parents=True, exist_ok=True)
        else:
            path = Path(tempfile.mkdtemp(prefix="tasktrace-spool-"))
            _owned_spool, _owner_pid = path, os.getpid()
        _spool = path
        return path


def _set_spool(path: str | None) -> None:
    global _spool  # noqa: PLW0603 - see spool_folder
    if path:
        with _lock:
            _spool = Path(path)


@atexit.register
def _remove_owned_spool() -> None:
    if _owned_spool is not None and _owner_pid == os.getpid():
        shutil.rmtree(_owned_spool, ignore_errors=True)


def _export(task: Task) -> Path:
    """Make ``task`` a parent whose children's records this process merges; return the spool."""
    path = spool_folder()
    with _lock:
        _exported[task.task_id] = task
    return path


# ----- handing the context to a child ----------------------------------------------------------


def child_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """Return a copy of ``base`` (default ``os.environ``) that lets a child process join.

    Adds the current trace context as ``TRACEPARENT`` / ``TRACESTATE`` (OpenTelemetry's
    environment-variable carrier) and, when a task is active, its id (:data:`PARENT_TASK_ENV`)
    and the spool folder (:data:`SPOOL_ENV`), so tasks of a Python program using tasktrace
    become subprocess subtasks of the current task. ``os.environ`` is not modified.

    Example::

        subprocess.run([sys.executable, "eval.py"], env=child_environment(), check=True)

    Raises:
        OSError: The spool folder cannot be created.

    """
    from tasktrace._task import Task  # noqa: PLC0415 - import cycle

    env = dict(os.environ if base is None else base)
    for key in ("TRACEPARENT", "TRACESTATE", PARENT_TASK_ENV):
        env.pop(key, None)
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=live_context(otel_context.get_current())[1])
    for key, value in carrier.items():
        env[key.upper()] = value
    task = Task.current()
    if task is not None:
        env[SPOOL_ENV] = str(_export(task))
        env[PARENT_TASK_ENV] = str(task.task_id)
    return env


def reduce_task(task: Task) -> tuple[Any, tuple[Any, ...]]:
    """``Task.__reduce__``: a running task pickles to a stand-in that children can use as parent.

    A task that is not running pickles as its data (subtasks included). A running one pickles
    without its subtasks, with its span's ``traceparent`` / ``tracestate`` and the spool folder.
    """
    rt = task._rt
    sctx = rt.span_context if rt is not None else None
    from tasktrace._task import TaskStatus  # noqa: PLC0415 - import cycle

    if task.status is not TaskStatus.RUNNING or sctx is None or not sctx.is_valid:
        return (type(task).model_validate, (task.model_dump(),))
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=trace.set_span_in_context(trace.NonRecordingSpan(sctx)))
    spool = str(_export(task))
    data = task.model_dump(exclude={"subtasks"})
    return (_remote_task, (type(task), data, carrier, spool))


def _remote_task(
    cls: type[Task], data: dict[str, Any], carrier: dict[str, str], spool: str
) -> Task:
    """Rebuild a pickled running task as a stand-in for its parent in another process."""
    task = cls.model_validate(data)
    rt = task._runtime()
    rt.remote = True
    sctx = trace.get_current_span(_propagator.extract(carrier)).get_span_context()
    rt.span_context = sctx if sctx.is_valid else None
    _set_spool(spool)
    return task


# ----- the child side --------------------------------------------------------------------------


_ENV_NAMES = ("TRACEPARENT", "TRACESTATE", PARENT_TASK_ENV, SPOOL_ENV)
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
    task: Task, rt: _Runtime, parent: Task | None, parent_ctx: otel_context.Context | None
) -> otel_context.Context | None:
    """At start: make ``task`` a subprocess root when its parent is in another process.

    The parent is another process's when ``parent`` is a stand-in (unpickled, or inherited
    through ``fork``), or when there is no parent task, no span in ``parent_ctx`` (``None``:
    the current context) and the environment
    carries ``TRACEPARENT`` (the span's parent) and :data:`PARENT_TASK_ENV` (the task's parent).

    Returns:
        The context to start the span in (``parent_ctx``, or the one from the environment).

    """
    if parent is not None:
        prt = parent._runtime()
        if prt.remote:
            _make_root(task, rt)
        return parent_ctx
    if task.parent_id is not None:
        return parent_ctx
    if trace.get_current_span(parent_ctx).get_span_context().is_valid:
        return parent_ctx
    traceparent, state, parent_id, spool = _environment()
    ctx = None
    if traceparent:
        carrier = {"traceparent": traceparent}
        if state:
            carrier["tracestate"] = state
        ctx = _propagator.extract(carrier)
    if parent_id and spool:
        try:
            task.parent_id = uuid.UUID(parent_id)
        except ValueError:
            _warn("parent-env", "tasktrace: invalid %s=%r; ignored", PARENT_TASK_ENV, parent_id)
        else:
            _make_root(task, rt)
    return ctx if ctx is not None else parent_ctx


def _make_root(task: Task, rt: _Runtime) -> None:
    task.subprocess = True
    try:
        rt.spool_file = spool_folder() / f"{task.task_id}.json"
    except OSError as e:
        _warn("spool", "tasktrace: cannot create the task spool (%s); subprocess task lost", e)


def flush_spans() -> None:
    """Flush the tracer provider (a subprocess root finished; the child may ``os._exit``)."""
    from tasktrace._setup import tracer_provider  # noqa: PLC0415 - only when needed

    flush = getattr(tracer_provider(), "force_flush", None)
    if flush is not None:
        try:
            flush(FLUSH_TIMEOUT_MS)
        except Exception as e:  # noqa: BLE001 - exporting must not break the task
            _warn("flush", "tasktrace: flushing spans failed: %r", e)


# ----- the parent side: merging records --------------------------------------------------------


def collect(finished: Task | None = None) -> None:
    """Merge the spool's new records of this process's children into their parent tasks.

    Args:
        finished: An exported task that is finishing: merged, then no longer exported.

    Records that cannot be read (being replaced, or not a task) are skipped until they change.

    """
    from tasktrace._task import Task  # noqa: PLC0415 - import cycle

    if not _exported or _spool is None:
        return
    touched: dict[int, Task] = {}
    with _lock:
        try:
            entries = list(os.scandir(_spool))
        except OSError:
            entries = []
        for entry in entries:
            name = entry.name
            if name.startswith(".") or not name.endswith(".json"):
                continue
            try:
                st = entry.stat()
                stamp = (st.st_mtime_ns, st.st_size)
                if _seen.get(name) == stamp:
                    continue
                record = Task.model_validate_json(Path(entry.path).read_bytes())
            except (OSError, ValidationError, ValueError):
                continue
            parent = _exported.get(record.parent_id) if record.parent_id else None
            if parent is None:
                continue  # a grandchild, or another tree's: its own parent merges it
            _seen[name] = stamp
            parent.add_subtask(record)
            touched[id(parent)] = parent
        with tree.lock:  # records arrive in directory order: show children in start order
            for parent in touched.values():
                parent.subtasks.sort(key=_start_key)
        if finished is not None:
            _exported.pop(finished.task_id, None)


def _start_key(task: Task) -> float:
    return task.start_time if task.start_time is not None else float("inf")


def is_exported(task: Task) -> bool:
    """Whether ``task`` handed its context to another process (its children may report)."""
    return task.task_id in _exported


# ----- fork safety -----------------------------------------------------------------------------


def _before_fork() -> None:
    running = tree.running_tasks()
    if not running:
        return
    try:
        for task in running:
            _export(task)
    except OSError as e:
        _warn("spool", "tasktrace: cannot create the task spool (%s)", e)


def _after_fork_in_child() -> None:
    global _lock, _exported, _seen, _owned_spool  # noqa: PLW0603 - a new process
    _lock = threading.RLock()
    _exported = {}
    _seen = {}
    _owned_spool = None
    for task in tree.forget_running():
        rt = task._runtime()
        rt.remote = True
        rt.file = None
        rt.spool_file = None
        rt.monitor = False
        rt.lock = threading.RLock()


os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


def unreported_cpu_s(task: Task, reaped_s: float) -> float:
    """CPU seconds of reaped children that their subprocess tasks did not report.

    ``reaped_s`` (from ``wait4`` / ``RUSAGE_CHILDREN``) contains the CPU of every task the
    reaped children reported; those tasks are ``task``'s subprocess subtasks, which
    :meth:`~tasktrace.Task.total_cpu` adds already. Merges the spool first.

    Returns:
        ``max(0, reaped_s - reported)``, where ``reported`` sums the subprocess subtasks'
        :meth:`~tasktrace.Task.total_cpu`.

    """
    collect()
    reported = 0.0
    with tree.lock:
        for sub in task.subtasks:
            if sub.subprocess:
                reported += sub.total_cpu() or 0.0
    return max(0.0, reaped_s - reported)
