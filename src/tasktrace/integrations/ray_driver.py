"""Ray, the driver's side: the collector of each Ray session, drained at submitting tasks' ends.

See :mod:`tasktrace.integrations.ray` for the whole path of a record. A driver may run several
Ray sessions one after the other (``ray.init`` ... ``ray.shutdown()`` ... ``ray.init``, as
notebooks and test suites do, perhaps with another address or namespace): each session's
records go through a collector actor of that session, found or made when the first carrier of
the session goes out. A :class:`Session` holds that actor's handle and what the driver learnt
from its records (attempts, workers gone); the session is told by Ray's session name and job id
(a new local Ray numbers its jobs from 1 again, and a new job of one cluster has a new id), so a
carrier going out in a new session gets a new collector, and records already delivered stay.

Thread-safety: every method may be called from any thread.
"""

from __future__ import annotations

import atexit
import contextvars
import functools
import logging
import threading
import time
from typing import Any, Final

import ray

from tasktrace.core.record import TaskRecord, node_class
from tasktrace.core.warn import WarnOnce
from tasktrace.export.workers import worker_environment
from tasktrace.integrations.attempts import Attempts
from tasktrace.integrations.ray_collector import RecordCollector
from tasktrace.integrations.ray_exit import LOST_ERROR, GoneWorkers
from tasktrace.task.carriers import Carrier
from tasktrace.tree.delivery import deliver
from tasktrace.tree.processor import tree

__all__ = [
    "COLLECTOR_PREFIX",
    "DRAIN_WAIT_S",
    "IDLE_DRAIN_S",
    "Driver",
    "Session",
    "collector_name",
    "internal",
    "session_key",
]

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)

COLLECTOR_PREFIX: Final = "tasktrace-records-"
"""Name prefix of the job's collector actor (the job id follows)."""
DRAIN_WAIT_S: Final = 0.5
"""The longest a finishing task waits in the driver for busy workers' batches, in seconds."""
IDLE_DRAIN_S: Final = 1.0
"""Least seconds between two drains that are not at a submitting task's finish."""

internal: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "tasktrace_ray_internal", default=False
)
"""True while tasktrace calls Ray for itself: its propagator carries nothing then."""


def collector_name() -> str:
    """Return the name of this job's collector actor (Ray must be initialised)."""
    return COLLECTOR_PREFIX + ray.get_runtime_context().get_job_id()


def session_key() -> tuple[str, Any] | None:
    """Return ``(session name, job id)`` of the Ray session connected now, ``None`` if none.

    About 2 µs (Ray's runtime context, no call to the cluster): it is asked at each call
    submitted under a task.
    """
    if not ray.is_initialized():
        return None
    ctx = _context()
    return ctx.get_session_name(), ctx.worker.current_job_id


@functools.cache
def _context() -> Any:
    return ray.get_runtime_context()  # a view of the process's one worker, whatever session


class Session:
    """One Ray session's collector, seen from the process that submits work.

    Args:
        key: :func:`session_key` of the session.
        handle: The session's :class:`~tasktrace.integrations.ray_collector.RecordCollector`.

    Thread-safety: :meth:`drain` may be called from any thread.
    """

    def __init__(self, key: tuple[str, Any], handle: Any) -> None:
        """Start with no record seen (the session's own attempts and workers gone)."""
        self.key = key
        """The session's :func:`session_key`."""
        self.handle = handle
        """The session's collector actor (a Ray actor handle)."""
        self.attempts = Attempts(
            "ray_task_id", "ray_worker_id", "Ray", (LOST_ERROR,), call_key="ray_call"
        )
        """The attempts of the session's Ray tasks seen (Ray task ids repeat across sessions)."""
        self.gone = GoneWorkers()
        """The session's workers whose records were last seen running."""

    def drain(self, wait_s: float) -> None:
        """Deliver the collector's records, waiting at most ``wait_s`` for busy workers.

        Raises what Ray raises (the collector unreachable: the caller warns).
        """
        token = internal.set(True)
        try:
            ref = self.handle.drain.remote(time.time(), wait_s)
            records, lost = ray.get(ref, timeout=wait_s + 30)
        finally:
            internal.reset(token)
        cls = node_class()
        out = self.attempts.sort_out(cls.model_validate_json(r) for r in records)
        out += self.gone.failed(out, lost)
        if out:
            deliver(out)


