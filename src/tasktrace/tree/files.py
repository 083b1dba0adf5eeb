"""Task files: atomic replacement, and the guard that never replaces a user's file.

A task file is always written whole to a temporary file in the same folder and moved over the
old one with :func:`os.replace`, so a reader (or a crash, even ``SIGKILL``) sees either the old
or the new file, never half of one. A failed write (disk full, read-only folder) warns once per
file, leaves the previous file intact (the warning says whether there is one) and never raises
into the user's task; the warning says what will write the file again (a refresh, the task's
finish), and a task's last write that fails warns that nothing will, even after an earlier
failure's warning. The next write that succeeds catches up (and logs that it did), so a later
failure warns again. A file written once (a report, a table, an export) goes through
:func:`replace_file`, which raises instead, and :func:`check_writable` tells before any work
runs whether a folder takes files at all.

Every writer of tasktrace (a task's ``file``, :meth:`Task.save_to_file`, ``tasktrace run
--file``, ``tasktrace export -o``) first calls :func:`check_replaceable`, which refuses to replace
an existing file that is not tasktrace's own output, so that a mistyped path never destroys a
user's data.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import sys
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO, Final

from tasktrace.core.forksafe import renew_after_fork
from tasktrace.core.lines import printable
from tasktrace.core.warn import WarnOnce
from tasktrace.tree.file_kinds import RECORDS, describe, output_kind

__all__ = [
    "HEAD_BYTES",
    "Stamp",
    "check_folder",
    "check_replaceable",
    "check_writable",
    "last_error",
    "read_ends",
    "remove_file",
    "replace_file",
    "save_atomic",
    "shown",
    "stamp",
]

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)
_umask: int | None = None
# Paths whose last write failed → whether the warning said a later write will retry, and the
# OS's reason: warned once until a write succeeds, and once more if a write that nothing will
# retry fails too.
_failing: dict[str, tuple[bool, str]] = {}
_failing_lock = threading.Lock()
renew_after_fork(sys.modules[__name__], "_failing_lock")


def _file_mode() -> int:
    """``0o666`` less the process umask and never world-writable (umask read once)."""
    global _umask  # noqa: PLW0603 - the umask is read once per process
    if _umask is None:
        try:
            with open("/proc/self/status", "rb") as f:
                for line in f:
                    if line.startswith(b"Umask:"):
                        _umask = int(line.split()[1], 8)
                        break
        except (OSError, ValueError):
            pass
        if _umask is None:  # not Linux: os.umask is the only way (briefly sets it)
            _umask = os.umask(0o022)
            os.umask(_umask)
    return 0o666 & ~_umask & ~0o002


def check_folder(path: Path) -> None:
    """Raise if ``path``'s folder does not exist, before any work runs.

    Raises:
        FileNotFoundError: The folder is missing (the message names the task file).
        NotADirectoryError: The parent path exists but is not a folder.
    """
    folder = path.parent
    if not folder.exists():
        raise FileNotFoundError(f"task file {str(path)!r}: folder {str(folder)!r} does not exist")
    if not folder.is_dir():
        raise NotADirectoryError(f"task file {str(path)!r}: {str(folder)!r} is not a folder")


Stamp = tuple[int, int, int, int]
"""What tells one version of a file from another: device, inode, size, modification time (ns)."""

HEAD_BYTES = 4096
"""Bytes read from the beginning (and at most from the end) of an existing file to recognise it."""

_TASKTRACE_OUTPUT = "a task file, OTLP JSON lines or a Chrome trace from tasktrace"


def check_replaceable(
    path: Path, *, force: bool = False, override: str, writes: str | None = None
) -> None:
    """Raise unless replacing ``path`` can lose only tasktrace's own output (or ``force``).

    The one check every writer makes before it first writes a file. ``path`` may be replaced
    when it does not exist, is empty, or holds what tasktrace writes and reads: a task file
    (tasktrace's or LensKit's), OTLP JSON lines, or a Chrome trace that tasktrace exported
    (:func:`~tasktrace.tree.file_kinds.output_kind`). Anything else (a CSV, a config file,
    another tool's JSON) is refused unless ``force``; so is a run's record (a task file, OTLP
    JSON lines: :data:`~tasktrace.tree.file_kinds.RECORDS`) that would be replaced by output
    of another kind (``writes``: ``export --format chrome -o run.json`` would leave a trace
    that holds no task tree). A folder or a special file (device, FIFO, socket) is refused even
    when forced, and so is a path inside a process's descriptor folder (``/dev/fd/1``,
    ``/proc/self/fd/1``: for standard output give ``-``). A symbolic link to a regular file (or
    to nothing) may be replaced: :func:`save_atomic` replaces the link itself and never writes
    through it, so the file it points to is untouched; a link to a process's descriptor
    (``/dev/stdout``), a folder or a special file is refused as they are. The file is
    recognised from its first and last :data:`HEAD_BYTES` bytes (two reads and a partial
    parse: about 30 µs whatever its size, where parsing a 48 MiB task file takes seconds;
    ``benchmarks/scale.py``). Paths in messages have their control characters escaped
    (:func:`shown`).

    Args:
        path: The file about to be written.
        force: Replace any regular file (the caller's ``--force`` / ``force=True``).
        override: How the caller lets the user replace it anyway, appended to the message
            (``"pass --force to replace it"``).
        writes: The kind of output about to be written
            (:data:`~tasktrace.tree.file_kinds.TASK_FILE`, ...), or ``None``: any of
            tasktrace's outputs may be replaced.

    Raises:
        FileExistsError: ``path`` holds something else (or cannot be read to tell); the message
            names the file, says what it holds (its size and whether text, JSON or binary;
            never its content) and ends with ``override``. Or ``path`` is a folder, a special
            file or a process's descriptor.
    """
    if _DESCRIPTOR_FOLDER.match(os.path.realpath(path.parent) + "/"):
        raise FileExistsError(
            f"{shown(path)}: not replaced: it is a process's descriptor, not a file; "
            "tasktrace writes a file, never through a descriptor (for standard output give -)"
        )
    try:
        st = os.lstat(path)
    except OSError:  # missing (the common case), or no access: the write itself will say why
        return
    if stat.S_ISLNK(st.st_mode):
        # A link to a process's descriptor (/dev/stdout -> /proc/self/fd/1), a folder or a
        # special file: replacing the link would not write where it points, and would put a
        # file where the system keeps a link (as root, /dev/stdout itself).
        try:
            target = os.stat(path)
        except OSError:  # a dangling link (or one out of reach): replaced, as any link
            target = None
        if _to_descriptor(path) or (target is not None and not stat.S_ISREG(target.st_mode)):
            raise FileExistsError(
                f"{shown(path)}: not replaced: it is a link to a process's descriptor, a folder "
                "or a special file; tasktrace writes a file, never through a link (for standard "
                "output give -)"
            )
        return
    if stat.S_ISDIR(st.st_mode):
        raise FileExistsError(f"{shown(path)}: is a folder; give the path of a file to write")
    if not stat.S_ISREG(st.st_mode):
        raise FileExistsError(
            f"{shown(path)}: not replaced: it is a special file (a device, FIFO or socket)"
        )
    if force or st.st_size == 0:
        return
    try:
        with open(path, "rb") as f:
            head, tail = read_ends(f, st.st_size)
    except OSError as e:  # unreadable, yet its folder may let it be replaced: keep it
        raise FileExistsError(
            f"{shown(path)}: not replaced: it cannot be read to tell what it holds "
            f"({e.strerror or e}); {override}"
        ) from None
    partial = st.st_size > len(head)
    kind = output_kind(head, tail, partial)
    if kind is None:
        raise FileExistsError(
            f"{shown(path)}: not replaced: it holds {describe(head, st.st_size, partial)}, "
            f"not {_TASKTRACE_OUTPUT}; {override}"
        )
    if writes is not None and kind in RECORDS and kind != writes:
        raise FileExistsError(
            f"{shown(path)}: not replaced: it holds {kind} (a run's record), which {writes} "
            f"would replace; give another path, or {override}"
        )


def read_ends(f: BinaryIO, size: int) -> tuple[bytes, bytes]:
    """Return the first and the last :data:`HEAD_BYTES` of the open file ``f`` of ``size`` bytes.

    What :func:`~tasktrace.tree.file_kinds.output_kind` reads to tell a file's kind; for a file
    of at most :data:`HEAD_BYTES` both are its whole content (read once). Leaves ``f`` at the
    end of what it read.

    Raises:
        OSError: The file cannot be read.
    """
    head = f.read(HEAD_BYTES)
    if size <= HEAD_BYTES:
        return head, head
    f.seek(size - HEAD_BYTES)
    return head, f.read(HEAD_BYTES)


def shown(path: Path | str) -> str:
    r"""Return ``path`` as text fit for a terminal: control characters escaped (``\x1b``).

    The same escaping as labels' (:func:`~tasktrace.core.lines.printable`): a file name
    holding an escape sequence cannot clear the screen or set the title in a message.
    """
    return printable(str(path))


def _reason(e: OSError) -> str:
    """Return the OS's reason for ``e`` (``Read-only file system``), no temporary file's name."""
    return e.strerror or str(e)


def _unwritable(path: Path, e: OSError) -> OSError:
    """Return an error of ``e``'s kind saying ``path`` cannot be written, and the OS's reason."""
    error = type(e)(f"{shown(path)}: cannot be written: {_reason(e)}")
    error.errno = e.errno
    return error


def check_writable(path: Path) -> None:
    """Raise unless a file can be created in ``path``'s folder, as :func:`replace_file` does.

    A temporary file is created there (:func:`tempfile.mkstemp`) and removed at once: the one
    sure test, for root as for anyone (``os.access`` ignores read-only mounts' and root's
    rules alike). Called before any work runs, so that a read-only or full folder is said
    before a command runs or a report is built, not after.

    Raises:
        OSError: The folder cannot be written (read-only file system, no permission, a path
            through a regular file, no space left); the message names ``path`` and the OS's
            reason (``runs/x.json: cannot be written: Read-only file system``).
    """
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _unwritable(path, e) from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)


_DESCRIPTORS: Final = re.compile(r"^/(?:proc/[^/]+/fd|dev/fd)/")
_DESCRIPTOR_FOLDER: Final = re.compile(r"^/proc/[^/]+/fd/$")


def _to_descriptor(path: Path) -> bool:
    """Whether the link ``path`` leads, link by link, to a process's descriptor (``fd/N``)."""
    hop = str(path)
    for _ in range(40):  # the kernel's limit on a chain of links
        try:
            hop = os.path.normpath(os.path.join(os.path.dirname(hop), os.readlink(hop)))
        except OSError:  # not a link (the end of the chain), or out of reach
            return False
        if _DESCRIPTORS.match(hop):
            return True
    return False


def replace_file(path: Path, data: bytes, *more: bytes) -> None:
    """Replace ``path`` with ``data`` then each of ``more``, atomically; raise if it cannot.

    The temporary file is created by :func:`tempfile.mkstemp` (unpredictable name, ``O_EXCL``,
    mode ``0o600``) in the same folder, given the mode ``0o666 & ~umask`` less world-write and
    moved into place with :func:`os.replace` (a symlink at ``path`` is replaced, never followed).
    For a file written once (a report, an export), where a failure is the command's error; a
    task file, written again and again, goes through :func:`save_atomic`, which warns instead.

    Raises:
        OSError: ``path`` cannot be written (of the OS error's kind); the message names
            ``path`` and the OS's reason, never the temporary file. The previous file, if any,
            is left intact and no temporary file is left behind.
    """
    try:
        _replace(path, data, *more)
    except OSError as e:
        raise _unwritable(path, e) from None


def remove_file(path: Path) -> bool:
    """Remove ``path``; return whether this call removed it (never raises ``OSError``).

    ``False`` when it was gone already (another process removed it first) or cannot be removed.
    """
    try:
        path.unlink()
    except OSError:
        return False
    return True


def stamp(st: os.stat_result) -> Stamp:
    """Return the :data:`Stamp` of a file's status (``os.stat``/``os.lstat``/``os.fstat``)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _replace(path: Path, data: bytes, *more: bytes) -> Stamp:
    """:func:`replace_file`, raising the OS's own error (no temporary file left behind)."""
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            for chunk in more:
                f.write(chunk)
            f.flush()
            written = stamp(os.fstat(f.fileno()))  # of our file, whatever replaces it later
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except OSError:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    return written


def last_error(path: Path) -> str | None:
    """Return why the last :func:`save_atomic` of ``path`` failed, or ``None`` if it did not.

    ``None`` too when ``path`` was never written by :func:`save_atomic` in this process; a
    relative ``path`` is the file it names in the current folder. For a caller that must tell
    the user at the end that the file asked for is not written (or is not the last state),
    such as ``tasktrace run --file``. Thread-safe.
    """
    with _failing_lock:
        failed = _failing.get(os.path.abspath(path))
    return None if failed is None else failed[1]


def save_atomic(
    path: Path, data: bytes, *more: bytes, then: str = "", retried: bool = False
) -> Stamp | None:
    """Replace a task file ``path`` with ``data`` then ``more`` (:func:`replace_file`); never raise.

    Return the :data:`Stamp` of the file written (a true value), or ``None`` when it was not
    written: a caller that writes ``path`` again can tell whether anyone changed it since
    (:mod:`tasktrace.tree.owned`). A failure is logged once, saying whether the previous file
    is kept or there is none (a first write, or one removed since); the first success after it
    logs that the file is written again, and a later failure warns again. :func:`last_error`
    tells whether the last write failed, and why.

    Args:
        path: The file to replace.
        data: Its new content.
        *more: What follows ``data`` in the file.
        then: What comes after a failure, for the warning (``"later refreshes will retry"``,
            ``"the task has finished: no refresh will retry"``); empty: nothing is said.
        retried: Whether a later write will retry. A failure that none will retry (a task's
            last write) is warned about even when one that was to be retried was already.
    """
    try:
        written = _replace(path, data, *more)
    except OSError as e:
        reason, key = _reason(e), os.path.abspath(path)  # the same file, however named
        with _failing_lock:
            warned = _failing.get(key)  # None: not warned; else (retry said, reason)
            _failing[key] = (retried, reason)
        if warned is None or (warned[0] and not retried):
            kept = "the previous file is kept" if os.path.lexists(path) else "there is no file"
            _log.warning(
                "tasktrace: cannot write task file %s (%s); %s%s",
                shown(path),
                reason,
                kept,
                f"; {then}" if then else "",
            )
        return None
    if _failing:
        with _failing_lock:
            recovered = _failing.pop(os.path.abspath(path), None) is not None
        if recovered:
            _log.info("tasktrace: task file %s is written again", shown(path))
    return written
