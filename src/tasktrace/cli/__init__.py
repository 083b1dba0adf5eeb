"""The ``tasktrace`` command line.

``run`` a command as a task, ``show`` a task file, ``export`` it to OTLP JSON lines or a Chrome
trace, ``replay`` it to an OTLP endpoint; ``report``, ``compare`` and ``table`` (in
:mod:`tasktrace.cli.reports`) show where the cost went; ``config`` (:mod:`tasktrace.cli.config`)
prints the settings with the source of each value.

Each subcommand is one function; :func:`main` takes ``argv`` so tests call it directly.
Exit status: the command's own status for ``run`` (``128 + N`` when killed by signal ``N``,
127 when it is not found and 126 when it is not executable, as a shell's, 125 when its
``--file`` could not be written at the end); 0
for ``show`` and ``export``; 3 when ``replay``'s endpoint refuses the spans; 2 for bad input
(a one-line message, no traceback), including an output file whose folder cannot be written
and one that is not tasktrace's own (see :func:`tasktrace.tree.files.check_replaceable`;
``--force`` replaces it), and a missing optional extra (one line naming the command and
``pip install 'tasktrace[EXTRA]'``); 0 when the reader of standard output stops reading
(``tasktrace show run.json | head -1``: the command ends quietly). These last two are handled
for every command in one place, :mod:`tasktrace.cli.boundary`. An output path of
``-`` is standard output in every command (:mod:`tasktrace.cli.outputs`). Standard output that
cannot be written otherwise (a full disk, a terminal that hung up) ends a command with one error
line and exit status 1 (``run``'s stays its command's); standard error that cannot be written
is given up, the exit status unchanged (:mod:`tasktrace.cli.boundary`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from tasktrace.cli import config, reports
from tasktrace.cli.boundary import (
    OUTPUT_FAILED_STATUS,
    READER_GONE_STATUS,
    CommandGroup,
    OutputFailed,
    ReaderGone,
    discard_stdout,
    guard_standard_streams,
)
from tasktrace.cli.convert import export, replay
from tasktrace.cli.render import render_tree
from tasktrace.cli.run import run
from tasktrace.cli.show import show
from tasktrace.core.status import exit_status
from tasktrace.task.processes import child_environment

__all__ = ["child_environment", "cli", "main", "render_tree"]


@click.group(cls=CommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tasktrace")
def cli() -> None:
    """Measure work as tasks (time, CPU, memory, GPU, energy) and publish them as traces."""


for _command in (run, show, export, replay):
    cli.add_command(_command)
reports.register(cli)  # report, compare, table
config.register(cli)  # config


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``) and return the exit status.

    Standard output is flushed before returning: a reader that has gone or a failed write (see
    :mod:`tasktrace.cli.boundary`) is seen here, not at exit; the status stays the command's
    (a failed write makes a status of 0 :data:`~tasktrace.cli.boundary.OUTPUT_FAILED_STATUS`).
    """
    guard_standard_streams()
    status = _run(argv)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        discard_stdout()
    except OutputFailed as e:
        e.say()
        status = status or OUTPUT_FAILED_STATUS
    return status


def _run(argv: Sequence[str] | None) -> int:
    try:
        cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="tasktrace",
            standalone_mode=False,
        )
    except ReaderGone:
        return READER_GONE_STATUS
    except OutputFailed as e:
        e.say()
        return OUTPUT_FAILED_STATUS
    except click.ClickException as e:
        e.show()
        return 2 if e.exit_code == 1 else e.exit_code
    except click.exceptions.Abort:
        return 130
    except SystemExit as e:
        return exit_status(e)
    return 0
