"""Records of remote tasks, delivered into this process's tree under their parent tasks.

Work that an engine (joblib, Ray, Dask) runs in another process takes a *carrier* of the
submitting task along (:mod:`tasktrace.task.carriers`); the tasks it starts there send their
records home through the engine, and :func:`deliver` attaches each record under its parent.

- **Carrier parents.** A task whose carrier was taken is remembered here
  (:func:`keep_parent`): weakly, with the nearest task above it that has a task file (kept
  strongly for the last :data:`FILE_OWNERS_KEPT` trees), so a record that arrives after its
  parent finished is still attached (*late*) and that file re-written.
- **The index.** Parents are found by ``task_id`` in O(1): the running tasks
  (:meth:`~tasktrace.tree.processor.TaskTreeProcessor.running_task`), the carrier parents, and
  the records delivered before (a remote task that submitted work of its own). A record
  replaces the earlier record of the same ``task_id`` (a running record by its finished one)
  in place, never a finished record by a running snapshot that arrives after it; a new one is
  inserted in start order (binary search on ``start_time``).
- **Waiting records.** A record whose parent is not known yet (its parent's own record is
  still on its way) waits, up to :data:`MAX_WAITING` records, and is attached when its parent
  arrives; past that the oldest are dropped with one warning.
- **Held records.** An engine's callback thread may hand records to a :class:`RecordInbox`
  instead of delivering them one message at a time: they are parsed and attached many in a
  row (warm caches) when asked for, before any task file is written or task finishes, or
  :data:`HOLD_S` after the first held one.

Thread-safety: every function may be called from any thread (one lock; the tree's lock is
taken for the changes to the tree).
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable
from typing import Final

from pydantic import ValidationError

from tasktrace.core.record import TaskRecord, node_class
from tasktrace.core.status import RUNNING, TaskStatus
from tasktrace.core.warn import WarnOnce
from tasktrace.tree.processor import tree

__all__ = [
    "FILE_OWNERS_KEPT",
    "HOLD_RECORDS",
    "HOLD_S",
    "MAX_WAITING",
    "DeliveryReport",
    "RecordInbox",
    "deliver",
    "delivered",
    "forget_parents",
    "is_kept",
    "keep_parent",
]

_warn = WarnOnce(logging.getLogger(__name__))

FILE_OWNERS_KEPT: Final = 64
"""How many finished trees with a task file are kept reachable for late records."""
MAX_WAITING: Final = 10_000
"""How many records may wait for their parent's record before the oldest are dropped."""
HOLD_S: Final = 1.0
"""Longest time, in seconds, a :class:`RecordInbox` holds a record before delivering it, when
nothing asked for its records before (no task finished, no task file written)."""
HOLD_RECORDS: Final = 64
"""How many records a :class:`RecordInbox` holds before delivering them all at once: many in a
row are parsed with warm caches, and fewer are left for the end of the work (in the thread that
waits for it, after the workers finished)."""


@dataclasses.dataclass
class DeliveryReport:
    """What :func:`deliver` did with the records it was given (counts of records)."""

    attached: int = 0
    """Attached under a task still running here (or under a remote task's record)."""
    late: int = 0
    """Attached under a carrier parent that had finished (its task file re-written)."""
    waiting: int = 0
    """Held until their parent's record arrives (parent unknown here so far)."""
    invalid: int = 0
    """Not task JSON: dropped with one warning."""

    def add(self, other: DeliveryReport) -> None:
        """Add ``other``'s counts to these."""
        self.attached += other.attached
        self.late += other.late
        self.waiting += other.waiting
        self.invalid += other.invalid


@dataclasses.dataclass
class _Parent:
    task: weakref.ReferenceType[TaskRecord]
    owner: uuid.UUID | None  # task_id of the nearest task above with a file (kept in _owners)


_lock = threading.Lock()
_parents: dict[uuid.UUID, _Parent] = {}
_owners: collections.OrderedDict[uuid.UUID, TaskRecord] = collections.OrderedDict()
_delivered: weakref.WeakValueDictionary[uuid.UUID, TaskRecord] = weakref.WeakValueDictionary()
_waiting: collections.OrderedDict[uuid.UUID, TaskRecord] = collections.OrderedDict()


