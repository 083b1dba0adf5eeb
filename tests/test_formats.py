"""Offline formats: OTLP JSON lines (exporter, reader, round trip), replay, Chrome trace."""

from __future__ import annotations

import json
import logging
import re
import uuid
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tasktrace import Task
from tasktrace.formats import spans_to_task, task_to_spans
from tasktrace.formats.chrome_trace import task_to_chrome_trace
from tasktrace.formats.convert import seconds_to_ns
from tasktrace.formats.otlp_json import OtlpJsonFileSpanExporter, encode_lines, read_spans
from tasktrace.formats.replay import load_spans, replay

from .conftest import FIXTURES
from .export_helpers import same_to_span_precision
from .otlp_receivers import OtlpHttpReceiver

# ----- strategies --------------------------------------------------------------------------------

_FIELDS = set(Task.model_fields) | {"error"}
_keys = st.from_regex(r"[a-z][a-z_.]{0,7}", fullmatch=True).filter(lambda k: k not in _FIELDS)
_int64 = st.integers(-(2**63), 2**63 - 1)
_finite = st.floats(allow_nan=False, allow_infinity=False)
_json_leaf = st.none() | st.booleans() | st.integers() | _finite | st.text(max_size=8)
_extra_value = (
    _json_leaf
    | st.lists(st.text(max_size=5), max_size=3)
    | st.lists(_int64, min_size=1, max_size=3)
    | st.lists(_json_leaf, max_size=3)
    | st.dictionaries(st.text(max_size=4), _json_leaf, max_size=2)
)
_time_s = st.floats(min_value=1e9, max_value=4e9)
_opt_float = st.none() | st.floats(min_value=0, max_value=1e6)
_opt_int = st.none() | st.integers(0, 2**62)


@st.composite
def _task_dict(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    start = draw(st.none() | _time_s)
    status = draw(st.sampled_from(["pending", "running", "finished", "failed", "cancelled"]))
    node: dict[str, Any] = {
        "task_id": draw(st.uuids()),
        "label": draw(st.text(max_size=12)),
        "hostname": draw(st.text(max_size=6)),
        "machine": draw(st.none() | st.text(max_size=6)),
        "status": status,
        "subprocess": draw(st.booleans()),
        "start_time": start,
        "finish_time": None if start is None else draw(st.none() | _time_s),
        "duration": draw(_opt_float),
        "cpu_time": draw(_opt_float),
        "peak_memory": draw(_opt_int),
        "peak_gpu_memory": draw(_opt_int),
        "system_power": draw(_opt_float),
        "cpu_power": draw(_opt_float),
        "gpu_power": draw(_opt_float),
        "subtasks": draw(st.lists(_task_dict(depth + 1), max_size=3)) if depth < 2 else [],
        **draw(st.dictionaries(_keys, _extra_value, max_size=3)),
    }
    if status == "failed":
        node["error"] = draw(st.text(max_size=10))
    for child in node["subtasks"]:
        child["parent_id"] = node["task_id"]
    # siblings in the order they started, unknown starts last: the order of every task file
    # tasktrace writes (tree.spool, tree.delivery) and of the trees rebuilt from spans
    node["subtasks"].sort(key=lambda t: (t["start_time"] is None, t["start_time"] or 0.0))
    return node


# ----- round trips -------------------------------------------------------------------------------


def _round_trip(task: Task) -> Task:
    lines = list(encode_lines(task_to_spans(task)))
    return spans_to_task(read_spans(lines))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_task_dict())
def test_task_tree_round_trips_through_otlp_json_lines(data: dict[str, Any]) -> None:
    """Task tree → OTLP JSON lines → task tree keeps every field, extra and the order.

    Floats come back as the spans carry them: rounded to their source's precision.
    """
    task = Task.model_validate(data)
    same_to_span_precision(_round_trip(task).model_dump(), task.model_dump())


@pytest.mark.parametrize("name", ["cancelled.json", "failed.json", "nested.json"])
def test_lenskit_fixture_round_trips_through_otlp_json_lines(name: str) -> None:
    """A LensKit task file comes back from OTLP JSON lines, as JSON too (floats to 1 µs/1 mJ)."""
    task = Task.model_validate_json((FIXTURES / name).read_bytes())
    back = _round_trip(task)
    same_to_span_precision(json.loads(back.model_dump_json()), json.loads(task.model_dump_json()))


