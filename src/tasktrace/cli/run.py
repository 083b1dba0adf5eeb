"""``tasktrace run``: a command as a task, its exit status as the run's.

Exit status: the command's own (``128 + N`` when killed by signal ``N``, 127 when it cannot be
started).
"""

from __future__ import annotations

import contextlib
import os
import resource
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import click

from tasktrace.cli.inputs import FORCE_HINT
from tasktrace.cli.live import LivePanel
from tasktrace.cli.meters_note import print_note, run_note
from tasktrace.cli.outputs import Output, OutputPath
from tasktrace.cli.render import output_console, render_tree
from tasktrace.core.redact import redact_argv
from tasktrace.core.status import TaskStatus
from tasktrace.meters.process import MAXRSS_UNIT
from tasktrace.task import Task
from tasktrace.task.processes import child_environment
from tasktrace.tree.files import check_replaceable
from tasktrace.tree.meters_record import record_meters
from tasktrace.tree.spool import unreported_cpu_s

__all__ = ["LABEL_CHARS", "run"]


LABEL_CHARS = 200
"""The longest default label: the command line, shell-quoted, cut at this many characters."""


class _NotStarted(click.ClickException):
    """The command could not be started (exit status 127, as a shell's)."""

    exit_code = 127


_STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
"""Signals that ask a command to stop (Ctrl-C, a job manager, a closed terminal): a command
that ends by one of them is CANCELLED, not FAILED."""


def _run_command(
    argv: list[str], live: LivePanel | None = None
) -> tuple[int, resource.struct_rusage | None]:
    """Run ``argv``; return its return code and its own ``wait4`` resource usage.

    The return code is :class:`subprocess.Popen`'s: the exit status, or ``-N`` when the command
    was killed by signal ``N``. A Ctrl-C (``SIGINT`` to the process group) reaches the command
    too; this process waits for the command to end, which decides the outcome.

    ``os.wait4`` gives the usage of this child (and of the descendants it waited for) alone,
    unlike ``RUSAGE_CHILDREN``, which sums every child this process ever reaped. With ``live``,
    the live panel is started on the command's process.
    """
    env = child_environment() if live is None else live.child_environment(child_environment())
    if live is None:
        proc = subprocess.Popen(argv, env=env)  # noqa: S603 - the user's command
    else:  # its output goes through a pseudo-terminal, relayed above the panel
        output = live.open_output()
        try:
            proc = subprocess.Popen(argv, env=env, stdout=output, stderr=output)  # noqa: S603
        finally:
            os.close(output)
        live.start(proc.pid)
    with _forward_signals(proc.pid) as received:
        while True:
            try:
                _, wait_status, usage = os.wait4(proc.pid, 0)
                break
            except KeyboardInterrupt:
                continue  # the child got SIGINT too; wait for it to exit, then report
            except ChildProcessError:
                proc.wait()
                return proc.returncode, None
    proc.returncode = os.waitstatus_to_exitcode(wait_status)
    if received:  # stopped from outside (a job manager's SIGTERM): we report 128 + signal
        raise _Stopped(received[0])
    return proc.returncode, usage


def _outcome(returncode: int) -> tuple[TaskStatus, int, str | None]:
    """Return the status, exit status and error to record for a command's ``returncode``.

    The command is CANCELLED when it was stopped on request: killed by one of
    :data:`_STOP_SIGNALS` (SIGINT, SIGTERM, SIGHUP), or exiting with ``128 + N`` for one of them
    (130 after handling Ctrl-C itself, as shells and many programs do). Any other non-zero
    status is FAILED, including death by any other signal (a crash by SIGSEGV or SIGABRT,
    SIGKILL from the out-of-memory killer). ``returncode`` is Popen's (``-N``: killed by ``N``);
    the exit status is ``128 + N`` then, as a shell reports it.
    """
    if returncode == 0:
        return TaskStatus.FINISHED, 0, None
    signum = -returncode if returncode < 0 else returncode - 128
    try:
        name = signal.Signals(signum).name
    except ValueError:  # not a signal number (a plain exit status), or one without a name
        name = f"signal {signum}"
    if returncode < 0:
        stopped = signum in _STOP_SIGNALS
        error = f"stopped by {name}" if stopped else f"killed by {name}"
        return (TaskStatus.CANCELLED if stopped else TaskStatus.FAILED), 128 + signum, error
    if signum in _STOP_SIGNALS:
        return TaskStatus.CANCELLED, returncode, f"stopped by {name} (exit status {returncode})"
    return TaskStatus.FAILED, returncode, None


class _Stopped(Exception):
    """``tasktrace run`` received a signal it forwarded to the command, which then exited."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _forward_signals(pid: int) -> Iterator[list[int]]:
    """Pass SIGTERM and SIGHUP sent to ``tasktrace run`` on to the command while it runs.

    A job manager (``docker stop``, Slurm, systemd) signals the process it started; forwarding
    lets the command stop cleanly and ``run`` still records it, as CANCELLED. SIGINT is left
    alone: a terminal's Ctrl-C already reaches the whole process group. Main thread only.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def forward(signum: int, frame: object) -> None:
        del frame
        received.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _child_peak_rss(usage: resource.struct_rusage) -> int | None:
    """Return the command's peak RSS in bytes, or ``None`` when it cannot be told from ours.

    A child's ``ru_maxrss`` includes the memory it had *before* ``exec`` (a copy of this
    process, or this very process after ``vfork``), so a value at most this process's own
    high-water mark may be ours, not the command's.
    """
    child = usage.ru_maxrss * MAXRSS_UNIT
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * MAXRSS_UNIT
    return child if child > own else None


