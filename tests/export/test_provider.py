"""The tracer provider tasks use: its resource, sampler, ids and exporters (export.provider)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tasktrace import Task

from ..export_helpers import (
    NESTED_WORKLOAD,
    clean_env,
    is_microsecond_rounding,
    run_script,
)
from ..otlp_receivers import OtlpHttpReceiver, SpanRecord


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
        assert is_microsecond_rounding(attrs["tasktrace.task.duration_s"], task.duration)  # 1 µs
        assert is_microsecond_rounding(attrs["tasktrace.task.cpu_time_s"], task.cpu_time)
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


def test_seeded_programs_get_new_trace_ids_every_run(tmp_path: Path) -> None:
    """random.seed(42) in the program: two runs still get different trace and span ids."""
    code = (
        "import random\nrandom.seed(42)\nfrom tasktrace import Task\n"
        "with Task('x') as t:\n    pass\nprint(t.trace_id, t.span_id, t.task_id)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TASKTRACE_"))}
    runs = [
        subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.split()
        for _ in range(2)
    ]
    assert all(len(ids) == 3 for ids in runs)
    for first, second in zip(*runs, strict=True):
        assert first != second


FORK_SCRIPT = """
import os, sys
from tasktrace import Task
with Task("before fork"):
    pass
child = os.fork()
if child == 0:
    with Task("forked child"):
        with Task("nested in child"):
            pass
    sys.exit(0)  # the exit handlers export the child's spans
os.waitpid(child, 0)
with Task("after fork"):
    pass
print(os.getpid(), child)
"""


def test_a_forked_childs_spans_carry_its_own_process(
    otlp_http_receiver: OtlpHttpReceiver, tmp_path: Path
) -> None:
    """os.fork(): the child's spans are exported with the child's pid and instance id.

    The resource of tasktrace's own provider is built once; a forked child's tasks get a
    provider with a resource of their own process (the same exporters), the parent's keep
    the parent's. The child ends by ``sys.exit``: its exit handlers export its spans.
    """
    env = clean_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp_http_receiver.endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_SERVICE_NAME="forking",
    )
    run = run_script(FORK_SCRIPT, tmp_path, env)
    assert run.returncode == 0, run.stderr
    assert run.export_warnings() == []
    parent_pid, child_pid = map(int, run.stdout.split())
    assert parent_pid == run.pid
    spans = {s.name: s for s in otlp_http_receiver.wait_for(4, timeout_s=10.0)}
    assert sorted(spans) == ["after fork", "before fork", "forked child", "nested in child"]
    pids = {name: s.resource_attributes["process.pid"] for name, s in spans.items()}
    assert pids == {
        "before fork": parent_pid,
        "after fork": parent_pid,
        "forked child": child_pid,
        "nested in child": child_pid,
    }
    instances = {name: s.resource_attributes["service.instance.id"] for name, s in spans.items()}
    assert instances["before fork"] == instances["after fork"]
    assert instances["forked child"] == instances["nested in child"] != instances["before fork"]
    for span in spans.values():  # the rest of the resource is the parent's
        assert span.resource_attributes["service.name"] == "forking"
        assert span.resource_attributes["host.name"] == socket.gethostname()


USER_PROVIDER_FORK_SCRIPT = """
import os, sys
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from tasktrace import Task

provider = TracerProvider(resource=Resource({"service.name": "mine", "mine.pid": os.getpid()}))
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=sys.argv[1])))
trace.set_tracer_provider(provider)
with Task("before fork"):
    pass
child = os.fork()
if child == 0:
    with Task("forked child"):
        pass
    provider.force_flush()
    os._exit(0)
os.waitpid(child, 0)
provider.force_flush()
"""


def test_a_users_provider_is_left_as_it_is_in_a_forked_child(
    otlp_http_receiver: OtlpHttpReceiver, tmp_path: Path
) -> None:
    """The user's provider: a forked child's tasks go through it, with the resource it has."""
    endpoint = otlp_http_receiver.endpoint + "/v1/traces"
    run = run_script(USER_PROVIDER_FORK_SCRIPT, tmp_path, clean_env(), endpoint)
    assert run.returncode == 0, run.stderr
    spans = {s.name: s for s in otlp_http_receiver.wait_for(2, timeout_s=10.0)}
    assert sorted(spans) == ["before fork", "forked child"]
    for span in spans.values():
        assert span.resource_attributes["service.name"] == "mine"
        assert span.resource_attributes["mine.pid"] == run.pid
        assert "process.pid" not in span.resource_attributes
