"""Process meters: CPU time and the RSS high-water mark, with a stack of nested scopes.

Sources:

- CPU time: ``getrusage(RUSAGE_SELF)``, ``ru_utime + ru_stime`` in seconds (all threads of this
  process; waited-for children are in ``RUSAGE_CHILDREN``, read by :func:`children_usage`).
- Peak memory: the kernel's RSS high-water mark. On Linux that is ``VmHWM`` of
  ``/proc/self/status``, which ``getrusage``'s ``ru_maxrss`` (KiB) reports too; a task that
  resets it writes ``5`` to ``/proc/self/clear_refs``. On macOS and other Unixes ``ru_maxrss`` is
  the peak since the process started and cannot be reset (bytes on macOS, KiB elsewhere).

The high-water mark is process-wide, so nested or concurrent tasks share it. :class:`HighWaterMarks`
keeps every open scope: before a reset, the current mark is folded into every open scope, so a
child's reset never loses its parent's peak (the parent's peak is the max of its own and its
children's). The mark read before each reset is also kept as the process's :attr:`lifetime
<HighWaterMarks.lifetime>` peak: a reset takes it from the kernel's figure (``getrusage``,
``wait4`` and ``/usr/bin/time`` report the peak since the last reset afterwards), not from
tasktrace, which records a peak no task holds on the task whose reset took it
(:data:`PEAK_BEFORE_KEY`).
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import threading
from collections.abc import Callable
from typing import Any

from tasktrace.core.forksafe import renew_after_fork
from tasktrace.core.warn import WarnOnce

__all__ = [
    "PEAK_BEFORE_KEY",
    "HighWaterMarks",
    "Scope",
    "children_usage",
    "rss_marks",
    "self_usage",
]

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)

_LINUX = sys.platform.startswith("linux")
MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB else
_CLEAR_REFS = "/proc/self/clear_refs"
_STATUS = "/proc/self/status"
_STATUS_SIZE = 8192  # /proc/self/status is about 1.5 KB
_SELF = resource.RUSAGE_SELF
_CHILDREN = resource.RUSAGE_CHILDREN
_getrusage = resource.getrusage

PEAK_BEFORE_KEY = "peak_memory_before"
"""Extra-data key of a task whose start reset the RSS high-water mark: in bytes, the process's
peak that the reset took from the kernel's figure and that no task holds (reached outside every
task since the previous reset: a dataset loaded and freed before the first task; a
:class:`Scope`'s ``before``), set only where it is larger than the task's ``peak_memory``.
``tasktrace run`` counts it in the command's peak RSS."""


def self_usage() -> tuple[float, int]:
    """Return ``(cpu_s, maxrss_bytes)`` of this process from one ``getrusage(RUSAGE_SELF)``.

    ``cpu_s`` is user + system CPU seconds of every thread; ``maxrss_bytes`` the RSS high-water
    mark in bytes (since the last reset on Linux).
    """
    ru = _getrusage(_SELF)
    return ru.ru_utime + ru.ru_stime, ru.ru_maxrss * MAXRSS_UNIT


def children_usage() -> tuple[float, int]:
    """Return ``(cpu_s, maxrss_bytes)`` of reaped children from ``getrusage(RUSAGE_CHILDREN)``.

    Counts only child processes that have exited *and been waited for*; ``maxrss_bytes`` is the
    largest peak RSS among them (over the whole life of this process).
    """
    ru = _getrusage(_CHILDREN)
    return ru.ru_utime + ru.ru_stime, ru.ru_maxrss * MAXRSS_UNIT


class _StatusHwm:
    """``VmHWM`` of ``/proc/self/status`` in bytes, read through one descriptor kept open.

    ``pread`` at offset 0 makes the kernel generate the file afresh (about 7 µs, half of an
    ``open``, read and ``close``). The descriptor is reopened after a fork (``/proc/self`` was
    resolved when it was opened). As for :class:`_ClearRefs`, the read goes through libc's
    ``pread`` called with the GIL held where that is available: :func:`os.pread` releases the
    GIL, which a busy exporting thread would then keep for the rest of its batch.
    """

    def __init__(self) -> None:
        self._fd = -1
        self._lock = threading.Lock()  # one reader of the shared buffer at a time
        self._buffer: Any = None
        self._pread: Callable[[int, Any, int, int], int] | None = None
        self._tried = False
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._fd = -1  # the child's /proc/self is another file: open it on first use
        self._lock = threading.Lock()

    def _open(self) -> None:
        self._fd = os.open(_STATUS, os.O_RDONLY | os.O_CLOEXEC)
        if not self._tried:
            self._tried = True
            try:
                import ctypes  # noqa: PLC0415 - only where the mark is read from /proc

                pread = ctypes.PyDLL(None).pread
                pread.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_long)
                pread.restype = ctypes.c_ssize_t
                self._buffer = ctypes.create_string_buffer(_STATUS_SIZE)
                self._pread = pread
            except (ImportError, OSError, AttributeError):
                self._pread = None  # os.pread, which releases the GIL

    def _read(self) -> bytes:
        if self._fd < 0:
            self._open()
        if self._pread is None:
            return os.pread(self._fd, _STATUS_SIZE, 0)
        n = self._pread(self._fd, self._buffer, _STATUS_SIZE, 0)
        if n < 0:
            raise OSError(f"cannot read {_STATUS}")
        return self._buffer.raw[:n]  # type: ignore[no-any-return]

    def __call__(self) -> int | None:
        try:
            with self._lock:
                try:
                    data = self._read()
                except OSError:  # a descriptor closed under us: open the file again, once
                    self._fd = -1
                    data = self._read()
            start = data.index(b"VmHWM:") + 6
            return int(data[start : data.index(b"kB", start)]) * 1024
        except (OSError, ValueError):
            return None