def _start_task(
    argv: list[str], label: str | None, *, record_argv: bool, file: Path | None, force: bool
) -> Task:
    """Create and start the run's task: its label, argv, file, and the meters' checks.

    Raises:
        click.ClickException: ``file`` cannot be written (a missing folder, a user's file).
    """
    task = Task(label or shlex.join(redact_argv(argv))[:LABEL_CHARS])
    if record_argv:
        task.argv = redact_argv(argv)
    if file is not None:
        try:
            check_replaceable(file, force=force, override=FORCE_HINT)  # with the CLI's hint
            task.save_to_file(file, force=True)  # checked just above
        except OSError as e:  # a missing folder, a user's file: one line, before the command
            raise click.ClickException(str(e)) from None
    task.start()  # builds and checks the meters (once a process): record which can measure
    record_meters(task)  # done at the start already when there is a --file
    return task


# allow_interspersed_args=False: tasktrace's options end at the first argument that is not one
# of them (the command); everything from there on is the command's, untouched, as with `time`.
@click.command(context_settings={"allow_interspersed_args": False})
@click.option("--label", "-l", help="Task label (default: the command line).")
@click.option(
    "--file",
    "-f",
    "file",
    type=OutputPath(),
    help="Write the task tree to this JSON file, refreshed while running (so not - for "
    "standard output). An existing file is replaced only when it is empty or tasktrace output "
    "(a task file, OTLP JSON lines, a tasktrace Chrome trace).",
)
@click.option(
    "--force", is_flag=True, help="Replace the --file even when it is not tasktrace output."
)
@click.option("--quiet", "-q", is_flag=True, help="Do not print the task tree at the end.")
@click.option(
    "--record-argv",
    is_flag=True,
    help="Record the command line as the task's argv (secret-looking values redacted).",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(  # noqa: PLR0917 - click passes one parameter per option (by name)
    label: str | None,
    file: Output | None,
    force: bool,
    quiet: bool,
    record_argv: bool,
    command: Sequence[str],
) -> None:
    """Run COMMAND as a task and exit with its status.

    tasktrace's options come first: everything from the first argument that is not one of
    them (the command) on is passed to the command untouched, options included. A leading --
    is allowed and dropped.

    The run is finished when the command exits 0; cancelled when it was stopped on request:
    killed by SIGINT (Ctrl-C), SIGTERM or SIGHUP, or exiting with 128 + one of them (130 after
    handling Ctrl-C itself), or when tasktrace run itself got SIGTERM or SIGHUP (passed on to
    the command); failed otherwise, including a crash by any other signal (SIGSEGV, SIGKILL).
    The exit status is recorded as exit_code and shown by tasktrace show when non-zero.

    The command gets TRACEPARENT in its environment, so a Python program using tasktrace joins
    this task's trace. CPU time and peak RSS of the command (reaped child processes) are
    recorded as children_cpu_time_s and children_peak_rss_bytes (from wait4; the peak is left
    unset when it is no larger than tasktrace's own, since a child's peak includes the memory
    it inherited before exec).

    At the end, after the task tree, a note says which energy was measured and, for what was
    not, why each meter could not measure here (with the fix); the same reasons are recorded in
    the task file as the root's meters data, so that show and report can say them later. A
    command that cannot be started (not found, not executable) gets one error line instead,
    with exit status 127 as from a shell; the --file still records the run, failed.

    The command line is recorded (as argv) only with --record-argv, and then with the values of
    secret-looking options (--password, --token, --api-key, ...), KEY=VALUE secrets (in a URL's
    query too: ?token=...) and URL passwords replaced by ***; the default label is the command
    line with the same redaction, quoted as a shell would need it (sh -c 'echo hi; exit 3'), at
    most 200 characters.

    Example: tasktrace run --file run.json python train.py --epochs 3
    """
    argv = list(command)
    path = None if file is None else file.file("a task file rewritten while the command runs")
    task = _start_task(argv, label, record_argv=record_argv, file=path, force=force)
    code = 0
    status = TaskStatus.FINISHED
    not_started: str | None = None  # why the command could not be started: a fatal error
    live = LivePanel.for_run(task, quiet=quiet)  # only on a terminal
    try:
        returncode, usage = _run_command(argv, live)
        status, code, task.error = _outcome(returncode)
        if usage is not None:
            reaped_s = usage.ru_utime + usage.ru_stime
            task.children_cpu_time_s = unreported_cpu_s(task, reaped_s)
            task.children_peak_rss_bytes = _child_peak_rss(usage)
    except OSError as e:
        task.error = not_started = f"cannot start {argv[0]!r}: {e.strerror or e}"
        code = 127
    except KeyboardInterrupt:  # Ctrl-C before the command started or after it ended
        status = TaskStatus.CANCELLED
        task.error = "stopped by SIGINT"
        code = 130
    except _Stopped as e:
        status = TaskStatus.CANCELLED
        task.error = f"stopped by {signal.Signals(e.signum).name}"
        code = 128 + e.signum
    finally:
        if live is not None:
            live.stop()
        task.exit_code = code
        if code != 0 and status is TaskStatus.FINISHED:  # 127: the command did not start
            status = TaskStatus.FAILED
        task.finish(status)
    if not_started is not None:  # the error alone: no tree, no energy note before it
        raise _NotStarted(not_started)
    if not quiet:
        console = output_console(stderr=True)
        console.print(render_tree(task))
        print_note(console, run_note(task))
    sys.exit(code)  # the command's own status, 127 included (then it ran: no error line)
