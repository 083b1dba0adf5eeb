"""The refresh thread: calls each registered refresh every interval, while tasks run.

The task-tree processor registers each running task that has a file (and the façade each task
that pending spans or task metrics watch); the refresh is the façade's (it updates the task's
measurements so far, then the processor's writer re-writes the file from the tree).

At interpreter exit the thread is stopped and a refresh in progress is waited for (at most
:data:`EXIT_WAIT_S`): a daemon thread cut off inside pydantic's serialiser (Rust, through PyO3)
aborts the whole process ("FATAL: exception not rethrown", exit status 134), and one cut off
between writing and renaming leaves a temporary file beside the task file.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable

from tasktrace.core.forksafe import renew_after_fork
from tasktrace.core.warn import WarnOnce

__all__ = ["EXIT_WAIT_S", "MAX_SHARE", "RefreshMonitor"]

EXIT_WAIT_S = 30.0
"""At interpreter exit, how long to wait for a refresh in progress to finish, in seconds."""
MAX_SHARE = 0.1
"""The largest share of wall time one object's refreshes may take: a refresh that took ``t``
seconds (``time.monotonic``) is next due no sooner than ``t * (1 / MAX_SHARE - 1)`` seconds
after it ended, however short the interval. Re-writing the file of a tree of 100,000 tasks takes
about a second of the GIL; at a 1 s interval the refresh thread would otherwise hold it
most of the time and slow the program's own tasks by half."""
_PAUSE_FACTOR = 1 / MAX_SHARE - 1

_warn = WarnOnce(logging.getLogger(__name__))


class RefreshMonitor:
    """A daemon thread that calls each registered ``refresh()`` every interval.

    Each object is first refreshed one interval after it was added (its file was just written),
    then every interval, or less often when its refreshes are slow (see :data:`MAX_SHARE`).
    Started lazily by the first :meth:`add`; stopped by :meth:`stop`, which
    runs at interpreter exit. Thread-safe. Errors in a refresh are logged once per error type
    and never stop the thread.

    Args:
        interval_s: Returns the current interval in seconds (read at every scheduling step, so
            a changed setting takes effect at the next :meth:`add` or refresh).
    """

    def __init__(self, interval_s: Callable[[], float]) -> None:
        """Create a stopped monitor; ``interval_s`` returns the current interval in seconds."""
        self._interval_s = interval_s
        self._items: dict[int, tuple[Callable[[], None], float]] = {}  # key → (refresh, due)
        self._lock = threading.Lock()
        renew_after_fork(self, "_lock")
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._pid = os.getpid()
        self._stopping = False

    def add(self, key: int, refresh: Callable[[], None]) -> None:
        """Call ``refresh`` every interval until :meth:`remove` is called with ``key``."""
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's items are not ours
                self._items.clear()
                self._thread = None
                self._pid = os.getpid()
            self._items[key] = (refresh, time.monotonic() + self._interval_s())
            self._wake.set()  # the thread recomputes its wait
            if self._thread is None and not self._stopping:
                self._thread = threading.Thread(
                    target=self._run, name="tasktrace-refresh", daemon=True
                )
                self._thread.start()
                atexit.register(self.stop)

    def remove(self, key: int) -> None:
        """Stop refreshing ``key`` (no error if it is not registered)."""
        with self._lock:
            self._items.pop(key, None)

    def stop(self, timeout_s: float = EXIT_WAIT_S) -> None:
        """Stop the thread: no refresh starts after this; wait for one in progress.

        Waits at most ``timeout_s`` seconds. Called at interpreter exit (``atexit``); safe to
        call more than once, from any thread but the refresh thread itself.
        """
        with self._lock:
            self._stopping = True
            thread = self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

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

    def _pace(self, key: int, refresh: Callable[[], None], took_s: float, ended: float) -> None:
        """Put ``key``'s next refresh off where this one took long (see :data:`MAX_SHARE`)."""
        pause = took_s * _PAUSE_FACTOR
        with self._lock:
            item = self._items.get(key)
            if item is not None and item[0] is refresh and item[1] < ended + pause:
                self._items[key] = (refresh, ended + pause)

    def _run(self) -> None:
        clock = time.monotonic
        while True:
            now = clock()
            interval = self._interval_s()
            due: list[tuple[int, Callable[[], None]]] = []
            with self._lock:
                if self._stopping:
                    return
                for key, (refresh, when) in list(self._items.items()):
                    if when <= now:
                        due.append((key, refresh))
                        self._items[key] = (refresh, now + interval)
            for key, refresh in due:
                started = clock()
                self._call([refresh])
                ended = clock()
                self._pace(key, refresh, ended - started, ended)
            with self._lock:
                next_due = min((when for _, when in self._items.values()), default=None)
            wait = interval if next_due is None else max(0.0, next_due - clock())
            self._wake.wait(wait)
            self._wake.clear()
