"""Span attribute names, and the one mapping each way between Task fields and span attributes.

Every attribute key tasktrace writes is defined here once. Semantic-convention names are used
where one exists (``host.name``); everything else lives in the ``tasktrace.`` namespace with
the unit in the name (``_s`` seconds, ``_bytes``, ``_j`` joules).

The mapping rules for the user's extra task data (``Task("x", tags=["a"], epoch=3)``):

- ``str``, ``bool``, ``float`` and ``int`` within int64 become ``tasktrace.data.<key>`` as is;
- a list or tuple whose items are all ``str``, all ``bool``, or all numbers (ints within int64
  and floats) becomes an array attribute under the same key (so ``tags`` is a string array);
- anything else that JSON can encode (dicts, mixed lists, big ints, ``None``) becomes a JSON
  string under ``tasktrace.data_json.<key>`` and is decoded back on the way in.

A value given as a type JSON lacks (``datetime``, ``Path``, ``set``, ``bytes``, NumPy and pandas
values, …) is first turned into its JSON form as pydantic writes it
(:func:`tasktrace.core.extra_data.normalise_data`, re-exported here), so it maps by the rules
above as that form: a ``datetime`` is a string attribute holding its ISO 8601 text. NaN and
infinite floats stay doubles on the span (OpenTelemetry allows them; in a JSON string
attribute they are ``NaN``, ``Infinity``, ``-Infinity``, as Python's :mod:`json` writes them).

On a running task's span these attributes stay within a size budget
(:mod:`tasktrace.core.budget`); a value over it is left off the span and its key listed in
:data:`DATA_OMITTED` (the task file keeps every value).

Non-task spans keep their own attribute names; on the way in, attributes outside the
``tasktrace.`` namespace become extra data of the node under their own (dotted) names.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any, Final

from tasktrace.core.extra_data import TAGS, normalise_data

__all__ = [
    "DATA_JSON_PREFIX",
    "DATA_OMITTED",
    "DATA_PREFIX",
    "FIELD_ATTRIBUTES",
    "OMITTED_DATA_KEY",
    "TAGS",
    "TASK_ID",
    "attributes_to_fields",
    "data_to_attributes",
    "fields_to_attributes",
    "normalise_data",
]

NAMESPACE: Final = "tasktrace."

TASK_ID: Final = "tasktrace.task.id"
"""The task's UUID (string). Its presence marks a span as a tasktrace Task."""
PARENT_ID: Final = "tasktrace.task.parent_id"
"""The parent task's UUID (string), when the task has a parent."""
SUBPROCESS: Final = "tasktrace.task.subprocess"
"""``True`` when the task ran in a subprocess of its parent task (bool)."""
STATUS: Final = "tasktrace.task.status"
"""The task's final :class:`~tasktrace.TaskStatus` value (string, e.g. ``"finished"``)."""
HOST_NAME: Final = "host.name"
"""Semantic-convention host name: the task's ``hostname`` field."""
MACHINE: Final = "tasktrace.machine"
"""Project-meaningful machine label (the seed's ``machine`` field)."""
DURATION_S: Final = "tasktrace.task.duration_s"
"""Wall-clock duration in seconds, from ``time.perf_counter``."""
CPU_TIME_S: Final = "tasktrace.task.cpu_time_s"
"""User + system CPU seconds of this process over the task, from ``getrusage(RUSAGE_SELF)``."""
PEAK_MEMORY_BYTES: Final = "tasktrace.task.peak_memory_bytes"
"""Peak resident set size (RSS high-water mark) in bytes over the task."""
PEAK_GPU_MEMORY_BYTES: Final = "tasktrace.task.peak_gpu_memory_bytes"
"""Peak GPU memory in bytes: torch's ``max_memory_allocated``, or NVML's sampled process memory
(:data:`PEAK_GPU_MEMORY_SOURCE` says which)."""
SYSTEM_ENERGY_J: Final = "tasktrace.task.system_energy_j"
"""Whole-system energy over the task in joules (the seed's ``system_power``)."""
CPU_ENERGY_J: Final = "tasktrace.task.cpu_energy_j"
"""CPU energy over the task in joules (the seed's ``cpu_power``)."""
GPU_ENERGY_J: Final = "tasktrace.task.gpu_energy_j"
"""GPU energy over the task in joules (the seed's ``gpu_power``)."""
CHILDREN_CPU_TIME_S: Final = "tasktrace.task.children_cpu_time_s"
"""CPU seconds of child processes reaped during the task (``getrusage(RUSAGE_CHILDREN)``)."""
CHILDREN_PEAK_RSS_BYTES: Final = "tasktrace.task.children_peak_rss_bytes"
"""Largest peak RSS in bytes among reaped child processes (``RUSAGE_CHILDREN`` ``ru_maxrss``)."""
SYSTEM_ENERGY_SOURCE: Final = "tasktrace.task.system_energy_source"
"""Source of ``system_power``: ``"prometheus"``."""
SYSTEM_ENERGY_SCOPE: Final = "tasktrace.task.system_energy_scope"
"""What ``system_power`` covers: ``"query"`` (whatever the power query measures)."""
SYSTEM_ENERGY_SHORT_TASK: Final = "tasktrace.task.system_energy_short_task"
"""``True`` when the task was shorter than the resolution of ``system_power``'s source."""
CPU_ENERGY_SOURCE: Final = "tasktrace.task.cpu_energy_source"
"""Source of ``cpu_power``: ``"rapl"`` or ``"prometheus"``."""
CPU_ENERGY_SCOPE: Final = "tasktrace.task.cpu_energy_scope"
"""What ``cpu_power`` covers: ``"package"``, ``"platform"`` (RAPL psys) or ``"query"``."""
CPU_ENERGY_SHORT_TASK: Final = "tasktrace.task.cpu_energy_short_task"
"""``True`` when the task was shorter than the update period of ``cpu_power``'s counter."""
GPU_ENERGY_SOURCE: Final = "tasktrace.task.gpu_energy_source"
"""Source of ``gpu_power``: ``"nvml-counter"``, ``"nvml-sampled"`` or ``"prometheus"``."""
GPU_ENERGY_SCOPE: Final = "tasktrace.task.gpu_energy_scope"
"""What ``gpu_power`` covers: ``"device"`` (the visible GPUs) or ``"query"``."""
GPU_ENERGY_SHORT_TASK: Final = "tasktrace.task.gpu_energy_short_task"
"""``True`` when the task was shorter than the update period of ``gpu_power``'s source."""
DRAM_ENERGY_J: Final = "tasktrace.task.dram_energy_j"
"""DRAM energy over the task in joules, from RAPL ``dram`` zones."""
PEAK_GPU_MEMORY_SOURCE: Final = "tasktrace.task.peak_gpu_memory_source"
"""Source of ``peak_gpu_memory``: ``"torch"`` or ``"nvml-sampled"``."""
PENDING_SPAN_ID: Final = "tasktrace.pending.span_id"
"""Only on a pending snapshot span: the id (16 hex digits) of the running span it describes."""
ERROR: Final = "tasktrace.task.error"
"""Why the task failed or was cancelled (``"ValueError: bad value"``), when it did."""
FOREIGN_SPAN: Final = "tasktrace.task.foreign_span"
"""Only in files: marks a tree node built from a non-task span (not written to spans)."""

