"""What an existing file holds, told from its first and last bytes (for the replace guard).

:func:`~tasktrace.tree.files.check_replaceable` reads at most the first and last
:data:`~tasktrace.tree.files.HEAD_BYTES` of a file about to be replaced and asks this module
which of tasktrace's outputs it is (:func:`output_kind`), or how to describe it to the user
without quoting it (:func:`describe`). Pure functions of bytes: thread-safe, no I/O.
"""

from __future__ import annotations

import codecs
import uuid

import pydantic_core

__all__ = ["CHROME_TRACE", "OTLP_LINES", "RECORDS", "TASK_FILE", "describe", "output_kind"]

TASK_FILE = "a task file"
"""The kind of a task file (tasktrace's or LensKit's): the record of a run."""

OTLP_LINES = "OTLP JSON lines"
"""The kind of OTLP JSON lines: spans, a record of a run as well."""

CHROME_TRACE = "a Chrome trace"
"""The kind of a Chrome trace tasktrace exported: made from a record, holds no task tree."""

RECORDS = frozenset({TASK_FILE, OTLP_LINES})
"""The kinds that are a run's record (what the views read), not a view made from one: replaced
only by output of the same kind unless forced (see
:func:`~tasktrace.tree.files.check_replaceable`)."""


def output_kind(head: bytes, tail: bytes, partial: bool) -> str | None:
    """Return which of tasktrace's outputs a file is, or ``None`` when it is none of them.

    Args:
        head: The file's first bytes.
        tail: Its last bytes (``head`` itself for a file read whole).
        partial: Whether ``head`` is cut short (the file is longer).

    Returns:
        :data:`TASK_FILE` (a JSON object whose ``task_id`` is a UUID string and ``label`` a
        string, both in ``head``, ending in ``}``), :data:`OTLP_LINES` (the first line is a
        JSON object with a ``resourceSpans`` list), :data:`CHROME_TRACE` (a JSON object with a
        ``traceEvents`` list whose last key is ``otherData`` holding a ``root_task_id`` UUID, as
        ``tasktrace export --format chrome`` writes it), or ``None``.
    """
    top = parse_json(head, partial)
    if not isinstance(top, dict):
        return None
    if _is_uuid(top.get("task_id")) and isinstance(top.get("label"), str):
        return TASK_FILE if not partial or tail.rstrip().endswith(b"}") else None
    if isinstance(top.get("resourceSpans"), list):
        return OTLP_LINES
    if isinstance(top.get("traceEvents"), list) and _ends_like_tasktrace_chrome(tail):
        return CHROME_TRACE
    return None


def parse_json(head: bytes, partial: bool) -> object:
    """Parse the first JSON value of ``head`` (cut short when ``partial``); ``None`` if not JSON."""
    try:
        return pydantic_core.from_json(head, allow_partial=partial)
    except ValueError:
        if partial:
            return None
    try:  # a whole file of JSON lines: the first line alone
        return pydantic_core.from_json(head.split(b"\n", 1)[0])
    except ValueError:
        return None


def _is_uuid(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _ends_like_tasktrace_chrome(tail: bytes) -> bool:
    """Whether a Chrome trace ends with tasktrace's ``"otherData": {"root_task_id": UUID}}``."""
    start = tail.rfind(b'"otherData"')
    if start < 0:
        return False
    try:  # '"otherData": {...}}' is the document's last key: '{' makes it an object again
        other = pydantic_core.from_json(b"{" + tail[start:]).get("otherData")
    except ValueError:
        return False
    return isinstance(other, dict) and _is_uuid(other.get("root_task_id"))


def describe(head: bytes, size: int, partial: bool) -> str:
    """Say what a file holds, by kind and size, without quoting any of it.

    Args:
        head: Its first bytes.
        size: Its size in bytes.
        partial: Whether ``head`` is cut short.

    Returns:
        ``"1,234 bytes of JSON"``, ``"… of text"`` or ``"… of binary data"``.
    """
    amount = f"{size:,} bytes"
    if isinstance(parse_json(head, partial), dict | list):
        return f"{amount} of JSON"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=not partial)
    except UnicodeDecodeError:
        return f"{amount} of binary data"
    return f"{amount} of text" if b"\x00" not in head else f"{amount} of binary data"
