r"""The live panel of ``tasktrace run``: what the command is doing now, redrawn on the terminal.

While the command runs, a :class:`rich.live.Live` panel on standard error shows:

- elapsed wall time (``time.perf_counter`` since the command started);
- CPU time of the command's process tree (with the mean number of busy cores where that is
  more than one): user + system of every live process, plus the
  ``children_user`` / ``children_system`` of the processes they reaped (``psutil``
  ``Process.cpu_times()``), never decreasing;
- RSS now (sum of ``memory_info().rss`` over the tree) and the peak of that sum as sampled
  (each time the panel is built, 4 times a second: a shorter spike can be missed);
- energy so far, when an energy meter is available (the ``run`` task's own measurements,
  refreshed every 2 s);
- the tree of running tasks of a child that uses tasktrace: the child's top-level tasks write
  their records to the spool folder of :mod:`tasktrace.tree.spool` at start, at each refresh
  (``tasktrace run`` sets the child's ``TASKTRACE_REFRESH_INTERVAL_S`` to
  :data:`CHILD_REFRESH_INTERVAL_S` unless it is already set) and at finish. Finished subtasks
  are left out (the final tree has them).

The panel is never taller than the terminal less one line: a tree that does not fit is cut at
the bottom, and the panel's bottom edge says how many lines are not shown. (Rich draws a live
display's last frame in full and can erase only what is still on the screen: a taller panel
stayed behind, printed over the command's output.) Each frame is drawn with the console's own
options: rich draws the panel again after each relayed line of output with that line's
``print`` options, and those (no markup, no wrapping) showed the tree's markup as text.

The command's output is relayed above the panel by :class:`~tasktrace.cli.relay.OutputRelay`:
whole lines, ``\r`` progress bars in their latest state, and, for a prompt or other partial
line, the panel steps aside (see :mod:`tasktrace.cli.relay`).

The command's pseudo-terminal has the user's terminal's size, and keeps it: when the window
is resized (``SIGWINCH`` to ``tasktrace run``, main thread only), the new size (``TIOCGWINSZ``
of standard output) is set on the pseudo-terminal and ``SIGWINCH`` is sent to the command, so a
program that reads its terminal's width on that signal (tqdm, rich, curses) sees the new one.

The panel is shown only when standard error is a terminal and ``--quiet`` is not given; it
disappears when the command ends (the final tree is printed as before).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import signal
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError
from rich.console import Group, RenderableType
from rich.markup import escape
from rich.panel import Panel
from rich.text import Text

from tasktrace.cli.boundary import Console
from tasktrace.cli.relay import OutputRelay
from tasktrace.cli.render import render_tree
from tasktrace.cli.ttyread import reading_terminal
from tasktrace.core.settings import ENV_PREFIX
from tasktrace.core.status import TaskStatus
from tasktrace.core.units import friendly_bytes, friendly_duration, friendly_joules
from tasktrace.core.views import CORES_SHOWN_ABOVE, pruned_copy
from tasktrace.task import Task
from tasktrace.tree.spool import spool_folder

__all__ = ["CHILD_REFRESH_INTERVAL_S", "LivePanel"]

CHILD_REFRESH_INTERVAL_S: Final = 1.0
"""Refresh interval, in seconds, given to the command's tasks while the panel shows them."""
ENERGY_INTERVAL_S: Final = 2.0
"""Seconds between reads of the ``run`` task's energy meters for the panel."""
_REFRESH_ENV: Final = ENV_PREFIX + "REFRESH_INTERVAL_S"