DATA_PREFIX: Final = "tasktrace.data."
"""Prefix of the user's extra task data that maps to a plain attribute value."""
DATA_JSON_PREFIX: Final = "tasktrace.data_json."
"""Prefix of the user's extra task data that is stored as a JSON string."""
DATA_OMITTED: Final = "tasktrace.data_omitted"
"""Keys of the task's extra data left off the span, over the span's size budget (string array;
see :mod:`tasktrace.core.budget`). Their full values are in the task file; a task rebuilt from
the spans gets them as its ``data_omitted`` extra data (:data:`OMITTED_DATA_KEY`)."""
OMITTED_DATA_KEY: Final = "data_omitted"
"""The extra-data key under which a task rebuilt from spans lists the keys its span left off."""

FIELD_ATTRIBUTES: Final[dict[str, str]] = {
    "parent_id": PARENT_ID,
    "subprocess": SUBPROCESS,
    "status": STATUS,
    "hostname": HOST_NAME,
    "machine": MACHINE,
    "duration": DURATION_S,
    "cpu_time": CPU_TIME_S,
    "peak_memory": PEAK_MEMORY_BYTES,
    "peak_gpu_memory": PEAK_GPU_MEMORY_BYTES,
    "system_power": SYSTEM_ENERGY_J,
    "cpu_power": CPU_ENERGY_J,
    "gpu_power": GPU_ENERGY_J,
    "children_cpu_time_s": CHILDREN_CPU_TIME_S,
    "children_peak_rss_bytes": CHILDREN_PEAK_RSS_BYTES,
    "error": ERROR,
    # --- energy fields (issue 4) ---
    "system_energy_source": SYSTEM_ENERGY_SOURCE,
    "system_energy_scope": SYSTEM_ENERGY_SCOPE,
    "system_energy_short_task": SYSTEM_ENERGY_SHORT_TASK,
    "cpu_energy_source": CPU_ENERGY_SOURCE,
    "cpu_energy_scope": CPU_ENERGY_SCOPE,
    "cpu_energy_short_task": CPU_ENERGY_SHORT_TASK,
    "gpu_energy_source": GPU_ENERGY_SOURCE,
    "gpu_energy_scope": GPU_ENERGY_SCOPE,
    "gpu_energy_short_task": GPU_ENERGY_SHORT_TASK,
    "dram_energy_j": DRAM_ENERGY_J,
    # --- GPU memory source (issue 17) ---
    "peak_gpu_memory_source": PEAK_GPU_MEMORY_SOURCE,
}
"""Task field name → span attribute key, for every field written as an attribute.

``task_id`` maps to :data:`TASK_ID`; ``label`` is the span name; ``start_time`` and
``finish_time`` are the span's start and end timestamps; ``trace_id`` and ``span_id`` come from
the span context; ``subtasks`` are the span's children.
"""

