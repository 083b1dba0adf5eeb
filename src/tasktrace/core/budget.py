"""The size budget of a span's extra data: what one task carries cannot sink its batch.

A task's extra data (``Task("fit", scores=[...])``) goes whole into the task file, and onto the
span as ``tasktrace.data.*`` / ``tasktrace.data_json.*`` attributes
(:func:`~tasktrace.core.attributes.data_to_attributes`) within a budget:

- at most :data:`DATA_ATTRIBUTE_MAX_BYTES` (64 KiB) per attribute;
- at most :data:`DATA_SPAN_MAX_BYTES` (256 KiB) for all of a task's extra data, taken in the
  order the data was given;
- at most :data:`DATA_MAX_ATTRIBUTES` (96) attributes (the SDK keeps 128 attributes a span).

An attribute's size is: for a string, its length in UTF-8 bytes (for data stored as JSON, the
JSON text's); for a number or boolean, 8 bytes; for an array, its length written as compact
JSON in UTF-8 bytes. On the wire (OTLP protobuf) an attribute takes at most about 2.5 times
that, so one span's extra data stays well under a request (see
:mod:`tasktrace.export.request_size`).

An attribute over the budget is left off the span, its key is listed in the span's
:data:`~tasktrace.core.attributes.DATA_OMITTED` attribute (``tasktrace.data_omitted``), and one
warning per process names the task, the key and the size. The task file keeps the full value.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any, Final

from tasktrace.core.attributes import DATA_JSON_PREFIX, DATA_OMITTED, DATA_PREFIX
from tasktrace.core.warn import WarnOnce

__all__ = [
    "DATA_ATTRIBUTE_MAX_BYTES",
    "DATA_MAX_ATTRIBUTES",
    "DATA_SPAN_MAX_BYTES",
    "attribute_size_bytes",
    "bounded_data_attributes",
]

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)

DATA_ATTRIBUTE_MAX_BYTES: Final = 64 * 1024
"""Largest extra-data attribute written to a span, in bytes (size rule in the module docstring)."""
DATA_SPAN_MAX_BYTES: Final = 256 * 1024
"""Largest total of a span's extra-data attributes, in bytes."""
DATA_MAX_ATTRIBUTES: Final = 96
"""Most extra-data attributes written to a span (the SDK keeps 128 attributes in all)."""
_NO_LIMIT: Final = 1 << 62
_JSON_ESCAPED: Final = re.compile(r'["\\\x00-\x1f]')
"""Characters JSON escapes in a string (``ensure_ascii=False``): quote, backslash, controls."""
_warned: set[str] = set()


def attribute_size_bytes(value: Any, limit: int = _NO_LIMIT) -> int:
    """Return the size of an attribute value in bytes (rule in the module docstring).

    Args:
        value: A ``tasktrace.data.*`` / ``tasktrace.data_json.*`` attribute value.
        limit: Stop measuring once the size is surely over ``limit``: the result is then a
            lower bound above ``limit`` (so a 600,000-item list costs nothing to turn down).
    """
    if isinstance(value, str):
        if len(value) > limit:  # UTF-8 bytes >= characters
            return len(value)
        return len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, list | tuple):
        if 2 * len(value) + 1 > limit:  # "[a,b,...]": each item and its comma take >= 2 bytes
            return 2 * len(value) + 1
        if value and all(type(v) is str for v in value):  # tags: no JSON text built
            joined = "".join(value)
            if _JSON_ESCAPED.search(joined) is None:  # each item is itself in quotes
                return len(joined.encode("utf-8", "surrogatepass")) + 3 * len(value) + 1
        text = json.dumps(list(value), separators=(",", ":"), ensure_ascii=False)
        return len(text.encode("utf-8", "surrogatepass"))
    return 8


def _data_key(attribute: str) -> str:
    for prefix in (DATA_PREFIX, DATA_JSON_PREFIX):
        if attribute.startswith(prefix):
            return attribute[len(prefix) :]
    return attribute


def _key_list(keys: list[str]) -> list[str]:
    """Return the omitted keys, as many as fit in one attribute's budget."""
    listed: list[str] = []
    size = 2
    for key in keys:
        size += len(key.encode("utf-8", "surrogatepass")) + 3
        if size > DATA_ATTRIBUTE_MAX_BYTES:
            break
        listed.append(key)
    return listed


def bounded_data_attributes(label: str, attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Return the extra-data attributes of task ``label`` that fit in the span's budget.

    Args:
        label: The task's label (named in the warning).
        attributes: From :func:`~tasktrace.core.attributes.data_to_attributes`, in data order.

    Returns:
        The attributes within the budget, plus :data:`~tasktrace.core.attributes.DATA_OMITTED`
        listing the data keys left off (absent when none is). Warns once per process per kind
        of budget (count, attribute size, span total), naming the task, the key and the size.

    Thread-safety: pure, but for the once-per-process warnings (thread-safe).
    """
    kept: dict[str, Any] = {}
    omitted: list[str] = []
    total = 0
    for number, (attribute, value) in enumerate(attributes.items()):
        key = _data_key(attribute)
        if number >= DATA_MAX_ATTRIBUTES:
            omitted.append(key)
            _warn(
                "data-count-budget",
                "tasktrace: task %r has %d extra data items; only the first %d are written as "
                "span attributes (all are kept in the task file; the others are named in %s)",
                label,
                len(attributes),
                DATA_MAX_ATTRIBUTES,
                DATA_OMITTED,
            )
            continue
        size = attribute_size_bytes(value, DATA_ATTRIBUTE_MAX_BYTES)
        if size > DATA_ATTRIBUTE_MAX_BYTES:
            omitted.append(key)
            _warn_once_sized(
                "data-attribute-budget",
                label,
                key,
                value,
                f"over the {DATA_ATTRIBUTE_MAX_BYTES:,}-byte budget of one span attribute",
            )
            continue
        if total + size > DATA_SPAN_MAX_BYTES:
            omitted.append(key)
            _warn_once_sized(
                "data-span-budget",
                label,
                key,
                value,
                f"which would bring the span's extra data over its {DATA_SPAN_MAX_BYTES:,}-byte "
                "budget",
            )
            continue
        total += size
        kept[attribute] = value
    if omitted:
        kept[DATA_OMITTED] = _key_list(omitted)
    return kept


def _warn_once_sized(kind: str, label: str, key: str, value: Any, why: str) -> None:
    if kind in _warned:  # cheap pre-check: the exact size of a huge list costs a JSON dump
        return
    _warned.add(kind)
    _warn(
        kind,
        "tasktrace: task %r: extra data %r is %s bytes as a span attribute, %s; it is left off "
        "the span (named in %s) and kept in full in the task file. Further omissions are not "
        "reported",
        label,
        key,
        f"{attribute_size_bytes(value):,}",
        why,
        DATA_OMITTED,
    )
