"""The task record: the seed's fields and tasktrace's, as written to and read from task files.

:class:`TaskRecord` is the data half of :class:`tasktrace.Task` (the façade adds the life
cycle): every field, its units and the source of its number, the model configuration that keeps
LensKit's files loading unchanged, and the serialisation of a tree to one line of JSON.
"""

from __future__ import annotations

import functools
import json
import logging
import operator
import re
import uuid
from typing import TYPE_CHECKING, Annotated, Any, Final, NoReturn

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializeAsAny,
)
from pydantic_core import PydanticSerializationError

from tasktrace.core.ids import HOSTNAME, new_task_id
from tasktrace.core.settings import get_settings
from tasktrace.core.status import TaskStatus
from tasktrace.core.units import friendly_duration
from tasktrace.core.warn import WarnOnce, quoted

__all__ = [
    "FIELD_DEFAULTS",
    "LABEL_ONLY",
    "NO_EXTRA",
    "TaskRecord",
    "TaskStatus",
    "bind_task_class",
    "dump_json",
    "new_node",
    "node_class",
    "other_process_cpu",
    "own_containers",
]

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)


def _machine() -> str | None:
    return get_settings().machine


def _dict_extract_values(data: object) -> Any:
    """Accept subtasks as a list or as LensKit's older ``{id: task}`` dict."""
    if isinstance(data, dict):
        return list(data.values())
    return data


# Called by pydantic's serialiser for every such field of every task written to a file: C
# callables (partials of operator.is_) cost a third less than Python functions doing the same.
_is_none: Final = functools.partial(operator.is_, None)
_is_false: Final = functools.partial(operator.is_, False)


_Subtasks = Annotated[list[SerializeAsAny["Task"]], BeforeValidator(_dict_extract_values)]
"""Subtasks: :class:`tasktrace.Task` objects (resolved when ``Task`` is defined), accepted as a
list or as LensKit's older ``{id: task}`` dict."""


