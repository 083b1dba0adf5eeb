"""Records a killed process never merged: merged into its task file by a later sweep, not lost.

A process that hands a task to other processes merges their records (spool files, see
:mod:`tasktrace.tree.spool`) into that task's subtasks, and so into the task file that holds
it. When it is killed (``SIGKILL``, the out-of-memory killer) before it merged their last
state, the records are the only copy of what those processes did: a ``tasktrace run --file
k.json`` killed while its command runs leaves ``k.json`` as of its last refresh (or its start:
no subtasks), and the command's final record in the spool.

The parent's spool marker names the task file that holds the task
(:func:`~tasktrace.tree.spool_owners.mark_parent`), and the sweep that finds such records
(:func:`~tasktrace.tree.spool_owners.sweep`) hands them here: :func:`settle` merges them into
that file (each under its parent task, by id, replacing an older copy of the same task, such
as a running snapshot from a refresh; the file's other tasks, its root included, are left as
they were), then removes them. A file is only written when it is still that run's: a regular
file of this user holding a task file (:func:`~tasktrace.tree.file_kinds.output_kind`) whose
tree holds the parent task, unchanged while it was read; it is replaced atomically
(:func:`~tasktrace.tree.files.replace_file`). Records with no such file (none was given, or it
was removed or replaced since) are removed; records whose file cannot be written are kept for
a later sweep. :func:`describe` says what happened, in one line.

Thread-safety: no shared state; each call works on the files it is given.
"""

from __future__ import annotations

import contextlib
import os
import stat
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from tasktrace.core.record import TaskRecord, dump_json, node_class
from tasktrace.tree.file_kinds import TASK_FILE, output_kind
from tasktrace.tree.files import Stamp, read_ends, remove_file, replace_file, shown, stamp

__all__ = ["Orphan", "Settled", "describe", "settle"]


@dataclass(frozen=True)
class Orphan:
    """A record whose writer ended and whose parent's process ended before merging it.

    Attributes:
        path: The record file in the spool folder.
        parent_id: Its parent task's id, as the record gives it.
        label: Its task's label.
        task_file: The task file its parent's marker names, or ``None``.
    """

    path: Path
    parent_id: str
    label: str
    task_file: Path | None


@dataclass
class Settled:
    """What :func:`settle` did with the orphans of one folder.

    Attributes:
        merged: Labels of the records merged (then removed), by the task file they went into.
        removed: Labels of the records removed with no task file to merge them into.
        kept: Per task file that could not be written: why, and the labels of the records kept.
        kept_parents: The parent ids of the records kept (their markers must stay).
    """

    merged: dict[Path, list[str]] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    kept: dict[Path, tuple[str, list[str]]] = field(default_factory=dict)
    kept_parents: set[str] = field(default_factory=set)

    @property
    def labels(self) -> list[str]:
        """The labels of every record reported: merged, removed and kept."""
        labels = [label for merged in self.merged.values() for label in merged]
        labels += self.removed
        return labels + [label for _, kept in self.kept.values() for label in kept]


class _NotWritten(Exception):
    """The task file is the run's, but could not be written (the records are kept)."""


class _Changed(Exception):
    """The task file changed between its reading and its replacement (another sweep's write)."""


_ATTEMPTS = 3
"""Merges of one file tried while it keeps changing under them (sweeps running at once)."""


def settle(orphans: Iterable[Orphan]) -> Settled:
    """Merge ``orphans`` into the task files their parents' markers name, then remove them.

    A record that is merged, or that has no task file of its run to go into, is removed
    (reported only when the removal succeeds: a sweep running at the same time reports it
    once); one whose file cannot be written is kept. Never raises ``OSError``.
    """
    done = Settled()
    by_file: dict[Path | None, list[Orphan]] = {}
    for orphan in orphans:
        by_file.setdefault(orphan.task_file, []).append(orphan)
    for task_file, group in by_file.items():
        merged: set[Path] = set()
        if task_file is not None:
            try:
                merged = _merge(task_file, group)
            except _NotWritten as e:
                done.kept[task_file] = (str(e), [o.label for o in group])
                done.kept_parents.update(o.parent_id for o in group)
                continue
        for orphan in group:
            if not remove_file(orphan.path):
                continue
            if task_file is not None and orphan.path in merged:
                done.merged.setdefault(task_file, []).append(orphan.label)
            else:
                done.removed.append(orphan.label)
    return done


