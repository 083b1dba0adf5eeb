"""The one task ⇄ span mapping, used by the live path and by every conversion of saved tasks.

A live task writes its span with :func:`start_attributes` (at span start) and
:func:`finish_attributes` plus :func:`span_status` (at finish); the host it ran on is on the
span's **resource** (:func:`host_attributes`, set by the tracer provider). A saved task converted
to a span (``tasktrace replay``, ``export --format otlp-json``) gets exactly the same:
:func:`span_attributes` is the union of the two, and its resource carries
:func:`host_attributes`. Spans become task fields through :func:`span_fields` (plus
:func:`resource_fields` for the host), whether they come from the live processor (spans that
are not tasks) or from a file.

What goes where:

- identity, at start: :data:`~tasktrace.core.attributes.TASK_ID`,
  :data:`~tasktrace.core.attributes.PARENT_ID` (when the task has a parent) and
  :data:`~tasktrace.core.attributes.SUBPROCESS` (only when ``True``: absent means ``False``);
- ``hostname`` and ``machine``: the resource's ``host.name`` and ``tasktrace.machine``, never
  span attributes;
- ``label``: the span name; ``start_time`` / ``finish_time``: the span's timestamps;
  ``trace_id`` / ``span_id``: its context; ``subtasks``: its children;
- every other field that is set, at finish, under its key in
  :data:`~tasktrace.core.attributes.FIELD_ATTRIBUTES` (``tasktrace.task.status``,
  ``tasktrace.task.error``, the measurements);
- the span status: ``finished`` → ``OK``, ``failed`` → ``ERROR`` with the task's ``error`` as
  the description, anything else ``UNSET``;
- extra data: ``tasktrace.data.*`` / ``tasktrace.data_json.*`` within the span's budget
  (:mod:`tasktrace.core.budget`), at start and again at finish.

Thread-safety: pure functions of their arguments (the budget's warnings are once per process).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import Status, StatusCode

from tasktrace.core import attributes as attr
from tasktrace.core.budget import bounded_data_attributes
from tasktrace.core.record import TaskRecord
from tasktrace.core.status import TaskStatus

__all__ = [
    "data_attributes",
    "finish_attributes",
    "host_attributes",
    "resource_fields",
    "span_attributes",
    "span_fields",
    "span_status",
    "start_attributes",
]

_START_FIELDS: Final = frozenset({"parent_id", "subprocess"})
_RESOURCE_FIELDS: Final = frozenset({"hostname", "machine"})
_FINISH_KEYS: Final = tuple(
    (name, key)
    for name, key in attr.FIELD_ATTRIBUTES.items()
    if name not in _START_FIELDS and name not in _RESOURCE_FIELDS and name != "status"
)
_STATUS: Final = attr.STATUS
_OK: Final = Status(StatusCode.OK)
_UNSET: Final = Status(StatusCode.UNSET)


def data_attributes(label: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """Return extra ``data`` of task ``label`` as span attributes, within the span's budget.

    Raises:
        TypeError: A value cannot be encoded (the message names the key).
    """
    if not data:
        return {}
    return bounded_data_attributes(label, attr.data_to_attributes(data))


def start_attributes(task: TaskRecord) -> dict[str, Any]:
    """Return the attributes a task's span starts with: identity and extra data (see above).

    Raises:
        TypeError: Extra data that cannot be encoded (the message names the key).
    """
    d = task.__dict__
    attrs: dict[str, Any] = {attr.TASK_ID: str(d["task_id"])}
    if d["parent_id"] is not None:
        attrs[attr.PARENT_ID] = str(d["parent_id"])
    if d["subprocess"]:
        attrs[attr.SUBPROCESS] = True
    extra = task.__pydantic_extra__
    if extra:
        attrs.update(data_attributes(d["label"], extra))
    return attrs


def finish_attributes(task: TaskRecord, *, data: bool = True) -> dict[str, Any]:
    """Return the attributes a task's span gets at finish: every other field that is set.

    Args:
        task: The finished task (its fields hold the final measurements, status and error).
        data: Include the extra data (``False`` when the caller encodes it itself).

    Raises:
        TypeError: Extra data that cannot be encoded (the message names the key).
    """
    d = task.__dict__
    status = d["status"]
    attrs: dict[str, Any] = {_STATUS: status.value if type(status) is TaskStatus else status}
    for name, key in _FINISH_KEYS:  # each holds a number, a string or a boolean, or None
        value = d[name]
        if value is not None:
            attrs[key] = value
    extra = task.__pydantic_extra__
    if data and extra:
        attrs.update(data_attributes(d["label"], extra))
    return attrs


def span_attributes(task: TaskRecord) -> dict[str, Any]:
    """Return all the attributes of a finished task's span (start's, then finish's).

    Raises:
        TypeError: Extra data that cannot be encoded (the message names the key).
    """
    attrs = start_attributes(task)
    attrs.update(finish_attributes(task))
    return attrs


def span_status(status: TaskStatus, error: str | None) -> Status:
    """Return the span status of a task that ended with ``status`` and ``error`` (see above)."""
    if status is TaskStatus.FINISHED:
        return _OK
    if status is TaskStatus.FAILED:
        return Status(StatusCode.ERROR, error)
    return _UNSET


def host_attributes(hostname: str, machine: str | None) -> dict[str, str]:
    """Return the resource attributes of the host a task ran on (``host.name``, machine)."""
    attrs = {attr.HOST_NAME: hostname}
    if machine is not None:
        attrs[attr.MACHINE] = machine
    return attrs


def resource_fields(resource: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``hostname`` and ``machine`` from a span's resource attributes (those present)."""
    fields: dict[str, Any] = {}
    host = resource.get(attr.HOST_NAME)
    if host is not None:
        fields["hostname"] = str(host)
    machine = resource.get(attr.MACHINE)
    if machine is not None:
        fields["machine"] = str(machine)
    return fields


def span_fields(span: ReadableSpan) -> dict[str, Any]:
    """Return the task fields and extra data of ``span`` (the inverse of the task → span side).

    From the attributes (:func:`~tasktrace.core.attributes.attributes_to_fields`: known keys,
    extra data, and a non-task span's own attributes under their own names), plus:

    - ``status``: the ``tasktrace.task.status`` attribute, else ``failed`` for an ``ERROR``
      span, ``finished`` for an ended one, ``running`` otherwise (a value of
      :class:`~tasktrace.core.status.TaskStatus`);
    - ``error``: the attribute, else a failed span's status description (when it has one);
    - ``finish_time`` (UNIX seconds) from the end timestamp, and, for a span that is not a
      task (no :data:`~tasktrace.core.attributes.TASK_ID`), ``duration`` from the timestamps
      when no attribute gives it (a task's duration is its own measurement, or unknown).

    Identity (``label``, ids, parent) and the host are left to the caller.
    """
    attributes = span.attributes or {}
    fields = attr.attributes_to_fields(attributes)
    status = span.status
    if "status" not in fields:
        if status.status_code is StatusCode.ERROR:
            fields["status"] = TaskStatus.FAILED.value
        elif span.end_time is not None:
            fields["status"] = TaskStatus.FINISHED.value
        else:
            fields["status"] = TaskStatus.RUNNING.value
    if "error" not in fields and status.description and fields["status"] == TaskStatus.FAILED.value:
        fields["error"] = status.description
    if span.end_time is not None:
        fields["finish_time"] = span.end_time / 1_000_000_000  # int / int: correctly rounded
        task = attr.TASK_ID in attributes
        if not task and "duration" not in fields and span.start_time is not None:
            fields["duration"] = (span.end_time - span.start_time) / 1_000_000_000
    return fields
