"""Carriers, capture and delivery: the driver side of work handed to an engine.

**Prototype** (issue 14) of core items 1, 2, 5 and 6 of ``docs/_design/integrations-core-api.md``
(see :mod:`tasktrace._portable` for the whole path). A carrier is what the work takes along;
:func:`deliver` attaches the records that come back under their parent tasks.

Thread-safety: every function may be called from any thread.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import os
import socket
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import ValidationError

from tasktrace._model import TaskStatus
from tasktrace._processor import tree
from tasktrace._task import Task  # core item 3: putting a parent into the context
from tasktrace.meters._base import WarnOnce

__all__ = [
    "FILE_OWNERS_KEPT",
    "HEADER_PREFIX",
    "Carrier",
    "DeliveryReport",
    "capture",
    "deliver",
    "forget_parents_for_tests",
    "pull_records",
    "register_record_source",
]

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)
_propagator = TraceContextTextMapPropagator()
_HOST: Final = socket.gethostname()

HEADER_PREFIX: Final = "tasktrace-"
"""Prefix of a carrier's keys in its text form (:meth:`Carrier.to_headers`)."""
FILE_OWNERS_KEPT: Final = 64
"""How many finished trees with a file the driver keeps reachable for late records."""


# ----- core item 1: the carrier ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Carrier:
    """What work submitted under a running task needs to join its tree and trace elsewhere.

    Small, picklable and free of secrets: no settings values, no environment.

    Attributes:
        parent_task_id: The submitting task's ``task_id``.
        traceparent: W3C ``traceparent`` of the span to parent remote spans on (the current
            span at capture: the task's, or a user's span inside it); ``None`` if invalid.
        tracestate: W3C ``tracestate``, if any.
        origin_host: ``socket.gethostname()`` of the submitting process.
        origin_pid: Process id of the submitting process.
    """

    parent_task_id: uuid.UUID
    traceparent: str | None
    tracestate: str | None
    origin_host: str
    origin_pid: int

    @property
    def here(self) -> bool:
        """Whether the submitting process is this one (threads, in-process workers)."""
        return self.origin_pid == os.getpid() and self.origin_host == _HOST

    def to_headers(self) -> dict[str, str]:
        """Return the carrier as text (for OpenTelemetry propagation and task annotations).

        Every key starts with :data:`HEADER_PREFIX`, so the carrier travels beside the W3C
        ``traceparent`` of the same propagation without replacing it.
        """
        headers = {
            f"{HEADER_PREFIX}parent": str(self.parent_task_id),
            f"{HEADER_PREFIX}origin": f"{self.origin_pid}@{self.origin_host}",
        }
        if self.traceparent:
            headers[f"{HEADER_PREFIX}traceparent"] = self.traceparent
        if self.tracestate:
            headers[f"{HEADER_PREFIX}tracestate"] = self.tracestate
        return headers

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> Carrier | None:
        """Rebuild a carrier from :meth:`to_headers`; ``None`` if ``headers`` hold none.

        Raises:
            ValueError: The carrier's keys are present but malformed (names the key).
        """
        parent = headers.get(f"{HEADER_PREFIX}parent")
        if parent is None:
            return None
        origin = headers.get(f"{HEADER_PREFIX}origin", "")
        pid, _, host = origin.partition("@")
        try:
            parent_id = uuid.UUID(parent)
        except ValueError:
            raise ValueError(f"{HEADER_PREFIX}parent: not a task id: {parent!r}") from None
        if not pid.isdigit() or not host:
            raise ValueError(f"{HEADER_PREFIX}origin: expected 'pid@host', got {origin!r}")
        return cls(
            parent_task_id=parent_id,
            traceparent=headers.get(f"{HEADER_PREFIX}traceparent"),
            tracestate=headers.get(f"{HEADER_PREFIX}tracestate"),
            origin_host=host,
            origin_pid=int(pid),
        )

    def span_context(self) -> trace.SpanContext | None:
        """Return the remote span context to parent spans on (``None`` without a valid one)."""
        if not self.traceparent:
            return None
        carrier = {"traceparent": self.traceparent}
        if self.tracestate:
            carrier["tracestate"] = self.tracestate
        sctx = trace.get_current_span(_propagator.extract(carrier)).get_span_context()
        return sctx if sctx.is_valid else None


# ----- core item 2: capture ----------------------------------------------------------------------


@dataclasses.dataclass
class _Parent:
    task: weakref.ReferenceType[Task]
    owner: weakref.ReferenceType[Task] | None  # nearest ancestor (or itself) with a task file


_lock = threading.Lock()
_parents: dict[uuid.UUID, _Parent] = {}
_owners: collections.OrderedDict[uuid.UUID, Task] = collections.OrderedDict()


def capture() -> Carrier | None:
    """Return the innermost running task of the current context as a :class:`Carrier`.

    ``None`` when no task runs here (work submitted then behaves as without tasktrace). The
    task is remembered (weakly) as a carrier parent, so records that arrive after it finished
    are still attached (:func:`deliver`).
    """
    task = Task.current()
    if task is None:
        return None
    key = task.task_id
    if key not in _parents:
        _remember(task)
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)  # the current span: the task's, or a user's span inside it
    return Carrier(
        parent_task_id=key,
        traceparent=carrier.get("traceparent"),
        tracestate=carrier.get("tracestate"),
        origin_host=_HOST,
        origin_pid=os.getpid(),
    )


