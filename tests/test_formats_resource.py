"""Spans to task trees: what live spans keep on their resource, and pending snapshots."""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, TraceFlags

from tasktrace.core import attributes as attr
from tasktrace.formats import spans_to_task

_TRACE = 0x1234


def _span(name: str, span_id: int, parent: int | None, **attributes: object) -> ReadableSpan:
    ctx = SpanContext(_TRACE, span_id, is_remote=False, trace_flags=TraceFlags(1))
    parent_ctx = (
        SpanContext(_TRACE, parent, is_remote=False, trace_flags=TraceFlags(1)) if parent else None
    )
    return ReadableSpan(
        name=name,
        context=ctx,
        parent=parent_ctx,
        resource=Resource({"host.name": "node7", attr.MACHINE: "cluster-a"}),
        attributes=attributes,
        start_time=1_000_000_000,
        end_time=2_000_000_000,
    )


def test_host_and_machine_come_from_the_resource() -> None:
    """Live spans carry host.name and the machine on the resource: the tree keeps them."""
    root = _span("root", 1, None, **{attr.TASK_ID: "00000000-0000-4000-8000-000000000001"})
    task = spans_to_task([root])
    assert (task.hostname, task.machine) == ("node7", "cluster-a")


def test_pending_snapshots_never_become_nodes() -> None:
    """A pending snapshot span (tasktrace.pending.span_id) is not a subtask of its real span."""
    root = _span("long", 1, None, **{attr.TASK_ID: "00000000-0000-4000-8000-000000000002"})
    snapshot = _span("long", 2, 1, **{attr.PENDING_SPAN_ID: format(1, "016x")})
    task = spans_to_task([snapshot, root])
    assert task.label == "long"
    assert task.subtasks == []
