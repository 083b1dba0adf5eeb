"""What a pydantic validation error says, in tasktrace's plain words (never pydantic's).

Every message built from a :class:`pydantic.ValidationError` goes through :func:`expected`:
task files (:mod:`tasktrace.formats.input_errors`), ``Task(...)`` arguments
(:func:`invalid_task_error`) and settings (:func:`tasktrace.core.settings.load_settings`'s
warnings). It says what was expected (``expected a UUID``, ``expected a number``, ``expected
one of 'pending', 'running', ...``); pydantic's ``Input should be ...``, its parser's details
(``invalid character: found `x` at 0``), error counts and ``errors.pydantic.dev`` links never
reach the user.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

__all__ = ["InvalidTaskError", "expected", "invalid_task_error", "path_argument", "shown"]

_SHOWN_CHARS = 40  # a bad value is quoted up to this many characters

_EXPECTED = {  # pydantic error type -> what was expected, in plain words
    "bool_parsing": "expected true or false",
    "bool_type": "expected true or false",
    "dict_type": "expected a mapping (a JSON object)",
    "finite_number": "expected a finite number",
    "float_parsing": "expected a number",
    "float_type": "expected a number",
    "frozen_field": "cannot be changed",
    "frozen_instance": "cannot be changed",
    "int_from_float": "expected a whole number",
    "int_parsing": "expected a whole number",
    "int_type": "expected a whole number",
    "list_type": "expected a list",
    "missing": "missing (it is required)",
    "model_type": "expected a task object",
    "string_type": "expected a string",
    "uuid_parsing": "expected a UUID (32 hex digits, as 0b7cbd8e-7f4c-4c8e-9a57-4ea1f5b1d1a9)",
    "uuid_type": "expected a UUID",
    "uuid_version": "expected a UUID",
}
_BOUNDS = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤"}
_INPUT_SHOULD_BE = re.compile(r"^(?:Value error, )?Input should be ")


def expected(error: ErrorDetails) -> str:
    """Say what one of a :class:`~pydantic.ValidationError`'s errors expected, in plain words.

    Args:
        error: One item of ``ValidationError.errors()``.

    Returns:
        ``"expected a number"``, ``"expected one of 'a', 'b'"``, ``"expected a number > 0"``;
        for a validator's own ``ValueError`` its message; else pydantic's message with its
        ``Input should be`` turned into ``expected`` and its parser's details cut off.
    """
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in _EXPECTED:
        return _EXPECTED[kind]
    if kind in {"enum", "literal_error"} and "expected" in ctx:
        return f"expected one of {ctx['expected']}"
    bound = next((b for b in _BOUNDS if b in ctx), None)
    if bound is not None:
        return f"expected a number {_BOUNDS[bound]} {ctx[bound]}"
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])
    message = error["msg"]
    if _INPUT_SHOULD_BE.match(message):
        return "expected " + _INPUT_SHOULD_BE.sub("", message).split(",")[0]
    return message.split(" [")[0]


def shown(value: Any) -> str:
    """Quote a bad value for a message: ``"x"``, ``5``, cut at 40 characters (``…``)."""
    text = f'"{value}"' if isinstance(value, str) else repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"


class InvalidTaskError(ValueError):
    """A :class:`tasktrace.Task` argument or field value that is not valid (one line, plain).

    A :class:`ValueError`, as pydantic's :class:`~pydantic.ValidationError` that LensKit's
    ``Task`` raises is: ``except ValueError`` keeps working. The message names the argument
    and what was expected (``Task label: expected a string, got 5``); pydantic's own error is
    kept as :attr:`validation_error` (not chained, so its rendering is not printed).
    """

    def __init__(self, message: str, validation_error: ValidationError | None = None) -> None:
        """Keep ``message`` (the one line) and pydantic's error (``None`` once unpickled)."""
        super().__init__(message)
        self.validation_error = validation_error
        """pydantic's error, for a program that wants its details (``errors()``); ``None``
        in a copy from another process (an exception is pickled by its message)."""


def invalid_task_error(error: ValidationError, field: str | None = None) -> InvalidTaskError:
    """Return a plain :class:`InvalidTaskError` for pydantic's error about a Task's arguments.

    The first problem is named (``Task label: expected a string, got 5``), then how many more.
    ``field``: the field whose value alone was validated (an assignment, ``task.duration =
    "abc"``), whose name pydantic's error does not hold.
    """
    first = error.errors(include_url=False)[0]
    where = ""
    for part in (
        (field, *first["loc"]) if field else first["loc"]
    ):  # subtasks[0].label, as task files' problems are located
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else part)
    problem = expected(first)
    if first["type"] != "missing":
        problem += f", got {shown(first.get('input'))}"
    more = error.error_count() - 1
    also = f"; {more} more problem{'s' if more > 1 else ''}" if more else ""
    return InvalidTaskError(f"Task {where or 'arguments'}: {problem}{also}", error)


def path_argument(name: str, value: object) -> Path:
    """Return ``value`` (``str`` or ``os.PathLike``) as a :class:`~pathlib.Path`.

    Raises:
        TypeError: ``value`` is not a path; the message names the argument ``name``.
    """
    if not isinstance(value, str | os.PathLike):
        raise TypeError(
            f"{name} must be a path (str or os.PathLike), not {type(value).__name__}: {value!r}"
        )
    return Path(value)
