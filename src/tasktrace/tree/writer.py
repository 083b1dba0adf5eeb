"""Task files written from the tree: which tasks have files, and writing them.

The processor decides *when* (a task with a file starts, is refreshed, finishes; a record of
another process arrives); this writer decides *where*. A task may have two targets:

- its **file** (``Task(file=...)``, :meth:`~tasktrace.Task.save_to_file`, ``tasktrace run
  --file``), checked before the first write (:func:`~tasktrace.tree.files.check_folder`,
  :func:`~tasktrace.tree.files.check_replaceable`) and refreshed by the refresh thread while
  the task runs (unless asked not to);
- its **spool record**, when it is the root of a subprocess's tasks whose parent task is in
  another process (:mod:`tasktrace.tree.spool`);
- its **sink**, when it is the stand-in of a task of another process under which an engine
  runs carried work (:mod:`tasktrace.task.carriers`): the function each root task started
  under it is handed to as it joins (the roots themselves get no targets; the sink collects
  them later from the stand-in's subtasks). The writer only keeps it.

A root task with a file records this process's meter checks as it starts
(:mod:`tasktrace.tree.meters_record`), so that its file says why energy it lacks was not
measured.

A task with targets that finishes while subtasks of its tree still run (another thread's,
started under it) leaves them in its file as running; each of them is noted, and when one
finishes the file is written again (:meth:`TaskFileWriter.late_finished`), so the file ends
with every subtask's final status and figures.

Each write pulls the records of other processes first (the processor's record sources), then
serialises the task's tree under the tree's lock (:func:`~tasktrace.core.record.dump_json`) and
replaces each target atomically (:func:`~tasktrace.tree.files.save_atomic`), holding the task's
own write lock from the snapshot to the last save (a task file someone else changed since
the last save is not replaced: :mod:`tasktrace.tree.owned`): when the refresh thread and a finishing
thread write the same file, the later snapshot is the one left on disk. Targets are held
per task object, weakly: a task that is garbage-collected takes its targets with it.

Thread-safety: every method may be called from any thread.
"""

from __future__ import annotations

import functools
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasktrace.core.forksafe import renew_after_fork
from tasktrace.core.record import TaskRecord, dump_json
from tasktrace.core.status import TaskStatus
from tasktrace.tree.file_kinds import TASK_FILE
from tasktrace.tree.files import check_folder, check_replaceable, save_atomic
from tasktrace.tree.meters_record import record_meters
from tasktrace.tree.owned import OwnedFile
from tasktrace.tree.refresh import RefreshMonitor

__all__ = ["FORCE_HINT", "LATE_WRITE_INTERVAL_S", "FileTargets", "RecordSink", "TaskFileWriter"]

RecordSink = Callable[[TaskRecord], None]
"""Where the root tasks started under a remote scope's stand-in go
(:meth:`TaskFileWriter.set_sink`): called with each root as it joins the stand-in, at its start
(:mod:`tasktrace.task.roots`); must not raise."""

FORCE_HINT = "remove it, or call task.save_to_file(path, force=True) to replace it"
"""How the Python API lets a user replace a file that is not tasktrace output."""


