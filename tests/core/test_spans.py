"""The one task ⇄ span mapping: a run's live spans equal the spans converted from its file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, Status, StatusCode, TraceFlags

from tasktrace import Task, TaskStatus
from tasktrace.core.spans import (
    finish_attributes,
    host_attributes,
    identity_attributes,
    span_attributes,
    span_fields,
    span_status,
    start_attributes,
)
from tasktrace.formats.otlp_json import read_spans
from tasktrace.formats.replay import load_spans

from ..export_helpers import clean_env, run_script

_RUN = """
import subprocess, sys
from tasktrace import Task, child_environment

CHILD = (
    "from tasktrace import Task\\n"
    "with Task('child', fold=1):\\n"
    "    with Task('grandchild'):\\n"
    "        pass\\n"
)

with Task("run", file=sys.argv[1], tags=["exp", "live"], config={"lr": 0.1}):
    with Task("load", rows=10):
        pass
    try:
        with Task("fit", fold=2):
            raise ValueError("bad fold")
    except ValueError:
        pass
    try:
        with Task("interrupted"):
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    with Task("evaluate") as evaluate:
        subprocess.run([sys.executable, "-c", CHILD], env=child_environment(), check=True)
        evaluate.score = 0.75
"""
"""Nested tasks with extra data, a FAILED one with an error, a CANCELLED one, and a subprocess
task (with a subtask) in a child process: the run writes its task file, and tasktrace's own
tracer provider writes every span (the child's too) as OTLP JSON lines."""


def _live_and_converted(tmp_path: Path) -> tuple[list[ReadableSpan], list[ReadableSpan]]:
    spans_dir = tmp_path / "spans"
    spans_dir.mkdir()
    env = clean_env(TASKTRACE_OTLP_JSON_DIR=str(spans_dir), TASKTRACE_MACHINE="rig-7")
    run = run_script(_RUN, tmp_path, env, str(tmp_path / "run.json"))
    assert run.returncode == 0, run.stderr
    live = [
        span
        for path in sorted(spans_dir.iterdir())
        for span in read_spans(path.read_bytes().splitlines(), str(path))
    ]
    return live, load_spans(tmp_path / "run.json")


def _key(span: ReadableSpan) -> tuple[int, int]:
    assert span.context is not None
    return span.context.trace_id, span.context.span_id


def _by_id(spans: list[ReadableSpan]) -> dict[tuple[int, int], ReadableSpan]:
    return {_key(span): span for span in spans}


def _plain(attributes: Any) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in (attributes or {}).items()}


def test_live_spans_equal_the_spans_converted_from_the_task_file(tmp_path: Path) -> None:
    """Names, parents, status (a FAILED task's error as description), attributes and host agree.

    The same run seen two ways: the spans tasktrace exported while it ran (OTLP JSON lines,
    read back with the OTel project's parser), and the spans ``tasktrace replay`` / ``export
    --format otlp-json`` make of its task file. Each span of one is the other's, by trace and
    span id.
    """
    live, converted = _live_and_converted(tmp_path)
    assert len(live) == 7
    live_by_id, converted_by_id = _by_id(live), _by_id(converted)
    assert live_by_id.keys() == converted_by_id.keys()
    pairs = [(span, converted_by_id[key]) for key, span in live_by_id.items()]
    for span, other in pairs:
        assert other.name == span.name
        assert (other.parent.span_id if other.parent else None) == (
            span.parent.span_id if span.parent else None
        ), span.name
        assert other.start_time is not None
        assert span.start_time is not None
        assert abs(other.start_time - span.start_time) < 1_000  # ns: file times are float s
    for span, other in pairs:  # a FAILED task's error is the description both ways
        assert (other.status.status_code, other.status.description) == (
            span.status.status_code,
            span.status.description,
        ), span.name
    for span, other in pairs:
        assert _plain(other.attributes) == _plain(span.attributes), span.name
    for span, other in pairs:  # the host is on the resource, both ways
        for host_key in ("host.name", "tasktrace.machine"):
            assert host_key not in (other.attributes or {})
            assert host_key not in (span.attributes or {})
            assert other.resource.attributes[host_key] == span.resource.attributes[host_key]
        assert span.resource.attributes["tasktrace.machine"] == "rig-7"
    failed = next(s for s in live if s.name == "fit")
    assert failed.status.description == "ValueError: bad fold"
    child = next(s for s in live if s.name == "child")
    assert child.attributes is not None
    assert child.attributes["tasktrace.task.subprocess"]