def _remember(task: Task) -> None:
    owner = None
    node: Task | None = task
    while node is not None:  # core item 5: the tree with a file that holds this task
        rt = node._rt
        if rt is None:
            break
        if rt.file is not None:
            owner = node
            break
        node = rt.parent
    object.__setattr__(task, "__class__", _pulling_class(type(task)))
    with _lock:
        owner_ref = weakref.ref(owner) if owner is not None else None
        _parents[task.task_id] = _Parent(weakref.ref(task, _forget(task.task_id)), owner_ref)
        if owner is not None:  # kept alive for late records, the most recent ones only
            _owners[owner.task_id] = owner
            _owners.move_to_end(owner.task_id)
            while len(_owners) > FILE_OWNERS_KEPT:
                _owners.popitem(last=False)


def _forget(task_id: uuid.UUID) -> Callable[[object], None]:
    def drop(_ref: object) -> None:
        with _lock:
            _parents.pop(task_id, None)

    return drop


# ----- core item 5: delivery in the driver --------------------------------------------------------


@dataclasses.dataclass
class DeliveryReport:
    """What :func:`deliver` did with the records it was given (counts)."""

    attached: int = 0
    """Records attached under a running task."""
    late: int = 0
    """Records attached under a task that had finished (its file re-written)."""
    orphaned: int = 0
    """Records whose parent is unknown here, dropped with one warning."""
    invalid: int = 0
    """Records that are not task JSON, dropped with one warning."""


def deliver(records: Iterable[bytes | str | Task]) -> DeliveryReport:
    """Attach records of remote tasks under their parent tasks in this process.

    Each record's parent (``parent_id``) is looked up among the running tasks, then among the
    carrier parents of :func:`capture` that finished. A record replaces an earlier one with the
    same ``task_id`` (a running record's refresh). Subtasks are kept in start order. A late
    record (parent finished) re-writes the task file of the tree that holds it.

    Args:
        records: Task JSON (one task with its subtasks), or :class:`~tasktrace.Task` objects.

    Returns:
        The counts of what happened.
    """
    report = DeliveryReport()
    touched: dict[uuid.UUID, Task] = {}
    late_owners: dict[uuid.UUID, Task] = {}
    for item in records:
        try:
            record = item if isinstance(item, Task) else Task.model_validate_json(item)
        except (ValidationError, ValueError) as e:
            report.invalid += 1
            _warn("deliver-invalid", "tasktrace: a remote task record is not task JSON: %s", e)
            continue
        parent, owner = _find_parent(record.parent_id)
        if parent is None:
            report.orphaned += 1
            _warn(
                "deliver-orphan",
                "tasktrace: a remote task %r arrived for parent %s, unknown in this process "
                "(finished and released?); its record is dropped",
                record.label,
                record.parent_id,
            )
            continue
        parent.add_subtask(record)
        touched[parent.task_id] = parent
        if parent.status is TaskStatus.RUNNING:
            report.attached += 1
        else:
            report.late += 1
            if owner is not None and owner.status is not TaskStatus.RUNNING:
                late_owners[owner.task_id] = owner
    with tree.lock:
        for parent in touched.values():
            parent.subtasks.sort(key=_start_key)
    for owner in late_owners.values():
        owner.update()  # a finished task with a file: re-write it with the late records
    return report


def _find_parent(parent_id: uuid.UUID | None) -> tuple[Task | None, Task | None]:
    if parent_id is None:
        return None, None
    with _lock:
        known = _parents.get(parent_id)
    running = tree.running_task(parent_id)
    if known is None:
        return running, None
    return (running or known.task()), (known.owner() if known.owner is not None else None)


_sources: list[Callable[[], Iterable[bytes | str | Task]]] = []


def register_record_source(pull: Callable[[], Iterable[bytes | str | Task]]) -> Callable[[], None]:
    """Have ``pull`` called for records when a carrier parent finishes (core item 6).

    The records ``pull`` returns are delivered (:func:`deliver`) just before the carrier parent
    finishes, so they are in its task file from the start. ``pull`` must not raise; an
    exception is logged once and its records are lost for that call.

    Returns:
        A function that unregisters ``pull``.
    """
    with _lock:
        _sources.append(pull)

    def unregister() -> None:
        with _lock, contextlib.suppress(ValueError):
            _sources.remove(pull)

    return unregister


def pull_records() -> DeliveryReport:
    """Call every registered record source now and deliver what they return."""
    with _lock:
        sources = list(_sources)
    report = DeliveryReport()
    for pull in sources:
        try:
            records = list(pull())
        except Exception as e:  # noqa: BLE001 - a source must not break the user's task
            _warn(f"pull:{pull!r}", "tasktrace: pulling remote task records failed: %r", e)
            continue
        if records:
            got = deliver(records)
            for field in dataclasses.fields(DeliveryReport):
                name = field.name
                setattr(report, name, getattr(report, name) + getattr(got, name))
    return report


_pulling: dict[type[Task], type[Task]] = {}


def _pulling_class(cls: type[Task]) -> type[Task]:
    """Return a subclass of ``cls`` that pulls the record sources before finishing (item 6)."""
    if getattr(cls, "_pulls_records", False):
        return cls
    pulling = _pulling.get(cls)
    if pulling is None:

        def _finish(self: Task, status: TaskStatus, exc: BaseException | None) -> None:
            if _sources:
                pull_records()
            cls._finish(self, status, exc)

        pulling = _pulling[cls] = type(
            cls.__name__, (cls,), {"_finish": _finish, "_pulls_records": True}
        )
    return pulling


def _start_key(task: Task) -> float:
    return task.start_time if task.start_time is not None else float("inf")


def forget_parents_for_tests() -> None:
    """Forget every carrier parent and kept file owner (test isolation)."""
    with _lock:
        _parents.clear()
        _owners.clear()
