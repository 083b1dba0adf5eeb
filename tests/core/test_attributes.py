"""Span attribute keys, defined once, and the field/data ⇄ attribute mapping (core.attributes)."""

from __future__ import annotations

import uuid

import pytest

from tasktrace.core import attributes as attr
from tasktrace.core.record import TaskRecord


def test_every_field_has_one_key_in_the_tasktrace_namespace_or_a_semantic_convention() -> None:
    """Each mapped field has its own key: ``tasktrace.*``, or ``host.name`` for the host."""
    keys = list(attr.FIELD_ATTRIBUTES.values())
    assert len(keys) == len(set(keys))
    assert set(attr.FIELD_ATTRIBUTES) <= set(TaskRecord.model_fields)
    for key in keys:
        assert key.startswith(attr.NAMESPACE) or key == attr.HOST_NAME, key


def test_extra_data_maps_by_type_and_comes_back_as_given() -> None:
    """Scalars and uniform lists become plain attributes; anything else JSON; both invert."""
    data = {
        "epoch": 3,
        "loss": 0.25,
        "tags": ["train", "x"],
        "flags": [True, False],
        "config": {"lr": 0.1},
        "mixed": [1, "a"],
        "huge": 2**70,
        "empty": [],
        "nothing": None,
    }
    attrs = attr.data_to_attributes(data)
    assert attrs["tasktrace.data.epoch"] == 3
    assert attrs["tasktrace.data.tags"] == ["train", "x"]
    assert attrs["tasktrace.data.flags"] == [True, False]
    assert attrs["tasktrace.data_json.config"] == '{"lr":0.1}'
    assert attrs["tasktrace.data_json.mixed"] == '[1,"a"]'
    assert attrs["tasktrace.data_json.huge"] == str(2**70)  # beyond int64: exact as JSON
    assert attrs["tasktrace.data_json.empty"] == "[]"  # an empty array has no type
    assert attr.attributes_to_fields(attrs) == data


def test_fields_map_to_their_keys_and_back() -> None:
    """Set fields become their attributes (UUIDs and statuses as text); ``None`` is left out."""
    parent = uuid.uuid4()
    fields = {"parent_id": parent, "duration": 1.5, "peak_memory": 7, "cpu_time": None}
    attrs = attr.fields_to_attributes(fields)
    assert attrs == {attr.PARENT_ID: str(parent), attr.DURATION_S: 1.5, attr.PEAK_MEMORY_BYTES: 7}
    assert attr.attributes_to_fields(attrs) == {
        "parent_id": str(parent),
        "duration": 1.5,
        "peak_memory": 7,
    }


def test_unstorable_data_is_refused_naming_the_key() -> None:
    """A value JSON cannot encode is a TypeError naming the key and the type."""
    with pytest.raises(TypeError, match=r"task data 'model' cannot be stored: object"):
        attr.normalise_data("model", object())