def keep_parent(task: TaskRecord) -> None:
    """Remember ``task`` (running here) as a parent of remote tasks (O(1) when known).

    Its nearest ancestor with a task file (or itself) is found through the running tasks and
    kept strongly, for the last :data:`FILE_OWNERS_KEPT` such trees.
    """
    key = task.task_id
    if key in _parents:
        return
    owner: TaskRecord | None = None
    node: TaskRecord | None = task
    while node is not None:
        targets = tree.files.targets(node)
        if targets is not None and targets.file is not None:
            owner = node
            break
        node = tree.running_task(node.parent_id) if node.parent_id is not None else None
    with _lock:
        _parents[key] = _Parent(
            weakref.ref(task, _dropper(key)), owner.task_id if owner is not None else None
        )
        if owner is not None:
            _owners[owner.task_id] = owner
            _owners.move_to_end(owner.task_id)
            while len(_owners) > FILE_OWNERS_KEPT:
                _owners.popitem(last=False)


def is_kept(task_id: uuid.UUID) -> bool:
    """Whether the task ``task_id`` is a carrier parent remembered by :func:`keep_parent`."""
    return task_id in _parents


def _dropper(key: uuid.UUID) -> Callable[[object], None]:
    def drop(_ref: object) -> None:
        with _lock:
            _parents.pop(key, None)

    return drop


def delivered(task_id: uuid.UUID) -> TaskRecord | None:
    """Return the record delivered last for ``task_id``, while a tree still holds it."""
    return _delivered.get(task_id)


def forget_parents() -> None:
    """Forget every carrier parent, kept file owner, delivered and waiting record (tests)."""
    with _lock:
        _parents.clear()
        _owners.clear()
        _delivered.clear()
        _waiting.clear()


def deliver(records: Iterable[bytes | str | TaskRecord]) -> DeliveryReport:
    """Attach records of remote tasks under their parent tasks in this process.

    Args:
        records: Task JSON (one task with its subtasks, as a task file holds it), or task
            objects. Each names its parent by ``parent_id``.

    Returns:
        The counts of what happened. Never raises for a bad record: it is counted and
        warned about once.
    """
    report = DeliveryReport()
    rewrite: dict[uuid.UUID, TaskRecord] = {}
    cls = node_class()
    for item in records:
        try:
            record = item if isinstance(item, TaskRecord) else cls.model_validate_json(item)
        except (ValidationError, ValueError) as e:
            report.invalid += 1
            _warn("deliver-invalid", "tasktrace: a remote task record is not task JSON: %s", e)
            continue
        _attach_with_waiting(record, report, rewrite)
    for owner in rewrite.values():
        if owner.status is not TaskStatus.RUNNING:
            tree.files.write(owner)  # a finished tree with a file: re-written with late records
    return report


def _attach_with_waiting(
    record: TaskRecord, report: DeliveryReport, rewrite: dict[uuid.UUID, TaskRecord]
) -> None:
    todo = [record]
    while todo:
        item = todo.pop()
        if not _attach(item, report, rewrite):
            _wait(item)
            report.waiting += 1
            continue
        if not _waiting:
            continue  # the usual: nothing waits (no lock taken per record)
        with _lock:
            ready = [r for r in _waiting.values() if r.parent_id == item.task_id]
            for r in ready:
                del _waiting[r.task_id]
        todo.extend(ready)


def _wait(record: TaskRecord) -> None:
    with _lock:
        _waiting[record.task_id] = record
        dropped = 0
        while len(_waiting) > MAX_WAITING:
            _waiting.popitem(last=False)
            dropped += 1
    if dropped:
        _warn(
            "deliver-orphan",
            "tasktrace: records of remote tasks whose parent is unknown in this process "
            "(finished and released?) are dropped beyond %d waiting",
            MAX_WAITING,
        )


def _find(parent_id: uuid.UUID) -> tuple[TaskRecord | None, _Parent | None]:
    running = tree.running_task(parent_id)
    known = _parents.get(parent_id)
    if running is not None:
        return running, known
    if known is not None:
        return known.task(), known
    return _delivered.get(parent_id), None


def _attach(
    record: TaskRecord, report: DeliveryReport, rewrite: dict[uuid.UUID, TaskRecord]
) -> bool:
    parent_id = record.parent_id
    if parent_id is None:
        return False
    parent, known = _find(parent_id)
    if parent is None:
        return False
    with tree.lock:
        _insert(parent, record)
    _delivered[record.task_id] = record
    while known is None and parent is not None and parent.parent_id is not None:
        # under a remote task's record: the carrier parent it was delivered to decides
        parent, known = _find(parent.parent_id)
    if parent is None or known is None or parent.status is TaskStatus.RUNNING:
        report.attached += 1
        return True
    report.late += 1
    owner = _owners.get(known.owner) if known.owner is not None else None
    if owner is not None:
        rewrite[owner.task_id] = owner
    return True


