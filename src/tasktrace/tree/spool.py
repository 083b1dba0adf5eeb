"""The spool: records of tasks in other processes, merged into this process's tree.

A task whose parent task is in another process (a *subprocess root*, see
:mod:`tasktrace.task.processes`) writes its whole record, subtasks included, to
``<task_id>.json`` in the spool folder by atomic replacement when it starts, at each refresh
while it runs and when it finishes (it is one of the tree writer's targets); so a child killed
by ``SIGKILL`` leaves its last record. The spool folder is a temporary one, or the one named by
:data:`SPOOL_ENV` (which may be on a file system shared between nodes).

This process merges every record whose ``parent_id`` is one of its *exported* tasks (the tasks
whose context it handed to another process: :func:`export`) into that task's subtasks,
replacing the previous record of the same task. The spool is a record source of the tree
processor (:meth:`~tasktrace.tree.processor.TaskTreeProcessor.register_record_source`): it is
pulled before each task file is written and when an exported task finishes. Each process
merges only its own children's records; a grandchild reaches the root inside its parent's
record.

Fork safety: before ``os.fork`` the running tasks are exported (the child may report under
them); in the child the spool's state starts empty.

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
from typing import Final

from pydantic import ValidationError

from tasktrace.core.record import TaskRecord, node_class, other_process_cpu
from tasktrace.core.warn import WarnOnce
from tasktrace.meters.process import PEAK_BEFORE_KEY
from tasktrace.tree.processor import tree

__all__ = [
    "SPOOL_ENV",
    "collect",
    "export",
    "is_exported",
    "known_spool_folder",
    "reported_peak_rss",
    "set_spool_folder",
    "spool_folder",
    "unreported_cpu_s",
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
_registered = False


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
    global _registered  # noqa: PLW0603 - the spool registers as a record source once
    path = spool_folder()
    with _lock:
        _exported[task.task_id] = task
        if not _registered:
            _registered = True
            tree.register_record_source(collect)
    return path


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
            tree.add_subtask(parent, record)
            touched[id(parent)] = parent
        with tree.lock:  # records arrive in directory order: show children in start order
            for parent in touched.values():
                parent.subtasks.sort(key=_start_key)
        if finished is not None:
            _exported.pop(finished.task_id, None)


def _start_key(task: TaskRecord) -> float:
    return task.start_time if task.start_time is not None else float("inf")


def unreported_cpu_s(task: TaskRecord, reaped_s: float) -> float:
    """CPU seconds of reaped children that their subprocess tasks did not report.

    ``reaped_s`` (from ``wait4`` / ``RUSAGE_CHILDREN``) contains the CPU of every task the
    reaped children (and what they reaped) reported; :meth:`~tasktrace.Task.total_cpu` adds
    those already (:func:`~tasktrace.core.record.other_process_cpu`). Merges the spool first.

    Returns:
        ``max(0, reaped_s - reported)``, where ``reported`` is
        :func:`~tasktrace.core.record.other_process_cpu` of ``task``.
    """
    collect()
    with tree.lock:
        reported = other_process_cpu(task)
    return max(0.0, reaped_s - reported)


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
    global _lock, _exported, _seen, _owned_spool  # noqa: PLW0603 - a new process
    _lock = threading.RLock()
    _exported = {}
    _seen = {}
    _owned_spool = None


os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