def _task(**fields: Any) -> Task:
    return Task.model_validate({"label": "t", "hostname": "h", **fields})


def test_span_status_follows_the_task_status_and_its_error() -> None:
    """FINISHED is OK, FAILED is ERROR with the task's error, anything else is UNSET."""
    assert span_status(TaskStatus.FINISHED, None).status_code is StatusCode.OK
    failed = span_status(TaskStatus.FAILED, "ValueError: x")
    assert (failed.status_code, failed.description) == (StatusCode.ERROR, "ValueError: x")
    for status in (TaskStatus.CANCELLED, TaskStatus.RUNNING, TaskStatus.PENDING):
        assert span_status(status, "KeyboardInterrupt").status_code is StatusCode.UNSET


def test_data_at_start_identity_and_fields_at_finish_host_on_the_resource() -> None:
    """Start: the data only; finish: id, parent, subprocess (if true), fields, data; no host."""
    parent = _task()
    child = _task(parent_id=str(parent.task_id), subprocess=True, duration=1.5, epoch=3)
    assert start_attributes(child) == {"tasktrace.data.epoch": 3}
    assert start_attributes(parent) == {}
    assert identity_attributes(child) == {
        "tasktrace.task.id": str(child.task_id),
        "tasktrace.task.parent_id": str(parent.task_id),
        "tasktrace.task.subprocess": True,
    }
    assert identity_attributes(parent) == {"tasktrace.task.id": str(parent.task_id)}
    finish = finish_attributes(child)
    assert list(finish.items()) == [
        ("tasktrace.task.id", str(child.task_id)),
        ("tasktrace.task.parent_id", str(parent.task_id)),
        ("tasktrace.task.subprocess", True),
        ("tasktrace.task.status", "pending"),
        ("tasktrace.task.duration_s", 1.5),
        ("tasktrace.data.epoch", 3),
    ]
    assert finish_attributes(child, identity=False, data=False) == {
        "tasktrace.task.status": "pending",
        "tasktrace.task.duration_s": 1.5,
    }
    assert span_attributes(child) == finish
    assert host_attributes("node1", "rig") == {"host.name": "node1", "tasktrace.machine": "rig"}
    assert host_attributes("node1", None) == {"host.name": "node1"}


def test_a_span_without_a_status_attribute_gets_one_from_its_span_status() -> None:
    """ERROR is failed (its description the error); ended is finished; else running."""
    context = SpanContext(1, 2, is_remote=False, trace_flags=TraceFlags(1))
    failed = ReadableSpan(
        name="s",
        context=context,
        status=Status(StatusCode.ERROR, "HTTP 503"),
        start_time=1_000_000_000,
        end_time=3_500_000_000,
    )
    assert span_fields(failed) == {
        "status": "failed",
        "error": "HTTP 503",
        "finish_time": 3.5,
        "duration": 2.5,
    }
    assert span_fields(ReadableSpan(name="s", context=context))["status"] == "running"


def test_float_measurements_are_rounded_to_their_source_precision_on_spans() -> None:
    """Span floats carry no binary noise: times to 1 µs, NVML energy to 1 mJ, RAPL to 1 µJ.

    The task keeps the values as measured.
    """
    task = Task.model_validate(
        {
            "label": "noisy",
            "status": "finished",
            "duration": 3.888958554999988,
            "cpu_time": 0.15454899999999983,
            "gpu_power": 12.345678912,
            "gpu_energy_source": "nvml-counter",
            "cpu_power": 7.123456789,
            "cpu_energy_source": "rapl",
        }
    )
    attrs = finish_attributes(task)
    assert attrs["tasktrace.task.duration_s"] == 3.888959
    assert attrs["tasktrace.task.cpu_time_s"] == 0.154549
    assert attrs["tasktrace.task.gpu_energy_j"] == 12.346
    assert attrs["tasktrace.task.cpu_energy_j"] == 7.123457
    assert task.cpu_time == 0.15454899999999983
