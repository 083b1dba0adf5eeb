"""The ``tasktrace`` command line: ``run`` a command as a task, ``show`` a task file.

Each subcommand is one function; :func:`main` takes ``argv`` so tests call it directly.
Exit status: the command's own status for ``run`` (``128 + N`` when killed by signal ``N``,
127 when it cannot be started); 0 for ``show``; 2 for bad input (a one-line message, no
traceback).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import click
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.tree import Tree

from tasktrace._format import friendly_bytes, friendly_duration, friendly_joules
from tasktrace._redact import redact_argv
from tasktrace._task import Task, TaskStatus
from tasktrace.meters.process import MAXRSS_UNIT

__all__ = ["child_environment", "main", "render_tree"]

_STATUS_STYLE = {
    TaskStatus.FINISHED: "green",
    TaskStatus.FAILED: "bold red",
    TaskStatus.CANCELLED: "yellow",
    TaskStatus.RUNNING: "cyan",
    TaskStatus.PENDING: "dim",
}


def child_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """Return a copy of ``base`` (default ``os.environ``) carrying the current trace context.

    Follows OpenTelemetry's environment-variable carrier: the W3C ``traceparent`` and
    ``tracestate`` headers as ``TRACEPARENT`` / ``TRACESTATE``. ``os.environ`` is not modified.
    """
    env = dict(os.environ if base is None else base)
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    for key, value in carrier.items():
        env[key.upper()] = value
    return env


def _label(task: Task) -> str:
    parts = [f"[bold]{escape(_printable(task.label))}[/]"]
    style = _STATUS_STYLE.get(task.status, "")
    parts.append(f"[{style}]{task.status.value}[/]")
    if task.duration is not None:
        parts.append(friendly_duration(task.duration))
    if task.cpu_time is not None:
        parts.append(f"CPU {friendly_duration(task.cpu_time)}")
    if task.children_cpu_time_s is not None:
        parts.append(f"children CPU {friendly_duration(task.children_cpu_time_s)}")
    if task.peak_memory is not None:
        parts.append(f"RSS {friendly_bytes(task.peak_memory)}")
    if task.children_peak_rss_bytes is not None:
        parts.append(f"children RSS {friendly_bytes(task.children_peak_rss_bytes)}")
    if task.peak_gpu_memory is not None:
        parts.append(f"GPU {friendly_bytes(task.peak_gpu_memory)}")
    for name, value in (
        ("CPU", task.cpu_power),
        ("GPU", task.gpu_power),
        ("system", task.system_power),
    ):
        if value is not None:
            parts.append(f"{name} {friendly_joules(value)}")
    return "  ".join(parts)


def _printable(text: str) -> str:
    """Replace control characters so a label cannot move the cursor or clear the screen."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def render_tree(task: Task, max_depth: int | None = None) -> Tree:
    """Build a :class:`rich.tree.Tree` of ``task`` and its subtasks, ``max_depth`` levels deep."""
    root = Tree(_label(task))
    stack = [(task, root, 0)]
    while stack:
        node, branch, depth = stack.pop()
        if max_depth is not None and depth >= max_depth:
            if node.subtasks:
                branch.add(f"[dim]… {len(node.subtasks)} subtasks[/]")
            continue
        children = [(child, branch.add(_label(child))) for child in node.subtasks]
        stack.extend((child, sub, depth + 1) for child, sub in reversed(children))
    return root


def _run_command(argv: list[str]) -> tuple[int, resource.struct_rusage | None]:
    """Run ``argv``; return its exit status and its own ``wait4`` resource usage.

    ``os.wait4`` gives the usage of this child (and of the descendants it waited for) alone,
    unlike ``RUSAGE_CHILDREN``, which sums every child this process ever reaped.
    """
    proc = subprocess.Popen(argv, env=child_environment())  # noqa: S603 - the user's command
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
    code = proc.returncode
    return (code if code >= 0 else 128 - code), usage


def _child_peak_rss(usage: resource.struct_rusage) -> int | None:
    """The command's peak RSS in bytes, or ``None`` when it cannot be told from ours.

    A child's ``ru_maxrss`` includes the memory it had *before* ``exec`` (a copy of this
    process, or this very process after ``vfork``), so a value at most this process's own
    high-water mark may be ours, not the command's.
    """
    child = usage.ru_maxrss * MAXRSS_UNIT
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * MAXRSS_UNIT
    return child if child > own else None


def _load(path: Path) -> Task:
    try:
        return Task.model_validate_json(path.read_bytes())
    except OSError as e:
        raise click.ClickException(f"{path}: cannot read task file: {e.strerror or e}") from None
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "file"
        raise click.ClickException(
            f"{path}: not a valid task file: {where}: {first['msg']} ({e.error_count()} errors)"
        ) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tasktrace")
def cli() -> None:
    """Measure work as tasks (time, CPU, memory, GPU, energy) and publish them as traces."""


@cli.command(context_settings={"ignore_unknown_options": True})
@click.option("--label", "-l", help="Task label (default: the command line).")
@click.option(
    "--file",
    "-f",
    "file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the task tree to this JSON file (refreshed while running).",
)
@click.option("--quiet", "-q", is_flag=True, help="Do not print the task tree at the end.")
@click.option(
    "--record-argv",
    is_flag=True,
    help="Record the command line as the task's argv (secret-looking values redacted).",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(
    label: str | None, file: Path | None, quiet: bool, record_argv: bool, command: Sequence[str]
) -> None:
    """Run COMMAND as a task and exit with its status.

    The command gets TRACEPARENT in its environment, so a Python program using tasktrace joins
    this task's trace. CPU time and peak RSS of the command (reaped child processes) are
    recorded as children_cpu_time_s and children_peak_rss_bytes (from wait4; the peak is left
    unset when it is no larger than tasktrace's own, since a child's peak includes the memory
    it inherited before exec).

    The command line is recorded (as argv) only with --record-argv, and then with the values of
    secret-looking options (--password, --token, --api-key, ...) and KEY=VALUE secrets replaced
    by ***; the default label is the command line with the same redaction.

    Example: tasktrace run --file run.json -- python train.py --epochs 3
    """
    argv = list(command)
    task = Task(label or " ".join(redact_argv(argv))[:200])
    if record_argv:
        task.argv = redact_argv(argv)
    if file is not None:
        task.save_to_file(file)
    code = 0
    status = TaskStatus.FINISHED
    task.start()
    try:
        code, usage = _run_command(argv)
        if usage is not None:
            task.children_cpu_time_s = usage.ru_utime + usage.ru_stime
            task.children_peak_rss_bytes = _child_peak_rss(usage)
    except OSError as e:
        task.error = f"cannot start {argv[0]!r}: {e.strerror or e}"
        code = 127
    except KeyboardInterrupt:
        status = TaskStatus.CANCELLED
        code = 130
    finally:
        task.exit_code = code
        if code != 0 and status is TaskStatus.FINISHED:
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
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--depth", "-d", type=click.IntRange(min=0), help="Show at most this many levels.")
def show(file: Path, depth: int | None) -> None:
    """Print the task tree in FILE with human units."""
    task = _load(file)
    Console().print(render_tree(task, depth))


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
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
