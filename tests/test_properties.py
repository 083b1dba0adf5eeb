"""Property tests (Hypothesis): Task model ⇄ JSON, Task fields and extra data ⇄ span attributes."""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tasktrace import Task, TaskStatus
from tasktrace.core.attributes import (
    attributes_to_fields,
    data_to_attributes,
    fields_to_attributes,
)

_SETTINGS = settings(max_examples=60, deadline=None)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
data_keys = st.from_regex(r"[a-z][a-z0-9_.]{0,12}", fullmatch=True).filter(
    lambda k: k not in Task.model_fields
)
extras = st.dictionaries(data_keys, json_values, max_size=6)
labels = st.text(min_size=1, max_size=300)  # Unicode, control characters, long labels
maybe_float = st.none() | st.floats(min_value=0, max_value=1e9, allow_nan=False)
maybe_int = st.none() | st.integers(min_value=0, max_value=2**62)

field_values = st.fixed_dictionaries(
    {
        "status": st.sampled_from(list(TaskStatus)),
        "duration": maybe_float,
        "cpu_time": maybe_float,
        "peak_memory": maybe_int,
        "peak_gpu_memory": maybe_int,
        "system_power": maybe_float,
        "cpu_power": maybe_float,
        "gpu_power": maybe_float,
        "children_cpu_time_s": maybe_float,
        "subprocess": st.booleans(),
        "machine": st.none() | st.text(max_size=20),
        "hostname": st.text(max_size=30),
        "parent_id": st.none() | st.uuids(),
    }
)


@_SETTINGS
@given(data=extras)
def test_extra_data_to_attributes_and_back_is_identity(data: dict[str, Any]) -> None:
    """Any JSON-encodable extra data survives data → span attributes → data unchanged."""
    attrs = data_to_attributes(data)
    assert len(attrs) == len(data)
    assert attributes_to_fields(attrs) == data


@_SETTINGS
@given(fields=field_values)
def test_task_fields_to_attributes_and_back_is_identity(fields: dict[str, Any]) -> None:
    """Task field values survive fields → span attributes → fields (None fields left out)."""
    back = attributes_to_fields(fields_to_attributes(fields))
    expected = {
        k: (str(v) if isinstance(v, uuid.UUID) else v.value if isinstance(v, TaskStatus) else v)
        for k, v in fields.items()
        if v is not None
    }
    assert back == expected
    loaded = Task.model_validate({"label": "x", **back})
    assert {k: getattr(loaded, k) for k in fields} == fields


@_SETTINGS
@given(label=labels, fields=field_values, data=extras)
def test_task_model_to_json_and_back_is_identity(
    label: str, fields: dict[str, Any], data: dict[str, Any]
) -> None:
    """Any task (labels with Unicode and control characters, extra data) survives model → JSON."""
    task = Task(label, **fields, **data)
    task.add_subtask(Task(label[::-1] or "child", epoch=1))
    loaded = Task.model_validate_json(task.model_dump_json())
    assert loaded.label == label
    assert loaded.model_dump() == task.model_dump()
    assert loaded.model_extra == data
