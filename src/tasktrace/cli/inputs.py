"""Reading the CLI's inputs and guarding its outputs: one-line errors, never a traceback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from tasktrace.core.lines import printable
from tasktrace.core.units import INVALID, valid_measure
from tasktrace.formats.rows import describe_input_error, load_task_file
from tasktrace.task import Task
from tasktrace.tree.files import shown

__all__ = [
    "FORCE_HINT",
    "MEASURE_FIELDS",
    "Failure",
    "InputPath",
    "invalid_measures",
    "load",
    "read_input",
    "warn_invalid_measures",
]

_T = TypeVar("_T")

FORCE_HINT = "pass --force to replace it"
"""How the command line lets a user replace a file that is not tasktrace output."""


class Failure(click.ClickException):
    r"""A command's one-line error (exit status 2), its control characters escaped.

    Every error of ``show``, ``export``, ``replay``, ``report``, ``compare`` and ``table`` is
    one: a file name holding an escape sequence (``$'\e[2J.json'``) is printed as
    ``\x1b[2J.json``, never reaching the terminal raw, whichever part of tasktrace wrote
    the message (:func:`~tasktrace.core.lines.printable`, as for labels).

    Args:
        message: The error, one line.
    """

    def __init__(self, message: str) -> None:
        """Keep ``message`` with its control characters escaped."""
        super().__init__(printable(message))


class InputPath(click.ParamType):
    """The type of an argument naming a file (or folder) to read: a :class:`~pathlib.Path`.

    An empty argument (an unset variable: ``tasktrace show "$RUN"``) is a usage error saying
    so, not the working folder (``Path("")`` is ``.``). Whether the file exists and what it
    holds is for the reader to say (:func:`read_input`).
    """

    name = "path"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Return ``value`` as a :class:`~pathlib.Path`; refuse an empty one."""
        if isinstance(value, Path):
            return value
        if value == "":
            self.fail("an empty path (an unset variable?); give a file name", param, ctx)
        return Path(value)


MEASURE_FIELDS = (
    "duration",
    "cpu_time",
    "peak_memory",
    "peak_gpu_memory",
    "cpu_power",
    "gpu_power",
    "system_power",
    "dram_energy_j",
    "children_cpu_time_s",
    "children_peak_rss_bytes",
)
"""A task record's measurement fields: each, where set, a finite number not below 0."""


def load(path: Path) -> Task:
    """Load a task file or an OTLP JSON-lines file; bad input is a one-line error (exit 2).

    A file whose tree holds values that cannot be measurements (negative, NaN or infinite:
    see :func:`invalid_measures`) is read as it is, with one warning line on standard error
    naming the fields; the views print those values as :data:`~tasktrace.core.units.INVALID`.
    """
    task = read_input(path, load_task_file)
    warn_invalid_measures(path, task)
    return task


def warn_invalid_measures(path: Path, task: Task) -> None:
    """Say on standard error, in one line, which fields of ``path``'s tree are not measurements.

    Nothing when every value is valid (see :func:`invalid_measures`); ``show``, ``export``,
    ``report``, ``compare`` and ``table`` call it for each file they read.
    """
    if invalid := invalid_measures(task):
        fields = ", ".join(
            f"{name} ({count} task{'' if count == 1 else 's'})" for name, count in invalid.items()
        )
        click.echo(
            f"Warning: {shown(path)}: values that are not measurements (negative, NaN or "
            f"infinite) in {fields}; shown as {INVALID}",
            err=True,
        )


def invalid_measures(task: Task) -> dict[str, int]:
    """Count the tasks of ``task``'s tree with a value that is not a measurement, by field.

    The fields are :data:`MEASURE_FIELDS`; a value is not a measurement when it is negative,
    NaN or infinite. Iterative (any depth); reads only.
    """
    counts: dict[str, int] = {}
    stack = [task]
    while stack:
        node = stack.pop()
        stack.extend(node.subtasks)
        for name in MEASURE_FIELDS:
            value = getattr(node, name, None)
            if isinstance(value, int | float) and not valid_measure(value):
                counts[name] = counts.get(name, 0) + 1
    return counts


def read_input(path: Path, reader: Callable[[Path], _T]) -> _T:
    """Call ``reader(path)``; turn unreadable or invalid input into a one-line error.

    A missing optional extra (:class:`ImportError`) is no fault of the input's: it passes, to
    be said for the command (:mod:`tasktrace.cli.boundary`).
    """
    try:
        return reader(path)
    except (OSError, RecursionError, ValidationError, ValueError, TypeError) as e:
        raise Failure(describe_input_error(path, e)) from None
