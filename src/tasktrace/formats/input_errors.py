"""Why an input file could not be read, as one line in plain words naming the file.

Every reader of task files (``show``, ``export``, ``replay``, ``report``, ``compare``,
``table``, :func:`tasktrace.read_tasks`) reports its failures through
:func:`describe_input_error`, so each command words the same problem the same way:

- a file that is no task file at all (empty, not JSON, a truncated JSON text, a JSON array,
  string, number or ``null``, an object without a task's ``label``, a Chrome trace):
  ``FILE: not a tasktrace task file: invalid JSON at line 1 column 5 (...)``,
  ``FILE: not a tasktrace task file: a JSON array, expected a task object ...``;
- a tree nested beyond what pydantic validates: ``FILE: task tree nested too deeply to read
  (over 255 levels)``;
- a task file with a bad value: ``FILE: invalid task file: subtasks[0].duration: expected a
  number, got "soon"; 1 more problem`` (the first problem in plain words, see
  :func:`tasktrace.core.problems.expected`, and how many more; a deep location shortened to
  ``subtasks[0]…(40 levels)…subtasks[0].duration``).

pydantic's own wording (``Input should be ...``, ``1 validation error for Task ...``,
``(1 errors)``, its links) never reaches the user. The JSON parser's position (line and
column, 1-based lines) comes from the parser's message (pydantic-core's ``json_invalid``
error, or :class:`json.JSONDecodeError`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tasktrace.core.problems import expected

__all__ = ["NOT_A_TASK_FILE", "describe_input_error", "is_chrome_trace"]

NOT_A_TASK_FILE = "not a tasktrace task file"
"""What a file is said to be when it holds no task tree at all (before the reason)."""

_TASK_OBJECT = "expected a task object (a task file as tasktrace or LensKit writes it)"
_CHROME_TRACE = (
    "a Chrome trace (trace events, as tasktrace export --format chrome writes), which holds "
    "no task tree; give the task file or OTLP JSON lines it was made from"
)
_POSITION = re.compile(r"^(?P<what>.*) at line (?P<line>\d+) column (?P<column>\d+)$")
_PLAIN = {  # the JSON parser's words -> plain ones
    "expected value": "not JSON text",
    "trailing characters": "more text after the end of the JSON value",
}
_SHOWN_CHARS = 40  # a bad value is quoted up to this many characters
_WHERE_PARTS = 8  # a location deeper than this is shortened: its first and last parts
_TOO_DEEP = "task tree nested too deeply to read"


def is_chrome_trace(error: BaseException) -> bool:
    """Whether a reader's ``error`` says the file is a Chrome trace (trace events), not tasks.

    ``tasktrace export --format chrome`` writes one: commands reading several files skip it
    (a folder's ``*.json`` holds the runs and their traces alike).
    """
    if not isinstance(error, ValidationError):
        return False
    first = error.errors(include_url=False)[0]
    value = first.get("input")
    return (
        tuple(first["loc"]) == ("label",)
        and first["type"] == "missing"
        and isinstance(value, dict)
        and isinstance(value.get("traceEvents"), list)
    )


def describe_input_error(path: Path, error: BaseException) -> str:
    """Return one line naming ``path`` and what is wrong with it, for an error from a reader.

    Args:
        path: The input file, as the user named it.
        error: What the reader raised: :class:`OSError` (cannot read), :class:`RecursionError`
            (nested too deeply), :class:`pydantic.ValidationError` or
            :class:`json.JSONDecodeError` (not a task file, or a bad value), or another
            :class:`ValueError` whose message already says what is wrong (bad OTLP JSON lines).

    Returns:
        ``"PATH: what is wrong"``, one line, without pydantic's error counts or URLs.
    """
    if isinstance(error, OSError):
        return f"{path}: cannot read file: {error.strerror or error}"
    if isinstance(error, RecursionError):
        return f"{path}: {_TOO_DEEP}"
    if isinstance(error, ValidationError):
        return f"{path}: {_validation_problem(error)}"
    if isinstance(error, json.JSONDecodeError):
        where = f"line {error.lineno} column {error.colno}"
        return f"{path}: {NOT_A_TASK_FILE}: invalid JSON at {where} ({error.msg})"
    text = str(error)
    return text if text.startswith(f"{path}: ") else f"{path}: {text}"  # named once


def _validation_problem(error: ValidationError) -> str:
    """Say in plain words what the first of ``error``'s problems is (and how many more)."""
    first = error.errors(include_url=False)[0]
    kind, loc, value, msg = first["type"], tuple(first["loc"]), first.get("input"), first["msg"]
    if kind == "recursion_depth_exceeded" or (kind == "json_invalid" and "recursion" in msg):
        levels = sum(part == "subtasks" for part in loc)
        return f"{_TOO_DEEP} (over {levels} levels)" if levels else _TOO_DEEP
    if kind == "json_invalid":
        return f"{NOT_A_TASK_FILE}: {_json_problem(value, first.get('ctx', {}).get('error', ''))}"
    if not loc and kind == "model_type":
        return f"{NOT_A_TASK_FILE}: {_json_kind(value)}, {_TASK_OBJECT}"
    if loc == ("label",) and kind == "missing":
        if is_chrome_trace(error):
            return f"{NOT_A_TASK_FILE}: {_CHROME_TRACE}"
        return f'{NOT_A_TASK_FILE}: a JSON object without the "label" every task has'
    more = error.error_count() - 1
    also = f"; {more} more problem{'s' if more > 1 else ''}" if more else ""
    if kind == "model_type":
        problem = f"{_where(loc)}: {_json_kind(value)}, expected a task object"
    elif kind == "missing":
        problem = f'{_where(loc[:-1]) or "the task"}: no "{loc[-1]}" (every task has one)'
    else:
        problem = f"{_where(loc)}: {expected(first)}, got {_shown(value)}"
    return f"invalid task file: {problem}{also}"


def _json_problem(data: Any, parser_error: str) -> str:
    """Say why ``data`` (the file's bytes) is not JSON, with the parser's line and column."""
    if isinstance(data, (bytes, str)) and not data.strip():
        return "the file is empty"
    match = _POSITION.match(parser_error)
    if match is None:
        return f"invalid JSON ({parser_error})"
    what, where = match["what"], f"line {match['line']} column {match['column']}"
    if what.startswith("EOF while parsing"):
        return "invalid JSON: the text ends inside a JSON value (a truncated file?)"
    return f"invalid JSON at {where} ({_PLAIN.get(what, what)})"


def _json_kind(value: Any) -> str:
    """Name the kind of JSON value that ``value`` was parsed from ("a JSON array")."""
    if value is None:
        return "JSON null"
    if isinstance(value, bool):
        return "a JSON boolean"
    if isinstance(value, (int, float)):
        return "a JSON number"
    if isinstance(value, str):
        return "a JSON string"
    if isinstance(value, list):
        return "a JSON array"
    return "a JSON object" if isinstance(value, dict) else type(value).__name__


def _where(loc: tuple[int | str, ...]) -> str:
    """Write a location as a path into the tree: ``subtasks[0].duration``.

    A deep one is shortened to its first and last parts: ``subtasks[0]…(40 levels)…label``.
    """
    if len(loc) > _WHERE_PARTS:
        levels = sum(part == "subtasks" for part in loc)
        tail = loc[-4:]
        while isinstance(tail[0], int):  # start the tail at a field's name
            tail = tail[1:]
        return f"{_where(loc[:2])}…({levels} levels)…{_where(tail)}"
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _shown(value: Any) -> str:
    """Quote a bad scalar value (cut at :data:`_SHOWN_CHARS`), or name a value's JSON kind."""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"
    return _json_kind(value)