@dataclass
class FileTargets:
    """Where one task is written.

    Attributes:
        file: The task file, or ``None``.
        owned: Where ``file`` is written now and what was written last: a file changed by
            someone else since is not replaced (:mod:`tasktrace.tree.owned`).
        checked: Whether ``file`` passed (or was let past) the replaceability check.
        monitor: Whether the refresh thread re-writes the file while the task runs.
        spool_record: The task's record in the spool (a subprocess root), or ``None``.
        sink: The sink of the roots started under the task (a remote scope's stand-in), or
            ``None``.
        lock: Held while the task's tree is serialised and written, so that of two writes
            (the refresh thread's and the finish's) the later snapshot is always saved last.
    """

    file: Path | None = None
    owned: OwnedFile | None = None
    checked: bool = False
    monitor: bool = True
    spool_record: Path | None = None
    sink: RecordSink | None = None
    ref: Any = field(default=None, repr=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def paths(self) -> tuple[Path, ...]:
        """Return the targets that are set (file first)."""
        return tuple(p for p in (self.file, self.spool_record) if p is not None)


class TaskFileWriter:
    """Which tasks have files, and writing a task's tree to them (see the module docstring).

    Args:
        lock: The tree's lock (held while the tree is serialised).
        pull_records: Merges records of other processes into the tree (called before writing).
        monitor: The refresh thread running tasks with files are registered with.
    """

    def __init__(
        self,
        lock: Callable[[], Any],
        pull_records: Callable[[], None],
        monitor: RefreshMonitor,
    ) -> None:
        """Create a writer with no targets."""
        self._tree_lock = lock
        self._pull_records = pull_records
        self.monitor = monitor
        """The refresh thread (see :class:`~tasktrace.tree.refresh.RefreshMonitor`)."""
        self._targets: dict[int, FileTargets] = {}
        self._lock = threading.Lock()
        renew_after_fork(self, "_lock")
        self._dead: list[int] = []
        """Keys of collected tasks, appended by the weakref callback (see :meth:`_targets_of`)."""
        self._refresher: Callable[[TaskRecord], None] | None = None
        self.late: dict[int, tuple[weakref.ref[TaskRecord], _LateOwner]] = {}
        """Subtasks still running when a task with targets finished, by ``id()``: ``(subtask,
        that task's state)``, both weakly held (an entry goes when its subtask is collected).
        Empty, as it nearly always is, a finish costs one truth test (see
        :meth:`late_finished`)."""

    def set_refresher(self, refresh: Callable[[TaskRecord], None]) -> None:
        """Set what the refresh thread calls for a running task with a file (the façade's)."""
        self._refresher = refresh

    # ----- targets -----------------------------------------------------------------------------

    def _targets_of(self, task: TaskRecord) -> FileTargets:
        key = id(task)
        with self._lock:
            self._purge()
            targets = self._targets.get(key)
            if targets is None or targets.ref() is not task:  # none, or a collected task's
                targets = self._targets[key] = FileTargets()
                # The callback runs inside the garbage collector, possibly while this very
                # lock is held (a collection triggered by an allocation above): it must take
                # no lock, so it only notes the key (list.append is atomic).
                dead = self._dead
                targets.ref = weakref.ref(task, lambda _: dead.append(key))
            return targets

    def _purge(self) -> None:
        """Drop the targets of collected tasks (call with the lock held)."""
        while self._dead:
            key = self._dead.pop()
            targets = self._targets.get(key)
            if targets is not None and targets.ref() is None:  # not a new task at that id
                del self._targets[key]

    def targets(self, task: TaskRecord) -> FileTargets | None:
        """Return ``task``'s targets, or ``None`` when it has none (one dict lookup).

        Targets left by a collected task whose id a new object reuses are not returned.
        """
        held = self._targets
        if not held:  # no task has targets (no file anywhere): no id() and no lookup
            return None
        targets = held.get(id(task))
        if targets is None or targets.ref() is not task:
            return None
        return targets

    def set_file(
        self, task: TaskRecord, path: Path, *, checked: bool = False, monitor: bool = True
    ) -> None:
        """Make ``path`` ``task``'s file (replacing any earlier one); nothing is written yet.

        Args:
            task: The task.
            path: The file.
            checked: Whether the caller already ran the checks of :meth:`check`.
            monitor: Re-write it at every refresh while the task runs.
        """
        targets = self._targets_of(task)
        targets.file = path
        targets.owned = OwnedFile(path)
        targets.checked = checked
        targets.monitor = monitor

    def set_spool_record(self, task: TaskRecord, path: Path) -> None:
        """Make ``path`` the spool record ``task`` (a subprocess root) is written to as well."""
        self._targets_of(task).spool_record = path

    def set_sink(self, task: TaskRecord, sink: RecordSink) -> None:
        """Keep ``sink`` as the sink of the roots started under ``task`` (a scope's stand-in).

        The sink gets each root task object as it joins, not its JSON: it serialises records
        only when it sends them. The writer never calls it, and never writes the stand-in.
        """
        self._targets_of(task).sink = sink

    def save(self, task: TaskRecord, path: Path, *, force: bool, monitor: bool) -> None:
        """``Task.save_to_file``: check ``path``, make it ``task``'s file and write it now.

        While the task runs, the refresh thread re-writes it (when ``monitor``), and it is
        written again when the task finishes.

        Raises:
            FileNotFoundError: The file's folder does not exist.
            FileExistsError: ``path`` holds something that is not tasktrace output and
                ``force`` is false, or it is a folder or a special file (see
                :func:`~tasktrace.tree.files.check_replaceable`). Nothing is written then.
        """
        check_folder(path)
        check_replaceable(path, force=force, override=FORCE_HINT, writes=TASK_FILE)
        self.set_file(task, path, checked=True, monitor=monitor)
        if task.status is TaskStatus.RUNNING and task.parent_id is None:  # else: at its start
            self._record_meters(task)
        self.write(task)
        if task.status is TaskStatus.RUNNING:
            self.watch(task)

    def forget_all(self) -> None:
        """Drop every target (in a forked child: the parent's files are not the child's)."""
        with self._lock:
            self._targets = {}
            self._dead.clear()
            self.late = {}

    def check(self, task: TaskRecord) -> None:
        """Check ``task``'s file before it starts (before any work runs); once per file.

        Raises:
            FileNotFoundError: The file's folder does not exist.
            NotADirectoryError: Its parent path is not a folder.
            FileExistsError: The file holds something that is not tasktrace output (see
                :func:`~tasktrace.tree.files.check_replaceable`).
        """
        targets = self._targets.get(id(task))
        if targets is None or targets.file is None:
            return
        check_folder(targets.file)
        if not targets.checked:
            check_replaceable(targets.file, override=FORCE_HINT, writes=TASK_FILE)
            targets.checked = True

    # ----- writing -----------------------------------------------------------------------------

    def write(self, task: TaskRecord) -> bool:
        """Write ``task``'s tree to its targets now; return whether it has any.

        Records of other processes are merged first. A failed write warns (once per file, and
        once more if the task's last write fails too), saying what will retry, and leaves the
        previous file intact; it never raises.
        """
        targets = self._targets.get(id(task))
        if targets is None:
            return False
        paths = targets.paths()
        if not paths:
            return False
        self._pull_records()
        with targets.lock:  # snapshot and save in one step: a later snapshot is saved later
            with self._tree_lock():
                data = dump_json(task)
            if data is not None:
                then, retried = self._after_failure(task, targets)
                owned = targets.owned
                for path in paths:  # one line, newline-terminated
                    if owned is not None and path is targets.file:  # not if changed: beside it
                        owned.saved(
                            save_atomic(
                                owned.next_target(), data, b"\n", then=then, retried=retried
                            )
                        )
                    else:
                        save_atomic(path, data, b"\n", then=then, retried=retried)
        return True

    def _after_failure(self, task: TaskRecord, targets: FileTargets) -> tuple[str, bool]:
        """Return what writes ``task``'s targets after this write, and whether anything does.

        For the warning of a failed write: a refresh (a running task's monitored file), the
        finish (a running task's other targets), the start (a pending task's), a late subtask's
        finish (a finished task's, see :attr:`late`), else nothing.
        """
        status = task.status
        if status is TaskStatus.RUNNING:
            if targets.monitor and self._refresher is not None:
                return "later refreshes will retry", True
            return "the task's finish will retry", True
        if status is TaskStatus.PENDING:
            return "the task's start will retry", True
        if self.late and any(owner.ref() is task for _, owner in list(self.late.values())):
            return "a subtask still running will write it again when it finishes", True
        return "the task has finished: no refresh will retry", False

    def started(self, task: TaskRecord) -> None:
        """Write a starting task's targets, and have its file refreshed while it runs.

        A root task (no parent) with a file first records the meters' checks
        (:func:`~tasktrace.tree.meters_record.record_meters`).
        """
        targets = self._targets.get(id(task))
        if targets is None:
            return
        if targets.file is not None and task.parent_id is None:
            self._record_meters(task)
        self.write(task)
        self.watch(task)

    def _record_meters(self, task: TaskRecord) -> None:
        with self._tree_lock():  # not while a write serialises it
            record_meters(task)

    def watch(self, task: TaskRecord) -> None:
        """Have the refresh thread refresh ``task`` (if it has a monitored file, and is running)."""
        targets = self._targets.get(id(task))
        refresh = self._refresher
        if targets is None or refresh is None or not targets.paths():
            return
        if targets.monitor:
            self.monitor.add(id(task), lambda: refresh(task))

    def finished(self, task: TaskRecord) -> None:
        """Stop refreshing a finished task, and write its targets a last time."""
        targets = self._targets.get(id(task))
        if targets is None:
            return
        if targets.file is not None or targets.spool_record is not None:
            self.monitor.remove(id(task))
            self._note_late(task)  # before the write: its warning, if it fails, says so
        self.write(task)

    def _note_late(self, task: TaskRecord) -> None:
        """Note the subtasks of a finished ``task`` still running (see :attr:`late`)."""
        with self._tree_lock():
            running = []
            stack = list(task.subtasks)
            while stack:
                sub = stack.pop()
                if sub.status is TaskStatus.RUNNING:
                    running.append(sub)
                stack.extend(sub.subtasks)
        if not running:
            return
        owner = _LateOwner(weakref.ref(task), len(running))
        late = self.late
        for sub in running:
            key = id(sub)
            # The callback runs inside the garbage collector: one atomic dict operation.
            late[key] = (weakref.ref(sub, functools.partial(_drop_late, late, key)), owner)

    def late_finished(self, task: TaskRecord) -> None:
        """After ``task`` finished: write the targets of a finished task it was a late subtask of.

        Writes are coalesced: the first late subtask to finish and the last one write the file,
        those in between at most once per :data:`LATE_WRITE_INTERVAL_S` (a thousand late
        subtasks do not write a large file a thousand times). Call only when :attr:`late` is
        not empty. Never raises (a failed write warns).
        """
        entry = self.late.pop(id(task), None)  # atomic: of two finishes, one writes
        if entry is None:
            return
        ref, owner = entry
        if ref() is not task:
            return
        now = time.monotonic()
        with self._lock:
            owner.pending -= 1
            due = owner.pending <= 0 or now >= owner.next_write
            if due:
                owner.next_write = now + LATE_WRITE_INTERVAL_S
        target = owner.ref()
        if due and target is not None:
            self.write(target)


LATE_WRITE_INTERVAL_S = 1.0
"""Seconds between two writes of a finished task's file for its late subtasks (the last one's
finish always writes)."""


def _drop_late(late: dict[int, Any], key: int, _ref: object) -> None:
    late.pop(key, None)


class _LateOwner:
    """A finished task with targets whose subtasks were still running (see ``late``)."""

    __slots__ = ("next_write", "pending", "ref")

    def __init__(self, ref: weakref.ref[TaskRecord], pending: int) -> None:
        self.ref = ref
        self.pending = pending
        self.next_write = 0.0  # the first late finish writes at once