class TaskRecord(BaseModel):
    """The fields of a task: LensKit's seed fields first, then tasktrace's.

    tasktrace's own fields are left out of files while unset, so LensKit files round-trip
    unchanged; unknown keys (extra data, fields of a newer tasktrace) are kept. Subtasks are
    :class:`tasktrace.Task` objects.

    A NaN or infinite float, in a field or in extra data (a diverged loss), is written to JSON
    as the string ``"NaN"``, ``"Infinity"`` or ``"-Infinity"`` (pydantic's
    ``ser_json_inf_nan="strings"``; JSON has no such numbers, and ``null`` would read as "not
    measured"). Read back, by tasktrace or by LensKit's ``Task``, a field gets the float; extra
    data gets it from tasktrace's ``Task`` (:func:`~tasktrace.core.extra_data.restore_non_finite`).
    """

    model_config = ConfigDict(
        extra="allow", validate_by_name=True, validate_by_alias=True, ser_json_inf_nan="strings"
    )

    task_id: uuid.UUID = Field(default_factory=new_task_id, frozen=True)
    """The task ID (a unique version-4 UUID, see :mod:`tasktrace.core.ids`; LensKit files keep
    theirs)."""
    parent_id: uuid.UUID | None = None
    """The parent task's ID, or ``None`` for a top-level task."""
    subprocess: bool = False
    """Whether this task ran in a subprocess of its parent. Subprocess task CPU times are *not*
    included in the parent task's ``cpu_time``; :meth:`total_cpu` adds them."""
    label: str
    """Human-readable task label (the span name)."""
    hostname: str = Field(default_factory=lambda: HOSTNAME)
    """The host name on which the task ran (``socket.gethostname()``)."""
    machine: str | None = Field(default_factory=_machine)
    """Project-meaningful machine label from the ``machine`` setting (see :doc:`/configuration`)."""
    status: TaskStatus = TaskStatus.PENDING
    """The task's current status."""
    start_time: float | None = None
    """Task start time, UNIX seconds (``time.time_ns()`` / 1e9; equals the span start)."""
    finish_time: float | None = None
    """Task completion time, UNIX seconds (equals the span end)."""
    duration: float | None = None
    """Task duration in seconds, measured with :func:`time.perf_counter`, so it may disagree
    slightly with ``finish_time - start_time``. While running: the duration so far."""
    cpu_time: float | None = None
    """CPU seconds (user + system, all threads) this process used during the task, from
    ``getrusage(RUSAGE_SELF)``. Excludes child processes."""
    peak_memory: int | None = None
    """Peak RSS in bytes during the task: the kernel's high-water mark (``ru_maxrss`` /
    ``VmHWM``). The task's own peak on Linux when the mark was reset at its start
    (``reset_hwm``), else the peak since the last reset; elsewhere the process's lifetime peak.
    A parent's peak is at least each child's."""
    peak_gpu_memory: int | None = None
    """Peak GPU memory in bytes. Where the program uses torch with CUDA: torch's exact
    high-water mark (``torch.cuda.max_memory_allocated`` on the current device). Otherwise,
    where NVML can measure: the largest sampled GPU memory used by this process and its children
    (``nvmlDeviceGetComputeRunningProcesses``, summed over the visible GPUs). Else ``None``;
    ``peak_gpu_memory_source`` says which."""
    system_power: float | None = Field(
        default=None, validation_alias=AliasChoices("system_power", "chassis_power")
    )
    """Estimated total system energy over the task, in joules (despite the seed's name)."""
    cpu_power: float | None = None
    """Estimated CPU energy over the task, in joules (despite the seed's name)."""
    gpu_power: float | None = None
    """Estimated GPU energy over the task, in joules (despite the seed's name)."""
    subtasks: _Subtasks = Field(default_factory=list)
    """This task's subtasks (tasks and, by default, non-task spans run inside it)."""

    # tasktrace fields: left out of files while unset, so LensKit files round-trip unchanged.
    trace_id: str | None = Field(default=None, exclude_if=_is_none)
    """The OpenTelemetry trace id (32 hex digits), to join the file with a trace backend."""
    span_id: str | None = Field(default=None, exclude_if=_is_none)
    """The OpenTelemetry span id (16 hex digits) of this task's span."""
    children_cpu_time_s: float | None = Field(default=None, exclude_if=_is_none)
    """CPU seconds of child processes reaped during the task (``getrusage(RUSAGE_CHILDREN)``),
    set by ``tasktrace run`` for the command it runs, less the CPU its subprocess subtasks
    report (so no CPU is counted twice); included in :meth:`total_cpu`."""
    children_peak_rss_bytes: int | None = Field(default=None, exclude_if=_is_none)
    """Largest peak RSS in bytes among reaped child processes (``RUSAGE_CHILDREN``
    ``ru_maxrss``), set by ``tasktrace run``."""
    foreign_span: bool = Field(default=False, exclude_if=_is_false)
    """``True`` for a tree node built from a span that is not a Task (a user's own span)."""
    error: str | None = Field(default=None, exclude_if=_is_none)
    """Why the task failed or was cancelled: the exception's type and message
    (``"ValueError: bad value"``), as in the span's status description; ``None`` otherwise."""
    # --- energy fields (issue 4) ---
    system_energy_source: str | None = Field(default=None, exclude_if=_is_none)
    """Where ``system_power`` came from: ``"prometheus"`` (the machine's ``system`` power query)."""
    system_energy_scope: str | None = Field(default=None, exclude_if=_is_none)
    """What ``system_power`` covers: ``"query"`` (whatever the query measures; not per process)."""
    system_energy_short_task: bool | None = Field(default=None, exclude_if=_is_none)
    """``True`` when the task was shorter than the resolution of ``system_power``'s source."""
    cpu_energy_source: str | None = Field(default=None, exclude_if=_is_none)
    """Where ``cpu_power`` came from: ``"rapl"`` (powercap ``energy_uj``) or ``"prometheus"``."""
    cpu_energy_scope: str | None = Field(default=None, exclude_if=_is_none)
    """What ``cpu_power`` covers: ``"package"`` (all CPU packages of the machine, every
    process), ``"platform"`` (RAPL ``psys``) or ``"query"`` (Prometheus)."""
    cpu_energy_short_task: bool | None = Field(default=None, exclude_if=_is_none)
    """``True`` when the task was shorter than the update period of ``cpu_power``'s counter."""
    gpu_energy_source: str | None = Field(default=None, exclude_if=_is_none)
    """Where ``gpu_power`` came from: ``"nvml-counter"`` (total-energy counter),
    ``"nvml-sampled"`` (integrated power samples) or ``"prometheus"``."""
    gpu_energy_scope: str | None = Field(default=None, exclude_if=_is_none)
    """What ``gpu_power`` covers: ``"device"`` (the visible GPUs, every process on them) or
    ``"query"`` (Prometheus)."""
    gpu_energy_short_task: bool | None = Field(default=None, exclude_if=_is_none)
    """``True`` when the task was shorter than the update period of ``gpu_power``'s source."""
    dram_energy_j: float | None = Field(default=None, exclude_if=_is_none)
    """DRAM energy over the task in joules, from RAPL ``dram`` zones (machine-wide; not part of
    ``cpu_power``)."""
    # --- GPU memory source (issue 17) ---
    peak_gpu_memory_source: str | None = Field(default=None, exclude_if=_is_none)
    """Where ``peak_gpu_memory`` came from: ``"torch"`` (``torch.cuda.max_memory_allocated``,
    exact) or ``"nvml-sampled"`` (this process's and its children's used GPU memory, sampled by
    NVML every ``energy.sample_interval_s``; includes the CUDA context and cached blocks)."""

    def total_cpu(self) -> float | None:
        """Return total CPU seconds: ``cpu_time`` plus other processes' CPU reported below it.

        Other processes' CPU (:func:`other_process_cpu`): reaped children
        (``children_cpu_time_s``) and every subprocess subtask, found directly or under
        in-process subtasks (a pool started inside a subtask); in-process subtasks' own CPU is
        inside ``cpu_time`` already. Returns ``None`` when ``cpu_time`` is unknown.
        """
        d = self.__dict__  # the fields as stored: this runs for every task of a large tree
        cpu: float | None = d["cpu_time"]
        if cpu is None:
            return None
        below = other_process_cpu(self) if d["subtasks"] else 0.0  # a leaf: no walk
        return cpu + (d["children_cpu_time_s"] or 0.0) + below

    @property
    def friendly_duration(self) -> str | None:
        """The duration in human units, or ``None`` if unknown.

        For example ``"850ms"``, ``"12.35s"``, ``"3m07.20s"`` or ``"2h05m03s"``.
        """
        return None if self.duration is None else friendly_duration(self.duration)


