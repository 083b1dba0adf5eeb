"""The task-tree processor: tasks and other spans in one tree (tree.processor)."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags
from pydantic.fields import FieldInfo

from tasktrace import Task, TaskStatus
from tasktrace.core.settings import Settings, reset_settings
from tasktrace.testing import InMemorySpanExporter


def _by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {s.name: s for s in spans}


def test_user_span_inside_task(task_spans: InMemorySpanExporter) -> None:
    """A user's own OTel span inside a task appears in the task tree and in the trace."""
    tracer = trace.get_tracer("user-code")
    with Task("outer") as outer, tracer.start_as_current_span("my span") as s:
        s.set_attribute("rows", 10)
        with Task("inside span") as inner:
            pass
    spans = _by_name(task_spans.get_finished_spans())
    assert spans["my span"].parent.span_id == spans["outer"].context.span_id
    assert spans["inside span"].parent.span_id == spans["my span"].context.span_id
    (node,) = outer.subtasks
    assert node.label == "my span"
    assert node.foreign_span
    assert node.status is TaskStatus.FINISHED
    assert node.rows == 10
    assert node.span_id == format(spans["my span"].context.span_id, "016x")
    assert node.subtasks == [inner]
    assert inner.parent_id == node.task_id


def test_user_spans_can_be_left_out() -> None:
    """With include_spans off, non-task spans are not in the tree; tasks inside them still are."""
    reset_settings(Settings(include_spans=False))
    tracer = trace.get_tracer("user-code")
    with Task("outer") as outer, tracer.start_as_current_span("hidden"), Task("inner"):
        pass
    assert [s.label for s in outer.subtasks] == ["inner"]


def test_unsampled_trace_still_builds_tree(task_spans: InMemorySpanExporter) -> None:
    """Under an unsampled remote parent no span is exported, but the task tree is complete."""
    remote = SpanContext(trace_id=0x1234, span_id=0x5678, is_remote=True, trace_flags=TraceFlags(0))
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(remote)))
    try:
        with Task("root") as root:
            with Task("a"), Task("a1"):
                pass
            with Task("b"):
                pass
    finally:
        otel_context.detach(token)
    assert task_spans.get_finished_spans() == ()
    assert [s.label for s in root.subtasks] == ["a", "b"]
    assert [s.label for s in root.subtasks[0].subtasks] == ["a1"]
    assert root.trace_id == format(0x1234, "032x")


def test_add_subtask_adds_or_updates() -> None:
    """add_subtask adds a new subtask once and replaces one with the same id."""
    parent = Task("p")
    child = Task("c")
    parent.add_subtask(child)
    assert child.parent_id == parent.task_id
    updated = child.model_copy(update={"status": TaskStatus.FINISHED})
    parent.add_subtask(updated)
    assert parent.subtasks == [updated]


def test_a_failed_user_span_is_a_failed_node_with_its_error(
    task_spans: InMemorySpanExporter,
) -> None:
    """A user's span that ends in ERROR is a failed subtask whose error is its description."""
    tracer = trace.get_tracer("user")
    with Task("outer") as outer, tracer.start_as_current_span("fetch") as span:
        span.set_status(Status(StatusCode.ERROR, "HTTP 503"))
        span.set_attribute("http.status_code", 503)
    (node,) = outer.subtasks
    assert node.foreign_span
    assert (node.status, node.error) == (TaskStatus.FAILED, "HTTP 503")
    assert node.model_extra == {"http.status_code": 503}
    assert node.duration is not None
    assert node.finish_time is not None
    assert {s.name for s in task_spans.get_finished_spans()} == {"outer", "fetch"}


def test_a_user_span_inside_a_task_builds_its_node_without_pydantic_s_defaults_walk(
    task_spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user span's node is built without ``FieldInfo.get_default`` (1.4 ms a span before).

    pydantic's ``model_construct`` inspects each default factory's signature on every call;
    with it, a user's span inside a task (an instrumented HTTP call, a database query) cost
    about 30 times a bare span. The node is the same: see tests/core/test_record.py.
    """
    tracer = trace.get_tracer("user-code")
    calls: list[str] = []
    original = FieldInfo.get_default

    def counted(self: FieldInfo, *args: Any, **kwargs: Any) -> Any:
        calls.append(repr(self))
        return original(self, *args, **kwargs)

    with Task("outer") as outer:
        monkeypatch.setattr(FieldInfo, "get_default", counted)
        for i in range(3):
            with tracer.start_as_current_span(f"query {i}"):
                pass
        monkeypatch.undo()
    assert calls == []
    assert [n.label for n in outer.subtasks] == ["query 0", "query 1", "query 2"]
    assert all(n.foreign_span and n.status is TaskStatus.FINISHED for n in outer.subtasks)
    assert len({n.task_id for n in outer.subtasks}) == 3
    assert {s.name for s in task_spans.get_finished_spans()} >= {"query 0", "outer"}
