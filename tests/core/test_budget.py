"""The span's budget for extra data: what is left off is named on the span, kept in the file."""

from __future__ import annotations

from pathlib import Path

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tasktrace import Task


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
    assert [k for k in wide.attributes if k.startswith("tasktrace.data.")] == [
        f"tasktrace.data.{key}" for key in "abcd"
    ]
    kept = Task.model_validate_json(path.read_text()).model_extra or {}
    assert {key: kept.get(key) for key in values} == values  # in full (and the meters record)
    assert list(many.attributes["tasktrace.data_omitted"]) == ["k96", "k97", "k98", "k99"]
    assert many.attributes["tasktrace.data.k95"] == 95