_SURROGATE = re.compile("[\ud800-\udfff]")


def dump_json(task: TaskRecord) -> bytes | None:
    r"""Serialise ``task``'s tree as one line of task-file JSON (UTF-8, no final newline).

    The bytes come straight from pydantic's serialiser (``to_json``), never through a ``str``
    and copies: a tree of 100,000 tasks is a 48 MiB line, and each copy of it is memory the
    allocator may keep after a refresh of the file.

    Pydantic's serialiser is used when it can; a tree it refuses (lone surrogates in a label,
    from a file name that is not UTF-8; nesting beyond its depth limit) is converted node by
    node and encoded by :mod:`json`, each lone surrogate written as the text ``\udXXX``.
    Returns ``None``, with one warning, when even that fails. Never raises.
    """
    try:
        return task.__pydantic_serializer__.to_json(task)
    except (PydanticSerializationError, ValueError, RecursionError):
        pass
    try:
        root: dict[str, Any] = task.model_dump(mode="json", exclude={"subtasks"})
        stack = [(task, root)]
        while stack:
            node, out = stack.pop()
            out["subtasks"] = children = []
            for child in node.subtasks:
                item = child.model_dump(mode="json", exclude={"subtasks"})
                children.append(item)
                stack.append((child, item))
        text = json.dumps(root, ensure_ascii=False, separators=(",", ":"))
    except (ValueError, TypeError, RecursionError) as e:
        label = quoted(task.label)
        _warn("dump", "tasktrace: cannot serialise task %s for its file (%s)", label, e)
        return None
    text = _SURROGATE.sub(lambda m: f"\\\\u{ord(m.group()):04x}", text)
    return text.encode()


def _shared(*args: object, **kwargs: object) -> NoReturn:
    del args, kwargs
    raise TypeError("shared by every Task('label') record: assign to the task's attribute instead")


class _SharedFieldsSet(set[str]):
    """A read-only ``{"label"}``: the fields set of every ``Task("label")`` until written to.

    A set costs 216 bytes, a fifth of a finished task's memory; most tasks never change it.
    Every mutator raises :class:`TypeError`; copies (pydantic's ``model_copy``,
    :func:`copy.copy`, :func:`copy.deepcopy`, pickling) are plain sets.
    """

    __slots__ = ()
    add = discard = remove = pop = clear = update = _shared
    intersection_update = difference_update = symmetric_difference_update = _shared
    __ior__ = __iand__ = __isub__ = __ixor__ = _shared

    def __copy__(self) -> set[str]:
        return set(self)

    def __deepcopy__(self, memo: object) -> set[str]:
        return set(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (set, (list(self),))


class _SharedEmptyDict(dict[str, Any]):
    """A read-only ``{}``: the extra data of every ``Task("label")`` until written to.

    64 bytes a task saved. Every mutator raises :class:`TypeError`; copies are plain dicts.
    """

    __slots__ = ()
    __setitem__ = __delitem__ = setdefault = pop = popitem = clear = update = _shared
    __ior__ = _shared

    def __copy__(self) -> dict[str, Any]:
        return {}

    def __deepcopy__(self, memo: object) -> dict[str, Any]:
        return {}

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, ())


