"""Late meter readings (Prometheus queries) run off the task's path, on one background thread.

A Prometheus power query is a network round trip per scope (milliseconds on loopback, seconds
behind a slow proxy). Run at a nested task's finish, it would land inside its parent's
duration and energy window (100 tasks of 1 ms behind 50 ms of latency made their parent last
11 s). But a query over ``[elapsed ms]`` evaluated at the task's end (Prometheus's ``time``
parameter) gives the same answer later as at the finish, so the finish of a task nested in a
running task of this process takes its own figures (clocks, local meters) and hands the late
parts of its meters' readings (:func:`tasktrace.meters.base.read_final`) and its open span to
:func:`defer`. One thread runs the jobs in the order they came, and for each:

- writes the values into the task under the tree's lock
  (:meth:`~tasktrace.tree.processor.TaskTreeProcessor.update_finished`);
- sets the span's attributes (by the one mapping, :func:`~tasktrace.core.spans.finish_attributes`)
  and ends it at the task's true end time, so that spans carry the energy attributes (a child's
  span still ends before its parent's: the parent's job comes after);
- re-writes the task's file, if it has one, and that of the nearest ancestor with a file if that
  ancestor has finished already (it gave up waiting, see below; once the queue is empty, not
  once per answer);
- hands the task's figures to the task metrics, where they are on.

Until then the task is finished with its local figures and its Prometheus energy ``None``. A
task whose parent is not a running task of this process (a root, a pool worker's task) runs
its late readings at its own finish, after its figures are taken, having waited for the jobs
queued before (while they keep completing: see :func:`wait` and :func:`stall_s`), so that a
root's fields and file, and a subprocess's records, have their subtasks' answers. Interpreter
exit waits the same. Jobs still queued then are lost with the process (their spans never end).

Thread-safety: every function may be called from any thread. After ``fork`` the child starts
with no job and no thread (the parent's jobs are the parent's).
"""

from __future__ import annotations

import collections
import logging
from typing import Any

from opentelemetry import trace

from tasktrace.core.record import TaskRecord
from tasktrace.core.settings import get_settings
from tasktrace.core.spans import finish_attributes
from tasktrace.core.status import RUNNING
from tasktrace.core.warn import WarnOnce
from tasktrace.core.worker_thread import WorkerThread
from tasktrace.export.metrics_setup import task_metrics
from tasktrace.meters.base import LateReading
from tasktrace.meters.prometheus import SCOPE_FIELDS
from tasktrace.task.runtime import Runtime, current_runtime
from tasktrace.tree.processor import tree

__all__ = ["LateJob", "defer", "file_owner", "run_late", "stall_s", "wait"]

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)


class LateJob:
    """One finished task's late readings, its open span and what completing it needs.

    Attributes:
        task: The finished task.
        span: Its span, still open.
        end_ns: Its end, Unix nanoseconds (``finish_time``; the span's end time).
        late: The late parts of its meters' final readings.
        task_id: The task id as text (its span attribute).
        parent_id: The parent's id as text, or ``None``.
        cpu: ``(user, system)`` CPU seconds, for the task metrics.
        owner: The nearest ancestor with a file (:func:`file_owner`), or ``None``.
    """

    __slots__ = ("cpu", "end_ns", "late", "owner", "parent_id", "span", "task", "task_id")

    def __init__(  # noqa: PLR0917 - one record, built in one place
        self,
        task: TaskRecord,
        span: trace.Span,
        end_ns: int,
        late: tuple[LateReading, ...],
        task_id: str | None,
        parent_id: str | None,
        cpu: tuple[float, float],
        owner: TaskRecord | None,
    ) -> None:
        """Hold the job's parts (see the class attributes)."""
        self.task = task
        self.span = span
        self.end_ns = end_ns
        self.late = late
        self.task_id = task_id
        self.parent_id = parent_id
        self.cpu = cpu
        self.owner = owner