class Driver:
    """The submitting process's side: the live session, the submitting tasks it drains for."""

    def __init__(self) -> None:
        """Start with no session (one is made when the first carrier goes out)."""
        self._lock = threading.Lock()
        self._session: Session | None = None
        self._source = False  # registered as a record source (a driver, once)
        self.submitted: dict[Any, tuple[Session, int, int]] = {}
        """Per submitting task id: the session its carriers went out in, how many went out in
        it, and how many went out in sessions shut down since (their records are lost)."""
        self.last_drain = 0.0
        """``time.monotonic()`` of the last drain's end, in seconds."""

    def live(self) -> Session | None:
        """Return the session of the Ray connected now, if a carrier went out in it."""
        session = self._session
        if session is None:
            return None
        return session if session.key == session_key() else None

    def prepare(self, carrier: Carrier) -> None:
        """Have the live session's collector ready for a carrier; remember its parent task.

        Never raises (a failure is warned about once: the call goes out, its records may not
        come home).
        """
        try:
            key = session_key()
            if key is None:
                return
            session = self._session
            if session is None or session.key != key:
                session = self._start(key)
        except Exception as e:  # noqa: BLE001 - must not break the user's call
            _warn("ray-prepare", "tasktrace: no task-record collector for this Ray job: %r", e)
            return
        task_id = carrier.parent_task_id
        owner, calls, lost = self.submitted.get(task_id, (session, 0, 0))
        if owner is not session:  # Ray shut down and started again inside the task
            calls, lost = 0, lost + calls
        self.submitted[task_id] = (session, calls + 1, lost)

    def _start(self, key: tuple[str, Any]) -> Session:
        with self._lock:
            session = self._session
            if session is not None and session.key == key:
                return session
            token = internal.set(True)
            try:
                handle = RecordCollector.options(  # type: ignore[attr-defined]
                    name=collector_name(), get_if_exists=True
                ).remote(worker_environment())
            finally:
                internal.reset(token)
            session = self._session = Session(key, handle)
            # The driver (get_task_id would log a warning there, on every driver). Only the
            # driver drains: a worker submitting work of its own (nested calls) ships its
            # records like the others, to be attached in the driver under its task's record.
            if not self._source and ray.get_runtime_context().worker.mode != ray.WORKER_MODE:
                self._source = True
                tree.register_record_source(self.pull)
                atexit.register(self.collect)
            return session

    def pull(self, finished: TaskRecord | None) -> None:
        """Drain at a submitting task's finish (waiting), or now and then (a record source)."""
        owner, calls, lost = (None, 0, 0)
        if finished is not None:
            owner, calls, lost = self.submitted.pop(finished.task_id, (None, 0, 0))
        if not calls and time.monotonic() - self.last_drain < IDLE_DRAIN_S:
            return
        session = self.live()
        if session is not owner:
            calls, lost = 0, lost + calls
        if lost and finished is not None:
            _log.warning(
                "tasktrace: Ray was shut down before the records of %d call(s) made under "
                "task %r came home: they are lost (shut Ray down after the task ends)",
                lost,
                finished.label,
            )
        if session is not None:
            self._drain(session, DRAIN_WAIT_S if calls else 0.0)

    def _drain(self, session: Session, wait_s: float) -> None:
        try:
            session.drain(wait_s)
        finally:
            self.last_drain = time.monotonic()

    def collect(self) -> None:
        """Deliver the live session's records now (:func:`tasktrace.integrations.ray.collect`)."""
        try:
            session = self.live()
            if session is not None:
                self._drain(session, DRAIN_WAIT_S)
        except Exception as e:  # noqa: BLE001 - collecting must not break the user's program
            _warn("ray-collect", "tasktrace: cannot collect task records from Ray: %r", e)