_ATTRIBUTE_FIELDS: Final = {v: k for k, v in FIELD_ATTRIBUTES.items()}
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


def _scalar_ok(value: object) -> bool:
    if isinstance(value, bool | str | float):
        return True
    return isinstance(value, int) and _INT64_MIN <= value <= _INT64_MAX


def _array_ok(value: Sequence[object]) -> bool:
    if not value:
        return False  # an empty array has no type; keep it exact as JSON
    if all(isinstance(v, str) for v in value) or all(isinstance(v, bool) for v in value):
        return True
    return (
        all(isinstance(v, float) or (type(v) is int and _scalar_ok(v)) for v in value)
        and len({type(v) for v in value}) == 1
    )


def data_to_attributes(data: Mapping[str, Any]) -> dict[str, Any]:
    """Map the user's extra task data to span attributes (rules in the module docstring).

    Args:
        data: Extra data keyword arguments of a Task, e.g. ``{"tags": ["a"], "epoch": 3}``.

    Returns:
        Attribute key → OTel-compatible value.

    Raises:
        TypeError: A value that cannot be encoded as JSON (names the key).
    """
    attrs: dict[str, Any] = {}
    for key, value in data.items():
        if _scalar_ok(value):
            attrs[DATA_PREFIX + key] = value
        elif isinstance(value, list | tuple) and _array_ok(value):
            attrs[DATA_PREFIX + key] = list(value)
        else:
            try:
                attrs[DATA_JSON_PREFIX + key] = json.dumps(value, separators=(",", ":"))
            except (TypeError, ValueError) as e:  # not normalised (normalise_data) first
                raise TypeError(f"task data {key!r} cannot be stored as JSON: {e}") from None
    return attrs


def fields_to_attributes(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Map Task field values to span attributes; ``None`` values are left out.

    Args:
        fields: Task field name → value (as in ``Task.__dict__``); unknown names are ignored.

    Returns:
        Attribute key → value (UUIDs and enums as strings).
    """
    attrs: dict[str, Any] = {}
    keys = FIELD_ATTRIBUTES
    # A whole task's fields come out in the table's order; a few measured values (the finish
    # path) are looked up one by one instead of scanning the whole table.
    names = fields if len(fields) < len(keys) // 2 else keys
    for name in names:
        value = fields.get(name)
        if value is None:
            continue
        key = keys.get(name)
        if key is None:
            continue
        if type(value) is float or type(value) is int or type(value) is str:
            attrs[key] = value
        elif isinstance(value, uuid.UUID):
            attrs[key] = str(value)
        elif isinstance(value, Enum):  # TaskStatus
            attrs[key] = value.value
        else:
            attrs[key] = value
    return attrs


def attributes_to_fields(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Map span attributes back to Task field values and extra data (the inverse mapping).

    Args:
        attributes: A span's attributes.

    Returns:
        Field name → value for every known attribute, ``task_id`` from :data:`TASK_ID`, extra
        data decoded from ``tasktrace.data.*`` / ``tasktrace.data_json.*`` (and the keys of
        :data:`DATA_OMITTED` as ``data_omitted``), and other
        attributes outside the ``tasktrace.`` namespace under their own names.
    """
    fields: dict[str, Any] = {}
    for key, value in attributes.items():
        field = _ATTRIBUTE_FIELDS.get(key)
        if field is not None:
            fields[field] = value
        elif key == TASK_ID:
            fields["task_id"] = value
        elif key == DATA_OMITTED:  # what the span could not carry: say so in the rebuilt task
            fields[OMITTED_DATA_KEY] = list(value)
        elif key.startswith(DATA_PREFIX):
            fields[key[len(DATA_PREFIX) :]] = list(value) if isinstance(value, tuple) else value
        elif key.startswith(DATA_JSON_PREFIX):
            fields[key[len(DATA_JSON_PREFIX) :]] = json.loads(value)
        elif not key.startswith(NAMESPACE):
            fields[key] = list(value) if isinstance(value, tuple) else value
    return fields
