"""The paths the command line writes to: ``-`` is standard output, in every command.

Every option that names a file to write (``export -o``, ``report -o``, ``table -o``, ``run
--file``) takes its value through :class:`OutputPath`, which makes it an :class:`Output`:

- exactly ``-`` is standard output (a file named ``-`` is ``./-``): the command writes there
  what it would write to the file, byte for byte, and checks no file;
- a command whose output cannot go to a stream refuses ``-`` with a usage error naming the
  option and why (:meth:`Output.file`): ``run --file`` (the task file is rewritten while the
  command runs). No output of the other commands is binary when written to ``-`` (``table -o -``
  writes CSV: standard output has no suffix to choose Parquet by);
- anything else is a file, written by atomic replacement after the command's own check and a
  check that its folder takes files (a read-only folder is one error line before any work).

Errors end in one ``Error:`` line (exit 2), never a traceback; a reader that stops reading
standard output early (``tasktrace export run.json --format otlp-json -o - | head -1``) ends the
command quietly, as every command's output does (:mod:`tasktrace.cli.boundary`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from tasktrace.tree.files import check_writable, replace_file

__all__ = ["STDOUT", "Output", "OutputPath"]

STDOUT = "-"
"""The value of an output option that means standard output."""


@dataclass(frozen=True)
class Output:
    """Where a command writes: a file, or standard output.

    Attributes:
        path: The file, or ``None`` for standard output.
        option: The option that named it (``"--output"``), for messages.
    """

    path: Path | None
    option: str

    def __str__(self) -> str:
        """Return ``"standard output"``, or the file's path."""
        return "standard output" if self.path is None else str(self.path)

    def file(self, why: str) -> Path:
        """Return the file, for an output that cannot be standard output.

        Args:
            why: What cannot be streamed, completing "standard output cannot take ...".

        Raises:
            click.UsageError: The output is standard output (exit 2), naming the option.
        """
        if self.path is None:
            raise click.UsageError(
                f"{self.option} {STDOUT}: standard output cannot take {why}; give a file name"
            )
        return self.path

    def check(self, check: Callable[[Path], None]) -> None:
        """Run the command's ``check`` of the file before any work (none for standard output).

        Then check that its folder takes files
        (:func:`~tasktrace.tree.files.check_writable`), so that a read-only folder is said
        before the work, not after it.

        Raises:
            click.ClickException: ``check`` raised :class:`OSError`, or the folder cannot be
                written (one line: the file and the reason).
        """
        if self.path is None:
            return
        try:
            check(self.path)
            check_writable(self.path)
        except OSError as e:
            raise click.ClickException(str(e)) from None

    def write(self, data: bytes) -> None:
        """Write ``data`` to standard output, or replace the file with it atomically.

        Raises:
            click.ClickException: The file cannot be written: one line naming it and the OS's
                reason (the previous file, if any, is left intact).
        """
        if self.path is not None:
            try:
                replace_file(self.path, data)
            except OSError as e:
                raise click.ClickException(str(e)) from None
            return
        # A reader that stops early (`| head`) is handled for every command in one place:
        # tasktrace.cli.boundary (BrokenPipeError ends the command quietly).
        sys.stdout.flush()  # text written before, first
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()


class OutputPath(click.ParamType):
    """The type of an option naming a file to write: ``-`` is standard output (see module)."""

    name = "path"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Return an :class:`Output` for ``value`` (``-``: standard output; else a file)."""
        if isinstance(value, Output):
            return value
        option = param.opts[0] if param is not None and param.opts else "the output"
        if value == STDOUT:
            return Output(None, option)
        path = click.Path(dir_okay=False, path_type=Path).convert(value, param, ctx)
        return Output(path, option)