LABEL_ONLY: Final[set[str]] = _SharedFieldsSet({"label"})
"""The pydantic fields set shared by every record built from a label alone (read-only)."""
NO_EXTRA: Final[dict[str, Any]] = _SharedEmptyDict()
"""The empty extra data shared by every record built without any (read-only)."""


def own_containers(record: TaskRecord) -> None:
    """Give ``record`` its own fields set and extra dict where it shares the read-only ones.

    :data:`LABEL_ONLY` and :data:`NO_EXTRA`; the façade calls this before any attribute is
    assigned.
    """
    if record.__pydantic_fields_set__ is LABEL_ONLY:
        object.__setattr__(record, "__pydantic_fields_set__", {"label"})
    if record.__pydantic_extra__ is NO_EXTRA:
        object.__setattr__(record, "__pydantic_extra__", {})


def other_process_cpu(task: TaskRecord) -> float:
    """Return the CPU seconds other processes reported below ``task`` (0.0 when none).

    Walks ``task``'s subtasks at any depth: a subprocess subtask adds its ``cpu_time`` (one
    whose ``cpu_time`` is unknown adds nothing, nor does anything below it), every subtask adds
    its reaped children's ``children_cpu_time_s``, and an in-process subtask adds nothing of
    its own (its CPU is inside its parent's). Each process's CPU is counted once. Iterative:
    a tree of any depth.
    """
    total = 0.0
    stack = list(task.subtasks)
    while stack:
        node = stack.pop()
        if node.subprocess:
            if node.cpu_time is None:
                continue
            total += node.cpu_time
        if node.children_cpu_time_s is not None:
            total += node.children_cpu_time_s
        stack.extend(node.subtasks)
    return total


if TYPE_CHECKING:  # for type checkers, subtasks are records; at run time, the bound class
    Task = TaskRecord

FIELD_DEFAULTS: dict[str, Any] = {  # every field in declaration order; factories filled per task
    name: None if field.default_factory is not None or field.is_required() else field.default
    for name, field in TaskRecord.model_fields.items()
}
FIELD_DEFAULTS["hostname"] = HOSTNAME
"""Every field's default in declaration order (``None`` where a factory makes it per task)."""

_node_class: type[TaskRecord] = TaskRecord


def bind_task_class(task_cls: type[TaskRecord]) -> None:
    """Make ``task_cls`` (:class:`tasktrace.Task`) the class of tree nodes and subtasks.

    Called once by the façade right after the class is defined. Resolves ``subtasks``'
    forward reference to it (the annotation is evaluated in this module's namespace: the
    record sits below the façade and never imports it), and makes it what :func:`node_class`
    returns, so that the lower layers (the tree processor's nodes for non-task spans, records
    merged from other processes) build façade objects without importing the façade.
    """
    global _node_class  # noqa: PLW0603 - bound once, at the façade's import
    task_cls.model_rebuild(_types_namespace={**globals(), "Task": task_cls})
    _node_class = task_cls


def node_class() -> type[TaskRecord]:
    """Return the class of tree nodes: :class:`tasktrace.Task` once bound (see above)."""
    return _node_class


def new_node(**fields: Any) -> TaskRecord:
    """Return a tree node (:func:`node_class`) with ``fields`` set, unvalidated.

    What ``model_construct(**fields)`` builds, without pydantic's walk over every field's
    default: that walk inspects each default factory's signature on every call (pydantic 2.10 on;
    ``list``'s is parsed from its text signature): about 1.4 ms a record on this project's
    VMs, once per user span inside a task. Here the factories run directly: a new task id, the
    ``machine`` setting, an empty subtasks list. The private state is ``{"_rt": None}``.

    Raises:
        TypeError: A name in ``fields`` is not a field of the record.
    """
    unknown = fields.keys() - FIELD_DEFAULTS.keys()
    if unknown:
        raise TypeError(f"not task record fields: {', '.join(sorted(unknown))}")
    cls = _node_class
    node = cls.__new__(cls)
    values = FIELD_DEFAULTS.copy()
    values["task_id"] = new_task_id()
    values["machine"] = _machine()
    values["subtasks"] = []
    values.update(fields)
    object.__setattr__(node, "__dict__", values)
    object.__setattr__(node, "__pydantic_fields_set__", set(fields))
    object.__setattr__(node, "__pydantic_extra__", {})
    object.__setattr__(node, "__pydantic_private__", {"_rt": None})
    return node