def test_live_tasks_round_trip_with_their_span_ids(tmp_path: Path) -> None:
    """Spans exported live by the file exporter rebuild the live tree, ids included."""
    provider = TracerProvider()
    exporter = OtlpJsonFileSpanExporter(folder=tmp_path)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("outer") as outer, tracer.start_as_current_span("inner"):
        pass
    exporter.shutdown()
    task = spans_to_task(read_spans(exporter.path.read_bytes().splitlines()))
    assert task.label == "outer"
    assert task.span_id == format(outer.get_span_context().span_id, "016x")
    assert [t.label for t in task.subtasks] == ["inner"]
    assert task.subtasks[0].foreign_span
    assert task.subtasks[0].parent_id == task.task_id


# ----- the line format ---------------------------------------------------------------------------

_GOLDEN_TASK = {
    "task_id": "00000000-0000-4000-8000-000000000001",
    "label": "train",
    "hostname": "node1",
    "machine": None,
    "status": "finished",
    "start_time": 1700000000.5,
    "finish_time": 1700000002.0,
    "duration": 1.5,
    "peak_memory": 1048576,
    "tags": ["exp"],
    "subtasks": [],
}
_GOLDEN_LINE = {
    "resourceSpans": [
        {
            "resource": {  # the host is on the resource, as on a live task's span
                "attributes": [
                    {"key": "service.name", "value": {"stringValue": "golden"}},
                    {"key": "host.name", "value": {"stringValue": "node1"}},
                ]
            },
            "scopeSpans": [
                {
                    "scope": {"name": "tasktrace"},
                    "spans": [
                        {
                            "traceId": "00000000000040008000000000000001",
                            "spanId": format(
                                int.from_bytes(
                                    __import__("hashlib")
                                    .blake2b(
                                        uuid.UUID(_GOLDEN_TASK["task_id"]).bytes, digest_size=8
                                    )
                                    .digest(),
                                    "big",
                                ),
                                "016x",
                            ),
                            "flags": 256,
                            "name": "train",
                            "kind": 1,
                            "startTimeUnixNano": "1700000000500000000",
                            "endTimeUnixNano": "1700000002000000000",
                            "attributes": [  # identity, fields, data: as a live span ends
                                {
                                    "key": "tasktrace.task.id",
                                    "value": {
                                        "stringValue": "00000000-0000-4000-8000-000000000001"
                                    },
                                },
                                {
                                    "key": "tasktrace.task.status",
                                    "value": {"stringValue": "finished"},
                                },
                                {"key": "tasktrace.task.duration_s", "value": {"doubleValue": 1.5}},
                                {
                                    "key": "tasktrace.task.peak_memory_bytes",
                                    "value": {"intValue": "1048576"},
                                },
                                {
                                    "key": "tasktrace.data.tags",
                                    "value": {"arrayValue": {"values": [{"stringValue": "exp"}]}},
                                },
                            ],
                            "status": {"code": 1},
                        }
                    ],
                }
            ],
        }
    ]
}


def test_otlp_json_line_matches_golden_format() -> None:
    """A task encodes to the golden OTLP JSON line: hex ids, int64 strings, enum integers."""
    task = Task.model_validate(_GOLDEN_TASK)
    lines = list(encode_lines(task_to_spans(task, Resource({"service.name": "golden"}))))
    assert len(lines) == 1
    assert lines[0].endswith(b"\n")
    assert b"\n" not in lines[0][:-1]
    assert json.loads(lines[0]) == _GOLDEN_LINE


