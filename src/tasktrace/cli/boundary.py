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

- **standard output that cannot be written** for another reason than its reader leaving (a
  full disk, ``EIO`` from a terminal that hung up, a quota): the command ends with one line,
  ``Error: cannot write standard output: REASON`` on standard error, and exit status
  :data:`OUTPUT_FAILED_STATUS` (1), no traceback (:class:`OutputFailed`); standard output is
  pointed at ``/dev/null`` so that Python's flush at exit cannot fail again. ``run`` writes
  nothing there: its exit status stays the command's.
- **standard error that cannot be written** (its reader gone: ``tasktrace run ... 2>&1
  >/dev/null | true``; ``EIO`` after a terminal hang-up; ``ENOSPC`` on a full disk):
  :func:`guard_standard_streams` wraps it so that writing to it never raises: at the first
  failure its descriptor is pointed at ``/dev/null`` and the rest goes there. A command's own
  messages are lost, its exit status is not (``run``'s is its command's, 127 or 125 too). A
  :class:`BrokenPipeError` on standard output with standard output itself still read (``poll``
  reports no error on it) is no reader gone: it is raised on.
- **standard output or error closed at start** (``>&-``, ``2>&-``; Python then sets
  ``sys.stdout`` to ``None``): each is opened on ``/dev/null`` first, inheritable, so ``run``'s
  command gets ``/dev/null`` there, not a closed descriptor (which its first opened file would
  take).

