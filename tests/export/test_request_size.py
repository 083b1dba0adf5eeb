"""Export requests under a size limit: the OTel encoder, or a bound (export.request_size)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from tasktrace import Task
from tasktrace.export.request_size import encoded_size_bytes, size_bound_bytes

from ..export_helpers import clean_env, run_script
from ..otlp_receivers import OtlpGrpcReceiver, OtlpHttpReceiver

_text = st.text(max_size=40)


_scalar = st.one_of(
    _text,
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.binary(max_size=20),
)


_attr_value = st.one_of(
    _scalar,
    st.lists(st.text(max_size=10), max_size=6),
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=6),
    st.lists(st.floats(), max_size=6),
)


_attrs = st.dictionaries(_text, _attr_value, max_size=6)


_ids = st.integers(1, 2**64 - 1)


@st.composite
def _spans(draw: st.DrawFn) -> list[ReadableSpan]:
    resources = [Resource(draw(_attrs)) for _ in range(draw(st.integers(1, 2)))]
    scope = InstrumentationScope(draw(_text), draw(_text), draw(_text), draw(_attrs))
    spans = []
    for _ in range(draw(st.integers(1, 4))):
        state = TraceState([("k", draw(st.from_regex(r"[a-z0-9]{0,20}", fullmatch=True)))])
        context = SpanContext(draw(_ids) << 64 | 1, draw(_ids), False, TraceFlags(1), state)
        parent = SpanContext(context.trace_id, draw(_ids), True) if draw(st.booleans()) else None
        events = [
            Event(draw(_text), draw(_attrs), draw(_ids)) for _ in range(draw(st.integers(0, 2)))
        ]
        links = [
            Link(SpanContext(draw(_ids), draw(_ids), False, trace_state=state), draw(_attrs))
            for _ in range(draw(st.integers(0, 2)))
        ]
        spans.append(
            ReadableSpan(
                name=draw(_text),
                context=context,
                parent=parent,
                resource=draw(st.sampled_from(resources)),
                attributes=draw(_attrs),
                events=events,
                links=links,
                kind=SpanKind.INTERNAL,
                status=Status(StatusCode.ERROR, draw(_text)),
                start_time=draw(_ids),
                end_time=draw(_ids),
                instrumentation_scope=scope,
            )
        )
    return spans


FOUR_MIB = 4 * 1024 * 1024


REQUEST_LIMIT = 3 * 1024 * 1024  # tasktrace's documented request size


def _receiver(protocol: str, **limits: int) -> OtlpGrpcReceiver | OtlpHttpReceiver:
    if protocol == "grpc":
        return OtlpGrpcReceiver(max_message_bytes=limits.get("max_bytes"))  # None: gRPC's 4 MiB
    return OtlpHttpReceiver(max_body_bytes=limits.get("max_bytes", FOUR_MIB))


def _env(receiver: OtlpGrpcReceiver | OtlpHttpReceiver, protocol: str, **extra: str) -> dict:
    return clean_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
        TASKTRACE_EXIT_TIMEOUT_S="20",
        **extra,
    )


MEDIUM_TASKS = """
from tasktrace import Task
with Task("run"):
    for i in range(51):
        with Task(f"t{i}", a="a" * 60_000, b="b" * 60_000, c="c" * 60_000, d="d" * 60_000):
            pass
"""
"""52 spans of about 240 kB each, all within the span budget: about 12.5 MB in all."""


BIG_TASK = """
import sys
from tasktrace import Task
with Task("run", file=sys.argv[1]):
    for i in range(50):
        with Task(f"step {i}", step=i):
            pass
    with Task("big", scores=[float(i) for i in range(600_000)], note="kept"):
        pass
"""
"""52 tasks (the root, 50 steps, one holding a 600,000-float list) filed in sys.argv[1]."""


@settings(max_examples=200, deadline=None)
@given(spans=_spans())
def test_size_bound_is_never_below_the_encoded_size(spans: list[ReadableSpan]) -> None:
    """The cheap bound that spares a batch its measuring is never below the encoder's size.

    A span the encoder cannot encode (a lone surrogate) gets no bound, so it is measured.
    """
    bound = size_bound_bytes(spans)
    assert bound is not None
    assert bound >= encoded_size_bytes(spans)
    broken = ReadableSpan(name="bad \udc80 label", context=spans[0].get_span_context())
    assert size_bound_bytes([*spans, broken]) is None


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_many_medium_spans_are_sent_in_requests_under_the_limit(
    protocol: str, tmp_path: Path
) -> None:
    """12.5 MB of spans within their budgets: split into requests of at most 3 MiB; all arrive."""
    with _receiver(protocol) as receiver:
        run = run_script(MEDIUM_TASKS, tmp_path, _env(receiver, protocol))
        spans = receiver.wait_for(52, timeout_s=20)
        sizes = receiver.trace_request_bytes()
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert len(spans) == 52
    assert sum(sizes) > 2 * FOUR_MIB  # far more than one request can hold
    assert len(sizes) >= 4
    assert max(sizes) <= REQUEST_LIMIT


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_task_with_a_huge_list_leaves_its_batch_whole(protocol: str, tmp_path: Path) -> None:
    """52 of 52 spans arrive; the big task's span names the key left off; the file has it all.

    One warning, naming the task, the key and the size; no export warning.
    """
    with _receiver(protocol) as receiver:
        run = run_script(BIG_TASK, tmp_path, _env(receiver, protocol), str(tmp_path / "run.json"))
        spans = receiver.wait_for(52, timeout_s=20)
    assert run.returncode == 0, run.stderr
    assert len(spans) == 52
    big = next(s for s in spans if s.name == "big")
    assert big.attributes["tasktrace.data_omitted"] == ["scores"]
    assert "tasktrace.data.scores" not in big.attributes
    assert big.attributes["tasktrace.data.note"] == "kept"
    saved = Task.model_validate_json((tmp_path / "run.json").read_text())
    scores = saved.subtasks[-1].model_extra["scores"]  # type: ignore[index]
    assert scores == [float(i) for i in range(600_000)]
    size = len(json.dumps(scores, separators=(",", ":")))
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.stderr
    assert "task 'big'" in lines[0]
    assert "'scores'" in lines[0]
    assert f"{size:,} bytes" in lines[0]
    assert "kept in full in the task file" in lines[0]
