"""SIGTERM: finish running tasks as CANCELLED, write their files and flush spans before exiting.

A batch scheduler (Slurm, Kubernetes, systemd) stops a job with ``SIGTERM``. By default Python
dies at once, so running tasks would stay RUNNING in their files and spans still queued in a
``BatchSpanProcessor`` would be lost. :func:`install_sigterm_handler` (called by the task façade
when the first task starts, in the main thread only) installs a handler that:

- when the program had **no handler** (``SIG_DFL``): restores ``SIG_DFL`` (so a second
  ``SIGTERM`` kills at once), runs the callbacks registered with :func:`on_sigterm` (an
  integration stopping work that would otherwise go on after the process died), finishes every
  running task, innermost first, as
  :attr:`~tasktrace.TaskStatus.CANCELLED` with the error :data:`STOPPED_BY_SIGTERM` (unless it
  has one already; this writes their task files), exports what is queued and shuts tasktrace's
  exporters down as the interpreter's exit does, within ``exit_timeout_s`` in all (default 5 s;
  the tracer provider is flushed within the same bound, and an exporter whose endpoint fails is
  not retried), saying once how many spans of the process were not exported
  (:mod:`tasktrace.export.losses`), then sends ``SIGTERM`` to the process again, so the exit
  status is still "killed by SIGTERM" (``-15`` / ``143``);
- when the program had **its own Python handler**: writes the running tasks' files as they are
  (still RUNNING), flushes the tracer provider, then calls the program's handler, which decides
  what happens next (its exceptions propagate, and ``with Task`` blocks record them as usual);
- when the signal is **ignored** (``SIG_IGN``) or handled outside Python: installs nothing.

A handler the program installs later replaces tasktrace's; nothing is chained then.

**At interpreter exit** with tasks still running (started by hand and never finished, or left
by an uncaught exception that ended the program outside their ``with`` blocks), an
:mod:`atexit` handler, registered with the first task's start (after the exporters' own, so
that it runs before they shut down), writes each running task as it stands, innermost first
(:meth:`~tasktrace.Task.update`: still RUNNING, with its figures so far and its finished
subtasks), as the handler above does for a program's own handler. Nothing is finished for the
program: its status is not known here.

A child **forked** from the process (a ``multiprocessing`` or joblib pool worker) does not keep
tasktrace's handler: it gets back the handler the program had (``SIG_DFL``, or its own) and
never installs tasktrace's. A handler written in Python runs only when the main thread returns
to the interpreter, and a child forked from a process with threads may block for ever in C on a
lock another thread held at the fork; the pool's ``terminate()`` must still end it with
``SIGTERM``, as it would without tasktrace.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from tasktrace.core.record import TaskRecord
from tasktrace.core.status import TaskStatus
from tasktrace.core.warn import quoted
from tasktrace.export.pipeline import shutdown_pipelines
from tasktrace.export.provider import exit_timeout_s, flush_spans, pipelines
from tasktrace.tree.processor import tree

__all__ = ["FLUSH_TIMEOUT_MILLIS", "STOPPED_BY_SIGTERM", "install_sigterm_handler", "on_sigterm"]

_log = logging.getLogger(__name__)

FLUSH_TIMEOUT_MILLIS = 5000
"""Longest wait, in milliseconds, for the tracer provider to flush spans after ``SIGTERM`` when
the program has a handler of its own (without one, the exit's bound applies: ``exit_timeout_s``)."""

STOPPED_BY_SIGTERM = "stopped by SIGTERM"
"""The ``error`` of a task that tasktrace's handler finished as CANCELLED on ``SIGTERM``."""

_installed = False
_previous: Any = None
_exit_registered = False
_callbacks: list[Callable[[], None]] = []


def on_sigterm(callback: Callable[[], None]) -> None:
    """Have tasktrace's ``SIGTERM`` handler call ``callback()`` before it finishes the tasks.

    Called only when the process is about to die of the signal (the program had no handler of
    its own), in the main thread, in registration order; a callback registered twice is called
    once. It must be quick and must not take a lock the main thread may hold (the handler runs
    between two of its bytecodes). What it raises is logged, and the handler goes on.
    Thread-safe (a list append under the GIL).
    """
    if callback not in _callbacks:
        _callbacks.append(callback)


def install_sigterm_handler() -> bool:
    """Install tasktrace's ``SIGTERM`` handler once, if this is the main thread.

    Cheap after the first successful call (one global read). Never raises.

    Returns:
        Whether tasktrace's handler is installed (``False`` off the main thread, where a later
        call may still install it, and when the signal is ignored or handled outside Python).
    """
    global _installed, _previous, _exit_registered  # noqa: PLW0603 - one handler per process
    if _installed:
        return True
    if not _exit_registered:  # any thread: atexit handlers run in the main one
        _exit_registered = True
        atexit.register(_save_running_at_exit)
    if threading.current_thread() is not threading.main_thread():
        return False
    _installed = True  # decided once, whatever the outcome
    try:
        previous = signal.getsignal(signal.SIGTERM)
        if previous is signal.SIG_DFL or callable(previous):
            _previous = previous
            signal.signal(signal.SIGTERM, _on_sigterm)
            return True
    except (ValueError, OSError) as e:  # no signals here (an embedded interpreter)
        _log.debug("tasktrace: SIGTERM handler not installed (%s)", e)
    return False


def _after_fork_in_child() -> None:
    """In a forked child: give ``SIGTERM`` back to the program's handler; never install ours."""
    global _installed  # noqa: PLW0603 - one handler per process
    _installed = True  # decided: a forked child runs without tasktrace's handler
    try:
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, _previous if _previous is not None else signal.SIG_DFL)
    except (ValueError, OSError) as e:  # forked from a thread other than the main one
        _log.debug("tasktrace: SIGTERM handler not reset in the forked child (%s)", e)


