"""``tasktrace run``: a command as a task, its exit status as the run's.

Exit status: the command's own (``128 + N`` when killed by signal ``N``); when it cannot be
started, 127 if it is not found and 126 if it is not executable, as a shell's; 2 when the
``--file`` cannot be written before the command runs (it does not run);
125 (:data:`UNWRITTEN_EXIT`) when it could not be written at the end, after the command ran.
Signals sent to ``run`` are passed on to the command (:mod:`tasktrace.cli.run_signals`); the
task is finished and its file written whatever the terminal does (hung up, standard error on a
full disk: :mod:`tasktrace.cli.boundary`).
"""

from __future__ import annotations

import os
import resource
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import click

from tasktrace.cli.inputs import FORCE_HINT
from tasktrace.cli.live import LivePanel
from tasktrace.cli.meters_note import print_note, run_note
from tasktrace.cli.outputs import Output, OutputPath
from tasktrace.cli.render import command_note, output_console, render_tree
from tasktrace.cli.run_child import die_with_parent, start
from tasktrace.cli.run_cpu import cpu_in_no_task, waited_descendants_cpu_s
from tasktrace.cli.run_label import default_label
from tasktrace.cli.run_signals import Forwarder, forward_signals, outcome
from tasktrace.core.redact import redact_argv
from tasktrace.core.status import TaskStatus, start_failure
from tasktrace.meters.process import MAXRSS_UNIT
from tasktrace.task import Task
from tasktrace.task.processes import child_environment
from tasktrace.tree.file_kinds import TASK_FILE
from tasktrace.tree.files import (
    check_folder,
    check_replaceable,
    check_writable,
    last_error,
    shown,
)
from tasktrace.tree.meters_record import record_meters
from tasktrace.tree.spool import reported_peak_rss

__all__ = ["LABEL_CHARS", "UNWRITTEN_EXIT", "run"]

LABEL_CHARS = 200
"""The longest default label (:func:`~tasktrace.cli.run_label.default_label`: the program), in
characters; a longer one is cut."""

UNWRITTEN_EXIT = 125
"""The exit status when the ``--file`` could not be written at the end of the run (after the
command ran): tasktrace's own failure, 125 as for ``env``, ``nohup`` and ``timeout``."""


@dataclass
class _Ended:
    """How the command ended, filled in as it happens so that no way out loses it.

    Attributes:
        returncode: Popen's return code (``-N``: killed by signal ``N``), once reaped.
        usage: The command's own ``wait4`` resource usage, once reaped.
        stopped_by: The first stop signal ``tasktrace run`` received and passed on to the
            command (:data:`~tasktrace.cli.run_signals.STOP_SIGNALS`), if any.
        waited_s: CPU seconds of the descendants the command waited for (inside ``usage``),
            read before it was reaped; ``None`` when not known
            (:func:`~tasktrace.cli.run_cpu.waited_descendants_cpu_s`).
    """

    returncode: int | None = None
    usage: resource.struct_rusage | None = None
    stopped_by: int | None = None
    waited_s: float | None = None


def _run_command(
    argv: list[str], ended: _Ended, forward: Forwarder, live: LivePanel | None = None
) -> None:
    """Run ``argv`` to its end; record its return code and ``wait4`` usage in ``ended``.

    The return code is :class:`subprocess.Popen`'s: the exit status, or ``-N`` when the command
    was killed by signal ``N``. A Ctrl-C (the terminal's ``SIGINT`` to its foreground group)
    reaches the command too; this process waits for the command to end, which decides the
    outcome. Signals sent to this process are passed on by ``forward``, and the command is
    started in a group of its own where ``forward`` says so (see
    :mod:`~tasktrace.cli.run_signals`), so none interrupts the wait and the usage is always
    recorded.

    ``os.wait4`` gives the usage of this child (and of the descendants it waited for) alone,
    unlike ``RUSAGE_CHILDREN``, which sums every child this process ever reaped. With ``live``,
    the live panel is started on the command's process.

    Raises:
        OSError: The command cannot be started.
    """
    env = child_environment() if live is None else live.child_environment(child_environment())
    tied = die_with_parent()  # no orphan if we are SIGKILLed (PLW1509: see run_child)
    if live is None:
        proc = start(argv, env=env, preexec_fn=tied, own_group=forward.own_group)
    else:  # its output goes through a pseudo-terminal, relayed above the panel
        fd = live.open_output()
        try:
            proc = start(
                argv, env=env, stdout=fd, stderr=fd, preexec_fn=tied, own_group=forward.own_group
            )
        finally:
            os.close(fd)
    forward.started(proc.pid)
    if live is not None:
        live.start(proc.pid)
    try:  # ended but not reaped: its pid cannot be another process's until wait4 below
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        forward.ended()
        ended.waited_s = waited_descendants_cpu_s(proc.pid)  # the zombie's, before wait4
        _, wait_status, ended.usage = os.wait4(proc.pid, 0)
    except ChildProcessError:  # reaped elsewhere (SIGCHLD ignored): no usage to give
        forward.ended()
        proc.wait()
    else:
        proc.returncode = os.waitstatus_to_exitcode(wait_status)
    ended.returncode = proc.returncode
    ended.stopped_by = forward.stopped_by


