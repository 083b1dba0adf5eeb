"""Warn once, and the switch that makes internal errors raise under a test suite.

Instrumentation never breaks the user's program: an internal error (a span processor that
raises, a meter that fails, a snapshot span that cannot be emitted) is logged once per kind by a
:class:`WarnOnce` and the program goes on. A test suite wants the opposite, so that a bug fails
the test that hit it: :func:`set_raise_errors` turns the places that consult
:func:`raise_errors` into re-raising ones (tasktrace's own test suite does).
"""

from __future__ import annotations

import logging
import sys
import threading
import weakref

from tasktrace.core.forksafe import renew_after_fork

__all__ = [
    "QUOTE_LIMIT",
    "WarnOnce",
    "quoted",
    "raise_errors",
    "reset_warnings",
    "set_raise_errors",
]

QUOTE_LIMIT = 80
"""Characters of a user's text (a label, a span name) that a message quotes at most."""


def quoted(text: str, limit: int = QUOTE_LIMIT) -> str:
    """Return ``repr(text)`` for a message, its first ``limit`` characters where it is longer.

    ``'LLLL…' (3,000,000 characters)``: a label of megabytes quoted whole made a warning of
    megabytes. Control characters are escaped, as ``repr`` does.
    """
    if len(text) <= limit:
        return repr(text)
    head = repr(text[:limit])
    return f"{head[:-1]}…{head[-1]} ({len(text):,} characters)"


class WarnOnce:
    """Log a warning the first time for each key, then stay quiet (thread-safe)."""

    def __init__(self, logger: logging.Logger) -> None:
        """Create a warner logging to ``logger``."""
        self._logger = logger
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        renew_after_fork(self, "_lock")
        with _instances_lock:
            _instances.add(self)

    def __call__(self, key: str, message: str, *args: object) -> bool:
        """Warn with ``message % args`` unless ``key`` already warned; return whether it warned."""
        with self._lock:
            if key in self._seen:
                return False
            self._seen.add(key)
        self._logger.warning(message, *args)
        return True

    def reset(self) -> None:
        """Forget which keys have warned (for tests)."""
        with self._lock:
            self._seen.clear()


_instances: weakref.WeakSet[WarnOnce] = weakref.WeakSet()
_instances_lock = threading.Lock()
renew_after_fork(sys.modules[__name__], "_instances_lock")


def reset_warnings() -> None:
    """Forget which keys every :class:`WarnOnce` of the process has warned about (for tests)."""
    with _instances_lock:
        warners = list(_instances)
    for warner in warners:
        warner.reset()


_raise_errors = False


def raise_errors() -> bool:
    """Whether internal errors are re-raised instead of warned about (see the module docstring)."""
    return _raise_errors


def set_raise_errors(value: bool) -> None:
    """Re-raise internal errors from now on (``True``: for test suites) or warn once (default).

    Thread-safety: a plain flag; threads see the new value at their next check.
    """
    global _raise_errors  # noqa: PLW0603 - one switch per process
    _raise_errors = value
