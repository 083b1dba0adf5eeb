"""Task trees ⇄ OpenTelemetry spans, for saved task files (replay, OTLP JSON, the inverse).

One task becomes one :class:`~opentelemetry.sdk.trace.ReadableSpan` by the same mapping a live
task's span is written with (:mod:`tasktrace.core.spans`): the same attributes, the same span
status (``failed`` → ``ERROR`` with the task's ``error`` as its description), and the host on
the span's resource (``host.name``, ``tasktrace.machine``), never in its attributes. Beyond
that mapping:

- ``start_time`` / ``finish_time`` (UNIX seconds, float) → the span's start/end timestamps in
  integer nanoseconds, rounded exactly (:class:`fractions.Fraction`), so they come back as the
  same float (integer nanoseconds divided exactly: ``int / int`` is correctly rounded) for
  every timestamp after 1970-04-08 (``2**23`` s; below it a float resolves finer
  than a nanosecond);
- ids: the task's own ``trace_id`` / ``span_id`` when the file has them; otherwise (LensKit
  files) *derived* ids: the trace id is the root task's UUID as a 128-bit integer, the span id
  the first 8 bytes of BLAKE2b(task UUID). Converting the same file twice gives the same ids,
  and on the way back ids equal to the derived ones are left unset, so the file round-trips;
- a node built from a non-task span (``foreign_span``) carries ``tasktrace.task.foreign_span``
  so that it comes back as one.

Spans → tree: spans are attached to their parent span (by span id) in the order given; a span
without a ``tasktrace.task.id`` attribute (another program's span) becomes a ``foreign_span``
node whose task id is derived from its trace and span ids, as the live processor does. Spans
whose parent is not among them are roots; several roots are gathered under one synthetic root
labelled by the caller, which has their times (first start, last finish, the duration between
them) and no measures of its own.

Thread-safety: pure functions over their arguments.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

from tasktrace.core import attributes as attr
from tasktrace.core.ids import span_task_id
from tasktrace.core.record import TaskRecord
from tasktrace.core.spans import (
    host_attributes,
    resource_fields,
    span_attributes,
    span_fields,
    span_status,
)
from tasktrace.core.status import TaskStatus
from tasktrace.task import Task

__all__ = [
    "derived_span_id",
    "derived_trace_id",
    "seconds_to_ns",
    "spans_to_task",
    "task_to_spans",
]

_SCOPE = InstrumentationScope("tasktrace")
_NULLABLE_FIELDS = tuple(
    name for name in attr.FIELD_ATTRIBUTES if name not in {"subprocess", "status", "hostname"}
)


def seconds_to_ns(seconds: float) -> int:
    """Convert UNIX seconds (float) to integer nanoseconds, rounding the exact value."""
    return round(Fraction(seconds) * 1_000_000_000)


def derived_trace_id(root_task_id: uuid.UUID) -> int:
    """Return the trace id (128-bit int) of a task tree without one: its root task's UUID."""
    return root_task_id.int or 1


def derived_span_id(task_id: uuid.UUID) -> int:
    """Return the span id (64-bit int) of a task without one: BLAKE2b-64 of its UUID's bytes."""
    value = int.from_bytes(hashlib.blake2b(task_id.bytes, digest_size=8).digest(), "big")
    return value or 1


