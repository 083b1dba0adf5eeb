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
  check that its folder takes files (a read-only folder is one error line before any work);
  a file the command reads (by any name: a link, a hard link, a file of an input folder) is
  never replaced without ``--force`` (:meth:`Output.check`); an empty value is a usage error.

Errors end in one ``Error:`` line (exit 2), never a traceback; a reader that stops reading
standard output early (``tasktrace export run.json --format otlp-json -o - | head -1``) ends the
command quietly, as every command's output does (:mod:`tasktrace.cli.boundary`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from tasktrace.cli.inputs import Failure
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

    def check(
        self,
        check: Callable[[Path], None],
        *,
        inputs: Iterable[Path] = (),
        force: bool = False,
    ) -> None:
        """Check the file before any work (nothing for standard output).

        First, unless ``force``, that it is none of the command's ``inputs``: the same file
        however named (a link, ``./run.json``, another hard link: :func:`os.path.samefile`),
        or a file in an input folder (every file of a folder is read). Then the command's own
        ``check``, then that its folder takes files
        (:func:`~tasktrace.tree.files.check_writable`), so that a read-only folder is said
        before the work, not after it.

        Args:
            check: The command's check of the path; raises :class:`OSError` to refuse it.
            inputs: The files and folders the command reads.
            force: The command's ``--force``: an input may be replaced.

        Raises:
            click.ClickException: The file is one of ``inputs``, ``check`` raised
                :class:`OSError`, or the folder cannot be written (one line naming the file).
        """
        if self.path is None:
            return
        if not force and (source := _read_as(self.path, inputs)) is not None:
            raise Failure(
                f"{self.path}: not replaced: this command reads it (as {source}), and its "
                f"output would replace it; give another {self.option}, or pass --force to "
                "replace it"
            )
        try:
            check(self.path)
            check_writable(self.path)
        except OSError as e:
            raise Failure(str(e)) from None

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
                raise Failure(str(e)) from None
            return
        # A reader that stops early (`| head`) is handled for every command in one place:
        # tasktrace.cli.boundary (BrokenPipeError ends the command quietly).
        sys.stdout.flush()  # text written before, first
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()


def _read_as(path: Path, inputs: Iterable[Path]) -> Path | None:
    """Return the input (file, or folder holding it) as which ``path`` is read, or ``None``."""
    if not path.exists():  # not read: nothing to lose
        return None
    for source in inputs:
        if _same(path, source) or (source.is_dir() and _same(path.parent, source)):
            return source
    return None


def _same(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are one file (False when either is missing: its reader says)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


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
        if value == "":
            self.fail(
                "an empty path (an unset variable?); give a file name, or - for standard output",
                param,
                ctx,
            )
        path = click.Path(dir_okay=False, path_type=Path).convert(value, param, ctx)
        return Output(path, option)
