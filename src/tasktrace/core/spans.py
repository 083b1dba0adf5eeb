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

- at start, only the extra data (``tasktrace.data.*``, what a sampler and a processor's
  ``on_start`` see); a task without extra data starts its span with no attributes, which saves
  the SDK's cleaning of a second attribute set on every task (:doc:`/performance`);
- identity, at finish (:func:`identity_attributes`): :data:`~tasktrace.core.attributes.TASK_ID`,
  :data:`~tasktrace.core.attributes.PARENT_ID` (when the task has a parent) and
  :data:`~tasktrace.core.attributes.SUBPROCESS` (only when ``True``: absent means ``False``);
- ``hostname`` and ``machine``: the resource's ``host.name`` and ``tasktrace.machine``, never
  span attributes;
- ``label``: the span name; ``start_time`` / ``finish_time``: the span's timestamps;
  ``trace_id`` / ``span_id``: its context; ``subtasks``: its children;
- every other field that is set, at finish, under its key in
  :data:`~tasktrace.core.attributes.FIELD_ATTRIBUTES` (``tasktrace.task.status``,
  ``tasktrace.task.error``, the measurements), each float measurement rounded to the precision
  of its source (:data:`TIME_DECIMALS`, :data:`ENERGY_DECIMALS`): a span says
  ``cpu_time_s = 0.154549``, not ``0.15454899999999983``. The task file keeps the values as
  measured; a span converted from it is rounded by this same mapping, so it equals the live one;
- the span status: ``finished`` → ``OK``, ``failed`` → ``ERROR`` with the task's ``error`` as
  the description, anything else ``UNSET``;
- extra data: ``tasktrace.data.*`` / ``tasktrace.data_json.*`` within the span's budget
  (:mod:`tasktrace.core.budget`), at start and again at finish (data set while the task ran).

The span of a running task therefore carries no task id: the task-tree processor knows task
spans without it (:class:`~tasktrace.tree.processor.TaskSpanStart`), and a
pending snapshot span (:mod:`tasktrace.export.pending`) names its real span instead.

