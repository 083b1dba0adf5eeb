"""The span's budget for extra data: what is left off is named on the span, kept in the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tasktrace import Task
from tasktrace.meters.process import PEAK_BEFORE_KEY


def test_extra_data_over_the_span_budget_is_named_on_the_span(
    task_spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    """Within 64 KiB each but 300 kB in all: the fifth value is left off and named; file whole.

    Past 96 items, the others are left off and named too.
    """
    path = tmp_path / "t.json"
    values = {key: key * 60_000 for key in "abcde"}
    with Task("wide", file=path, **values):
        pass
    with Task("many", **{f"k{i}": i for i in range(100)}):
        pass
    wide, many = task_spans.get_finished_spans()
    assert wide.attributes is not None
    assert many.attributes is not None
    assert list(wide.attributes["tasktrace.data_omitted"]) == ["e"]
    # tasktrace's own peak before the task is there where the process peaked outside every task
    # before (an earlier test's memory): it depends on the tests run before, not on the budget
    own = f"tasktrace.data.{PEAK_BEFORE_KEY}"
    assert [k for k in wide.attributes if k.startswith("tasktrace.data.") and k != own] == [
        f"tasktrace.data.{key}" for key in "abcd"
    ]
    kept = Task.model_validate_json(path.read_text()).model_extra or {}
    assert {key: kept.get(key) for key in values} == values  # in full (and the meters record)
    assert list(many.attributes["tasktrace.data_omitted"]) == ["k96", "k97", "k98", "k99"]
    assert many.attributes["tasktrace.data.k95"] == 95


def test_a_list_of_strings_is_measured_as_its_compact_json() -> None:
    """Tags and other lists of strings: the size is the compact JSON's, escapes included."""
    import json

    from tasktrace.core.budget import attribute_size_bytes

    lists = [
        ["train"],
        ["a", "b c", ""],
        ["é", "日本語", "ß"],
        ['say "hi"'],
        ["C:\\data"],
        ["tab\there", "new\nline", "\x00"],
        ["\ud800"],  # a lone surrogate, as surrogatepass writes it
        [],
    ]
    for value in lists:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        assert attribute_size_bytes(value) == len(text.encode("utf-8", "surrogatepass")), value


def test_unchanged_data_is_written_to_the_span_once_changed_data_at_finish(
    task_spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Data that did not change since the start is not re-checked at finish; a change is written.

    A list changed in place during the task counts as a change (the start's snapshot is a copy).
    """
    from tasktrace.core import spans

    checked: list[str] = []
    original = spans.bounded_data_attributes

    def counted(label: str, attributes: Any) -> dict[str, Any]:
        checked.append(label)
        return original(label, attributes)

    monkeypatch.setattr(spans, "bounded_data_attributes", counted)
    with Task("same", tags=["train"], epoch=3):
        pass
    losses: list[float] = []
    with Task("changed", epoch=1, losses=losses) as t:
        t.losses.append(0.5)
        t.lr = 0.01
    assert checked == ["same", "changed", "changed"]
    same, changed = task_spans.get_finished_spans()
    assert same.attributes is not None
    assert changed.attributes is not None
    assert same.attributes["tasktrace.data.tags"] == ("train",)
    assert same.attributes["tasktrace.data.epoch"] == 3
    assert same.attributes["tasktrace.task.status"] == "finished"
    assert changed.attributes["tasktrace.data.losses"] == (0.5,)
    assert changed.attributes["tasktrace.data.lr"] == 0.01