def task_to_spans(task: Task, resource: Resource | None = None) -> list[ReadableSpan]:
    """Convert a task tree to spans, parents before children (pre-order).

    Args:
        task: The root of the tree (e.g. loaded from a task file).
        resource: The spans' resource (default: an empty one); each span's resource is this one
            with its task's ``host.name`` and ``tasktrace.machine`` over it.

    Returns:
        One ended :class:`ReadableSpan` per task; ``start_time`` / ``end_time`` are ``None`` for
        a task that has no ``start_time`` / ``finish_time``.

    Raises:
        TypeError: A task's extra data cannot be encoded (names the key).
        ValueError: A task's ``trace_id`` / ``span_id`` is not hex.
    """
    base = resource if resource is not None else Resource({})
    resources: dict[tuple[str, str | None], Resource] = {}
    root_trace = int(task.trace_id, 16) if task.trace_id else derived_trace_id(task.task_id)
    spans: list[ReadableSpan] = []
    stack: list[tuple[TaskRecord, SpanContext | None, int]] = [(task, None, root_trace)]
    while stack:
        node, parent, inherited_trace = stack.pop()
        trace_id = int(node.trace_id, 16) if node.trace_id else inherited_trace
        span_id = int(node.span_id, 16) if node.span_id else derived_span_id(node.task_id)
        context = SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(1))
        attributes = span_attributes(node)
        if node.foreign_span:
            attributes[attr.FOREIGN_SPAN] = True
        host = (node.hostname, node.machine)
        node_resource = resources.get(host)
        if node_resource is None:
            node_resource = resources[host] = base.merge(Resource(host_attributes(*host)))
        spans.append(
            ReadableSpan(
                name=node.label,
                context=context,
                parent=parent,
                resource=node_resource,
                attributes=attributes,
                kind=SpanKind.INTERNAL,
                status=span_status(node.status, node.error),
                start_time=None if node.start_time is None else seconds_to_ns(node.start_time),
                end_time=None if node.finish_time is None else seconds_to_ns(node.finish_time),
                instrumentation_scope=_SCOPE,
            )
        )
        stack.extend((child, context, trace_id) for child in reversed(node.subtasks))
    return spans


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _node_data(span: ReadableSpan, parent: dict[str, Any] | None) -> dict[str, Any]:
    ctx = span.get_span_context()
    assert ctx is not None  # every span read from a file has a context
    attributes: Mapping[str, Any] = span.attributes or {}
    fields = span_fields(span)
    data: dict[str, Any] = dict.fromkeys(_NULLABLE_FIELDS)
    data["subtasks"] = []
    foreign = attr.TASK_ID not in attributes
    if foreign:
        fields["task_id"] = span_task_id(ctx.trace_id, ctx.span_id)
        if parent is not None:
            fields.setdefault("parent_id", parent["task_id"])
            fields.setdefault("hostname", parent["hostname"])
            fields.setdefault("machine", parent["machine"])
    else:
        foreign = bool(attributes.get(attr.FOREIGN_SPAN, False))
    data.update({k: _plain(v) for k, v in fields.items()})
    data["label"] = span.name
    data["start_time"] = span.start_time / 1_000_000_000 if span.start_time else None
    data["finish_time"] = span.end_time / 1_000_000_000 if span.end_time else None
    task_id = uuid.UUID(str(data["task_id"]))
    data["task_id"] = task_id
    if not data.get("hostname"):  # the host is on the resource (live spans, converted ones)
        resource = span.resource.attributes if span.resource is not None else {}
        host = resource_fields(resource)
        data["hostname"] = host.get("hostname", "")
        if data.get("machine") is None and "machine" in host:
            data["machine"] = host["machine"]
    if foreign:
        data["foreign_span"] = True
    root_trace = parent["_root_trace"] if parent is not None else derived_trace_id(task_id)
    data["_root_trace"] = root_trace
    derived = ctx.trace_id == root_trace and ctx.span_id == derived_span_id(task_id)
    if not derived:
        data["trace_id"] = format(ctx.trace_id, "032x")
        data["span_id"] = format(ctx.span_id, "016x")
    return data


