"""Where every command of the ``tasktrace`` command line ends the same way.

:class:`CommandGroup`, the group of all commands, handles in one place for every command
(parsing and ``--help`` included) what is no fault of the command's own:

- **a reader that stops reading standard output** (``tasktrace show run.json | head -1``): the
  command ends quietly, with no message and exit status :data:`READER_GONE_STATUS` (0, as
  ripgrep does: the reader had what it wanted, and a ``set -o pipefail`` script does not fail
  for it); the rest of the output is dropped. This is the Python documentation's "Note on
  SIGPIPE": standard output is pointed at ``/dev/null`` so that Python's flush at exit cannot
  fail again. (click's own handling exits 1 with nothing said.)
- **an optional extra that is not installed**: an :class:`ImportError` whose message names the
  extra (``pip install 'tasktrace[EXTRA]'``, as :func:`tasktrace.formats.extras.missing_extra`
  and every reader and writer of :mod:`tasktrace.formats` word it) becomes one line naming the
  command, the missing package and the install command, exit status 2 (:func:`needs_extra`).
  Any other :class:`ImportError` is a fault of tasktrace's and keeps its traceback.

Every command prints through :class:`Console`, whose closed standard output reaches the same
place (rich's own handling exits 1).

:func:`tasktrace.cli.main` flushes standard output inside the same guard, so output that was
still buffered when the command returned is covered too.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import click
import rich.console

__all__ = [
    "READER_GONE_STATUS",
    "CommandGroup",
    "Console",
    "ReaderGone",
    "discard_stdout",
    "needs_extra",
    "reader_may_leave",
]

READER_GONE_STATUS: Final = 0
"""Exit status of a command whose standard output was closed by its reader (``| head``)."""

_EXTRA = re.compile(r"pip install 'tasktrace\[(?P<extra>[A-Za-z0-9_-]+)\]'")


class ReaderGone(Exception):
    """Standard output was closed by its reader; it now goes to ``/dev/null``.

    Not an :class:`OSError`, so that click's own handling of ``EPIPE`` (exit 1) does not see
    it; :func:`tasktrace.cli.main` returns :data:`READER_GONE_STATUS` for it.
    """


@contextmanager
def reader_may_leave() -> Iterator[None]:
    """Turn a :class:`BrokenPipeError` inside into :class:`ReaderGone`, stdout to ``/dev/null``.

    Raises:
        ReaderGone: A write or flush inside failed with ``EPIPE``.
    """
    try:
        yield
    except BrokenPipeError:
        discard_stdout()
        raise ReaderGone from None


def discard_stdout() -> None:
    """Point standard output's file descriptor at ``/dev/null`` (its reader is gone).

    Python flushes standard output at exit; what is still buffered then goes nowhere instead of
    failing with ``BrokenPipeError`` ("Exception ignored ..." and exit status 120).
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


@contextmanager
def needs_extra(command: str) -> Iterator[None]:
    """Turn a missing optional extra inside into one error line naming ``command`` (exit 2).

    Args:
        command: The command as the user typed it, less ``tasktrace`` (``"table -o"``).

    Raises:
        click.ClickException: An :class:`ImportError` whose message names an extra:
            ``tasktrace COMMAND needs PACKAGE, which is not installed: pip install
            'tasktrace[EXTRA]'``. Any other :class:`ImportError` passes unchanged.
    """
    try:
        yield
    except ImportError as e:
        match = _EXTRA.search(str(e))
        if match is None:
            raise
        raise click.ClickException(
            f"tasktrace {command} needs {_missing_package(e, match['extra'])}, which is not "
            f"installed: {match[0]}"
        ) from None


def _missing_package(error: ImportError, extra: str) -> str:
    """Name the package that could not be imported: ``error``'s, or the one it was raised for.

    A reader that re-raises with the extra's name (``raise ImportError(...) from None``) keeps
    the original :class:`ModuleNotFoundError` as its context; ``extra`` when none names one.
    """
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ImportError) and seen.name:
            return seen.name
        seen = seen.__cause__ or seen.__context__
    return extra


class Console(rich.console.Console):
    """A :class:`rich.console.Console` whose closed stream ends the command as the module says.

    Standard output closed: :class:`BrokenPipeError` is raised on (to :func:`reader_may_leave`:
    the command ends quietly, exit status :data:`READER_GONE_STATUS`). Standard error closed
    (``tasktrace run ... 2>&1 | head``): the console says nothing more and the command goes on
    to its own exit status (``run``'s is the command's). Rich's default exits 1 for both.
    Thread-safety: as rich's.
    """

    def on_broken_pipe(self) -> None:
        """Stop writing; raise :class:`BrokenPipeError` for standard output (see class)."""
        self.quiet = True
        if not self.stderr:
            raise BrokenPipeError


class CommandGroup(click.Group):
    """The ``tasktrace`` group: every command ends as the module says (stdout closed, extras)."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        """Parse the group's own options (``--help``, ``--version`` print here)."""
        with reader_may_leave():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command named in ``ctx`` (its ``--help`` too) inside the module's guards."""
        with reader_may_leave():
            try:
                return super().invoke(ctx)
            except ImportError:
                with needs_extra(ctx.invoked_subcommand or ""):
                    raise