_status_hwm_bytes = _StatusHwm()


class Scope:
    """One open measurement of a high-water mark (one task's view).

    Attributes:
        folded: Largest mark seen at resets made while this scope was open (bytes or the
            meter's unit); the scope's peak is ``max(folded, mark at close)``.
        before: The mark its opening reset took that no scope holds (0: none): the process's
            peak since the previous reset, reached outside every task (see
            :meth:`HighWaterMarks.open`).
    """

    __slots__ = ("before", "folded")  # set by HighWaterMarks.open (no __init__: one frame less)
    before: int
    folded: int


class HighWaterMarks:
    """A resettable process-wide high-water mark shared by nested and concurrent scopes.

    Thread-safe: resets are serialised by one internal lock; opening and closing a scope are
    single set operations (atomic under the GIL), so the common path takes no lock.

    Args:
        read: Returns the current mark (``None`` when it cannot be read).
        reset: Resets the mark to the current level; returns ``False`` when it cannot.
        name: Used in warnings.

    Attributes:
        lifetime: The largest mark read just before a reset (0 before the first): with the
            current mark, the process's peak since it started (:meth:`lifetime_peak`), which
            the kernel's own figure loses at each reset. Written under the lock, read freely.
    """

    def __init__(
        self, read: Callable[[], int | None], reset: Callable[[], bool], name: str
    ) -> None:
        """Create the tracker (see the class docstring for the arguments)."""
        self._read = read
        self._reset = reset
        self._name = name
        self._open: set[Scope] = set()
        self.lifetime = 0
        self._closed = 0  # the largest mark a scope closed with since the last reset
        self._lock = threading.Lock()
        renew_after_fork(self, "_lock")
        self._checked = True  # a subclass with a first-use check (_check) sets it False

    def _check(self) -> None:
        """Run once before the first scope opens, where ``_checked`` is false (a subclass's)."""
        self._checked = True

    def prepare(self) -> None:
        """Run the first-use check now (once; nothing after): set-up kept out of a task's times."""
        if not self._checked:
            self._check()

    def open(self, *, reset: bool) -> Scope:
        """Open a scope, first resetting the mark if ``reset``.

        Before a reset the mark is read once (a scope opened without one, a nested task's,
        reads nothing) and kept: in :attr:`lifetime`; in every open scope's ``folded``; and,
        where no scope is open and no scope closed since the previous reset with a mark as
        high (the peak was reached outside every task), as the new scope's ``before``.
        """
        scope = Scope()
        scope.folded = scope.before = 0
        if not reset and self._checked:  # a nested task's scope: no reset, no check
            self._open.add(scope)
            return scope
        if not self._checked:
            self._check()
        if reset:
            with self._lock:  # one reset at a time, and the fold sees every open scope
                mark = self._read()
                lost = 0
                if mark is not None:
                    self.lifetime = max(self.lifetime, mark)
                    if self._open:
                        for other in list(self._open):  # copied under the GIL: add/discard
                            other.folded = max(other.folded, mark)  # need no lock
                    elif mark > self._closed:
                        lost = mark
                if self._reset():  # a failed reset loses nothing
                    scope.before = lost
                    self._closed = 0
        self._open.add(scope)
        return scope

    def lifetime_peak(self, mark: int | None = None) -> int | None:
        """Return the process's peak so far: ``max(lifetime, current mark)``.

        Args:
            mark: The current mark if the caller already read it (saves a read).

        Returns:
            The peak (bytes or the meter's unit), or ``None`` when the mark cannot be read and
            no reset has read it before.
        """
        if mark is None:
            mark = self._read()
        if mark is None:
            return self.lifetime or None
        return max(mark, self.lifetime)

    def peak(self, scope: Scope, mark: int | None = None, *, close: bool = False) -> int | None:
        """Return the scope's peak so far: ``max(scope.folded, current mark)``.

        Args:
            scope: A scope from :meth:`open`.
            mark: The current mark if the caller already read it (saves a read).
            close: Also close the scope.

        Returns:
            The peak, or ``None`` when the mark cannot be read.
        """
        if mark is None:
            mark = self._read()
        if close:
            self._open.discard(scope)  # atomic; a concurrent fold works on a copy
            if mark is not None and mark > self._closed:  # a race loses at most a repeat of
                self._closed = mark  # this peak, as a later scope's ``before``
        if mark is None:
            return None
        folded = scope.folded
        return mark if mark >= folded else folded  # max() without a builtin call