def _running_tasks() -> list[Any]:
    """List the running tasks of this process, innermost (latest started) first.

    The tree holds :class:`tasktrace.Task` objects (typed as records below the façade).
    """
    tasks: list[TaskRecord] = tree.running_tasks()
    return sorted(tasks, key=lambda t: t.start_time or 0.0, reverse=True)


def _save_running_at_exit() -> None:
    """Write the tasks still running at interpreter exit as they stand (module docstring)."""
    for task in _running_tasks():
        try:
            task.update()
        except Exception as e:  # noqa: BLE001, PERF203 - save the others
            label = quoted(task.label)
            _log.warning("tasktrace: cannot save running task %s at exit (%r)", label, e)


def _flush() -> None:
    flush_spans(FLUSH_TIMEOUT_MILLIS / 1000)


def _export_before_dying() -> None:
    """Export what is queued and report what was not, within the exit's bound: death is next.

    The flush returns as soon as an attempt fails (or at once when the endpoint is known to
    fail): retrying cannot help a process that is being stopped, so a pipeline whose endpoints
    all fail is not waited for; its spans not exported are counted and reported at once.
    """
    bound = exit_timeout_s()
    deadline = time.monotonic() + bound
    flush_spans(bound)
    waited = []
    for pipeline in pipelines():
        if not pipeline.exporters or not all(e.failing for e in pipeline.exporters):
            waited.append(pipeline)
            continue
        for exporter in pipeline.exporters:
            exporter.shutdown()
        pipeline.abandon("not waited for on SIGTERM as the endpoint fails")
    shutdown_pipelines(waited, deadline, bound)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    previous = _previous
    if callable(previous):
        for task in _running_tasks():
            try:
                task.update()
            except Exception as e:  # noqa: BLE001, PERF203 - the program's own handler must still run
                label = quoted(task.label)
                _log.warning("tasktrace: cannot save task %s on SIGTERM (%r)", label, e)
        _flush()
        previous(signum, frame)
        return
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for callback in _callbacks:
        try:
            callback()
        except Exception as e:  # noqa: BLE001, PERF203 - the tasks must still be finished
            _log.warning("tasktrace: a SIGTERM callback failed (%r)", e)
    for task in _running_tasks():
        try:
            if task.error is None:  # why it ended, as `tasktrace run` words it
                task.error = STOPPED_BY_SIGTERM
            task.finish(TaskStatus.CANCELLED)
        except Exception as e:  # noqa: BLE001, PERF203 - finish the others, then exit
            _log.warning("tasktrace: cannot finish task %s on SIGTERM (%r)", quoted(task.label), e)
    try:
        _export_before_dying()
    except Exception as e:  # noqa: BLE001 - the process must still end by SIGTERM
        _log.warning("tasktrace: exporting spans on SIGTERM failed (%r)", e)
    os.kill(os.getpid(), signal.SIGTERM)


os.register_at_fork(after_in_child=_after_fork_in_child)