def _child_peak_rss(usage: resource.struct_rusage, task: Task) -> int | None:
    """Return the command's peak RSS in bytes, or ``None`` when it cannot be told from ours.

    The larger of ``wait4``'s and the peak the command's tasks reported (their resets leave
    ``wait4`` the peak since the last one: :func:`~tasktrace.tree.spool.reported_peak_rss`).
    A child's ``ru_maxrss`` includes the memory it had *before* ``exec`` (a copy of this
    process, or this very process after ``vfork``), so a value at most this process's own
    high-water mark may be ours, not the command's.
    """
    child = usage.ru_maxrss * MAXRSS_UNIT
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * MAXRSS_UNIT
    peaks = [p for p in (child if child > own else None, reported_peak_rss(task)) if p]
    return max(peaks, default=None)


def _start_task(
    argv: list[str], label: str | None, *, record_argv: bool, file: Path | None, force: bool
) -> Task:
    """Create and start the run's task: its label, argv, file, and the meters' checks.

    The ``file`` is checked and written before the command runs: a missing folder, a path
    through a regular file, a user's file (see
    :func:`~tasktrace.tree.files.check_replaceable`), a read-only or full folder stop the run
    there, with one error line, rather than after the command with no file.

    Raises:
        click.ClickException: ``file`` cannot be written (the file and the reason).
    """
    task = Task(label or default_label(argv)[:LABEL_CHARS])
    if record_argv:
        task.argv = redact_argv(argv)
    if file is not None:
        try:
            check_folder(file)
            check_replaceable(file, force=force, override=FORCE_HINT, writes=TASK_FILE)
            check_writable(file)  # else the write below would only warn
            task.save_to_file(file, force=True)  # checked just above
        except OSError as e:  # a missing folder, a user's file: one line, before the command
            raise click.ClickException(str(e)) from None
        if (reason := last_error(file)) is not None:  # it became unwritable just now
            raise click.ClickException(f"{shown(file)}: cannot be written: {reason}")
    task.start()  # builds and checks the meters (once a process): record which can measure
    record_meters(task)  # done at the start already when there is a --file
    return task


