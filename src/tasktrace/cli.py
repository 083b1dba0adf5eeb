"""The ``tasktrace`` command line.

``run`` a command as a task, ``show`` a task file, ``export`` it to OTLP JSON lines or a Chrome
trace, ``replay`` it to an OTLP endpoint; ``report``, ``compare`` and ``table`` (in
:mod:`tasktrace._cli_reports`) show where the cost went.

Each subcommand is one function; :func:`main` takes ``argv`` so tests call it directly.
Exit status: the command's own status for ``run`` (``128 + N`` when killed by signal ``N``,
127 when it cannot be started); 0 for ``show`` and ``export``; 3 when ``replay``'s endpoint
refuses the spans; 2 for bad input (a one-line message, no
traceback), including an output file that is not tasktrace's own (see
:func:`tasktrace._files.check_replaceable`; ``--force`` replaces it).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import resource
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import click
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from tasktrace import _cli_config, _cli_reports, _show, _subprocess
from tasktrace._files import check_replaceable, save_atomic
from tasktrace._format import friendly_bytes, friendly_duration
from tasktrace._live import LivePanel
from tasktrace._outcome import exit_status
from tasktrace._redact import redact_argv
from tasktrace._task import Task, TaskStatus
from tasktrace.formats.measures import CarbonIntensity
from tasktrace.formats.rows import describe_input_error, load_task_file
from tasktrace.meters.process import MAXRSS_UNIT

__all__ = ["child_environment", "main", "render_tree"]

_T = TypeVar("_T")
_FORCE_HINT = "pass --force to replace it"
_STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
"""Signals that ask a command to stop (Ctrl-C, a job manager, a closed terminal): a command
that ends by one of them is CANCELLED, not FAILED."""


def child_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """Return a copy of ``base`` (default ``os.environ``) that lets a child process join.

    The same as :func:`tasktrace.child_environment`: ``TRACEPARENT`` / ``TRACESTATE``
    (OpenTelemetry's environment-variable carrier) and, under a task, ``TASKTRACE_PARENT_TASK_ID``
    and ``TASKTRACE_SPOOL``. ``os.environ`` is not modified.

    Raises:
        OSError: The spool folder cannot be created.
    """
    return _subprocess.child_environment(base)


def render_tree(
    task: Task, max_depth: int | None = None, carbon: CarbonIntensity | None = None
) -> Tree:
    """Build a :class:`rich.tree.Tree` of ``task`` and its subtasks, ``max_depth`` levels deep.

    With ``carbon`` (see :class:`tasktrace.formats.measures.CarbonIntensity`), each task with
    measured energy and a known intensity also shows its emissions in g CO₂e.
    """
    return _show.build_tree(task, functools.partial(_show.task_line, carbon=carbon), max_depth,
                            collapse=False)


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


def _load(path: Path) -> Task:
    """Load a task file or an OTLP JSON-lines file; bad input is a one-line error (exit 2)."""
    return _read_input(path, load_task_file)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tasktrace")
def cli() -> None:
    """Measure work as tasks (time, CPU, memory, GPU, energy) and publish them as traces."""


_cli_reports.register(cli)  # report, compare, table
_cli_config.register(cli)  # config


# allow_interspersed_args=False: tasktrace's options end at the first argument that is not one
# of them (the command); everything from there on is the command's, untouched, as with `time`.
@cli.command(context_settings={"allow_interspersed_args": False})
@click.option("--label", "-l", help="Task label (default: the command line).")
@click.option(
    "--file",
    "-f",
    "file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the task tree to this JSON file (refreshed while running). An existing file "
    "is replaced only when it is empty or tasktrace output (a task file, OTLP JSON lines, a "
    "tasktrace Chrome trace).",
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
    file: Path | None,
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

    The command line is recorded (as argv) only with --record-argv, and then with the values of
    secret-looking options (--password, --token, --api-key, ...) and KEY=VALUE secrets replaced
    by ***; the default label is the command line with the same redaction.

    Example: tasktrace run --file run.json python train.py --epochs 3
    """
    argv = list(command)
    task = Task(label or " ".join(redact_argv(argv))[:200])
    if record_argv:
        task.argv = redact_argv(argv)
    if file is not None:
        try:
            check_replaceable(file, force=force, override=_FORCE_HINT)  # with the CLI's hint
            task.save_to_file(file, force=True)  # checked just above
        except OSError as e:  # a missing folder, a user's file: one line, before the command
            raise click.ClickException(str(e)) from None
    code = 0
    status = TaskStatus.FINISHED
    task.start()
    live = LivePanel.for_run(task, quiet=quiet)  # only on a terminal
    try:
        returncode, usage = _run_command(argv, live)
        status, code, task.error = _outcome(returncode)
        if usage is not None:
            reaped_s = usage.ru_utime + usage.ru_stime
            task.children_cpu_time_s = _subprocess.unreported_cpu_s(task, reaped_s)
            task.children_peak_rss_bytes = _child_peak_rss(usage)
    except OSError as e:
        task.error = f"cannot start {argv[0]!r}: {e.strerror or e}"
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
    if not quiet:
        Console(stderr=True).print(render_tree(task))
    if code == 127:
        error = click.ClickException(str(task.error))
        error.exit_code = 127
        raise error
    sys.exit(code)


@cli.command()
@click.argument("file", type=click.Path(path_type=Path))  # errors: one line, from _load
@click.option(
    "--depth", "-d", type=click.IntRange(min=0),
    help="Show at most this many levels below the root (0: the root alone).",
)
@click.option(
    "--filter", "-F", "text",
    help="Only tasks whose label contains TEXT or tagged TEXT (with their ancestors and "
    "their own subtasks).",
)
@click.option("--collapse", "-c", is_flag=True, help="One line per run of repeated siblings.")
@click.option("--totals", "-t", is_flag=True, help="Add totals per label pattern.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the tree, or the totals).")
@click.option(
    "--all", "-a", "show_all", is_flag=True,
    help="Print every task: do not collapse repeated siblings of a large tree.",
)
@_cli_reports.carbon_intensity_option
def show(  # noqa: PLR0917 - click passes one parameter per option (by name)
    file: Path,
    depth: int | None,
    text: str | None,
    collapse: bool,
    totals: bool,
    as_json: bool,
    show_all: bool,
    carbon_intensity: float | None,
) -> None:
    """Print the task tree in FILE (a task file or OTLP JSON lines) with human units.

    A tree of more than 1,000 tasks (in view) is printed with repeated siblings collapsed, as
    with --collapse, and a note saying so; --all prints every task (slow: about 10,000 lines a
    second).
    """
    if show_all and collapse:
        raise click.UsageError("--all and --collapse cannot be used together")
    with _show.paused_gc():
        task = _load(file)
        if text is not None:
            filtered = _show.filter_tree(task, text)
            if filtered is None:
                raise click.ClickException(f"{file}: no task matches {text!r}")
            task = filtered
        if as_json:
            if totals:
                click.echo(json.dumps(_show.label_totals(task), indent=1))
            else:
                click.echo(_depth_limited(task, depth).model_dump_json(indent=1))
            return
        console = Console()
        size = 0 if collapse or show_all else _show.count_tasks(task, depth)
        carbon = CarbonIntensity.from_settings(carbon_intensity)
        if collapse or size > _show.AUTO_COLLAPSE_TASKS:
            label = functools.partial(_show.task_line, carbon=carbon)
            console.print(_show.render_collapsed(task, label, depth))
        else:
            console.print(render_tree(task, depth, carbon))
        if size > _show.AUTO_COLLAPSE_TASKS:
            console.print(
                f"[dim]({size:,} tasks: repeated siblings collapsed; --all to print every task)[/]"
            )
        if totals:
            console.print(_totals_table(_show.label_totals(task)))


def _depth_limited(task: Task, depth: int | None) -> Task:
    if depth is None:
        return task
    if depth == 0:
        return task.model_copy(update={"subtasks": []})
    subtasks = [_depth_limited(t, depth - 1) for t in task.subtasks]
    return task.model_copy(update={"subtasks": subtasks})


def _totals_table(rows: list[dict[str, object]]) -> Table:
    table = Table("label", "tasks", "total time", "total CPU", "max RSS", "failed")
    for row in rows:
        dur, cpu = row["total_duration_s"], row["total_cpu_time_s"]
        rss = row["max_peak_memory_bytes"]
        table.add_row(
            escape(_show.printable(str(row["pattern"]))),
            str(row["tasks"]),
            friendly_duration(dur) if isinstance(dur, float) else "",
            friendly_duration(cpu) if isinstance(cpu, float) else "",
            friendly_bytes(rss) if isinstance(rss, int) else "",
            str(row["failed"]),
        )
    return table


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--format", "-f", "fmt", type=click.Choice(["otlp-json", "chrome", "task"]), required=True,
    help="otlp-json: OTLP JSON lines; chrome: trace-event JSON (Perfetto); task: a task file.",
)
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True,
    help="The file to write (replaced atomically). An existing file is replaced only when it "
    "is empty or tasktrace output (a task file, OTLP JSON lines, a tasktrace Chrome trace).",
)
@click.option(
    "--force", is_flag=True, help="Replace the output even when it is not tasktrace output."
)
def export(file: Path, fmt: str, output: Path, force: bool) -> None:
    """Convert FILE (a task file or OTLP JSON lines) to another format.

    Example: tasktrace export run.json --format chrome -o run.trace.json
    """
    from tasktrace.formats.chrome_trace import task_to_chrome_trace  # noqa: PLC0415
    from tasktrace.formats.otlp_json import encode_lines  # noqa: PLC0415
    from tasktrace.formats.replay import load_spans  # noqa: PLC0415

    if not output.parent.is_dir():
        raise click.ClickException(f"{output}: folder {str(output.parent)!r} does not exist")
    try:  # before the conversion: a refused output costs no work
        check_replaceable(output, force=force, override=_FORCE_HINT)
    except OSError as e:
        raise click.ClickException(str(e)) from None

    if fmt == "otlp-json":
        data = _read_input(file, load_spans)
        out = b"".join(encode_lines(data))
    elif fmt == "chrome":
        task = _load(file)
        try:
            out = json.dumps(task_to_chrome_trace(task), separators=(",", ":")).encode()
        except ValueError as e:
            raise click.ClickException(f"{file}: {e}") from None
    else:
        out = _load(file).model_dump_json().encode() + b"\n"
    if not save_atomic(output, out):
        raise click.ClickException(f"{output}: cannot write the output file")


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--endpoint", "-e",
    help="OTLP endpoint base URL, e.g. http://127.0.0.1:4318 (default: "
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT; one is required).",
)
def replay(path: Path, endpoint: str | None) -> None:
    """Send PATH (a task file or OTLP JSON lines) to an OTLP endpoint as the original spans.

    Trace and span ids, parent links, timestamps, attributes, resource and status are kept;
    task files without ids get ids derived from their task ids (the same on every replay).
    Exit status 3 when the endpoint does not accept the spans.
    """
    from tasktrace.formats.replay import ReplayError, load_spans  # noqa: PLC0415
    from tasktrace.formats.replay import replay as send  # noqa: PLC0415

    spans = _read_input(path, load_spans)
    try:
        count = send(spans, endpoint)
    except ValueError as e:  # no endpoint, or not a URL: a usage error (exit 2)
        raise click.ClickException(f"{path}: {e}") from None
    except (ReplayError, ImportError) as e:
        error = click.ClickException(f"{path}: {e}")
        error.exit_code = 3
        raise error from None
    click.echo(f"{path}: sent {count} spans", err=True)


def _read_input(path: Path, reader: Callable[[Path], _T]) -> _T:
    """Call ``reader(path)``; turn unreadable or invalid input into a one-line error."""
    try:
        return reader(path)
    except (OSError, RecursionError, ValidationError, ValueError, TypeError, ImportError) as e:
        raise click.ClickException(describe_input_error(path, e)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="tasktrace",
                 standalone_mode=False)
    except click.ClickException as e:
        e.show()
        return 2 if e.exit_code == 1 else e.exit_code
    except click.exceptions.Abort:
        return 130
    except SystemExit as e:
        return exit_status(e)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
