"""Which process wrote each file of a spool folder, and the removal of what ended processes left.

Every file tasktrace puts in a spool folder (:mod:`tasktrace.tree.spool`) names the process that
owns it, as :func:`owner_id` gives it: ``<machine>-<pid>-<start>``, where ``machine`` is a
hash of the host name, the kernel's boot id and the process's pid namespace (so that a pid is
only ever compared on the machine, boot and container where it means that process) and
``start`` the process's start time, so that a pid reused by another process is not taken for
the one that wrote the file. On Linux ``start`` is ``t<ticks>``: the clock ticks from boot to
the process's start (field 22 of ``/proc/<pid>/stat``), which no step of the system clock
moves (an NTP correction, a resumed virtual machine); elsewhere it is
``psutil.Process.create_time`` in ms, compared within 2 s:

- ``<task_id>.<owner>.json``: a subprocess root's record, written by its process;
- ``.parent-<task_id>.<owner>``: the process ``owner`` merges the records whose parent is
  ``task_id`` (it handed that task to other processes); it holds the absolute path of the task
  file that holds that task (empty: none; :func:`mark_parent`); ``.parent-<task_id>.done`` once
  that task finished (records changed after it are not merged, as before);
- ``.owner.<owner>``: the process that created the private (temporary) folder and removes it
  at its exit;
- ``.export-failing-<key>.<owner>.json``: see :mod:`tasktrace.export.failing`.

A record is **stale** when its writer ended (no process with that pid, or one started at
another time, or a zombie) and no running process merges its parent (no ``.parent-`` marker
of a running process): nothing will ever change or read it. :func:`sweep` removes stale
records, the markers of ended processes, and the ``done`` markers no record refers to.
Records whose parent's marker was not ``done`` (the process that should have merged them was
killed: ``SIGKILL``, the out-of-memory killer) are merged into the task file that marker names
before they are removed, or kept when that file cannot be written (with their parent's marker:
see :mod:`tasktrace.tree.unmerged`); what was done with them is returned, to be reported. A
marker of an ended process stays while records under its task are kept (their writer still
runs). A file whose owner cannot be checked (another machine on a shared file system, an older
tasktrace's ``<task_id>.json``) is never touched.

Thread-safety: every function may be called from any thread; removals are single ``unlink``
calls (another process removing the same file first is no error). Never raises ``OSError``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import sys
import uuid
from pathlib import Path
from typing import Final

from tasktrace.tree.files import remove_file
from tasktrace.tree.unmerged import Orphan, Settled, settle

__all__ = [
    "OWNER_MARKER",
    "PARENT_MARKER",
    "is_gone",
    "mark_parent",
    "owner_id",
    "record_owner",
    "sweep",
]

PARENT_MARKER: Final = ".parent-"
"""Prefix of the marker of a process that merges the records under one of its tasks."""
OWNER_MARKER: Final = ".owner."
"""Prefix of the marker of the process that created a private spool folder."""
DONE: Final = "done"
"""The owner part of a ``.parent-`` marker whose task finished (nobody merges it any more)."""
_FAILING: Final = ".export-failing-"
_START_TOLERANCE_MS: Final = 2000
"""Start times in ms closer than this are one process (psutil's boot time may move by 1 s)."""

_own: tuple[int, str] | None = None  # (pid, owner id): recomputed in a forked child


def _machine() -> str:
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    with contextlib.suppress(OSError, AttributeError):
        parts.append(os.readlink("/proc/self/ns/pid"))
    return hashlib.sha256("|".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:8]


_MACHINE: Final = _machine()


def _linux_start(pid: int) -> str | None:
    """Return ``t<ticks>`` of ``pid`` from ``/proc/<pid>/stat`` (``None``: gone or a zombie).

    Raises ``OSError`` when there is no ``/proc`` to read (not Linux).
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        if Path("/proc/self/stat").exists():
            return None  # /proc works: no such process
        raise
    # "pid (comm) state ... starttime(22nd)": comm may hold spaces and parentheses
    fields = stat[stat.rindex(b")") + 2 :].split()
    if fields[0] == b"Z":
        return None  # ended: it writes and merges nothing any more
    return f"t{int(fields[19])}"


def _start_ms(pid: int) -> int | None:
    """Return the start time of ``pid`` in ms since the epoch (``None``: gone or a zombie).

    From ``psutil.Process.create_time``, which moves with the system clock: only where there
    is no ``/proc``.
    """
    import psutil  # noqa: PLC0415 - only where a spool folder is used

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None  # ended: it writes and merges nothing any more
        return int(process.create_time() * 1000)
    except psutil.NoSuchProcess:
        return None


_HAS_PROC: Final = sys.platform.startswith("linux") and Path("/proc/self/stat").exists()


def _start(pid: int) -> str | None:
    """Return the ``start`` part of ``pid``'s owner id (``None``: no such process or a zombie)."""
    if _HAS_PROC:
        return _linux_start(pid)
    start = _start_ms(pid)
    return None if start is None else str(start)


def owner_id() -> str:
    """Return this process's owner id, ``<machine>-<pid>-<start>`` (see the module).

    Computed once per process (again in a forked child); ``start`` is ``x`` when it cannot be
    read, an id that :func:`is_gone` never takes for ended.
    """
    global _own  # noqa: PLW0603 - one per process
    pid = os.getpid()
    own = _own
    if own is None or own[0] != pid:
        try:
            start = _start(pid)
        except Exception:  # noqa: BLE001 - cannot tell: an id no check will take for ended
            start = None
        own = _own = (pid, f"{_MACHINE}-{pid}-{start if start is not None else 'x'}")
    return own[1]


def is_gone(owner: str) -> bool:
    """Whether the process ``owner`` (an :func:`owner_id`) has certainly ended.

    ``False`` when it runs, and when that cannot be told: another machine (or boot, or pid
    namespace), an id that does not parse, a process that cannot be looked at.
    """
    machine, _, rest = owner.partition("-")
    pid_text, _, start_text = rest.partition("-")
    if machine != _MACHINE or not pid_text.isdigit():
        return False
    try:
        if start_text[:1] == "t" and start_text[1:].isdigit():
            return _linux_start(int(pid_text)) != start_text  # exact: ticks never move
        if not start_text.isdigit():
            return False
        start = _start_ms(int(pid_text))  # an older tasktrace's id, or no /proc
    except Exception:  # noqa: BLE001 - access denied, no /proc and such: it may run
        return False
    return start is None or abs(start - int(start_text)) > _START_TOLERANCE_MS


def record_owner(name: str) -> tuple[str, str] | None:
    """Return ``(task_id, owner)`` of a record's file name, ``None`` for an older name."""
    if name.startswith(".") or not name.endswith(".json"):
        return None
    task_id, dot, owner = name[: -len(".json")].partition(".")
    return (task_id, owner) if dot and owner else None


def mark_parent(folder: Path, task_id: uuid.UUID, task_file: Path | None) -> None:
    """Mark this process as the one that merges the records under ``task_id`` in ``folder``.

    The marker ``.parent-<task_id>.<owner>`` holds ``task_file`` (made absolute), the task file
    that holds the task, or nothing: a sweep that finds records this process never merged
    (it was killed) merges them there (:mod:`tasktrace.tree.unmerged`). A marker that cannot be
    made is logged (debug) and skipped: the records are then swept as if never marked.
    """
    path = folder / f"{PARENT_MARKER}{task_id}.{owner_id()}"
    try:
        path.write_bytes(os.fsencode(os.path.abspath(task_file)) if task_file else b"")
    except OSError as e:
        logging.getLogger(__name__).debug("tasktrace: spool marker %s not made: %r", path, e)


def _marked_file(marker: Path) -> Path | None:
    """Return the task file a marker of this user names, or ``None`` (none, unreadable)."""
    try:
        with open(marker, "rb") as f:
            if os.fstat(f.fileno()).st_uid != os.getuid():
                return None  # in a shared folder: another user's marker names no file of ours
            data = f.read(65536)
    except OSError:
        return None
    path = Path(os.fsdecode(data))
    return path if data and path.is_absolute() else None


def _parent_of(path: Path) -> tuple[str, str] | None:
    """Return a record's ``(parent_id, label)``, or ``None`` when it cannot be read."""
    try:
        data = json.loads(path.read_bytes())
        return str(data.get("parent_id")), str(data.get("label"))
    except (OSError, ValueError, AttributeError):
        return None


class _Sweep:
    """One sweep of a folder: the owners found ended, cached (one process lookup each)."""

    def __init__(self, folder: Path, names: list[str]) -> None:
        self.folder = folder
        self.names = names
        self.gone: dict[str, bool] = {}
        self.parents: dict[str, list[str]] = {}  # task id -> owners of its .parent- markers
        for name in names:
            if name.startswith(PARENT_MARKER):
                task_id, _, owner = name[len(PARENT_MARKER) :].partition(".")
                self.parents.setdefault(task_id, []).append(owner)
        self.merged: dict[str, bool] = {}  # parent -> merged by a process still running
        self.kept_parents: set[str] = set()  # parents of the records kept (done stays)

    def ended(self, owner: str) -> bool:
        if owner not in self.gone:
            self.gone[owner] = is_gone(owner)
        return self.gone[owner]

    def merged_by_a_running_process(self, parent: str) -> bool:
        """Whether a running process (or one that cannot be checked) merges ``parent``'s records.

        Looks at the folder afresh (once per parent): a marker made after the sweep's listing
        began counts too.
        """
        if parent not in self.merged:
            prefix = f"{PARENT_MARKER}{parent}."
            try:
                owners = [
                    e.name[len(prefix) :]
                    for e in os.scandir(self.folder)
                    if e.name.startswith(prefix)
                ]
            except OSError:
                owners = ["?"]  # cannot tell: as if running
            self.merged[parent] = any(o != DONE and not self.ended(o) for o in owners)
        return self.merged[parent]

    def task_file(self, parent: str) -> Path | None:
        """Return the task file that an ended process's marker of ``parent`` names, if any."""
        for owner in self.parents.get(parent, ()):
            if owner != DONE and self.ended(owner):
                found = _marked_file(self.folder / f"{PARENT_MARKER}{parent}.{owner}")
                if found is not None:
                    return found
        return None

    def records(self) -> list[Orphan]:
        """Remove the stale records merged before; return those never merged (left in place)."""
        any_done = any(DONE in owners for owners in self.parents.values())
        any_ended = any(
            o != DONE and self.ended(o) for owners in self.parents.values() for o in owners
        )
        orphans = []
        for name in self.names:
            parsed = record_owner(name)
            if parsed is None:
                continue
            writer_ended = self.ended(parsed[1])
            if not writer_ended and not any_done and not any_ended:
                continue  # kept, and its parent is not needed
            found = _parent_of(self.folder / name)
            if found is None:
                continue  # unreadable (being replaced): left alone
            parent, label = found
            if not writer_ended or self.merged_by_a_running_process(parent):
                self.kept_parents.add(parent)
            elif DONE in self.parents.get(parent, ()):
                remove_file(self.folder / name)
            else:
                orphans.append(Orphan(self.folder / name, parent, label, self.task_file(parent)))
        return orphans

    def markers(self) -> None:
        """Remove the markers of ended processes and the done markers, but where records stay."""
        for task_id, owners in self.parents.items():
            if task_id in self.kept_parents:
                continue  # its records are merged later: the marker still names their file
            for owner in owners:
                if owner == DONE or self.ended(owner):
                    remove_file(self.folder / f"{PARENT_MARKER}{task_id}.{owner}")
        for name in self.names:
            failing = name.startswith(_FAILING) and name.endswith(".json")
            if failing and self.ended(name[: -len(".json")].rpartition(".")[2]):
                remove_file(self.folder / name)


def sweep(folder: Path) -> Settled:
    """Remove what ended processes left in ``folder``, merging what they never merged first.

    See the module docstring for what is stale. Returns what was done with the stale records
    whose parent was never marked ``done`` (records that the process meant to merge them never
    merged in their last state: it was killed): merged into its task file, removed, or kept
    (:class:`~tasktrace.tree.unmerged.Settled`), so the caller can report them
    (:func:`~tasktrace.tree.unmerged.describe`).
    """
    try:
        names = [entry.name for entry in os.scandir(folder)]
    except OSError:
        return Settled()
    one = _Sweep(folder, names)
    settled = settle(one.records())
    one.kept_parents |= settled.kept_parents
    one.markers()
    return settled
