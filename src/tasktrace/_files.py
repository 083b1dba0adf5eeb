"""Task files: atomic replacement, and the refresh thread that re-saves running tasks.

A task file is always written whole to a temporary file in the same folder and moved over the
old one with :func:`os.replace`, so a reader (or a crash, even ``SIGKILL``) sees either the old
or the new file, never half of one. A failed write (disk full, read-only folder) warns once per
file, leaves the previous file intact and never raises into the user's task; the next write that
succeeds catches up (and logs that it did), so a later failure warns again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tasktrace._forksafe import renew_after_fork
from tasktrace.meters._base import WarnOnce

__all__ = ["RefreshMonitor", "check_folder", "save_atomic"]

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)
_umask: int | None = None
_failing: set[str] = set()  # paths whose last write failed (warned once until one succeeds)
_failing_lock = threading.Lock()
renew_after_fork(sys.modules[__name__], '_failing_lock')


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


def save_atomic(path: Path, data: bytes) -> bool:
    """Replace ``path`` with ``data`` atomically; return whether it was written.

    The temporary file is created by :func:`tempfile.mkstemp` (unpredictable name, ``O_EXCL``,
    mode ``0o600``) in the same folder, given the mode ``0o666 & ~umask`` less world-write and
    moved into place with :func:`os.replace` (a symlink at ``path`` is replaced, never followed).
    A failure is logged once, with the previous file left intact; the first success after it
    logs that the file is written again, and a later failure warns again.
    """
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        with _failing_lock:
            first = str(path) not in _failing
            _failing.add(str(path))
        if first:
            _log.warning(
                "tasktrace: cannot write task file %s (%s); the previous file is kept and later "
                "refreshes will retry",
                path,
                e,
            )
        return False
    if _failing:
        with _failing_lock:
            recovered = str(path) in _failing
            _failing.discard(str(path))
        if recovered:
            _log.info("tasktrace: task file %s is written again", path)
    return True


class RefreshMonitor:
    """A daemon thread that calls each registered ``refresh()`` every interval.

    Each object is first refreshed one interval after it was added (its file was just written),
    then every interval. Started lazily by the first :meth:`add`. Thread-safe. Errors in a
    refresh are logged once per error type and never stop the thread.

    Args:
        interval_s: Returns the current interval in seconds (read at every scheduling step, so
            a changed setting takes effect at the next :meth:`add` or refresh).
    """

    def __init__(self, interval_s: Callable[[], float]) -> None:
        """Create a stopped monitor; ``interval_s`` returns the current interval in seconds."""
        self._interval_s = interval_s
        self._items: dict[int, tuple[Callable[[], None], float]] = {}  # key → (refresh, due)
        self._lock = threading.Lock()
        renew_after_fork(self, '_lock')
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._pid = os.getpid()

    def add(self, key: int, refresh: Callable[[], None]) -> None:
        """Call ``refresh`` every interval until :meth:`remove` is called with ``key``."""
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's items are not ours
                self._items.clear()
                self._thread = None
                self._pid = os.getpid()
            self._items[key] = (refresh, time.monotonic() + self._interval_s())
            self._wake.set()  # the thread recomputes its wait
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="tasktrace-refresh", daemon=True
                )
                self._thread.start()

    def remove(self, key: int) -> None:
        """Stop refreshing ``key`` (no error if it is not registered)."""
        with self._lock:
            self._items.pop(key, None)

    def refresh_all(self) -> None:
        """Run one refresh round of every registered object now, in the calling thread."""
        with self._lock:
            items = [refresh for refresh, _ in self._items.values()]
        self._call(items)

    @staticmethod
    def _call(items: list[Callable[[], None]]) -> None:
        for refresh in items:
            try:
                refresh()
            except Exception as e:  # noqa: BLE001, PERF203 - the refresh thread must survive anything
                _warn(f"refresh:{type(e).__name__}", "tasktrace: task refresh failed: %r", e)

    def _run(self) -> None:
        while True:
            now = time.monotonic()
            interval = self._interval_s()
            due: list[Callable[[], None]] = []
            with self._lock:
                next_due = now + interval
                for key, (refresh, when) in list(self._items.items()):
                    if when <= now:
                        due.append(refresh)
                        self._items[key] = (refresh, now + interval)
                    else:
                        next_due = min(next_due, when)
            self._call(due)
            self._wake.wait(max(0.0, next_due - time.monotonic()))
            self._wake.clear()
