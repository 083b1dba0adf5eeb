"""One background thread that takes work from its owner's queue or registry until it is stopped.

tasktrace runs three such threads: the late Prometheus readings (a queue of jobs,
:mod:`tasktrace.task.late`), the energy-counter poller (channels, each due at its interval,
:mod:`tasktrace.meters.poller`) and the refresh thread (running tasks' files, each due at the
refresh interval, :mod:`tasktrace.tree.refresh`). Each owner keeps its own data and job logic;
a :class:`WorkerThread` gives them the part they share:

- the thread starts lazily, on the first :meth:`~WorkerThread.notify` (never at import), as a
  daemon, so that it never holds the interpreter open;
- one condition (:attr:`~WorkerThread.cond`) guards the owner's data and wakes the thread:
  the owner changes its data and calls :meth:`~WorkerThread.notify` with it held, so that no
  wake-up is lost between the thread's look at the data and its wait;
- the thread runs one item of work at a time, outside the condition; an exception that
  escapes the owner's job is warned once (per thread and exception type) and the thread goes
  on;
- :meth:`~WorkerThread.stop` ends the thread, waiting at most a given time for the item in
  progress;
- in a forked child the thread is gone (``fork`` copies only the calling thread) and the
  condition may have been held by it: the child gets a fresh condition, no thread, and the
  owner's ``after_fork`` hook forgets (or keeps) its data; the next notify starts a thread;
- an optional ``at_exit`` hook (a wait with a time limit, or a stop) is registered with
  :mod:`atexit` when the thread first starts.

Short-lived threads that run a few calls side by side and are joined at once (the per-scope
queries of :mod:`tasktrace.meters.prometheus`) are not this shape and do not use it.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from tasktrace.core.warn import WarnOnce

__all__ = ["WorkerThread"]

_warn = WarnOnce(logging.getLogger(__name__))

W = TypeVar("W")
"""The type of one item of work (one job, one round of due channels)."""


class WorkerThread(Generic[W]):
    """A lazily started daemon thread that runs its owner's work items one at a time.

    The thread's loop, with :attr:`cond` held, asks ``take()`` for the next item; when it
    returns ``None`` the thread waits on :attr:`cond` for ``idle_s()`` seconds (``None``: until
    notified) and asks again. An item is handed to ``work(item)`` with :attr:`cond` released.
    ``take`` and ``idle_s`` run under :attr:`cond` and must be quick and must not raise (an
    exception from them ends the thread; the next :meth:`notify` starts a new one); ``work``
    may raise: the exception is warned once per thread name and exception type, and the thread
    takes the next item.

    Thread-safety: every method may be called from any thread; :meth:`notify` with
    :attr:`cond` held. ``after_fork`` runs in a forked child, before other threads exist there.

    Args:
        name: The thread's name (``tasktrace-late``); also names it in warnings.
        take: Returns the next item of work, or ``None`` when there is none now. Called by the
            thread with :attr:`cond` held.
        work: Does one item, in the thread, with :attr:`cond` released (it may take it).
        idle_s: Returns how long to wait, in seconds, when ``take`` found nothing (``None``
            or not given: until :meth:`notify`). Called with :attr:`cond` held.
        at_exit: Registered with :mod:`atexit` when the thread first starts (once per
            worker): the owner's wait for its work at interpreter exit, with a time limit.
        after_fork: Called in a forked child after the worker has its fresh condition and no
            thread: the owner forgets the parent's data (it may call :meth:`notify`, holding
            the new :attr:`cond`, to start a thread in the child).
    """

    def __init__(
        self,
        name: str,
        take: Callable[[], W | None],
        work: Callable[[W], object],
        *,
        idle_s: Callable[[], float | None] | None = None,
        at_exit: Callable[[], object] | None = None,
        after_fork: Callable[[], object] | None = None,
    ) -> None:
        """Create a worker with no thread (see the class docstring for the arguments)."""
        self.name = name
        """The thread's name."""
        self.cond = threading.Condition(threading.Lock())
        """Guards the owner's data and wakes the thread. Replaced in a forked child: read it
        each time, never keep it."""
        self._take = take
        self._work = work
        self._idle_s = idle_s
        self._at_exit = at_exit
        self._after_fork = after_fork
        self._thread: threading.Thread | None = None
        self._stopped = False  # stopped for good: notify() starts no thread
        self._exit_registered = False  # atexit registrations survive fork: not reset there
        with _workers_lock:
            _workers.add(self)

    @property
    def running(self) -> bool:
        """Whether the worker's thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def notify(self) -> None:
        """Wake the thread to look at the owner's data again; start it if there is none.

        Call with :attr:`cond` held, after changing the data. Starts no thread after
        ``stop(restart=False)``. Takes no lock of its own (the caller holds :attr:`cond`).
        """
        self.cond.notify_all()
        if self._thread is None and not self._stopped:
            self._start()

    def stop(self, timeout_s: float, *, restart: bool = True) -> bool:
        """Stop the thread: it takes no item after this; wait for the one in progress.

        Safe to call more than once; from the worker's own thread it does not wait.

        Args:
            timeout_s: The longest wait for the item in progress, in seconds.
            restart: Whether a later :meth:`notify` starts a new thread (``False``: the
                worker stays stopped, as at interpreter exit).

        Returns:
            Whether the thread has ended (``True`` when there was none).
        """
        with self.cond:
            thread, self._thread = self._thread, None
            self._stopped = self._stopped or not restart
            self.cond.notify_all()
        if thread is None:
            return True
        if thread is not threading.current_thread():
            thread.join(timeout_s)
        return not thread.is_alive()

    def _start(self) -> None:
        thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread = thread
        thread.start()
        if self._at_exit is not None and not self._exit_registered:
            self._exit_registered = True
            atexit.register(self._at_exit)

    def _run(self) -> None:
        me = threading.current_thread()
        try:
            while True:
                cond = self.cond
                with cond:
                    while True:
                        if self._thread is not me:  # stopped (or replaced after a stop)
                            return
                        item = self._take()
                        if item is not None:
                            break
                        cond.wait(None if self._idle_s is None else self._idle_s())
                try:
                    self._work(item)
                except Exception as e:  # noqa: BLE001 - the thread must go on
                    _warn(
                        f"{self.name}:{type(e).__name__}",
                        "tasktrace: the %s thread's work failed (%r); it goes on",
                        self.name,
                        e,
                    )
        except BaseException:
            with self.cond:  # gone for good: let the next notify() start another
                if self._thread is me:
                    self._thread = None
            raise

    def _forget_after_fork(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self._thread = None
        if self._after_fork is not None:
            self._after_fork()


_workers: weakref.WeakSet[WorkerThread[Any]] = weakref.WeakSet()
_workers_lock = threading.Lock()


def _after_fork_in_child() -> None:
    global _workers_lock  # noqa: PLW0603 - a new process: the lock may have been held
    _workers_lock = threading.Lock()
    for worker in list(_workers):
        worker._forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
