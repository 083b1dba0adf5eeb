"""The refresh thread: calls each registered refresh every interval, while tasks run.

The task-tree processor registers each running task that has a file (and the façade each task
that pending spans or task metrics watch); the refresh is the façade's (it updates the task's
measurements so far, then the processor's writer re-writes the file from the tree).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from tasktrace.core.forksafe import renew_after_fork
from tasktrace.core.warn import WarnOnce

__all__ = ["RefreshMonitor"]

_warn = WarnOnce(logging.getLogger(__name__))


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
        renew_after_fork(self, "_lock")
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