class LivePanel:
    """The live panel of one ``tasktrace run`` (see the module docstring).

    Args:
        task: The running ``run`` task (its label titles the panel; its energy is shown).
        console: The console to draw on (standard error).

    Use :meth:`for_run` to get a panel only where one should be shown. Thread-safety: the
    relay's thread draws it; :meth:`start` and :meth:`stop` are called by ``run``.

    """

    def __init__(self, task: Task, console: Console) -> None:
        """Create a stopped panel."""
        self.task = task
        self.console = console
        self._pid: int | None = None
        self._pids: tuple[int, ...] = ()  # the command's process tree, as last sampled
        self._t0 = time.perf_counter()
        self._cpu_s = 0.0
        self._peak_rss_bytes = 0
        self._rss_bytes: int | None = None
        self._energy_read = 0.0
        self._lock = threading.Lock()
        self._spool: Path | None = None
        self._output_fd: int | None = None
        self._relay: OutputRelay | None = None
        self._resize_fd: int | None = None  # our own copy of the pseudo-terminal's master end
        self._previous_winch: list[Any] = []  # the SIGWINCH handler start() replaced, if it did

    @classmethod
    def for_run(cls, task: Task, *, quiet: bool) -> LivePanel | None:
        """Return a panel for ``task``, or ``None`` when quiet or not both outputs are terminals.

        The command's output is relayed above the panel (see :meth:`open_output`), so standard
        output must be the terminal too: output redirected to a file stays the command's own.
        """
        if quiet or not sys.stdout.isatty():
            return None
        console = Console(stderr=True)
        if not console.is_terminal or console.is_dumb_terminal:
            return None
        return cls(task, console)

    def open_output(self) -> int:
        """Return the terminal end of a new pseudo-terminal for the command's output.

        The command writes to a terminal (so it keeps its colours and line buffering) of our
        terminal's size; a thread relays its output above the panel (see
        :mod:`tasktrace.cli.relay`), so the panel's redraws never erase the command's output.
        """
        master, slave = pty.openpty()
        self._output_fd = master
        self._resize_fd = os.dup(master)
        self._copy_size()
        return slave

    def _copy_size(self) -> None:
        """Give the command's pseudo-terminal the size of ours (standard output's)."""
        with contextlib.suppress(OSError, TypeError):  # TypeError: closed meanwhile (None)
            size = fcntl.ioctl(sys.stdout.fileno(), termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(self._resize_fd, termios.TIOCSWINSZ, size)  # type: ignore[arg-type]

    def _resized(self, signum: int, frame: object) -> None:
        """``SIGWINCH`` handler: pass the window's new size on to the command (see the module)."""
        del signum, frame
        self._copy_size()
        if self._pid is not None:  # it may have read the old size on its own SIGWINCH
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGWINCH)

    @staticmethod
    def child_environment(env: dict[str, str]) -> dict[str, str]:
        """Return ``env`` with a short refresh interval for the command's tasks, unless set."""
        if _REFRESH_ENV not in env:
            env = {**env, _REFRESH_ENV: str(CHILD_REFRESH_INTERVAL_S)}
        return env

    def start(self, pid: int) -> None:
        """Start drawing the panel for the command's process ``pid``, its output above it."""
        self._pid = pid
        self._t0 = time.perf_counter()
        try:
            self._spool = spool_folder()
        except OSError:
            self._spool = None
        self._pids = (pid,)
        self._relay = OutputRelay(self.console, self.render, self.waiting_for_input)
        self._relay.start(self._output_fd)
        self._output_fd = None  # the relay's to close now
        if threading.current_thread() is threading.main_thread():
            self._previous_winch = [signal.signal(signal.SIGWINCH, self._resized)]

    def stop(self) -> None:
        """Print the rest of the command's output, stop drawing and remove the panel."""
        for previous in self._previous_winch:  # None: set outside Python (the default then)
            signal.signal(signal.SIGWINCH, signal.SIG_DFL if previous is None else previous)
        self._previous_winch = []
        if self._resize_fd is not None:
            fd, self._resize_fd = self._resize_fd, None
            with contextlib.suppress(OSError):
                os.close(fd)
        if self._relay is not None:
            self._relay.stop()
            self._relay = None
        elif self._output_fd is not None:  # the command never started
            with contextlib.suppress(OSError):
                os.close(self._output_fd)
        self._output_fd = None

    def waiting_for_input(self) -> bool:
        """Return whether the command waits for the user to type (its tree as last sampled).

        See :func:`~tasktrace.cli.ttyread.reading_terminal`; thread-safe.
        """
        return reading_terminal(self._pids)

    # ----- reading -----------------------------------------------------------------------------

    def _sample_processes(self) -> None:
        import psutil  # noqa: PLC0415 - only with a terminal

        if self._pid is None:
            return
        try:
            top = psutil.Process(self._pid)
            procs = [top, *top.children(recursive=True)]
        except psutil.Error:
            return
        self._pids = tuple(proc.pid for proc in procs)
        cpu_s = 0.0
        rss_bytes = 0
        read = 0
        for proc in procs:
            try:
                with proc.oneshot():
                    if proc.status() == psutil.STATUS_ZOMBIE:  # exited: its memory reads 0
                        continue
                    times = proc.cpu_times()
                    cpu_s += times.user + times.system + times.children_user
                    cpu_s += times.children_system
                    rss_bytes += proc.memory_info().rss
                read += 1
            except psutil.Error:  # a process may exit while we read it
                continue
        self._cpu_s = max(self._cpu_s, cpu_s)
        if not read:  # the command has exited (a zombie until run reaps it): no RSS now
            self._rss_bytes = None
            return
        self._rss_bytes = rss_bytes
        self._peak_rss_bytes = max(self._peak_rss_bytes, rss_bytes)

    def _energy(self) -> dict[str, float]:
        task = self.task
        now = time.perf_counter()
        if now - self._energy_read >= ENERGY_INTERVAL_S:
            self._energy_read = now
            task.update_resources()  # thread-safe: written only while the task runs
        values = {"CPU": task.cpu_power, "GPU": task.gpu_power, "system": task.system_power}
        return {k: v for k, v in values.items() if v is not None}

    def _child_tasks(self) -> list[Task]:
        if self._spool is None:
            return []
        records = []
        try:
            entries = list(os.scandir(self._spool))
        except OSError:
            return []
        for entry in entries:
            if entry.name.startswith(".") or not entry.name.endswith(".json"):
                continue
            try:
                record = Task.model_validate_json(Path(entry.path).read_bytes())
            except (OSError, ValidationError, ValueError):
                continue  # being replaced, or not a task record
            if record.parent_id == self.task.task_id:
                records.append(record)
        return sorted(records, key=lambda r: r.start_time or 0.0)

    # ----- drawing -----------------------------------------------------------------------------

    def render(self, room: int | None = None) -> RenderableType:
        """Build the panel now, at most ``room`` lines high (default: the terminal's less one).

        Called by the relay (see :class:`~tasktrace.cli.relay.OutputRelay`) from one thread
        at a time, 4 times a second at most (the panel built is drawn again as it is between).
        """
        with self._lock:
            self._sample_processes()
            energy = self._energy()
            elapsed_s = time.perf_counter() - self._t0
            line = Text()
            line.append("elapsed ", style="dim").append(friendly_duration(elapsed_s))
            line.append("   CPU time ", style="dim").append(friendly_duration(self._cpu_s))
            if elapsed_s > 0 and self._cpu_s > CORES_SHOWN_ABOVE * elapsed_s:
                line.append(f" ({self._cpu_s / elapsed_s:.1f} cores)")
            if self._rss_bytes is not None:
                line.append("   RSS now ", style="dim").append(friendly_bytes(self._rss_bytes))
            if self._peak_rss_bytes:
                line.append("   peak RSS ", style="dim")
                line.append(friendly_bytes(self._peak_rss_bytes))
            for name, joules in energy.items():
                line.append(f"   {name} energy ", style="dim").append(friendly_joules(joules))
            parts: list[Any] = [line]
            records = [_running_only(record) for record in self._child_tasks()]
            parts.extend(render_tree(record, max_depth=6) for record in records)
        title = f"tasktrace run: {escape(self.task.label)}"
        body = Group(*parts)
        if room is None:
            room = self.console.size.height - 1  # the cursor's line stays below the panel
        inside = self.console.options.update_width(max(self.console.size.width - 4, 1))
        lines = len(self.console.render_lines(body, inside, pad=False))
        if lines + 2 <= room:
            return Panel(body, title=title, expand=False)
        height = max(room, 3)  # borders and one line
        hidden = f"{lines - (height - 2):,} more lines"
        return Panel(body, title=title, expand=False, height=height, subtitle=hidden)


def _running_only(record: Task) -> Task:
    """Return ``record`` with its running subtasks alone, at any depth: what runs now.

    Each line's figures stay those of the whole task (:func:`~tasktrace.core.views.pruned_copy`:
    a running task's CPU time counts its finished subprocess subtasks').
    """
    running = [_running_only(t) for t in record.subtasks if t.status is TaskStatus.RUNNING]
    return pruned_copy(record, running)