class _ClearRefs:
    """Writes ``5`` to ``/proc/self/clear_refs`` through one descriptor kept open per process.

    ``/proc/self`` is resolved when the file is opened, so the descriptor is reopened after a
    fork (the child would otherwise reset its parent's mark). The write goes through libc's
    ``write`` called with the GIL held (a ``ctypes.PyDLL`` function), where that is available:
    :func:`os.write` releases the GIL, and an exporting batch-processor thread would take it
    for the rest of its batch on every top-level task. The call itself takes well under a
    microsecond.
    """

    def __init__(self) -> None:
        self._fd = -1
        self._write: Callable[[int, bytes, int], int] | None = None
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._fd = -1  # the child's /proc/self is another file: open it on first use

    def _open(self) -> None:
        self._fd = os.open(_CLEAR_REFS, os.O_WRONLY | os.O_CLOEXEC)
        if self._write is None:
            try:
                import ctypes  # noqa: PLC0415 - only where resets happen

                libc_write = ctypes.PyDLL(None).write
                libc_write.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t)
                libc_write.restype = ctypes.c_ssize_t
                self._write = libc_write
            except (ImportError, OSError, AttributeError):
                self._write = os.write  # type: ignore[assignment]

    def _write_5(self) -> bool:
        if self._fd < 0:
            self._open()
        write = self._write
        if write is None or write is os.write:
            return os.write(self._fd, b"5") == 1
        return write(self._fd, b"5", 1) == 1

    def __call__(self) -> bool:
        if not _LINUX:
            return False
        try:
            if self._write_5():
                return True
            error: OSError = OSError(f"short write to {_CLEAR_REFS}")
        except OSError as e:
            error = e
        _warn(
            "clear_refs",
            "tasktrace: cannot reset the RSS high-water mark (%s: %s); peak_memory is the "
            "process peak since the last successful reset",
            _CLEAR_REFS,
            error,
        )
        return False


_clear_refs = _ClearRefs()


def _rusage_hwm() -> int:
    return int(_getrusage(_SELF).ru_maxrss * MAXRSS_UNIT)


class _RssMarks(HighWaterMarks):
    """RSS marks: ``getrusage`` on the hot path, checked once against ``VmHWM`` after a reset.

    In a process started by ``exec`` from a bigger one, ``ru_maxrss`` is
    ``max(pre-exec peak, VmHWM)`` for its whole life (the kernel keeps the old image's peak in
    ``signal->maxrss``, set at ``exec`` only): the mark is then read from ``/proc`` — except
    when ``ru_maxrss`` is above a bound of the pre-exec peak (:attr:`pre_exec_bound`), where
    it *is* ``VmHWM`` and no read is needed.
    """

    def __init__(self) -> None:
        super().__init__(_rusage_hwm, self._checked_reset, "RSS")
        self.use_rusage = True
        self.pre_exec_bound = 0
        """Bytes at or above the pre-exec peak (``ru_maxrss`` seen above ``VmHWM``); 0: none."""
        self._checked = not _LINUX
        self._checked_after_reset = not _LINUX

    def _check(self) -> None:
        # ru_maxrss is max(the peak before exec, VmHWM). A process started by fork + exec from
        # a bigger one (multiprocessing's spawn, a subprocess of a large program) would report
        # its parent's peak: then read VmHWM from /proc from now on.
        self._checked = True
        status = _status_hwm_bytes()
        rusage = _rusage_hwm()  # read second: max(pre-exec peak, VmHWM now) >= pre-exec peak
        if status is not None and rusage > status + (1 << 20):
            self.use_rusage = False
            if self.pre_exec_bound == 0 or rusage < self.pre_exec_bound:
                self.pre_exec_bound = rusage
            self._read = self._read_hwm

    def _read_hwm(self) -> int | None:
        mark = _rusage_hwm()
        if mark > self.pre_exec_bound:
            return mark  # above the pre-exec peak: ru_maxrss is VmHWM itself
        return _status_hwm_bytes()

    def _checked_reset(self) -> bool:
        ok = _clear_refs()
        if ok and not self._checked_after_reset:
            # The first reset may unmask a pre-exec peak the first check could not see.
            self._checked_after_reset = True
            self._check()
        return ok


rss_marks = _RssMarks()
"""The process's RSS high-water-mark tracker (shared by every task)."""