def _merge(task_file: Path, orphans: list[Orphan]) -> set[Path]:
    """Merge ``orphans`` into ``task_file`` if it is still their run's; return those merged.

    A file that changed while it was read (a sweep of another run merging the same records)
    is read again: merging a record twice leaves one copy of its task.

    Raises:
        _NotWritten: The file is the run's (it holds a parent) but cannot be written.
    """
    for _ in range(_ATTEMPTS):
        with contextlib.suppress(_Changed):
            return _merge_once(task_file, orphans)
    raise _NotWritten("it changed while it was read, each time")


def _merge_once(task_file: Path, orphans: list[Orphan]) -> set[Path]:
    """:func:`_merge`, once; raises :class:`_Changed` when the file changed since it was read."""
    loaded = _load(task_file)
    if loaded is None:
        return set()
    root, before = loaded
    parents = _tasks_by_id(root, {o.parent_id for o in orphans})
    cls = node_class()
    merged: set[Path] = set()
    for orphan in orphans:
        parent = parents.get(orphan.parent_id)
        if parent is None:
            continue
        try:
            record = cls.model_validate_json(orphan.path.read_bytes())
        except (OSError, ValidationError, ValueError):
            continue  # not a task after all: removed, not merged
        _place(parent, record)
        merged.add(orphan.path)
    if not merged:
        return merged
    data = dump_json(root)
    if data is None:
        raise _NotWritten("it cannot be serialised")
    try:
        if stamp(os.lstat(task_file)) != before:
            raise _Changed
        replace_file(task_file, data)
    except OSError as e:
        raise _NotWritten(e.strerror or str(e)) from None
    return merged


def _load(task_file: Path) -> tuple[TaskRecord, Stamp] | None:
    """Return the tree in ``task_file`` and its stamp, or ``None`` when it is not this user's.

    ``None`` for a missing file, a link, another user's file, another kind of file, one that
    cannot be read or parsed.
    """
    try:
        st = os.lstat(task_file)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_size == 0:
            return None
        with open(task_file, "rb") as f:
            head, tail = read_ends(f, st.st_size)
            if output_kind(head, tail, st.st_size > len(head)) != TASK_FILE:
                return None
            f.seek(0)
            data = f.read()
        root = node_class().model_validate_json(data)
    except (OSError, ValidationError, ValueError):
        return None
    return root, stamp(st)


def _tasks_by_id(root: TaskRecord, wanted: set[str]) -> dict[str, TaskRecord]:
    """Return the tasks of ``root``'s tree whose ids are in ``wanted`` (ids as text)."""
    ids: dict[uuid.UUID, str] = {}
    for text in wanted:
        with contextlib.suppress(ValueError):
            ids[uuid.UUID(text)] = text
    found: dict[str, TaskRecord] = {}
    stack = [root]
    while stack and len(found) < len(ids):
        node = stack.pop()
        if node.task_id in ids:
            found[ids[node.task_id]] = node
        stack.extend(node.subtasks)
    return found


def _place(parent: TaskRecord, record: TaskRecord) -> None:
    """Put ``record`` among ``parent``'s subtasks, replacing the task of the same id."""
    for i, existing in enumerate(parent.subtasks):
        if existing.task_id == record.task_id:
            parent.subtasks[i] = record
            break
    else:
        parent.subtasks.append(record)
    parent.subtasks.sort(key=lambda t: t.start_time if t.start_time is not None else float("inf"))


def _records(labels: list[str]) -> str:
    shown_labels = ", ".join(repr(label) for label in labels[:3])
    more = f" and {len(labels) - 3} more" if len(labels) > 3 else ""
    return f"{len(labels)} task record{'' if len(labels) == 1 else 's'} ({shown_labels}{more})"


def describe(folder: Path, settled: Settled) -> str | None:
    """Say in one line what :func:`settle` did with the records left in ``folder``.

    ``None`` when there was nothing to settle. Paths have their control characters escaped.
    """
    parts = [f"merged {_records(labels)} into {shown(f)}" for f, labels in settled.merged.items()]
    if settled.removed:
        parts.append(f"removed {_records(settled.removed)}")
    parts += [
        f"kept {_records(labels)}, which could not be merged into {shown(f)} ({why}), for a "
        "later run to merge"
        for f, (why, labels) in settled.kept.items()
    ]
    if not parts:
        return None
    text = (
        f"tasktrace: {'; '.join(parts)}, left in {shown(folder)} by an earlier run that was "
        "killed before it merged them"
    )
    if settled.removed:
        many = len(settled.removed) > 1
        them = ("the removed ones" if many else "the removed one") if len(parts) > 1 else ""
        text += (
            f"; there is no task file of that run to merge {them or ('them' if many else 'it')} "
            "into (none was given, or it was removed or replaced since)"
        )
    return text
