"""``tasktrace run``'s command ends with it: no orphan when the wrapper is killed.

``tasktrace run`` passes SIGTERM and SIGHUP on to its command, but SIGKILL (the out-of-memory
killer choosing the wrapper, a supervisor's ``kill -9``) cannot be caught: without more, the
command lives on, reparented to PID 1, and its spans point to a root span that never comes.

On Linux the command is given a *parent-death signal* (``prctl(PR_SET_PDEATHSIG)``, set in the
child between ``fork`` and ``exec``): :data:`PARENT_DEATH_SIGNAL`, SIGTERM, as ``docker stop``
sends, so that the command stops as on any stop request (a Python program using tasktrace
finishes its tasks as cancelled and flushes their spans; a program that handles or ignores
SIGTERM decides for itself). The signal survives ``exec`` and is sent when the *thread* that
started the command ends, which here is the thread waiting for it. It reaches the command
itself, not the processes the command started (a shell's pipeline): those end as their parent
ends, as with ``docker stop``'s SIGTERM.

If the wrapper died before the signal was set (the race between ``fork`` and ``prctl``), the
child's parent is no longer the wrapper: the child kills itself (SIGKILL: it still has the
wrapper's signal handlers until ``exec``, and the command has not started, so nothing is
lost). Elsewhere (macOS, no ``prctl`` in the C library) nothing is set.

``preexec_fn`` makes :mod:`subprocess` fork (not ``vfork``) and run the ``os.register_at_fork``
hooks, as ``multiprocessing``'s forks do; tasktrace's hooks renew their locks in the child
(:mod:`tasktrace.core.forksafe`).
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["PARENT_DEATH_SIGNAL", "SHELL", "die_with_parent", "start"]

SHELL = "/bin/sh"
"""The shell that runs an executable file without ``#!`` (see :func:`start`)."""

PARENT_DEATH_SIGNAL = signal.SIGTERM
"""The signal the command gets when ``tasktrace run`` dies first (Linux)."""

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _prctl() -> Callable[..., int] | None:
    """Return the C library's ``prctl`` (looked up in the parent, not the child), or ``None``."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # no C library loaded, or no prctl in it
        return None
    return function


def die_with_parent() -> Callable[[], None] | None:
    """Return a ``preexec_fn`` for :class:`subprocess.Popen` that ties the child to this process.

    Call it in the process (and thread) that starts the command and waits for it. The function
    returned runs in the child after ``fork``: it only calls ``prctl`` (already looked up),
    ``getppid`` and, in the race, ``kill``; nothing that takes a lock.

    Returns:
        The function, or ``None`` where no parent-death signal can be set (not Linux).
    """
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(PARENT_DEATH_SIGNAL), 0, 0, 0)
        if os.getppid() != parent:  # the wrapper died before prctl: nobody will signal us
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def start(
    argv: list[str],
    *,
    own_group: bool = False,
    preexec_fn: Callable[[], None] | None = None,
    **options: Any,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` as :class:`subprocess.Popen` does, and as ``execvp`` a script without ``#!``.

    An executable file the kernel cannot run (``ENOEXEC``: a shell script without its ``#!``
    line) is run by :data:`SHELL` (``sh FILE ARGS``), as POSIX's ``execvp`` does and so
    ``env``, ``time``, ``nohup`` and every shell: it is started again that way.

    Args:
        argv: The command and its arguments.
        own_group: Start the command in a process group of its own (``setpgid``), so that a
            signal sent to ``tasktrace run``'s group reaches it once, passed on by ``run``
            (see :mod:`tasktrace.cli.run_signals`), not also straight from the sender.
        preexec_fn: Run in the child before ``exec`` (after ``setpgid``).
        **options: Passed to :class:`subprocess.Popen`.

    Raises:
        OSError: The command cannot be started (by :data:`SHELL` either, for a script).
    """
    if own_group:
        preexec_fn = _in_own_group(preexec_fn)
    try:
        return subprocess.Popen(argv, preexec_fn=preexec_fn, **options)  # noqa: S603, PLW1509
    except OSError as e:
        if e.errno != errno.ENOEXEC:
            raise
        path = argv[0] if "/" in argv[0] else shutil.which(argv[0])
        if path is None:
            raise
        return subprocess.Popen([SHELL, path, *argv[1:]], preexec_fn=preexec_fn, **options)  # noqa: S603, PLW1509


def _in_own_group(then: Callable[[], None] | None) -> Callable[[], None]:
    """Return a ``preexec_fn`` that moves the child to a new process group, then runs ``then``."""

    def preexec() -> None:
        os.setpgid(0, 0)
        if then is not None:
            then()

    return preexec
