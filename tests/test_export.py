"""OTLP export end to end: separate processes configured by OTEL_* variables or configure()."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tasktrace import Task, configure

from .export_helpers import (
    NESTED_WORKLOAD,
    clean_env,
    run_script,
)
from .otlp_receivers import OtlpHttpReceiver, SpanRecord, closed_loopback_endpoint


def _flatten(task: Task) -> list[Task]:
    return [task, *(t for sub in task.subtasks for t in _flatten(sub))]


def _assert_spans_equal_tree(spans: list[SpanRecord], task_file: Path, pid: int) -> None:
    root = Task.model_validate_json(task_file.read_text())
    tasks = _flatten(root)
    by_id = {s.span_id: s for s in spans}
    assert len(spans) == len(tasks) == 5
    assert {s.trace_id for s in spans} == {root.trace_id}
    for task in tasks:
        span = by_id[task.span_id]
        assert span.name == task.label
        parent = next((t for t in tasks if task in t.subtasks), None)
        assert span.parent_span_id == (parent.span_id if parent else None)
        attrs = span.attributes
        assert attrs["tasktrace.task.id"] == str(task.task_id)
        assert attrs["tasktrace.task.status"] == task.status.value
        assert attrs["tasktrace.task.duration_s"] == task.duration
        assert attrs["tasktrace.task.cpu_time_s"] == task.cpu_time
        assert attrs["tasktrace.task.peak_memory_bytes"] == task.peak_memory
        if task.status.value == "failed":
            assert span.status_code == "ERROR"
            assert span.status_message == "ValueError: boom"
            assert [e.name for e in span.events] == ["exception"]
        else:
            assert span.status_code == "OK"
    assert by_id[root.span_id].attributes["tasktrace.data.tags"] == ["exp", "otlp"]
    resource = spans[0].resource_attributes
    assert resource["service.name"] == "e2e-workload"
    assert resource["host.name"] == socket.gethostname()
    assert resource["process.pid"] == pid
    assert resource["tasktrace.machine"] == "test-box"
    assert resource["deployment.environment"] == "ci"
    assert resource["telemetry.sdk.language"] == "python"
    assert resource["telemetry.sdk.name"] == "opentelemetry"
    assert resource["telemetry.sdk.version"]


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_separate_process_configured_by_otel_variables_exports_the_task_tree(
    protocol: str,
    otlp_http_receiver: OtlpHttpReceiver,
    otlp_grpc_receiver: OtlpHttpReceiver,
    tmp_path: Path,
) -> None:
    """A nested workload configured only by OTEL_* variables sends spans equal to its task tree."""
    receiver = otlp_http_receiver if protocol == "http/protobuf" else otlp_grpc_receiver
    env = clean_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
        OTEL_SERVICE_NAME="e2e-workload",
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment=ci",
        OTEL_EXPORTER_OTLP_HEADERS="authorization=Bearer env-token",
        TASKTRACE_MACHINE="test-box",
    )
    run = run_script(NESTED_WORKLOAD, tmp_path, env, str(tmp_path / "task.json"))
    assert run.returncode == 0, run.stderr
    assert run.export_warnings() == []
    spans = receiver.wait_for(5, timeout_s=5.0)
    _assert_spans_equal_tree(spans, tmp_path / "task.json", run.pid)
    assert receiver.request_headers()[0]["authorization"] == "Bearer env-token"
    assert "env-token" not in (tmp_path / "task.json").read_text() + run.stderr


def test_nothing_configured_builds_no_exporter_and_connects_nowhere(tmp_path: Path) -> None:
    """With no OTEL_* variable and no configure(), no exporter exists and no socket connects."""
    code = """
    import sys
    connects = []
    def hook(event, args):
        if event == "socket.connect":
            connects.append(args)
    sys.addaudithook(hook)
    from tasktrace import Task
    from tasktrace.export import provider as _setup
    with Task("quiet", file="t.json"):
        with Task("inner"):
            pass
    owned = _setup.owns_provider()
    print("connects", len(connects), "pipelines", len(_setup.pipelines()), "owned", owned)
    """
    run = run_script(code, tmp_path, clean_env())
    assert run.returncode == 0, run.stderr
    assert "connects 0 pipelines 0 owned True" in run.stdout
    assert json.loads((tmp_path / "t.json").read_text())["status"] == "finished"


def test_configure_arguments_override_the_environment(
    otlp_http_receiver: OtlpHttpReceiver, tmp_path: Path
) -> None:
    """configure(endpoint=, service_name=, headers=) wins over the OTEL_* variables."""
    code = f"""
    import tasktrace
    tasktrace.configure(
        endpoint={otlp_http_receiver.endpoint!r},
        service_name="from-code",
        headers={{"authorization": "Bearer secret-token"}},
        resource_attributes={{"team": "ml"}},
    )
    with tasktrace.Task("configured"):
        pass
    """
    env = clean_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=closed_loopback_endpoint(),
        OTEL_SERVICE_NAME="from-env",
    )
    run = run_script(code, tmp_path, env)
    assert run.returncode == 0, run.stderr
    (span,) = otlp_http_receiver.wait_for(1, timeout_s=5.0)
    assert span.name == "configured"
    assert span.resource_attributes["service.name"] == "from-code"
    assert span.resource_attributes["team"] == "ml"
    assert otlp_http_receiver.request_headers()[0]["authorization"] == "Bearer secret-token"
    assert "secret-token" not in run.stderr + run.stdout


def test_unrepresentable_values_never_break_the_export_batch(
    otlp_http_receiver: OtlpHttpReceiver, tmp_path: Path
) -> None:
    """Ints beyond int64 and nested objects arrive as JSON strings; the whole batch arrives."""
    code = """
    from tasktrace import Task
    with Task("parent", big=2**70, nested={"a": {"b": [1, 2]}}, mixed=[1, "a"]) as t:
        t.later = -(2**64)
        with Task("child", small=3):
            pass
    """
    env = clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=otlp_http_receiver.endpoint)
    run = run_script(code, tmp_path, env)
    assert run.returncode == 0, run.stderr
    assert run.export_warnings() == []
    spans = {s.name: s for s in otlp_http_receiver.wait_for(2, timeout_s=5.0)}
    attrs = spans["parent"].attributes
    assert attrs["tasktrace.data_json.big"] == str(2**70)
    assert json.loads(attrs["tasktrace.data_json.nested"]) == {"a": {"b": [1, 2]}}
    assert json.loads(attrs["tasktrace.data_json.mixed"]) == [1, "a"]
    assert attrs["tasktrace.data_json.later"] == str(-(2**64))
    assert spans["child"].attributes["tasktrace.data.small"] == 3


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"OTEL_SDK_DISABLED": "true"}, "connects 0 pipelines 0"),
        ({"OTEL_TRACES_EXPORTER": "none"}, "connects 0 pipelines 0"),
        ({"OTEL_TRACES_EXPORTER": "console"}, "connects 0 pipelines 1"),
    ],
)
def test_standard_variables_turn_export_off_or_to_the_console(
    variables: dict[str, str], expected: str, tmp_path: Path
) -> None:
    """OTEL_SDK_DISABLED / OTEL_TRACES_EXPORTER=none send nothing; console prints the spans."""
    code = """
    import sys
    connects = []
    def hook(event, args):
        if event == "socket.connect":
            connects.append(args)
    sys.addaudithook(hook)
    from tasktrace import Task
    from tasktrace.export import provider as _setup
    with Task("quiet", file="t.json"):
        pass
    print("connects", len(connects), "pipelines", len(_setup.pipelines()), flush=True)
    """
    env = clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=closed_loopback_endpoint(), **variables)
    run = run_script(code, tmp_path, env)
    assert run.returncode == 0, run.stderr
    assert expected in run.stdout
    assert ('"name": "quiet"' in run.stdout) == (variables.get("OTEL_TRACES_EXPORTER") == "console")
    assert json.loads((tmp_path / "t.json").read_text())["status"] == "finished"


@pytest.mark.parametrize(
    "kwargs", [{"protocol": "udp"}, {"timeout_s": -1.0}, {"exit_timeout_s": -0.5}]
)
def test_configure_rejects_invalid_arguments(kwargs: dict[str, object]) -> None:
    """configure() raises ValueError naming a bad protocol or a negative timeout."""
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        configure(**kwargs)  # type: ignore[arg-type]