class _Queue:
    """The jobs, the counts :func:`wait` compares and the thread (one per process).

    The jobs and counts are guarded by the worker's condition (``worker.cond``); ``owners``
    is the thread's own.
    """

    def __init__(self) -> None:
        self.jobs: collections.deque[LateJob] = collections.deque()
        self.queued = 0
        self.done = 0
        self.owners: dict[int, TaskRecord] = {}  # finished ancestors whose files lack answers
        self.worker = WorkerThread(
            "tasktrace-late",
            self.take,
            self.run_job,
            at_exit=_wait_at_exit,  # registered after the exporters' handlers: runs before them
            after_fork=self.forget,
        )

    def take(self) -> LateJob | None:
        """Return the next job, or ``None`` (``worker.cond`` held)."""
        return self.jobs.popleft() if self.jobs else None

    def run_job(self, job: LateJob) -> None:
        """Complete ``job``; once the queue is empty, re-write the finished owners' files."""
        cond = self.worker.cond
        try:
            owner = _complete(job)
            owners = self.owners
            if owner is not None:
                owners[id(owner)] = owner
            with cond:
                idle = not self.jobs
            if idle and owners:  # once per burst, not once per answer: the file may be large
                for finished in owners.values():
                    tree.files.write(finished)
                owners.clear()
        except Exception as e:  # noqa: BLE001 - the thread must go on
            _warn("late-job", "tasktrace: completing a task's late readings failed: %r", e)
        finally:
            with cond:
                self.done += 1
                cond.notify_all()

    def forget(self) -> None:
        """In a forked child: no job (the parent's jobs are the parent's)."""
        self.jobs.clear()
        self.queued = self.done = 0
        self.owners.clear()


def run_late(late: tuple[LateReading, ...]) -> dict[str, Any]:
    """Run late readings now and merge them in order; one that raises gives nothing (warned)."""
    values: dict[str, Any] = {}
    for reading in late:
        try:
            values.update(reading())
        except Exception as e:  # noqa: BLE001, PERF203 - a meter must never break the task
            _warn(f"late:{e!r}", "tasktrace: a late meter reading failed: %r", e)
    return values


def file_owner(rt: Runtime) -> TaskRecord | None:
    """Return the nearest ancestor of ``rt``'s task (in this process) that has a file."""
    files = tree.files
    node = rt.parent
    while node is not None:
        if files.targets(node) is not None:
            return node
        prt = current_runtime(node)
        node = prt.parent if prt is not None else None
    return None


def defer(job: LateJob) -> None:
    """Queue ``job`` for the background thread (started with the first job). Never blocks."""
    state = _state
    worker = state.worker
    with worker.cond:
        state.jobs.append(job)
        state.queued += 1
        worker.notify()


def stall_s() -> float:
    """Seconds without a completed job after which :func:`wait` gives up.

    One job runs at most one query per scope, each bounded by ``[prometheus] timeout_s``: so a
    server that answers, however slowly, is waited for, and a dead one for one timeout per
    scope (after its first failure it is not queried for ``retry_after_s``, and the other jobs
    complete at once).
    """
    return get_settings().prometheus.timeout_s * len(SCOPE_FIELDS)


def wait(stall_limit_s: float) -> bool:
    """Wait until every job queued before this call is complete, while they keep completing.

    Gives up when no job completed for ``stall_limit_s`` seconds (see :func:`stall_s`).

    Returns:
        Whether they are all complete. At once (``True``) when nothing is queued.
    """
    state = _state
    cond = state.worker.cond
    with cond:
        target = state.queued
        while state.done < target:
            done = state.done
            # Woken by every completed job (notify_all); a timeout with none is a stall.
            if not cond.wait(stall_limit_s) and state.done == done:
                return False
        return True


def _wait_at_exit() -> None:
    if not wait(stall_s()):
        _log.warning("tasktrace: Prometheus answers still pending at exit were not recorded")


def _complete(job: LateJob) -> TaskRecord | None:
    """Complete one job (module docstring); return its file's owner if that has finished."""
    task = job.task
    tree.update_finished(task, run_late(job.late))
    span = job.span
    try:
        try:
            attrs = finish_attributes(task, task_id=job.task_id, parent_id=job.parent_id)
        except TypeError as e:  # extra data set after construction that cannot be encoded
            _warn(f"data:{e}", "tasktrace: %s; left out of the span", e)
            attrs = finish_attributes(
                task, data=False, task_id=job.task_id, parent_id=job.parent_id
            )
        span.set_attributes(attrs)
        span.end(end_time=job.end_ns)
    except Exception as e:  # noqa: BLE001 - another span processor raised in on_end
        _warn("late-span-end", "tasktrace: ending the span of %r failed: %r", task.label, e)
    tree.files.write(task)  # nothing when it has no file
    recorder = task_metrics()
    if recorder is not None:
        recorder.finished(task, *job.cpu)
    owner = job.owner
    return owner if owner is not None and owner.status is not RUNNING else None  # it gave up


_state = _Queue()
