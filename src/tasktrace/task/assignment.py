"""Assigning to a Task (``task.loss = 0.3``, ``task.label = "x"``), checked as at construction.

pydantic (as LensKit's ``Task`` is configured) stores an assigned field as given: ``task.duration
= "abc"`` would be kept, and break the file and every report later. :func:`field_value` checks
the value as the constructor does, and refuses the fields tasktrace writes itself while it
measures the task (:data:`MEASURED`), which would otherwise be silently overwritten.
tasktrace's own writes of those fields go to the task's ``__dict__``, never through here.
"""

from __future__ import annotations

import functools
import types
import uuid
from typing import TYPE_CHECKING, Annotated, Any, Final, Union, get_args, get_origin

from pydantic import TypeAdapter, ValidationError

from tasktrace.core.extra_data import normalise_data
from tasktrace.core.problems import InvalidTaskError, invalid_task_error
from tasktrace.core.status import RUNNING, TaskStatus
from tasktrace.task.runtime import current_runtime

if TYPE_CHECKING:
    from tasktrace.core.record import TaskRecord

__all__ = ["MEASURED", "assigned_value", "field_value"]

MEASURED: Final = frozenset(
    {"status", "start_time", "finish_time", "duration", "cpu_time", "peak_memory"}
    | {"trace_id", "span_id"}
)
"""The fields a task's start or finish always writes (its status, times, clocks' figures, span
identity): assigning one to a task this process measures (pending or running) is refused.
Fields only a meter may write (``cpu_power``, ``peak_gpu_memory``, …) can be set by hand, as a
meter would set them, and are kept unless a meter measures them (see :func:`field_value`)."""

_AT_START: Final = frozenset({"start_time", "trace_id", "span_id"})
_PENDING: Final = TaskStatus.PENDING
_PLAIN: Final = (bool, int, float, str, uuid.UUID, TaskStatus, type(None))


def assigned_value(task: TaskRecord, name: str, value: Any) -> Any:
    """Return what to store for ``task.<name> = value`` (``name`` not private), or raise.

    Extra data as the constructor stores it (:func:`tasktrace.core.extra_data.normalise_data`:
    its JSON form, NumPy and pandas values converted), a field's value by :func:`field_value`.

    Raises:
        TypeError: Extra data that cannot be stored (the message names the key, what in the
            value cannot be stored and where, and what to store instead).
        tasktrace.core.problems.InvalidTaskError: A field's value (see :func:`field_value`).
    """
    if name in type(task).model_fields:
        return field_value(task, name, value)
    return normalise_data(name, value)


def field_value(task: TaskRecord, name: str, value: Any) -> Any:
    """Return ``value`` checked for ``task``'s field ``name`` (what to store), or raise.

    The value is validated as the constructor validates it (``"1.5"`` for ``duration`` is the
    float 1.5); a value already of the field's type (a ``float`` for ``float | None``) is
    returned as it is, without pydantic. Thread-safe (reads only).

    Raises:
        tasktrace.core.problems.InvalidTaskError: A :class:`ValueError` naming the field: the
            value is not of its type (``Task duration: expected a number, got "abc"``), the
            field cannot be changed (``task_id``), or it is one of :data:`MEASURED` and the
            task is pending or running in this process (its start or finish would overwrite
            it; the message says to keep the value as extra data under another name).
    """
    if name in MEASURED:
        status = task.__dict__["status"]
        if status is RUNNING or status is _PENDING:
            rt = current_runtime(task)
            if rt is not None and not rt.remote:
                raise InvalidTaskError(_measured(name, status))
    exact, adapter = _checks(type(task), name)
    if type(value) in exact:
        return value
    if adapter is None:
        raise InvalidTaskError(f"Task {name}: cannot be changed")
    try:
        return adapter.validate_python(value)
    except ValidationError as e:
        raise invalid_task_error(e, name) from None


def _measured(name: str, status: TaskStatus) -> str:
    state = status.value
    if name == "status":
        return (
            f"Task status: cannot be set while the task is {state} (tasktrace sets it when the "
            "task starts and finishes); end it with task.finish(TaskStatus.FAILED), or an "
            "exception in its with block"
        )
    when = "start" if name in _AT_START else "finish"
    return (
        f"Task {name}: cannot be set while the task is {state} (tasktrace writes it at the "
        f"task's {when}); keep your own value as extra data under another name "
        f"(task.my_{name} = ...)"
    )


@functools.cache
def _checks(cls: type[TaskRecord], name: str) -> tuple[frozenset[type], TypeAdapter[Any] | None]:
    """Return the types stored as given for field ``name`` of ``cls``, and its validator.

    The validator is ``None`` for a frozen field (``task_id``), and no type is stored as given.
    """
    field = cls.model_fields[name]
    if field.frozen:
        return frozenset(), None
    annotation = field.annotation
    kinds = get_args(annotation) if get_origin(annotation) in {Union, types.UnionType} else ()
    kinds = kinds or (annotation,)
    # bool is an int to isinstance, not to type(): True for an int field goes to pydantic.
    exact = frozenset(k for k in kinds if k in _PLAIN) if not field.metadata else frozenset()
    if len(exact) != len(kinds):  # a list, a model, a constrained type: pydantic checks all
        exact = frozenset()
    checked: Any = annotation
    if field.metadata:  # subtasks' BeforeValidator, a subclass's constraints (Field(gt=0))
        args = (annotation, *field.metadata)
        checked = Annotated[args]  # type: ignore[valid-type]
    return exact, TypeAdapter(checked)
