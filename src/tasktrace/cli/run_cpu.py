"""The CPU of a command under ``tasktrace run`` that none of its tasks reported ("in no task").

``wait4`` gives the command's own CPU plus that of every descendant it (or a descendant of it)
waited for; a descendant still running when the command ended, or never waited for (the pool
workers of a program killed by ``SIGTERM``), is not in it, though its tasks may have reported
CPU into the tree. Subtracting that CPU from the ``wait4`` figure took the command's own CPU
away (a driver's 0.89 s shown as ``0µs in no task``). So the tasks' reported CPU is split:

- **top**: what the subprocess roots right under the run's task reported (tasks in processes
  that got the run's ``TRACEPARENT``: the command itself, or a process it started and waited
  for, as a shell script's ``python``);
- **deep**: what subprocess tasks below those reported (a pool's workers under a task of the
  command).

Before the ended command is reaped, ``/proc/<pid>/stat`` of the zombie gives the CPU of the
descendants it waited for (``cutime + cstime``, :func:`waited_descendants_cpu_s`). The deep
tasks' CPU is taken as inside the ``wait4`` figure when those descendants' CPU covers it (the
workers were waited for: a program that ended normally, or joblib's abort after Ctrl-C); when
the command waited for next to nothing (at most :data:`SLACK_S`), the deep tasks' CPU is not in
the figure and only the top tasks' is subtracted (the figure is then the command's own CPU in no
task; its unreaped workers' is not known). Anything between cannot be told apart: no figure.

Thread-safety: the functions may be called from any thread (the tree is read under its lock).
"""

from __future__ import annotations

import os
from typing import Final

from tasktrace.core.record import TaskRecord
from tasktrace.tree.processor import tree
from tasktrace.tree.spool import collect

__all__ = ["SLACK_S", "cpu_in_no_task", "waited_descendants_cpu_s"]


def _clock_tick_s() -> float:
    try:
        return 1.0 / os.sysconf("SC_CLK_TCK")
    except (AttributeError, ValueError, OSError):  # not POSIX: /proc is not read there anyway
        return 0.01


_TICK_S: Final = _clock_tick_s()

SLACK_S: Final = 3 * _TICK_S
"""Seconds two CPU figures may differ and still be taken as equal: ``/proc`` gives CPU times
in clock ticks (1/100 s on Linux), truncated, two of them summed."""


def waited_descendants_cpu_s(pid: int) -> float | None:
    """Return the CPU seconds of the descendants the ended command ``pid`` waited for.

    Call it after ``waitid(..., WNOWAIT)`` and before reaping ``pid``: the zombie's
    ``/proc/<pid>/stat`` still holds ``cutime`` and ``cstime`` (clock ticks). ``None`` where it
    cannot be read (not Linux, no ``/proc``, reaped already); never raises.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read()
        fields = text[text.rindex(b")") + 2 :].split()
        return (int(fields[13]) + int(fields[14])) * _TICK_S  # cutime, cstime (fields 16, 17)
    except (OSError, ValueError, IndexError):
        return None


def cpu_in_no_task(task: TaskRecord, usage_s: float, waited_s: float | None) -> float | None:
    """Return the command's CPU seconds that no task reported, or ``None`` when not known.

    Merges the spool first (the command's last records).

    Args:
        task: The run's task, its subtasks the records the command's processes reported.
        usage_s: The command's ``wait4`` CPU (user + system), in seconds.
        waited_s: :func:`waited_descendants_cpu_s` of the command (``None``: not known; the
            reported CPU is then subtracted whole when the figure holds it, else ``None``).

    Returns:
        ``usage_s`` less the reported CPU the ``wait4`` figure holds (see the module
        docstring), at least 0; ``None`` when what it holds cannot be told.
    """
    collect()
    with tree.lock:
        top, deep = _reported_cpu_s(task)
    if top + deep <= usage_s + SLACK_S and (waited_s is None or deep <= waited_s + SLACK_S):
        return max(0.0, usage_s - top - deep)  # every reporting process was waited for
    if waited_s is not None and waited_s <= SLACK_S and top <= usage_s + SLACK_S:
        return max(0.0, usage_s - top)  # none of the deeper ones was: their CPU is not in it
    return None


def _reported_cpu_s(task: TaskRecord) -> tuple[float, float]:
    """Return the CPU the top and the deep subprocess tasks below ``task`` reported, in seconds.

    Counted as :func:`~tasktrace.core.record.other_process_cpu` counts it (a subprocess task's
    ``cpu_time``, nothing below one whose CPU is unknown, every ``children_cpu_time_s``).
    """
    top = deep = 0.0
    stack: list[tuple[TaskRecord, bool]] = [(sub, False) for sub in task.subtasks]
    while stack:
        node, below = stack.pop()
        cpu = 0.0
        if node.subprocess:
            if node.cpu_time is None:
                continue
            cpu = node.cpu_time
        if node.children_cpu_time_s is not None:
            cpu += node.children_cpu_time_s
        if below:
            deep += cpu
        else:
            top += cpu
        inner = below or node.subprocess
        stack.extend((sub, inner) for sub in node.subtasks)
    return top, deep
