"""The sink of a remote scope's root tasks (see :class:`tasktrace.task.carriers.RemoteScope`).

A root task started under a scope's stand-in is counted by the scope's :class:`RootSink` as it
joins the stand-in (before its span starts), and taken as it starts: the tree's processor adds
it to the stand-in's ``subtasks``, a list of the scope's own (the extra data is set and
``on_started`` told then). Nothing of the scope runs when a root finishes. Finished roots are
*collected* from the stand-in's subtasks later, many at a time: by the scope's ``take``
(joblib: at the end of each batch) or, for a scope that hands its roots on (``on_finished``),
by :func:`hand_on_finished` (the record batcher of :mod:`tasktrace.integrations.batching`,
before each batch it makes). A root then has no entry in the tree writer of its own (one per
root cost a lock, a weakref and four lookups at each start and finish, in every engine call).

Thread-safety: see :class:`RootSink`.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from tasktrace.core.record import TaskRecord, own_containers
from tasktrace.core.status import RUNNING
from tasktrace.core.warn import WarnOnce
from tasktrace.tree.processor import tree

__all__ = ["RootSink", "hand_on_finished", "kept_subtasks"]

_warn = WarnOnce(logging.getLogger(__name__))


class _Roots(list):  # type: ignore[type-arg]
    """A scope's stand-in's subtasks: the roots started under it, each taken as it starts.

    The processor adds a root here (under the tree's lock) right after its span started and
    before the user's code runs: the scope's extra data is set on it then (so it is in the
    record and on the span), ``on_started`` is told, and a scope that hands roots on is noted
    for :func:`hand_on_finished` (after the add, so a root is never missed). A scope that
    neither keeps nor hands on its roots drops them.
    """

    __slots__ = ("sink", "stand_in")
    sink: RootSink
    stand_in: weakref.ReferenceType[TaskRecord]

    def append(self, item: Any) -> None:
        """Take ``item`` (a root, as it starts); see the class docstring."""
        sink: RootSink = self.sink
        if sink.data or sink.call_data is not None:
            _set_data(item, sink)
        if sink.on_started is not None:
            sink.on_started(item)
        if sink.on_finished is not None:
            list.append(self, item)
            if id(sink) in _pending:  # noted already; the note outlives this root (see below)
                return
            stand_in = self.stand_in()  # weakly: no cycle through this list
            if stand_in is not None:
                with _pending_lock:
                    _pending[id(sink)] = (sink, stand_in)
        elif sink.keep:
            list.append(self, item)


def _set_data(task: TaskRecord, sink: RootSink) -> None:
    own_containers(task)  # a Task("label") shares the read-only empty extra
    extra = task.__pydantic_extra__
    if extra is None:
        task.__pydantic_extra__ = extra = {}
    extra.update(sink.data)  # checked once, when the scope was made
    if sink.call_data is not None:
        try:
            extra.update(sink.call_data())
        except Exception as e:  # noqa: BLE001 - must not break the user's task
            _warn("call-data", "tasktrace: a remote scope's call data failed: %r", e)


def kept_subtasks(sink: RootSink, stand_in: TaskRecord) -> list[TaskRecord]:
    """Return the ``subtasks`` list for ``sink``'s stand-in (see :class:`_Roots`).

    A plain list where there is nothing to do as a root starts (a scope that keeps its roots,
    with no extra data and no ``on_started``: joblib's).
    """
    if sink.keep and not sink.data and sink.call_data is None and sink.on_started is None:
        return []
    roots = _Roots()
    roots.sink = sink
    roots.stand_in = weakref.ref(stand_in)
    return roots


_pending_lock = threading.Lock()
_pending: dict[int, tuple[RootSink, TaskRecord]] = {}
"""Sinks that hand roots on and may hold some not yet handed on, with their stand-ins (kept
alive until then: a scope let go by its cache keeps its finished roots' records)."""


class RootSink:
    """A remote scope's root tasks: each joins at its start, and finished ones are collected.

    The tree writer's registry (process-wide) holds the sink of the stand-in: the sink holds
    the stand-in only weakly (:attr:`parent`), so a scope whose work is done is freed by
    reference counting, with no cycle through the registry and no garbage left for the
    collector.

    Args:
        data: Extra data (JSON values, already normalised) set on every root at its start.
        on_started: Called with a root right after it started, before the user's code runs;
            must not raise.
        on_finished: Called with each finished root (the task object) when it is collected
            (:func:`hand_on_finished`); the receiver serialises it when it sends it. Must not
            raise.
        keep: Keep finished roots for the scope's ``take`` (when ``on_finished`` is not given).
        call_data: Returns more extra data for each root, at its start (JSON values).

    Attributes:
        roots_started: How many roots joined.
        parent: Returns the scope's stand-in, or ``None`` once it was freed.

    Thread-safety: :meth:`__call__` may be called from any thread that starts a root, and
    :meth:`collect` from any thread.
    """

    __slots__ = (
        "call_data",
        "data",
        "keep",
        "lock",
        "on_finished",
        "on_started",
        "parent",
        "roots_started",
    )

    def __init__(
        self,
        data: dict[str, Any],
        on_started: Callable[[TaskRecord], None] | None,
        on_finished: Callable[[TaskRecord], None] | None,
        keep: bool,
        call_data: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        """Create an empty sink (its :attr:`parent` is set by the scope)."""
        self.data = data
        self.call_data = call_data
        self.on_started = on_started
        self.on_finished = on_finished
        self.keep = keep
        self.lock = threading.Lock()
        self.roots_started = 0
        self.parent: Callable[[], TaskRecord | None] = lambda: None  # the stand-in, weakly

    def __call__(self, task: TaskRecord) -> None:
        """Count ``task`` as a root, as it joins the stand-in (before its span starts).

        The rest happens as it starts, when the processor adds it under the stand-in
        (:class:`_Roots`).
        """
        del task
        with self.lock:
            self.roots_started += 1

    def running(self) -> list[TaskRecord]:
        """Return the roots still running (oldest first)."""
        parent = self.parent()
        if parent is None:
            return []
        with tree.lock:
            return [t for t in parent.subtasks if t.__dict__["status"] is RUNNING]

    def collect(self) -> list[TaskRecord]:
        """Return the roots that finished since the last call (the stand-in lets them go)."""
        parent = self.parent()
        if parent is None:
            return []
        with tree.lock:  # the processor appends and finishes under it: a consistent view
            subtasks = parent.subtasks
            if not subtasks:
                return []
            done = [t for t in subtasks if t.__dict__["status"] is not RUNNING]
            if done:
                subtasks[:] = [t for t in subtasks if t.__dict__["status"] is RUNNING]
        return done


def hand_on_finished() -> None:
    """Hand every finished root of the scopes that hand roots on to their ``on_finished``.

    Called by the record batchers before each batch they make (any thread). A scope with no
    root left is forgotten until a root is added under its stand-in again (it may be freed).
    """
    with _pending_lock:
        items = list(_pending.values())
    for sink, stand_in in items:
        on_finished = sink.on_finished
        for task in sink.collect():
            if on_finished is not None:
                on_finished(task)
        with _pending_lock:  # a root added after the pop notes the scope again (append
            if not stand_in.subtasks:  # reads _pending without the lock); one added between
                _pending.pop(id(sink), None)  # the look and the pop saw the note: look again
                if stand_in.subtasks:
                    _pending[id(sink)] = (sink, stand_in)
