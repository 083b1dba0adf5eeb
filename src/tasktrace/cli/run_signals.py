r"""The signals ``tasktrace run`` passes on to its command, and how the run ends by them.

A job manager (``docker stop``, Slurm, systemd), a script's ``kill`` or a closed terminal signals
the process it knows, ``tasktrace run``; the command is the one to stop. From before the command
starts until the run's record is written, ``run`` handles :data:`PASSED_ON` (no handler raises,
so none interrupts the wait for the command nor the record, and the command's usage is never
lost) and passes each on to the command, which decides: ``run`` waits for it to end and
records how it ended.

- **SIGTERM, SIGHUP** (a job manager, a hang-up) and **SIGUSR1, SIGUSR2, SIGALRM** (a
  checkpoint request, ``dd``'s progress) are passed on.
- **SIGINT, SIGQUIT** are passed on unless ``run`` is in its terminal's foreground process
  group: then they are a Ctrl-C or Ctrl-\ from the terminal, which sent them to the command
  too (the whole group); passed on, the command would get them twice (a Python program a
  second ``KeyboardInterrupt`` in its clean-up, which left its tasks ``running``).
  ``kill -INT <run's pid>`` from a script or a supervisor reaches the command.
- Without a controlling terminal (a job manager, ``docker run`` without ``-t``, CI, a
  ``setsid`` or ``start_new_session`` process) the command is started in a process group of
  its own (:attr:`Forwarder.own_group`): a signal sent to ``run``'s whole group
  (``kill -INT -PGID``) reaches the command once, passed on by ``run``, not twice. (No job
  control is lost: there is no terminal to control. A group-wide ``SIGKILL`` stops ``run``
  alone; the command then gets :data:`~tasktrace.cli.run_child.PARENT_DEATH_SIGNAL` on
  Linux.) With a terminal, the command stays in ``run``'s group (the terminal's job control
  needs it there), so a background ``tasktrace run ... &`` signalled as a job (``kill -INT
  %1``) passes on what the command got already.
- A signal received before the command started is passed on once it has; one received after
  it ended stops nothing and is dropped (``run`` writes the record and exits with the
  command's status).
- A signal ``run`` ignores (``nohup``'s SIGHUP, a background job's SIGINT) stays ignored, for
  the command too. SIGKILL and SIGSTOP cannot be handled (see
  :mod:`tasktrace.cli.run_child` for SIGKILL).

The run's outcome (:func:`outcome`): the exit status is always the command's own (``128 + N``
when killed by signal ``N``). The run is CANCELLED when the command was stopped on request:
killed by one of :data:`STOP_SIGNALS`, exiting with ``128 + N`` for one of them, or exiting
non-zero after ``run`` passed one of them on; FINISHED for exit status 0 (it chose to finish);
FAILED otherwise.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Final

from tasktrace.core.status import TaskStatus, exit_status_error

__all__ = ["PASSED_ON", "STOP_SIGNALS", "Forwarder", "forward_signals", "outcome"]

STOP_SIGNALS: Final = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT})
r"""Signals that ask a command to stop (Ctrl-C, a job manager, a closed terminal, Ctrl-\): a
command that ends by one of them is CANCELLED, not FAILED."""

PASSED_ON: Final = STOP_SIGNALS | {signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM}
"""Signals ``tasktrace run`` handles and passes on to its command (see the module)."""

_FROM_TERMINAL: Final = frozenset({signal.SIGINT, signal.SIGQUIT})


class Forwarder:
    """The signals ``tasktrace run`` received while its command runs, passed on to it.

    Args:
        terminal: A descriptor of ``run``'s controlling terminal, or ``None`` (no terminal).

    Thread-safety: :meth:`handle` runs in the main thread (a signal handler); the others are
    called by ``run`` in the main thread too.
    """

    def __init__(self, terminal: int | None = None) -> None:
        """Create a forwarder with no command yet."""
        self.own_group = terminal is None
        """Whether the command should be started in a process group of its own (no
        controlling terminal: see the module)."""
        self.pid: int | None = None
        self.stopped_by: int | None = None  # the first stop signal passed on to the command
        self._terminal = terminal
        self._pending: list[int] = []  # received before the command started
        self._ended = False

    def handle(self, signum: int, frame: object) -> None:
        """Signal handler: pass ``signum`` on to the command (see the module for which)."""
        del frame
        if self._ended:  # it stopped nothing (and once reaped, the pid may be another's)
            return
        if self.pid is None:  # the command is being started: started() passes it on
            self._pending.append(signum)
        elif signum not in _FROM_TERMINAL or not self._terminal_foreground():
            self._forward(self.pid, signum)

    def started(self, pid: int) -> None:
        """Have signals go to the command ``pid`` from now on, those received before too."""
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, PASSED_ON)
        try:  # no handler runs in between: each signal is passed on once, none is lost
            self.pid = pid
            for signum in self._pending:
                self._forward(pid, signum)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def ended(self) -> None:
        """Pass nothing on from now: the command has ended (call it before reaping it)."""
        self._ended = True

    def _terminal_foreground(self) -> bool:
        """Whether ``run``'s process group is its terminal's foreground group (Ctrl-C's)."""
        if self._terminal is None:
            return False
        try:
            return os.tcgetpgrp(self._terminal) == os.getpgrp()
        except OSError:  # hung up, or no longer our terminal
            return False

    def _forward(self, pid: int, signum: int) -> None:
        if self.stopped_by is None and signum in STOP_SIGNALS:
            self.stopped_by = signum
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _open_terminal() -> int | None:
    """Open the controlling terminal (``/dev/tty``, not inherited), or ``None`` when none."""
    try:
        return os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:  # ENXIO: no controlling terminal
        return None


@contextlib.contextmanager
def forward_signals() -> Iterator[Forwarder]:
    """Handle :data:`PASSED_ON` from here: give the command's pid to the forwarder's ``started``.

    Keep it open until the run's record is written: a signal arriving in between would kill
    ``run`` with the task left running. Main thread only (elsewhere nothing is installed).
    """
    if threading.current_thread() is not threading.main_thread():
        forwarder = Forwarder()
        forwarder.own_group = False  # nothing is passed on: the group's signals must reach it
        yield forwarder
        return
    terminal = _open_terminal()
    forwarder = Forwarder(terminal)
    previous = {
        sig: signal.signal(sig, forwarder.handle)
        for sig in sorted(PASSED_ON)
        if signal.getsignal(sig) is not signal.SIG_IGN
    }
    try:
        yield forwarder
    finally:
        for sig, handler in previous.items():  # None: set outside Python, the default then
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        if terminal is not None:
            os.close(terminal)


def outcome(returncode: int, stopped_by: int | None = None) -> tuple[TaskStatus, int, str | None]:
    """Return the status, exit status and error to record for a command's ``returncode``.

    Args:
        returncode: Popen's (``-N``: killed by signal ``N``; the exit status is ``128 + N``
            then, as a shell reports it).
        stopped_by: The stop signal ``run`` passed on to the command, if any.

    See the module for the rules. The error: ``None`` for 0, ``"exit status N"``,
    ``"killed by NAME"`` (a crash: SIGSEGV, SIGKILL), ``"stopped by NAME"`` (also with the
    exit status or the other signal in brackets when they are not ``NAME``'s own).
    """
    if returncode == 0:
        return TaskStatus.FINISHED, 0, None
    signum = -returncode if returncode < 0 else returncode - 128
    code = 128 + signum if returncode < 0 else returncode
    if stopped_by is not None:  # the command's answer to the request passed on
        how = f"killed by {_name(signum)}" if returncode < 0 else exit_status_error(code)
        asked = f"stopped by {_name(stopped_by)}"
        return TaskStatus.CANCELLED, code, asked if code == 128 + stopped_by else f"{asked} ({how})"
    if signum not in STOP_SIGNALS:
        if returncode < 0:  # a crash by any other signal
            return TaskStatus.FAILED, code, f"killed by {_name(signum)}"
        return TaskStatus.FAILED, code, exit_status_error(code)
    if returncode < 0:
        return TaskStatus.CANCELLED, code, f"stopped by {_name(signum)}"
    return TaskStatus.CANCELLED, code, f"stopped by {_name(signum)} (exit status {code})"


def _name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:  # not a signal number (a plain exit status), or one without a name
        return f"signal {signum}"
