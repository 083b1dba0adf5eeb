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

import logging
import threading
import time
from collections.abc import Callable

from tasktrace.core.warn import WarnOnce
from tasktrace.core.worker_thread import WorkerThread

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
        self._worker = WorkerThread(
            "tasktrace-refresh",
            self._take,
            self._refresh_due,
            idle_s=self._until_due,
            at_exit=self.stop,
            after_fork=self._items.clear,  # forked: the parent's items are not ours
        )

    @property
    def _lock(self) -> threading.Condition:
        """Guards the items; the refresh thread's condition (fresh in a forked child)."""
        return self._worker.cond

    def add(self, key: int, refresh: Callable[[], None]) -> None:
        """Call ``refresh`` every interval until :meth:`remove` is called with ``key``."""
        with self._lock:
            self._items[key] = (refresh, time.monotonic() + self._interval_s())
            self._worker.notify()  # the thread recomputes its wait; started by the first add

    def remove(self, key: int) -> None:
        """Stop refreshing ``key`` (no error if it is not registered)."""
        with self._lock:
            self._items.pop(key, None)

    def stop(self, timeout_s: float = EXIT_WAIT_S) -> None:
        """Stop the thread: no refresh starts after this; wait for one in progress.

        Waits at most ``timeout_s`` seconds. Called at interpreter exit (``atexit``); safe to
        call more than once, from any thread but the refresh thread itself.
        """
        self._worker.stop(timeout_s, restart=False)

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

    def _take(self) -> list[tuple[int, Callable[[], None]]] | None:
        """Return the refreshes due now, each next due an interval on, or ``None`` (lock held)."""
        now = time.monotonic()
        interval = self._interval_s()
        due: list[tuple[int, Callable[[], None]]] = []
        for key, (refresh, when) in list(self._items.items()):
            if when <= now:
                due.append((key, refresh))
                self._items[key] = (refresh, now + interval)
        return due or None

    def _until_due(self) -> float | None:
        """Seconds until the next refresh is due (under the lock); ``None`` with none."""
        next_due = min((when for _, when in self._items.values()), default=None)
        return None if next_due is None else max(0.0, next_due - time.monotonic())

    def _refresh_due(self, due: list[tuple[int, Callable[[], None]]]) -> None:
        """One round, in the refresh thread: call each due refresh and pace it."""
        clock = time.monotonic
        for key, refresh in due:
            started = clock()
            self._call([refresh])
            ended = clock()
            self._pace(key, refresh, ended - started, ended)