def spans_to_task(spans: Iterable[ReadableSpan], root_label: str = "trace") -> Task:
    """Rebuild a task tree from spans (the inverse of :func:`task_to_spans`).

    Args:
        spans: Ended or unended spans, in any order. Siblings are put in the order they
            started, as in a task file (a live run exports each span when it ends, so its
            spans come in the order they finished); those that started at the same time, or
            at an unknown time (listed last), keep the order given. A span given more than
            once (same trace and span id: a collector's retried request written twice, a
            copied file) is one node, built from its first ended copy.
        root_label: Label of the synthetic root made when the spans have several roots: it
            starts with the first root and, once every root has ended, finishes with the last,
            its duration the time between (wall clock); while one has not, it is running.

    Returns:
        The root task, with every span as a node (see the module docstring).

    Raises:
        ValueError: No spans were given.
        pydantic.ValidationError: An attribute holds a value that is not valid for its field.
    """
    by_id: dict[tuple[int, int], ReadableSpan] = {}
    for s in spans:
        if s.context is None or attr.PENDING_SPAN_ID in (s.attributes or {}):
            continue  # pending snapshots stand for their real span: never nodes
        seen = by_id.get(_key(s))
        if seen is None or (seen.end_time is None and s.end_time is not None):
            by_id[_key(s)] = s  # a span given twice is one node: the first ended copy
    span_list: Sequence[ReadableSpan] = list(by_id.values())
    if not span_list:
        raise ValueError("no spans to build a task tree from")
    built: dict[tuple[int, int], dict[str, Any]] = {}
    roots: list[dict[str, Any]] = []
    for span in span_list:
        # Build parents before children whatever the order (live exports end children first).
        chain = [span]
        while True:
            pkey = _parent_key(chain[-1])
            if pkey is None or pkey not in by_id or pkey in built or by_id[pkey] in chain:
                break
            chain.append(by_id[pkey])
        for s in reversed(chain):
            if _key(s) not in built:
                pkey = _parent_key(s)
                built[_key(s)] = _node_data(s, built.get(pkey) if pkey else None)
    for span in span_list:  # attach in the order given
        pkey = _parent_key(span)
        parent = built.get(pkey) if pkey is not None and pkey != _key(span) else None
        (roots if parent is None else parent["subtasks"]).append(built[_key(span)])
    for node in built.values():
        del node["_root_trace"]
        node["subtasks"].sort(key=_start_order)  # as a task file: spans come as they ended
    roots.sort(key=_start_order)
    if len(roots) == 1:
        return Task.model_validate(roots[0])
    return Task.model_validate(_synthetic_root(root_label, roots))


def _synthetic_root(label: str, roots: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the data of the root made above several roots: their times, no measures of its own.

    Its start is the first root's; once every root has ended, its finish is the last root's
    and its duration the time from the first start to the last finish (wall clock: gaps
    between runs included, as a task's duration includes the time between its subtasks);
    while a root has not ended (a run still going, or killed before its span ended) it is
    running, with neither. Ended, it is failed where a run failed, else cancelled where one was
    cancelled (``error``: ``"1 of 3 runs failed"``), else finished.
    """
    starts = [r["start_time"] for r in roots]
    finishes = [r["finish_time"] for r in roots]
    start = min((s for s in starts if s is not None), default=None)
    ended = None not in finishes
    finish = max(finishes) if ended else None
    status, error = (TaskStatus.FINISHED if ended else TaskStatus.RUNNING), None
    for worst in (TaskStatus.FAILED, TaskStatus.CANCELLED) if ended else ():
        count = sum(TaskStatus(r["status"]) is worst for r in roots)
        if count:  # ended runs of which one failed: not "finished" as if all had
            status, error = worst, f"{count} of {len(roots)} runs {worst.value}"
            break
    return {
        **dict.fromkeys(_NULLABLE_FIELDS),
        "label": label,
        "hostname": roots[0]["hostname"],
        "status": status.value,
        "error": error,
        "start_time": start,
        "finish_time": finish,
        "duration": finish - start if finish is not None and None not in starts else None,
        "subtasks": roots,
    }


def _start_order(node: Mapping[str, Any]) -> tuple[bool, float]:
    start = node["start_time"]
    return (start is None, 0.0 if start is None else start)


def _key(span: ReadableSpan) -> tuple[int, int]:
    ctx = span.context
    assert ctx is not None  # filtered in spans_to_task
    return (ctx.trace_id, ctx.span_id)


def _parent_key(span: ReadableSpan) -> tuple[int, int] | None:
    ctx = span.context
    assert ctx is not None  # filtered in spans_to_task
    return None if span.parent is None else (ctx.trace_id, span.parent.span_id)