# allow_interspersed_args=False: tasktrace's options end at the first argument that is not one
# of them (the command); everything from there on is the command's, untouched, as with `time`.
@click.command(context_settings={"allow_interspersed_args": False})
@click.option("--label", "-l", help="Task label (default: the program, not its arguments).")
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
    help="Record the whole command line as the task's argv (secret-looking values redacted).",
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
    r"""Run COMMAND as a task and exit with its status.

    tasktrace's options come first: everything from the first argument that is not one of
    them (the command) on is passed to the command untouched, options included. A leading --
    is allowed and dropped.

    The exit status is always the command's own (128 + N when killed by signal N). The run is
    finished when the command exits 0; cancelled when it was stopped on request: killed by
    SIGINT (Ctrl-C), SIGTERM, SIGHUP or SIGQUIT (Ctrl-\), or exiting with 128 + one of them
    (130 after handling Ctrl-C itself), or exiting non-zero after tasktrace run passed one of
    them on; failed otherwise, including a crash by any other signal (SIGSEGV, SIGKILL). The
    exit status is recorded as exit_code and shown by tasktrace show when non-zero.

    Signals sent to tasktrace run are passed on to the command, which decides: SIGTERM,
    SIGHUP, SIGUSR1, SIGUSR2, SIGALRM, and SIGINT and SIGQUIT unless they came from the
    terminal (tasktrace run in its terminal's foreground: Ctrl-C and Ctrl-\ reach the command
    already). The task file is written whatever ended the run, also when the terminal went
    away (a dropped ssh connection); output that cannot be written (a hung-up terminal, a full
    disk) never changes the exit status.

    The command gets TRACEPARENT in its environment, so a Python program using tasktrace joins
    this task's trace. CPU time and peak RSS of the command (reaped child processes) are
    recorded as children_cpu_time_s and children_peak_rss_bytes (from wait4, or the larger
    peak the command's tasks recorded, as their resets hide it from wait4; the peak is left
    unset when it is no larger than tasktrace's own and no task reported one, since a child's
    peak includes the memory it inherited before exec). children_cpu_time_s is the part of
    that CPU no task reported ("in no task"); workers the command never waited for (killed by
    SIGTERM, it leaves its pool behind) are not in wait4's figure, so their tasks' CPU is not
    subtracted from it, and where that cannot be told the figure is left unset.

    At the end, after the task tree, a note says which energy was measured and, for what was
    not, why each meter could not measure here (with the fix); the same reasons are recorded in
    the task file as the root's meters data, so that show and report can say them later. A
    command that cannot be started gets one error line instead, with the exit status a shell
    gives: 127 when it is not found, 126 when it is not executable (or is a folder); the
    --file still records the run, failed. An executable script without its #! line is run
    with /bin/sh, as env, time and shells run it.

    The --file is checked before the command runs: a missing or read-only folder stops the run
    there with one error line (exit status 2). If it cannot be written at the end (the folder
    became read-only or full while the command ran), an error line after the tree says so and
    the exit status is 125, not the command's (which the line gives).

    The default label, the span's name, is the program, not its arguments (stable from run to
    run): sweep.sh for ./sweep.sh a b, python train.py, python -m pkg.train, python -c. The
    command line is recorded (as argv) only with --record-argv, with the values of secret-looking
    options (--password, --token, --bearer, ...), KEY=VALUE and URL query secrets (?sig=...),
    Authorization-like headers, token shapes (ghp_..., AKIA..., JWTs), -u user:password, the
    password of mysql -pPW, mongosh -p, sqlcmd -P, docker login -p, htpasswd -b, and URL
    passwords replaced by ***.

    Example: tasktrace run --file run.json python train.py --epochs 3
    """
    argv = list(command)
    path = None if file is None else file.file("a task file rewritten while the command runs")
    task = _start_task(argv, label, record_argv=record_argv, file=path, force=force)
    ended = _Ended()
    not_started: tuple[str, int] | None = None  # why the command could not start, its status
    live = LivePanel.for_run(task, quiet=quiet)  # only on a terminal
    with forward_signals() as forward:  # until the record is written: no signal loses it
        try:
            _run_command(argv, ended, forward, live)
        except OSError as e:
            shown = redact_argv(argv[:1])[0]  # as in the label: API_KEY=... is no program
            not_started = start_failure(argv[0], e, shown)
        finally:  # whatever ended the run (the terminal gone too), the command is recorded
            try:
                if live is not None:
                    live.stop()
            finally:
                code = _record_end(task, ended, not_started)
    if not_started is not None:  # the error alone: no tree, no energy note before it
        click.echo(f"Error: {not_started[0]}", err=True)  # as click's own errors
        sys.exit(not_started[1])
    if not quiet:
        console = output_console(stderr=True)
        console.print(render_tree(task))
        print_note(console, command_note(task) + run_note(task))
    if path is not None and (reason := last_error(path)) is not None:
        click.echo(f"Error: {_unwritten(path, reason, code)}", err=True)
        sys.exit(UNWRITTEN_EXIT)
    sys.exit(code)  # the command's own status, 126 and 127 too (then it ran: no error line)


def _record_end(task: Task, ended: _Ended, not_started: tuple[str, int] | None) -> int:
    """Finish ``task`` with how the command ended, its usage included; return the exit status."""
    if not_started is not None:
        status, (task.error, code) = TaskStatus.FAILED, not_started
    elif ended.returncode is not None:  # the exit status is the command's own, always
        status, code, task.error = outcome(ended.returncode, ended.stopped_by)
    else:  # cannot happen: the command was started, so it was reaped
        status, code = TaskStatus.FAILED, 1
    if ended.usage is not None:
        reaped_s = ended.usage.ru_utime + ended.usage.ru_stime
        task.children_cpu_time_s = cpu_in_no_task(task, reaped_s, ended.waited_s)
        task.children_peak_rss_bytes = _child_peak_rss(ended.usage, task)
    task.exit_code = code
    task.finish(status)
    return code


def _unwritten(path: Path, reason: str, code: int) -> str:
    """Say that the task file ``path``'s last write failed, what it holds, and ``code``."""
    held = (
        "it holds an earlier refresh, not the end of the run"
        if os.path.lexists(path)
        else "there is no file"
    )
    where = shown(path)
    return f"{where}: cannot be written: {reason}; {held} (the command's exit status: {code})"