def _check_rules(value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            assert re.fullmatch(r"[a-z][A-Za-z]*", key), key
            if key in {"traceId"}:
                assert re.fullmatch(r"[0-9a-f]{32}", item), item
            elif key in {"spanId", "parentSpanId"}:
                assert re.fullmatch(r"[0-9a-f]{16}", item), item
            elif key.endswith("UnixNano") or key == "intValue":
                assert isinstance(item, str)
                assert re.fullmatch(r"-?\d+", item)
            elif key in {"kind", "code"}:
                assert isinstance(item, int)
            _check_rules(item)
    elif isinstance(value, list):
        for item in value:
            _check_rules(item)


def test_every_line_follows_otlp_json_rules_and_parses_with_official_parser() -> None:
    """Each line of a converted LensKit file follows the OTLP/JSON rules and parses officially."""
    task = Task.model_validate_json((FIXTURES / "nested.json").read_bytes())
    for line in encode_lines(task_to_spans(task)):
        data = json.loads(line)
        _check_rules(data)
        request = json_format.Parse(line, ExportTraceServiceRequest())
        spans = request.resource_spans[0].scope_spans[0].spans
        assert len(spans) == 11


def test_batches_over_the_line_limit_are_split() -> None:
    """No line exceeds max_line_bytes and no span is lost when a batch is split."""
    task = Task.model_validate_json((FIXTURES / "nested.json").read_bytes())
    spans = task_to_spans(task)
    lines = list(encode_lines(spans, max_line_bytes=2500))
    assert len(lines) > 1
    assert all(len(line) <= 2500 for line in lines)
    assert [s.name for s in read_spans(lines)] == [s.name for s in spans]


def test_a_span_over_the_line_limit_is_named_briefly(caplog: pytest.LogCaptureFixture) -> None:
    """A span too large for one line is left out with a warning quoting its name briefly.

    A 3 MB label made a 3 MB warning (the name quoted whole).
    """
    task = Task.model_validate_json((FIXTURES / "nested.json").read_bytes())
    task.subtasks[0].label = "L" * 3_000_000
    spans = task_to_spans(task)
    with caplog.at_level(logging.WARNING):
        lines = list(encode_lines(spans, max_line_bytes=1_000_000))
    assert len(read_spans(lines)) == len(spans) - 1
    (record,) = caplog.records
    message = record.getMessage()
    assert len(message) < 400, message[:400]
    assert "'" + "L" * 80 + "…' (3,000,000 characters)" in message


def test_entry_point_exporter_writes_a_new_file_per_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tasktrace_otlp_json entry point makes a new file per exporter, unique first lines."""
    monkeypatch.setenv("TASKTRACE_OTLP_JSON_DIR", str(tmp_path))
    (entry,) = entry_points(group="opentelemetry_traces_exporter", name="tasktrace_otlp_json")
    first_lines = []
    for _ in range(2):
        exporter = entry.load()()  # as the SDK and OTEL_TRACES_EXPORTER resolve it
        assert isinstance(exporter, OtlpJsonFileSpanExporter)
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        with provider.get_tracer("t").start_as_current_span("run"):
            pass
        provider.shutdown()
        first_lines.append(exporter.path.read_bytes().splitlines()[0])
    assert len(list(tmp_path.glob("*.otlp.jsonl"))) == 2
    assert first_lines[0] != first_lines[1]


# ----- replay ------------------------------------------------------------------------------------


def test_replay_keeps_timestamps_and_parents_and_ids_are_stable(
    otlp_http_receiver: OtlpHttpReceiver,
) -> None:
    """Replaying a LensKit file twice sends original timestamps, parent links and equal ids."""
    path = FIXTURES / "nested.json"
    task = Task.model_validate_json(path.read_bytes())
    replay(load_spans(path), otlp_http_receiver.endpoint)
    first = otlp_http_receiver.wait_for(11, timeout_s=10)
    otlp_http_receiver.clear()
    replay(load_spans(path), otlp_http_receiver.endpoint)
    second = otlp_http_receiver.wait_for(11, timeout_s=10)
    assert len(first) == len(second) == 11
    assert [(s.trace_id, s.span_id, s.parent_span_id) for s in first] == [
        (s.trace_id, s.span_id, s.parent_span_id) for s in second
    ]
    by_task = {s.attributes["tasktrace.task.id"]: s for s in first}
    assert len({s.trace_id for s in first}) == 1
    stack = [task]
    while stack:
        node = stack.pop()
        span = by_task[str(node.task_id)]
        assert span.start_ns == seconds_to_ns(node.start_time or 0)
        assert span.end_ns == seconds_to_ns(node.finish_time or 0)
        parent = by_task.get(str(node.parent_id))
        assert span.parent_span_id == (parent.span_id if parent else None)
        assert span.resource_attributes["host.name"] == node.hostname
        stack.extend(node.subtasks)


def test_replay_of_otlp_json_lines_keeps_resource_and_status(
    tmp_path: Path, otlp_http_receiver: OtlpHttpReceiver
) -> None:
    """An OTLP JSON-lines file replays with its own resource, ids and status codes."""
    provider = TracerProvider(resource=Resource({"service.name": "offline-run"}))
    exporter = OtlpJsonFileSpanExporter(folder=tmp_path)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("t").start_as_current_span("job") as span:
        span.set_status(__import__("opentelemetry.trace", fromlist=["StatusCode"]).StatusCode.ERROR)
    provider.shutdown()
    replay(load_spans(exporter.path), otlp_http_receiver.endpoint)
    (got,) = otlp_http_receiver.wait_for(1, timeout_s=10)
    assert got.resource_attributes["service.name"] == "offline-run"
    assert got.span_id == format(span.get_span_context().span_id, "016x")
    assert got.status_code == "ERROR"
    assert got.start_ns == span.start_time


# ----- Chrome trace ------------------------------------------------------------------------------

_REQUIRED = {
    "X": {"name", "ph", "ts", "dur", "pid", "tid"},
    "C": {"name", "ph", "ts", "pid", "args"},
    "M": {"name", "ph", "pid", "args"},
}


def _concurrent_tree() -> Task:
    base = 1_700_000_000.0

    def node(
        label: str, start: float, dur: float, subtasks: list[dict[str, Any]] = (), **extra: Any
    ) -> dict[str, Any]:
        return {
            "label": label,
            "status": "finished",
            "start_time": base + start,
            "finish_time": base + start + dur,
            "duration": dur,
            "subtasks": list(subtasks),
            **extra,
        }

    return Task.model_validate(
        node(
            "root",
            0,
            10,
            [
                node("a", 1, 4, [node("a1", 1.5, 1, peak_memory=100)], peak_memory=200),
                node("b", 2, 3, cpu_power=5.0),  # overlaps a: another thread track
                node("c", 6, 3, subprocess=True),
            ],
            peak_memory=300,
        )
    )


@pytest.mark.parametrize("tree", ["nested", "concurrent"])
def test_chrome_trace_has_required_keys_sorted_events_nesting_and_durations(tree: str) -> None:
    """Chrome events carry the required keys, are sorted, nest per track, lengths match."""
    task = (
        Task.model_validate_json((FIXTURES / "nested.json").read_bytes())
        if tree == "nested"
        else _concurrent_tree()
    )
    doc = json.loads(json.dumps(task_to_chrome_trace(task)))
    events = doc["traceEvents"]
    for event in events:
        assert _REQUIRED[event["ph"]] <= event.keys()
    timed = [e for e in events if e["ph"] != "M"]
    assert [e["ts"] for e in timed] == sorted(e["ts"] for e in timed)
    slices = [e for e in timed if e["ph"] == "X"]
    durations = {}
    stack = [task]
    while stack:
        node = stack.pop()
        assert node.finish_time is not None
        assert node.start_time is not None
        durations[node.label] = node.finish_time - node.start_time  # the slices' clock
        stack.extend(node.subtasks)
    assert sorted(e["name"] for e in slices) == sorted(durations)
    for e in slices:
        assert e["dur"] == pytest.approx(durations[e["name"]] * 1e6, abs=0.001)
    tracks: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for e in slices:
        tracks.setdefault((e["pid"], e["tid"]), []).append(e)
    for track in tracks.values():
        open_ends: list[float] = []
        for e in track:  # sorted by ts, longer first: each slice nests in the open one or follows
            while open_ends and e["ts"] >= open_ends[-1]:
                open_ends.pop()
            if open_ends:
                assert e["ts"] + e["dur"] <= open_ends[-1] + 0.001
            open_ends.append(e["ts"] + e["dur"])
    if tree == "concurrent":
        by_name = {e["name"]: e for e in slices}
        assert by_name["b"]["tid"] != by_name["a"]["tid"]
        assert by_name["c"]["pid"] != by_name["root"]["pid"]
        rss = [e["args"]["value"] for e in timed if e["ph"] == "C" and "RSS" in e["name"]]
        assert rss == [300, 200, 100, 200, 300, 0]


def test_chrome_slices_of_a_live_run_nest_in_their_parents(tmp_path: Path) -> None:
    """A recorded run's slices nest: each subtask's slice lies within its parent's.

    Before: ``dur`` was the measured ``duration`` (``perf_counter``, which leaves out
    tasktrace's own start-up work) while ``ts`` was the wall-clock ``start_time``, so a parent's
    slice ended before its last subtask's (by the meters' set-up time, 11 ms for a first task).
    """
    path = tmp_path / "run.json"
    with Task("outer", file=path):
        for i in range(3):
            with Task(f"step {i}"), Task("leaf"):
                pass
    task = Task.model_validate_json(path.read_bytes())
    events = task_to_chrome_trace(task)["traceEvents"]
    slices = {e["args"]["task_id"]: e for e in events if e["ph"] == "X"}
    stack = [task]
    while stack:
        node = stack.pop()
        parent = slices[str(node.task_id)]
        for child in node.subtasks:
            inner = slices[str(child.task_id)]
            assert inner["ts"] >= parent["ts"]
            assert inner["ts"] + inner["dur"] <= parent["ts"] + parent["dur"] + 0.001, child.label
            stack.append(child)