Thread-safety: pure functions of their arguments (the budget's warnings are once per process).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from operator import itemgetter
from typing import Any, Final

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, Status, StatusCode

from tasktrace.core import attributes as attr
from tasktrace.core.budget import bounded_data_attributes
from tasktrace.core.record import TaskRecord
from tasktrace.core.status import TaskStatus

__all__ = [
    "ENERGY_DECIMALS",
    "STATUS_OK",
    "TIME_DECIMALS",
    "data_attributes",
    "finish_attributes",
    "host_attributes",
    "identity_attributes",
    "resource_fields",
    "span_attributes",
    "span_fields",
    "span_ids",
    "span_status",
    "start_attributes",
    "start_data",
]

TIME_DECIMALS: Final = 6
"""Decimals of a span's times in seconds (1 µs): ``duration`` (``perf_counter``), ``cpu_time`` and
``children_cpu_time_s`` (``getrusage``, whose resolution is 1 µs)."""
ENERGY_DECIMALS: Final[dict[str | None, int]] = {
    "rapl": 6,  # powercap energy_uj: 1 µJ counters
    "nvml-counter": 3,  # nvmlDeviceGetTotalEnergyConsumption: mJ
    "nvml-sampled": 3,  # nvmlDeviceGetPowerUsage (mW) integrated over time: 1 mJ at best
}
"""Decimals of a span's energy in joules, by the field's ``*_energy_source``: 1 µJ for RAPL's
µJ counters, 1 mJ for NVML's. Any other source (Prometheus, a value set by hand) and
``dram_energy_j`` (RAPL) get 6 (1 µJ: below any power meter's resolution, it only drops the
binary noise)."""

_START_FIELDS: Final = frozenset({"parent_id", "subprocess"})
_RESOURCE_FIELDS: Final = frozenset({"hostname", "machine"})
_TIME_FIELDS: Final = frozenset({"duration", "cpu_time", "children_cpu_time_s"})
_ENERGY_SOURCES: Final = {
    "system_power": "system_energy_source",
    "cpu_power": "cpu_energy_source",
    "gpu_power": "gpu_energy_source",
    "dram_energy_j": "",  # always RAPL's
}
_FINISH_KEYS: Final = tuple(
    (name, key)
    for name, key in attr.FIELD_ATTRIBUTES.items()
    if name not in _START_FIELDS and name not in _RESOURCE_FIELDS and name != "status"
)
# Every finished task has these three; the others are set by meters or by hand, mostly not.
_COMMON: Final = ("duration", "cpu_time", "peak_memory")
_RARE_KEYS: Final = tuple((name, key) for name, key in _FINISH_KEYS if name not in _COMMON)
_rare_values: Final = itemgetter(*(name for name, _ in _RARE_KEYS))
_NO_RARE: Final = (None,) * len(_RARE_KEYS)
_DURATION: Final = attr.DURATION_S
_CPU_TIME: Final = attr.CPU_TIME_S
_PEAK_MEMORY: Final = attr.PEAK_MEMORY_BYTES
_STATUS: Final = attr.STATUS
_STATUS_TEXT: Final = {status: status.value for status in TaskStatus}  # .value is a property
_OK: Final = Status(StatusCode.OK)
STATUS_OK: Final = _OK
"""The span status of a finished task (``span_status(FINISHED, ...)``; one shared object)."""
_SCALES: Final = {decimals: float(10**decimals) for decimals in range(16)}
_TIME_SCALE: Final = _SCALES[TIME_DECIMALS]
_UNSET: Final = Status(StatusCode.UNSET)


def _span_ids_getter() -> Callable[[SpanContext], tuple[int, int]]:
    """Return :data:`span_ids`: by index where a span context is the API's tuple, as it is."""
    probe = SpanContext(1, 2, is_remote=False)
    if isinstance(probe, tuple) and probe[:2] == (probe.trace_id, probe.span_id) == (1, 2):
        return itemgetter(0, 1)
    return lambda context: (context.trace_id, context.span_id)  # pragma: no cover - another API


span_ids: Final = _span_ids_getter()
"""``(trace_id, span_id)`` of a :class:`~opentelemetry.trace.SpanContext`, in one C call.

The API's span context is a tuple whose fields begin with those two (checked at import); its
properties are a Python frame each, read on every task's start."""


def data_attributes(label: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """Return extra ``data`` of task ``label`` as span attributes, within the span's budget.

    Raises:
        TypeError: A value cannot be encoded (the message names the key).
    """
    if not data:
        return {}
    return bounded_data_attributes(label, attr.data_to_attributes(data))


def start_attributes(task: TaskRecord) -> dict[str, Any]:
    """Return the attributes a task's span starts with: its extra data (see above).

    Empty for a task without extra data (the usual case: its span starts with no attributes).

    Raises:
        TypeError: Extra data that cannot be encoded (the message names the key).
    """
    return start_data(task)[1]


def start_data(task: TaskRecord) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return a starting task's extra data encoded, and the attributes its span starts with.

    The first is :func:`~tasktrace.core.attributes.data_to_attributes` of the data (before
    the span's budget: a snapshot, arrays copied); passed to :func:`finish_attributes` as
    ``data_at_start``, it spares the finish re-writing data that did not change. The second is
    :func:`start_attributes`. Both empty for a task without extra data.

    Raises:
        TypeError: Extra data that cannot be encoded (the message names the key).
    """
    extra = task.__pydantic_extra__
    if not extra:
        return {}, {}
    encoded = attr.data_to_attributes(extra)
    return encoded, bounded_data_attributes(task.__dict__["label"], encoded)


def identity_attributes(
    task: TaskRecord, task_id: str | None = None, parent_id: str | None = None
) -> dict[str, Any]:
    """Return a task span's identity attributes: task id, parent id, subprocess (see above).

    Args:
        task: The task.
        task_id: ``str(task.task_id)``, when the caller has it already.
        parent_id: ``str(task.parent_id)``, when the caller has it already.
    """
    d = task.__dict__
    attrs: dict[str, Any] = {attr.TASK_ID: task_id or str(d["task_id"])}
    if d["parent_id"] is not None:
        attrs[attr.PARENT_ID] = parent_id or str(d["parent_id"])
    if d["subprocess"]:
        attrs[attr.SUBPROCESS] = True
    return attrs


def _round(value: float, decimals: int) -> float:
    """Return ``value`` rounded to ``decimals`` decimals: the double nearest ``k / 10**decimals``.

    ``floor(value * 10**decimals + 0.5) / 10**decimals`` in float arithmetic (``// 1.0``): a
    quarter of ``round(value, decimals)``'s cost (which goes through a decimal string), the
    same result but where ``value`` lies within a rounding error of a half step, and halves
    round up. A value that cannot be rounded (infinite, NaN, beyond 2**53 steps) is returned as
    it is.
    """
    scale = _SCALES[decimals]
    rounded = (value * scale + 0.5) // 1.0 / scale
    return rounded if rounded == rounded else value  # noqa: PLR0124 - NaN: value was inf or NaN


def _rounded(name: str, value: Any, d: Mapping[str, Any]) -> Any:
    """Return a finish field's span attribute value: a float rounded to its source's precision."""
    if type(value) is not float:
        return value
    if name in _TIME_FIELDS:
        return _round(value, TIME_DECIMALS)
    source = _ENERGY_SOURCES.get(name)
    if source is None:
        return value
    return _round(value, ENERGY_DECIMALS.get(d[source] if source else "rapl", 6))


def finish_attributes(  # noqa: PLR0912 - every task runs it: identity inline
    task: TaskRecord,
    *,
    data: bool = True,
    identity: bool = True,
    task_id: str | None = None,
    parent_id: str | None = None,
    rare: bool = True,
    data_at_start: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Return the attributes a task's span gets at finish: identity and every field that is set.

    Float measurements are rounded to their source's precision (see the module docstring).

    Args:
        task: The finished task (its fields hold the final measurements, status and error).
        data: Include the extra data (``False`` when the caller encodes it itself).
        identity: Include :func:`identity_attributes` (``False`` for a pending snapshot span).
        task_id: ``str(task.task_id)``, when the caller has it already.
        parent_id: ``str(task.parent_id)``, when the caller has it already.
        rare: Look at the fields that are rarely set (energy, GPU, error, children's figures);
            ``False`` when the caller knows they are all unset (saves scanning 18 fields).
        data_at_start: The data as the span started with it (:func:`start_data`'s first):
            when the data encodes to the same now, it is on the span already and left out
            (not re-checked against the budget, not re-cleaned by the SDK).

    Raises:
        TypeError: Extra data that cannot be encoded (the message names the key).
    """
    d = task.__dict__
    if identity:  # identity_attributes, inline (a frame less on every task)
        attrs: dict[str, Any] = {attr.TASK_ID: task_id or str(d["task_id"])}
        if d["parent_id"] is not None:
            attrs[attr.PARENT_ID] = parent_id or str(d["parent_id"])
        if d["subprocess"]:
            attrs[attr.SUBPROCESS] = True
    else:
        attrs = {}
    status = d["status"]
    attrs[_STATUS] = _STATUS_TEXT.get(status, status)
    # The two times, rounded as _round does (inline: this runs on every task).
    value = d["duration"]
    if type(value) is float:
        rounded = (value * _TIME_SCALE + 0.5) // 1.0 / _TIME_SCALE
        attrs[_DURATION] = rounded if rounded == rounded else value  # noqa: PLR0124
    elif value is not None:
        attrs[_DURATION] = value
    value = d["cpu_time"]
    if type(value) is float:
        rounded = (value * _TIME_SCALE + 0.5) // 1.0 / _TIME_SCALE
        attrs[_CPU_TIME] = rounded if rounded == rounded else value  # noqa: PLR0124
    elif value is not None:
        attrs[_CPU_TIME] = value
    value = d["peak_memory"]
    if value is not None:
        attrs[_PEAK_MEMORY] = value
    if rare:
        values = _rare_values(d)
        if values != _NO_RARE:  # one C comparison when no meter and nobody set the others
            for (name, key), value in zip(_RARE_KEYS, values, strict=True):
                if value is not None:
                    attrs[key] = _rounded(name, value, d)
    extra = task.__pydantic_extra__
    if data and extra:
        encoded = attr.data_to_attributes(extra)
        if encoded != data_at_start:
            attrs.update(bounded_data_attributes(d["label"], encoded))
    return attrs


def span_attributes(task: TaskRecord) -> dict[str, Any]:
    """Return all the attributes of a finished task's span: start's and finish's, in its order.

    Start's (the extra data) are a subset of finish's, which a live span ends with in this
    order: identity, fields, data.

    Raises:
        TypeError: Extra data that cannot be encoded (the message names the key).
    """
    return finish_attributes(task)


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