Every command prints through :class:`Console`, whose closed standard output reaches the same
place (rich's own handling exits 1).

:func:`tasktrace.cli.main` flushes standard output inside the same guard, so output that was
still buffered when the command returned is covered too.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import click
import rich.console

__all__ = [
    "OUTPUT_FAILED_STATUS",
    "READER_GONE_STATUS",
    "CommandGroup",
    "Console",
    "OutputFailed",
    "ReaderGone",
    "discard_stdout",
    "guard_standard_streams",
    "needs_extra",
    "reader_may_leave",
]

READER_GONE_STATUS: Final = 0
"""Exit status of a command whose standard output was closed by its reader (``| head``)."""

OUTPUT_FAILED_STATUS: Final = 1
"""Exit status of a command whose standard output could not be written (not ``run``)."""

_EXTRA = re.compile(r"pip install 'tasktrace\[(?P<extra>[A-Za-z0-9_-]+)\]'")


class ReaderGone(Exception):
    """Standard output was closed by its reader; it now goes to ``/dev/null``.

    Not an :class:`OSError`, so that click's own handling of ``EPIPE`` (exit 1) does not see
    it; :func:`tasktrace.cli.main` returns :data:`READER_GONE_STATUS` for it.
    """


class OutputFailed(Exception):
    """Standard output could not be written (not a reader gone); it now goes to ``/dev/null``.

    Not an :class:`OSError`, so that nothing on the way takes it for a file's error;
    :func:`tasktrace.cli.main` says :meth:`message` and returns :data:`OUTPUT_FAILED_STATUS`.

    Args:
        error: The write's error (``ENOSPC``, ``EIO``, ...).
    """

    def __init__(self, error: OSError) -> None:
        """Keep ``error``."""
        super().__init__(error)
        self.error = error

    def say(self) -> None:
        """Print the one error line on standard error; later output goes to ``/dev/null``.

        The line: ``Error: cannot write standard output: REASON``. Until it is said, every
        write to standard output raises this error again (see :func:`guard_standard_streams`);
        from then on, nothing does (Python's flush at exit succeeds).
        """
        reason = self.error.strerror or str(self.error)
        click.echo(f"Error: cannot write standard output: {reason}", err=True)
        if isinstance(sys.stdout, _LoudWhenFailed):
            sys.stdout.said()


@contextmanager
def reader_may_leave() -> Iterator[None]:
    """Turn a :class:`BrokenPipeError` inside into :class:`ReaderGone`, stdout to ``/dev/null``.

    Raises:
        ReaderGone: A write or flush inside failed with ``EPIPE``.
    """
    try:
        yield
    except BrokenPipeError:
        if not _stdout_gone():  # a socket's, a file's: not the reader of standard output
            raise
        discard_stdout()
        raise ReaderGone from None


def _stdout_gone() -> bool:
    """Whether standard output's reader has gone (``poll`` reports an error or hang-up on it)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):  # no descriptor: nothing else to blame
        return True
    if not hasattr(select, "poll"):  # pragma: no cover - every POSIX system has poll
        return True
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def _devnull_stream(fd: int) -> Any:
    """Return a text stream on ``/dev/null`` for the closed standard descriptor ``fd``.

    ``/dev/null`` takes ``fd`` itself, inheritable (a command started by ``run`` inherits it;
    ``os.open`` makes descriptors that are not), unless something opened since holds that
    number: then another descriptor.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    if devnull != fd:
        try:
            os.fstat(fd)
        except OSError:  # still closed: take its number
            os.dup2(devnull, fd)
            os.close(devnull)
            devnull = fd
    if devnull == fd:
        os.set_inheritable(fd, True)
    return open(devnull, "w", closefd=False)  # the process's, for its life


class _QuietWhenGone:
    """A text stream (standard error) whose writes never raise :class:`OSError`.

    After the first failure (``EPIPE``, ``EIO``, ``ENOSPC``...) its descriptor is pointed at
    ``/dev/null``: what follows, and what was still buffered, goes nowhere. Every other
    attribute is the stream's own.
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return int(self._stream.write(text))
        except OSError:
            self._gone()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError:
            self._gone()

    def _gone(self) -> None:
        with contextlib.suppress(OSError, ValueError):  # no descriptor: nothing to point
            _to_devnull(self._stream.fileno())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _LoudWhenFailed:
    """A stream (standard output, or its ``buffer``) whose write errors end the command.

    An :class:`OSError` other than :class:`BrokenPipeError` (left to
    :func:`reader_may_leave`) points the descriptor at ``/dev/null`` and becomes
    :class:`OutputFailed`, raised again by every later write or flush (by the ``buffer`` too):
    a caller that swallows the first (click probes a stream with empty writes) cannot make
    the rest go to ``/dev/null`` unsaid. An empty write that fails loses nothing: it returns
    0. Every other attribute is the stream's own.
    """

    def __init__(self, stream: Any, failed: list[OSError] | None = None) -> None:
        self._stream = stream
        self._failed = [] if failed is None else failed  # shared with the buffer's wrapper

    def write(self, data: Any) -> int:
        with self._failing():
            try:
                return int(self._stream.write(data))
            except OSError:
                if data:
                    raise
                return 0  # an empty write (a probe) lost nothing

    def flush(self) -> None:
        with self._failing():
            self._stream.flush()

    @property
    def buffer(self) -> Any:
        return _LoudWhenFailed(self._stream.buffer, self._failed)

    def said(self) -> None:
        """Take the failure as told: writes go to ``/dev/null`` (the descriptor points there)."""
        self._failed.clear()

    @contextmanager
    def _failing(self) -> Iterator[None]:
        if self._failed:
            raise OutputFailed(self._failed[0])
        try:
            yield
        except BrokenPipeError:
            raise
        except OSError as e:
            self._failed.append(e)
            with contextlib.suppress(OSError, ValueError):
                _to_devnull(self._stream.fileno())
            raise OutputFailed(e) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _to_devnull(fd: int) -> None:
    """Point the descriptor ``fd`` at ``/dev/null`` (inheritable, as ``fd`` was)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def guard_standard_streams() -> None:
    """Open closed standard streams on ``/dev/null``; guard their writes (see the module).

    Standard error's writes never fail; standard output's fail as :class:`OutputFailed`.
    Call once, before a command runs (:func:`tasktrace.cli.main` does). Not thread-safe:
    replaces ``sys.stdout`` / ``sys.stderr``.
    """
    if sys.stdout is None:  # closed at start
        sys.stdout = _devnull_stream(1)
    if sys.stderr is None:
        sys.stderr = _devnull_stream(2)
    if not isinstance(sys.stdout, _LoudWhenFailed):
        sys.stdout = _LoudWhenFailed(sys.stdout)  # type: ignore[assignment]
    if not isinstance(sys.stderr, _QuietWhenGone):
        sys.stderr = _QuietWhenGone(sys.stderr)  # type: ignore[assignment]


def discard_stdout() -> None:
    """Point standard output's file descriptor at ``/dev/null`` (its reader is gone).

    Python flushes standard output at exit; what is still buffered then goes nowhere instead of
    failing with ``BrokenPipeError`` ("Exception ignored ..." and exit status 120).
    """
    _to_devnull(sys.stdout.fileno())


@contextmanager
def needs_extra(command: str) -> Iterator[None]:
    """Turn a missing optional extra inside into one error line naming ``command`` (exit 2).

    Args:
        command: The command as the user typed it, less ``tasktrace`` (``"table -o"``).

    Raises:
        click.ClickException: An :class:`ImportError` whose message names an extra:
            ``tasktrace COMMAND needs PACKAGE, which is not installed: pip install
            'tasktrace[EXTRA]'`` (where it is installed but fails to import: ``which cannot
            be imported (ImportError: ...)``). Any other :class:`ImportError` passes
            unchanged.
    """
    try:
        yield
    except ImportError as e:
        match = _EXTRA.search(str(e))
        if match is None:
            raise
        raise click.ClickException(
            f"tasktrace {command} needs {_missing_package(e, match['extra'])}, which "
            f"{_why_not(e)}: {match[0]}"
        ) from None


def _why_not(error: ImportError) -> str:
    """Say why the import failed: ``is not installed`` (a module not found), else the error.

    An installed package that fails to import (a version mismatch: ``cannot import name ...``)
    is not called missing: the line shows the first error, which a reinstall may fix.
    """
    failed: BaseException | None = None  # the first import error under the extra's message
    seen = error.__cause__ or error.__context__
    while seen is not None:
        if isinstance(seen, ModuleNotFoundError):
            return "is not installed"
        if failed is None and isinstance(seen, ImportError):
            failed = seen
        seen = seen.__cause__ or seen.__context__
    if failed is None:
        return "is not installed"
    return f"cannot be imported ({type(failed).__name__}: {failed})"


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
