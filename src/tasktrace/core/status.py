"""Task statuses, and how the exception that ends a task maps to its status (one table).

- none, or ``SystemExit`` with code ``0`` or ``None``: ``finished`` (span status OK);
- ``SystemExit`` with any other code: ``failed`` (ERROR), error ``"SystemExit: 3"``;
- ``KeyboardInterrupt``, ``asyncio.CancelledError``, ``concurrent.futures.CancelledError`` and
  ``GeneratorExit`` (a generator closed before its end): ``cancelled`` (UNSET), error the
  exception's type and message (``"CancelledError"``, ``"KeyboardInterrupt"``; a generator's:
  ``"GeneratorExit: the generator was closed before it finished"``);
- any other exception: ``failed`` (ERROR), error ``"ValueError: ..."``.

A ``SystemExit`` also records the exit status as the ``exit_code`` extra data, as
``tasktrace run`` does for a command: ``0`` for ``None``, the integer itself, ``1`` for any
other value (Python prints it and exits with 1).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import os
import re
import shutil
from enum import Enum
from typing import Final, NamedTuple

__all__ = [
    "FINISHED",
    "NOT_EXECUTABLE_EXIT",
    "NOT_FOUND_EXIT",
    "RUNNING",
    "Outcome",
    "TaskStatus",
    "describe",
    "exit_status",
    "exit_status_error",
    "outcome_of",
    "start_failure",
]


class TaskStatus(str, Enum):
    """Statuses of a task record (the seed's values)."""

    PENDING = "pending"
    """Created, not started."""
    RUNNING = "running"
    """Started, not finished."""
    FINISHED = "finished"
    """Finished normally."""
    FAILED = "failed"
    """Finished by an exception."""
    CANCELLED = "cancelled"
    """Stopped from outside: ``KeyboardInterrupt``, a cancelled asyncio task or future, a
    generator closed early (``GeneratorExit``), ``SIGTERM``, or explicitly cancelled."""


RUNNING: Final = TaskStatus.RUNNING
"""``TaskStatus.RUNNING``, read once (an enum member lookup costs more than a global's)."""

_CANCELLING = (
    KeyboardInterrupt,
    asyncio.CancelledError,
    concurrent.futures.CancelledError,
    GeneratorExit,
)
"""Exceptions that stop a task from outside rather than report that its work failed."""


class Outcome(NamedTuple):
    """How a task ended, as recorded in its model and span."""

    status: TaskStatus
    """The task's final status."""
    error: str | None
    """Why it did not finish (``"ValueError: no rows"``), or ``None``."""
    exit_code: int | None = None
    """The exit status of a ``SystemExit`` that ended it, else ``None``."""


FINISHED = Outcome(TaskStatus.FINISHED, None)
"""The outcome of a task whose block ended normally."""


def outcome_of(exc: BaseException | None) -> Outcome:
    """Return the outcome of a task that ``exc`` (or nothing) ended, by the module's table."""
    if exc is None:
        return FINISHED
    if isinstance(exc, SystemExit):
        code = exit_status(exc)
        if code == 0:
            return Outcome(TaskStatus.FINISHED, None, 0)
        return Outcome(TaskStatus.FAILED, describe(exc), code)
    if isinstance(exc, _CANCELLING):
        return Outcome(TaskStatus.CANCELLED, describe(exc))
    return Outcome(TaskStatus.FAILED, describe(exc))


def exit_status(exc: SystemExit) -> int:
    """Return the process exit status ``exc`` stands for: 0 for ``None``, 1 for a message."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    return 1


def exit_status_error(code: int) -> str:
    """Return the ``error`` of a command that exited with the non-zero status ``code``.

    ``tasktrace run`` records it for a command that exited by itself with a status that is not
    a stop signal's (``"exit status 3"``), so that its span's ERROR status has a description,
    as a task failed by an exception does; views that show the ``exit_code`` leave it out.
    """
    return f"exit status {code}"


NOT_FOUND_EXIT = 127
"""The exit status of a command that is not found (a POSIX shell's)."""
NOT_EXECUTABLE_EXIT = 126
"""The exit status of a command found but not executable (a POSIX shell's)."""


def start_failure(program: str, error: OSError, shown: str | None = None) -> tuple[str, int]:
    """Return the error and exit status of ``program``, whose start failed with ``error``.

    ``shown`` is how the message names the program (default ``program``): the command line's
    redacted form, where ``program`` may hold a secret (``API_KEY=... prog``).

    As a POSIX shell: 127 (:data:`NOT_FOUND_EXIT`) when the program, or a file its start
    needs (its ``#!`` interpreter, its loader), is not found (``ENOENT``); 126
    (:data:`NOT_EXECUTABLE_EXIT`) when it was found but cannot be executed (not executable,
    a directory, not an executable format). The error is ``"cannot start 'prog': why"``.
    Reads the file system (``os.path``, ``shutil.which``); thread-safe.
    """
    why = error.strerror or str(error)
    name = program if shown is None else shown
    if error.errno == errno.ENOENT:
        found = os.path.exists(program) if os.sep in program else shutil.which(program)
        if found:  # then a file it needs is missing (bash says so too)
            why += " (a file it needs, such as its #! interpreter)"
        return f"cannot start {name!r}: {why}", NOT_FOUND_EXIT
    if error.errno == errno.EACCES and os.path.isdir(program):
        why = "Is a directory"
    return f"cannot start {name!r}: {why}", NOT_EXECUTABLE_EXIT


_TERMINAL_CODES: Final = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves (Ray's "\x1b[36mray::f()\x1b[39m")
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC: titles, links
    r"|\x1b[@-Z\\-_]"  # the other escapes
    r"|[\x00-\x08\x0b-\x1f\x7f]"  # control characters but tab and newline
)


def describe(exc: BaseException) -> str:
    """Return ``"Type: message"`` (or ``"Type"`` when the message is empty) for ``exc``.

    The message is plain text: terminal escape sequences and control characters (other than
    tab and newline) are left out, such as the colours that Ray's ``RayTaskError`` and other
    libraries' exceptions put in their messages for a terminal.
    """
    text = _TERMINAL_CODES.sub("", str(exc))
    if not text and isinstance(exc, GeneratorExit):
        text = "the generator was closed before it finished"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
