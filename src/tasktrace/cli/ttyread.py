"""Whether a process is waiting for the user to type: blocked reading the user's terminal.

``tasktrace run``'s panel steps aside while its command waits for input (see
:mod:`tasktrace.cli.relay`), so that what the user types echoes on a still screen. A process
waits for input when it is blocked in ``read`` or ``readv`` on a file descriptor that is the
terminal of ``tasktrace run``'s standard input (the same character device): Linux's
``/proc/PID/syscall`` gives the system call a blocked process is in, and its first argument.
That file can be read for one's own descendants (``ptrace`` access); elsewhere, on other
architectures than x86-64 and ARM64, and for a program that waits in ``select`` or ``poll``
(prompt_toolkit, IPython) the answer is "no", and the panel only steps aside for a partial line.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable
from typing import Final

__all__ = ["READ_SYSCALLS", "reading_terminal"]

READ_SYSCALLS: Final[dict[str, frozenset[int]]] = {
    "x86_64": frozenset({0, 19}),  # read, readv
    "aarch64": frozenset({63, 65}),
    "arm64": frozenset({63, 65}),
}
"""The numbers of ``read`` and ``readv`` by machine (``platform.machine()``)."""
_READS: Final = READ_SYSCALLS.get(platform.machine(), frozenset())


def reading_terminal(pids: Iterable[int], terminal_fd: int = 0) -> bool:
    """Return whether one of ``pids`` is blocked reading the terminal open as ``terminal_fd``.

    Args:
        pids: Process ids (processes that have exited are skipped).
        terminal_fd: This process's descriptor of the user's terminal (standard input).

    Returns ``False`` when ``terminal_fd`` is not a terminal, or nothing can be told (see the
    module docstring). Never raises; thread-safe (reads ``/proc`` only).
    """
    if not _READS:
        return False
    try:
        if not os.isatty(terminal_fd):
            return False
        device = os.fstat(terminal_fd).st_rdev
    except OSError:
        return False
    for pid in pids:
        try:
            with open(f"/proc/{pid}/syscall", "rb") as f:
                fields = f.read().split()
            if len(fields) < 2 or not fields[0].isdigit() or int(fields[0]) not in _READS:
                continue
            fd = int(fields[1], 16)
            if os.stat(f"/proc/{pid}/fd/{fd}").st_rdev == device:
                return True
        except (OSError, ValueError):  # exited, not ours to read, or not a system call now
            continue
    return False
