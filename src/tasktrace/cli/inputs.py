"""Reading the CLI's inputs and guarding its outputs: one-line errors, never a traceback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click
from pydantic import ValidationError

from tasktrace.formats.rows import describe_input_error, load_task_file
from tasktrace.task import Task

__all__ = ["FORCE_HINT", "load", "read_input"]

_T = TypeVar("_T")

FORCE_HINT = "pass --force to replace it"
"""How the command line lets a user replace a file that is not tasktrace output."""


def load(path: Path) -> Task:
    """Load a task file or an OTLP JSON-lines file; bad input is a one-line error (exit 2)."""
    return read_input(path, load_task_file)


def read_input(path: Path, reader: Callable[[Path], _T]) -> _T:
    """Call ``reader(path)``; turn unreadable or invalid input into a one-line error."""
    try:
        return reader(path)
    except (OSError, RecursionError, ValidationError, ValueError, TypeError, ImportError) as e:
        raise click.ClickException(describe_input_error(path, e)) from None
