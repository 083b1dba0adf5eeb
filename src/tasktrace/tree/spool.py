"""The spool: records of tasks in other processes, merged into this process's tree.

A task whose parent task is in another process (a *subprocess root*, see
:mod:`tasktrace.task.processes`) writes its whole record, subtasks included, to
``<task_id>.<owner>.json`` in the spool folder (:func:`record_path`; ``owner`` names the
writing process, see :mod:`tasktrace.tree.spool_owners`) by atomic replacement when it starts,
at each refresh while it runs and when it finishes (it is one of the tree writer's targets);
so a child killed by ``SIGKILL`` leaves its last record. The spool folder is a temporary one,
or the one named by :data:`SPOOL_ENV` (which may be on a file system shared between nodes).

This process merges every record whose ``parent_id`` is one of its *exported* tasks (the tasks
whose context it handed to another process: :func:`export`) into that task's subtasks,
replacing the previous record of the same task. The spool is a record source of the tree
processor (:meth:`~tasktrace.tree.processor.TaskTreeProcessor.register_record_source`): it is
pulled before each task file is written and when an exported task finishes. Each process
merges only its own children's records; a grandchild reaches the root inside its parent's
record.

Nothing is left behind for ever (see :mod:`tasktrace.tree.spool_owners`): a process marks each
task it exports (``.parent-<task_id>.<owner>``), and when that task finishes it removes the
records it merged whose writers ended and marks the task ``done``. The first export of a
process removes what ended processes left in its folder
(:func:`~tasktrace.tree.spool_owners.sweep`), and a process that creates a private folder
removes the private folders of its user whose creators ended (a ``tasktrace run`` killed by
``SIGKILL`` never removes its own). Records whose parent process was killed before merging
them are merged into the task file that held their parent (named in its marker), or removed
when there is none, with one warning saying which (see :mod:`tasktrace.tree.unmerged`).

Fork safety: before ``os.fork`` the running tasks are exported (the child may report under
them); in the child the spool's state starts empty.

Thread-safety: all functions may be called from any thread.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Final

from pydantic import ValidationError

from tasktrace.core.record import TaskRecord, node_class
from tasktrace.core.warn import WarnOnce
from tasktrace.meters.process import PEAK_BEFORE_KEY
from tasktrace.tree.processor import tree
from tasktrace.tree.spool_owners import (
    OWNER_MARKER,
    PARENT_MARKER,
    is_gone,
    mark_parent,
    owner_id,
    record_owner,
    sweep,
)
from tasktrace.tree.unmerged import Settled, describe

__all__ = [
    "SPOOL_ENV",
    "collect",
    "export",
    "is_exported",
    "known_spool_folder",
    "record_path",
    "reported_peak_rss",
    "set_spool_folder",
    "spool_folder",
]

_warn = WarnOnce(logging.getLogger(__name__))

SPOOL_ENV: Final = "TASKTRACE_SPOOL"
"""Environment variable naming the spool folder where subprocess tasks write their records."""

_lock = threading.RLock()
_spool: Path | None = None
_owned_spool: Path | None = None
_owner_pid = 0
_exported: dict[uuid.UUID, TaskRecord] = {}
_seen: dict[str, tuple[int, int]] = {}
_merged: dict[uuid.UUID, set[str]] = {}  # the records merged under each exported task
_registered = False
_swept = False


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
            _touch(path / f"{OWNER_MARKER}{owner_id()}")
        _spool = path
        return path


def record_path(task: TaskRecord) -> Path:
    """Return the spool record of ``task`` (a subprocess root): ``<task_id>.<owner>.json``.

    Raises:
        OSError: The spool folder cannot be created.
    """
    return spool_folder() / f"{task.task_id}.{owner_id()}.json"


def _touch(path: Path) -> None:
    try:
        path.touch()
    except OSError as e:
        logging.getLogger(__name__).debug("tasktrace: spool marker %s not made: %r", path, e)


def known_spool_folder() -> Path | None:
    """Return the spool folder this process uses or reports to, without creating one.

    The folder in use (this process's own, or a parent's handed over a pickle or inherited by
    fork), else the one :data:`SPOOL_ENV` names, else ``None`` (a process that neither reports
    to a parent nor has children that report to it).
    """
    if _spool is not None:
        return _spool
    named = os.environ.get(SPOOL_ENV)
    return Path(named) if named else None


def set_spool_folder(path: str | None) -> None:
    """Use ``path`` as this process's spool folder (a parent process's, handed over a pickle)."""
    global _spool  # noqa: PLW0603 - see spool_folder
    if path:
        with _lock:
            _spool = Path(path)


@atexit.register
def _remove_owned_spool() -> None:
    if _owned_spool is not None and _owner_pid == os.getpid():
        shutil.rmtree(_owned_spool, ignore_errors=True)


def export(task: TaskRecord) -> Path:
    """Make ``task`` a parent whose children's records this process merges; return the spool.

    Raises:
        OSError: The spool folder cannot be created.
    """
    global _registered, _swept  # noqa: PLW0603 - the spool registers as a record source once
    path = spool_folder()
    with _lock:
        if task.task_id not in _exported:  # its children's records are merged here: kept
            mark_parent(path, task.task_id, _task_file(task))
        _exported[task.task_id] = task
        if not _registered:
            _registered = True
            tree.register_record_source(collect)
        first, _swept = not _swept, True
    if first:
        _remove_stale(path)
    return path


def _task_file(task: TaskRecord) -> Path | None:
    """Return the file of the outermost task of this process holding ``task`` (itself included).

    The root's file when it has one (``tasktrace run --file``): where a sweep merges the
    records this process never merged, should it be killed (see :mod:`tasktrace.tree.unmerged`).
    ``None`` when no task up the tree in this process has a file.
    """
    found: Path | None = None
    node: TaskRecord | None = task
    seen: set[uuid.UUID] = set()
    while node is not None and node.task_id not in seen:
        seen.add(node.task_id)
        targets = tree.files.targets(node)
        if targets is not None and targets.file is not None:
            found = targets.owned.target if targets.owned is not None else targets.file
        node = tree.running_task(node.parent_id) if node.parent_id is not None else None
    return found


def _remove_stale(path: Path) -> None:
    """Remove what ended processes left in ``path`` or, for a private folder, in the others."""
    folders = [path]
    if path == _owned_spool:  # new and private: nothing to sweep in it, but in the others
        try:
            folders = [f for f in path.parent.glob("tasktrace-spool-*") if f != path]
        except OSError:
            folders = []
    for folder in folders:
        _sweep_one(folder, own=folder == path)


def _sweep_one(folder: Path, *, own: bool) -> None:
    try:
        if own:
            _report(folder, sweep(folder))
        elif folder.stat().st_uid == os.getuid():
            _remove_abandoned(folder)
    except OSError as e:  # a folder that cannot be read is left as it is
        logging.getLogger(__name__).debug("tasktrace: spool %s not swept: %r", folder, e)


def _remove_abandoned(folder: Path) -> None:
    """Remove the private folder ``folder`` if its creator ended and nothing there is live."""
    owners = [p.name[len(OWNER_MARKER) :] for p in folder.glob(f"{OWNER_MARKER}*")]
    if not owners or not all(is_gone(owner) for owner in owners):
        return  # an older tasktrace's, or its run goes on (or is being set up)
    _report(folder, sweep(folder))
    if all(p.name.startswith(OWNER_MARKER) for p in folder.iterdir()):  # nothing live left
        shutil.rmtree(folder, ignore_errors=True)


def _report(folder: Path, settled: Settled) -> None:
    text = describe(folder, settled)
    if text is not None:
        _warn(f"stale:{folder}", "%s", text)


def is_exported(task: TaskRecord) -> bool:
    """Whether ``task`` handed its context to another process (its children may report)."""
    return task.task_id in _exported


def collect(finished: TaskRecord | None = None) -> None:
    """Merge the spool's new records of this process's children into their parent tasks.

    Args:
        finished: A task that is finishing: merged, then no longer exported.

    Records that cannot be read (being replaced, or not a task) are skipped until they change.
    """
    if not _exported or _spool is None:
        return
    touched: dict[int, TaskRecord] = {}
    cls = node_class()
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
                record = cls.model_validate_json(Path(entry.path).read_bytes())
            except (OSError, ValidationError, ValueError):
                continue
            parent = _exported.get(record.parent_id) if record.parent_id else None
            if parent is None:
                continue  # a grandchild, or another tree's: its own parent merges it
            _seen[name] = stamp
            _merged.setdefault(parent.task_id, set()).add(name)
            tree.add_subtask(parent, record)
            touched[id(parent)] = parent
        with tree.lock:  # records arrive in directory order: show children in start order
            for parent in touched.values():
                parent.subtasks.sort(key=_start_key)
        if finished is not None and _exported.pop(finished.task_id, None) is not None:
            _done(_spool, finished.task_id, _merged.pop(finished.task_id, set()))


def _done(folder: Path, task_id: uuid.UUID, names: set[str]) -> None:
    """``task_id`` finished, its children's records merged: remove those that cannot change.

    The records of writers that still run stay (a later change is not merged, as before);
    the task's marker then says ``done``, so that the sweep that removes them once their
    writers ended does not report them as never merged.
    """
    left = False
    gone: dict[str, bool] = {}  # one look per writer (a pool's workers wrote many records)
    for name in names:
        owner = record_owner(name)
        if owner is not None and owner[1] not in gone:
            gone[owner[1]] = is_gone(owner[1])
        if owner is not None and gone[owner[1]]:
            with contextlib.suppress(OSError):
                (folder / name).unlink()
        else:
            left = True
    marker = folder / f"{PARENT_MARKER}{task_id}.{owner_id()}"
    try:
        if left:
            marker.replace(folder / f"{PARENT_MARKER}{task_id}.done")
        else:
            marker.unlink(missing_ok=True)
    except OSError as e:
        logging.getLogger(__name__).debug("tasktrace: spool marker %s not changed: %r", marker, e)


def _start_key(task: TaskRecord) -> float:
    return task.start_time if task.start_time is not None else float("inf")


def reported_peak_rss(task: TaskRecord) -> int | None:
    """Return the largest peak RSS in bytes that processes below ``task`` on its host reported.

    Walks the subprocess subtasks of ``task`` (and everything below them; ``task``'s own
    figures are left out): each node's ``peak_memory`` and its
    :data:`~tasktrace.meters.process.PEAK_BEFORE_KEY` extra data (a peak outside every task
    that a high-water-mark reset took from the kernel's figures, ``wait4``'s included).
    Nodes of another host are skipped. Merges the spool first.

    Returns:
        The largest such value, or ``None`` when none was reported.
    """
    collect()
    host = task.hostname
    best: int | None = None
    with tree.lock:
        stack = [sub for sub in task.subtasks if sub.subprocess]
        while stack:
            node = stack.pop()
            stack.extend(node.subtasks)
            if node.hostname != host:
                continue
            extra = node.__pydantic_extra__ or {}
            for value in (node.peak_memory, extra.get(PEAK_BEFORE_KEY)):
                if type(value) is int and value > 0 and (best is None or value > best):
                    best = value
    return best


# ----- fork safety -----------------------------------------------------------------------------


def _before_fork() -> None:
    running = tree.running_tasks()
    if not running:
        return
    try:
        for task in running:
            export(task)
    except OSError as e:
        _warn("spool", "tasktrace: cannot create the task spool (%s)", e)


def _after_fork_in_child() -> None:
    global _lock, _exported, _seen, _merged, _owned_spool, _swept  # noqa: PLW0603 - a new process
    _lock = threading.RLock()
    _exported = {}
    _seen = {}
    _merged = {}
    _owned_spool = None
    _swept = True  # the parent swept the folder


os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