def _start(task: TaskRecord) -> float:
    start = task.start_time
    return start if start is not None else float("inf")


def _insert(parent: TaskRecord, record: TaskRecord) -> None:
    """Put ``record`` among ``parent``'s subtasks (replacing its earlier record), start order."""
    subtasks = parent.subtasks
    old = _delivered.get(record.task_id)
    if old is not None and old.status is not TaskStatus.RUNNING and record.status is RUNNING:
        return  # a snapshot sent before the task finished, arriving after its finished record
    if old is not None:
        i = bisect.bisect_left(subtasks, _start(old), key=_start)
        while i < len(subtasks) and subtasks[i] is not old and _start(subtasks[i]) == _start(old):
            i += 1
        if i >= len(subtasks) or subtasks[i] is not old:
            i = next((j for j, t in enumerate(subtasks) if t is old), -1)
        if i >= 0:
            _carry_over(old, record)
            subtasks[i] = record
            return
    if not subtasks or _start(subtasks[-1]) <= _start(record):
        subtasks.append(record)  # the usual case: records arrive in start order
    else:
        bisect.insort(subtasks, record, key=_start)


def _carry_over(old: TaskRecord, new: TaskRecord) -> None:
    """Keep subtasks delivered under ``old`` (remote work it submitted) in its new record."""
    if not old.subtasks:
        return
    have = {t.task_id for t in new.subtasks}
    for sub in old.subtasks:
        if sub.task_id not in have:
            bisect.insort(new.subtasks, sub, key=_start)


class RecordInbox:
    """Records held as they arrive, delivered many in a row (see the module docstring).

    Parsing and attaching one record as its message arrives, in an engine's callback thread
    between two other messages, cost the driver 66 µs of CPU a record in the joblib benchmark
    (caches cold), against 11 µs for the same record in a row of others. :meth:`put` only
    appends; the held records are delivered by :meth:`deliver_held`: called by the integration
    (at the end of a ``Parallel`` call), by the tree before each task file is written and at
    each task's finish (a record source, registered with the first record held), and by
    :meth:`put` itself once :data:`HOLD_RECORDS` are held or the oldest is :data:`HOLD_S` old.

    Thread-safety: every method may be called from any thread; :meth:`put` takes no lock.
    """

    def __init__(self, hold_s: float = HOLD_S, hold_records: int = HOLD_RECORDS) -> None:
        """Start empty, registered nowhere (until the first :meth:`put`)."""
        self.hold_s = hold_s
        self.hold_records = hold_records
        self._held: collections.deque[bytes | str] = collections.deque()
        self._since = 0.0  # time.monotonic() of the first record held, 0.0: none held
        self._registered = False
        ref = weakref.ref(self)  # a forked child (a pool worker) delivers none of its parent's
        os.register_at_fork(after_in_child=lambda: _forget_held(ref))

    def put(self, records: Iterable[bytes | str]) -> None:
        """Hold ``records`` (task JSON) for delivery; deliver all held once many, or old."""
        held = self._held
        held.extend(records)
        if not self._registered:
            self._registered = True
            tree.register_record_source(self._pull)
        now = time.monotonic()
        if not self._since:
            self._since = now
        elif len(held) >= self.hold_records or now - self._since >= self.hold_s:
            self.deliver_held()

    def deliver_held(self) -> DeliveryReport:
        """Deliver every record held now (:func:`deliver`); return what happened to them."""
        held = self._held
        if not held:
            return DeliveryReport()
        self._since = 0.0
        records: list[bytes | str] = []
        pop = held.popleft
        try:
            while True:
                records.append(pop())  # atomic: a record put meanwhile is taken or left
        except IndexError:
            pass
        return deliver(records)

    def _pull(self, finished: TaskRecord | None) -> None:
        del finished
        if self._held:
            self.deliver_held()


def _forget_held(ref: weakref.ReferenceType[RecordInbox]) -> None:
    inbox = ref()
    if inbox is not None:
        inbox._held.clear()
        inbox._since = 0.0
