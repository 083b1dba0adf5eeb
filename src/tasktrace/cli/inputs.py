"""Reading the CLI's inputs and guarding its outputs: one-line errors, never a traceback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click
from pydantic import ValidationError

from tasktrace.core.units import INVALID, valid_measure
from tasktrace.formats.rows import describe_input_error, load_task_file
from tasktrace.task import Task

__all__ = [
    "FORCE_HINT",
    "MEASURE_FIELDS",
    "invalid_measures",
    "load",
    "read_input",
    "warn_invalid_measures",
]

_T = TypeVar("_T")

FORCE_HINT = "pass --force to replace it"
"""How the command line lets a user replace a file that is not tasktrace output."""


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
            f"Warning: {path}: values that are not measurements (negative, NaN or infinite) in "
            f"{fields}; shown as {INVALID}",
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
        raise click.ClickException(describe_input_error(path, e)) from None
