"""End to end against a third-party OTLP backend: Arize Phoenix, started on loopback.

Phoenix is large (about 850 MB with its dependencies) and pins its own libraries, so it lives in
a side virtual environment, never in the project's ``.venv``; ``make test-phoenix`` creates it
and runs this test::

    python3 -m venv .venv-phoenix && .venv-phoenix/bin/pip install arize-phoenix
    .venv/bin/python -m pytest -m phoenix

``PHOENIX_BIN`` may name another ``phoenix`` executable; when it is set (as ``make
test-phoenix`` sets it) a missing executable fails the test. Without either, it is skipped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasktrace import Task

from .export_helpers import NESTED_WORKLOAD, clean_env, run_script
from .otlp_receivers import closed_loopback_endpoint
from .side_servers import REPO, get_json, serve

pytestmark = pytest.mark.phoenix

PHOENIX_BIN = Path(
    os.environ.get("PHOENIX_BIN", REPO / ".venv-phoenix" / "bin" / "phoenix")
).absolute()
PROJECT = "tasktrace-e2e"
"""The Phoenix project the run names with the ``openinference.project.name`` resource attribute."""


@pytest.fixture
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start a Phoenix server on 127.0.0.1 with its own working folder; yield its base URL."""
    if not PHOENIX_BIN.exists():
        message = f"Phoenix not installed at {PHOENIX_BIN} (see this module's docstring)"
        if "PHOENIX_BIN" in os.environ:
            pytest.fail(message)
        pytest.skip(message)
    base = closed_loopback_endpoint()
    grpc_port = closed_loopback_endpoint().rsplit(":", 1)[1]
    folder = tmp_path_factory.mktemp("phoenix")
    env = clean_env(
        PHOENIX_HOST="127.0.0.1",
        PHOENIX_PORT=base.rsplit(":", 1)[1],
        PHOENIX_GRPC_PORT=grpc_port,
        PHOENIX_WORKING_DIR=str(folder),
    )
    with serve([str(PHOENIX_BIN), "serve"], env, f"{base}/healthz", folder):
        yield base


def _spans(phoenix: str, project: str, trace_id: str) -> list[dict]:
    """Return the spans of trace ``trace_id`` in Phoenix project ``project`` (REST API)."""
    data = get_json(f"{phoenix}/v1/projects/{project}/spans?limit=100")
    return [s for s in data["data"] if s["context"]["trace_id"] == trace_id]  # type: ignore[index]


def test_workload_spans_are_found_in_their_phoenix_project_with_their_parent_links(
    phoenix: str, tmp_path: Path
) -> None:
    """A separate process's tree, sent by OTEL_* variables, is in the Phoenix project it names."""
    env = clean_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=phoenix,
        OTEL_SERVICE_NAME="phoenix-e2e",
        OTEL_RESOURCE_ATTRIBUTES=f"openinference.project.name={PROJECT}",
    )
    run = run_script(NESTED_WORKLOAD, tmp_path, env, str(tmp_path / "task.json"))
    assert run.returncode == 0, run.stderr
    assert run.export_warnings() == []
    root = Task.model_validate_json((tmp_path / "task.json").read_text())
    expected = {}
    stack = [(root, None)]
    while stack:
        task, parent = stack.pop()
        expected[task.span_id] = (task.label, parent.span_id if parent else None)
        stack.extend((sub, task) for sub in task.subtasks)

    deadline = time.monotonic() + 20.0
    while True:  # Phoenix stores spans in the background, after answering the request
        spans = _spans(phoenix, PROJECT, root.trace_id)
        if len(spans) >= len(expected) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    found = {s["context"]["span_id"]: (s["name"], s["parent_id"]) for s in spans}
    assert found == expected
    statuses = {s["name"]: s["status_code"] for s in spans}
    assert statuses["evaluate"] == "ERROR"
    assert statuses["experiment"] == "OK"
    assert _spans(phoenix, "default", root.trace_id) == []
