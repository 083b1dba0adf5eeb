"""Coexistence with OpenTelemetry set-ups made by others: Logfire, a user-built SDK provider.

Each test runs in a fresh interpreter: the test session already holds a global provider.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .export_helpers import clean_env, run_script
from .otlp_receivers import closed_loopback_endpoint

OVERRIDING = "Overriding of current TracerProvider"

LOGFIRE_FIRST = """
import json, sys
import logfire
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tasktrace import Task
from tasktrace.export import provider as _setup

memory = InMemorySpanExporter()
def set_up_logfire():
    logfire.configure(
        send_to_logfire=False, console=False, service_name="with-logfire",
        additional_span_processors=[SimpleSpanProcessor(memory)],
    )
ORDER
with Task("outer", file="task.json"):
    with logfire.span("logfire work"):
        with Task("inner"):
            pass
if "tasktrace-first" in sys.argv:
    set_up_logfire()
    with Task("after logfire"):
        pass
spans = memory.get_finished_spans()
print(json.dumps({
    "names": [s.name for s in spans],
    "service": sorted({s.resource.attributes.get("service.name") for s in spans}),
    "pipelines": len(_setup.pipelines()),
}))
"""


@pytest.mark.parametrize("order", ["logfire-first", "tasktrace-first"])
def test_tasks_become_logfire_spans_and_the_task_file_still_works(
    order: str, tmp_path: Path
) -> None:
    """After logfire.configure(), tasks go through Logfire's provider; no override warning."""
    code = LOGFIRE_FIRST.replace("ORDER", "set_up_logfire()" if order == "logfire-first" else "")
    # No OTEL_EXPORTER_OTLP_ENDPOINT here: Logfire itself would export to it.
    run = run_script(code, tmp_path, clean_env(), order)
    assert run.returncode == 0, run.stderr
    assert OVERRIDING not in run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    if order == "logfire-first":
        assert result["names"] == ["inner", "logfire work", "outer"]
    else:
        assert result["names"] == ["after logfire"]
    assert result["service"] == ["with-logfire"]
    assert result["pipelines"] == 0
    data = json.loads((tmp_path / "task.json").read_text())
    assert data["status"] == "finished"
    (node,) = data["subtasks"]
    if order == "logfire-first":
        assert node["label"] == "logfire work"
        assert [t["label"] for t in node["subtasks"]] == ["inner"]
    else:  # Logfire's span was non-recording before logfire.configure(): not in the tree
        assert node["label"] == "inner"


USER_PROVIDER = """
import json, sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tasktrace import Task
from tasktrace.export import provider as _setup
from tasktrace.tree.processor import tree

memory = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(memory))
if "user-first" in sys.argv:
    trace.set_tracer_provider(provider)
with Task("first", file="task.json"):
    pass
if "tasktrace-first" in sys.argv:
    trace.set_tracer_provider(provider)
with Task("second"):
    with trace.get_tracer("user").start_as_current_span("user span"):
        pass
processors = provider._active_span_processor._span_processors
print(json.dumps({
    "names": [s.name for s in memory.get_finished_spans()],
    "tree_processor": sum(p is tree for p in processors),
    "processors": len(processors),
    "pipelines": len(_setup.pipelines()),
}))
"""


@pytest.mark.parametrize("order", ["user-first", "tasktrace-first"])
def test_user_provider_gets_the_tree_processor_and_no_exporter(order: str, tmp_path: Path) -> None:
    """A user's SDK provider gets tasktrace's processor once, no exporter, no override warning."""
    env = clean_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=closed_loopback_endpoint(), TASKTRACE_EXIT_TIMEOUT_S="0.5"
    )
    run = run_script(USER_PROVIDER, tmp_path, env, order)
    assert run.returncode == 0, run.stderr
    assert OVERRIDING not in run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["tree_processor"] == 1
    assert result["processors"] == 2  # the user's SimpleSpanProcessor and the tree
    if order == "user-first":
        assert result["names"] == ["first", "user span", "second"]
        assert result["pipelines"] == 0
    else:
        # The first task went through tasktrace's own provider, exporting by OTEL_* variables.
        assert result["names"] == ["user span", "second"]
        assert result["pipelines"] == 1
    assert json.loads((tmp_path / "task.json").read_text())["status"] == "finished"


def test_configure_with_an_endpoint_adds_an_exporter_to_a_user_provider(
    otlp_http_receiver: object, tmp_path: Path
) -> None:
    """configure(endpoint=...) explicitly asks for export, even through a user's provider."""
    code = f"""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    import tasktrace
    trace.set_tracer_provider(TracerProvider())
    tasktrace.configure(endpoint={otlp_http_receiver.endpoint!r})
    with tasktrace.Task("asked"):
        pass
    """
    run = run_script(code, tmp_path, clean_env())
    assert run.returncode == 0, run.stderr
    (span,) = otlp_http_receiver.wait_for(1, timeout_s=5.0)
    assert span.name == "asked"
