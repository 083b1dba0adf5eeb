"""End to end against a third-party OTLP backend: Arize Phoenix, started on loopback.

Phoenix is large (about 850 MB with its dependencies) and pins its own libraries, so it lives in
a side virtual environment, never in the project's ``.venv``::

    python3 -m venv .venv-phoenix && .venv-phoenix/bin/pip install arize-phoenix
    .venv/bin/python -m pytest -m phoenix

``PHOENIX_BIN`` may name another ``phoenix`` executable. Without one, the test is skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasktrace import Task

from .export_helpers import NESTED_WORKLOAD, clean_env, run_script
from .otlp_receivers import closed_loopback_endpoint

pytestmark = pytest.mark.phoenix

_REPO = Path(__file__).resolve().parents[1]
PHOENIX_BIN = Path(os.environ.get("PHOENIX_BIN", _REPO / ".venv-phoenix" / "bin" / "phoenix"))
START_TIMEOUT_S = 90.0


def _get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5.0) as response:  # noqa: S310 - loopback http
        return json.load(response)


@pytest.fixture
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start a Phoenix server on 127.0.0.1 with its own working folder; yield its base URL."""
    if not PHOENIX_BIN.exists():
        pytest.skip(f"Phoenix not installed at {PHOENIX_BIN} (see this module's docstring)")
    base = closed_loopback_endpoint()
    grpc_port = closed_loopback_endpoint().rsplit(":", 1)[1]
    folder = tmp_path_factory.mktemp("phoenix")
    env = clean_env(
        PHOENIX_HOST="127.0.0.1",
        PHOENIX_PORT=base.rsplit(":", 1)[1],
        PHOENIX_GRPC_PORT=grpc_port,
        PHOENIX_WORKING_DIR=str(folder),
    )
    log = (folder / "phoenix.log").open("w")
    server = subprocess.Popen([str(PHOENIX_BIN), "serve"], env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1.0).close()  # noqa: S310
                break
            except (urllib.error.URLError, OSError):
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"Phoenix did not start: {(folder / 'phoenix.log').read_text()}")
                time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=5)
        log.close()


def test_workload_spans_are_found_in_phoenix_with_their_parent_links(
    phoenix: str, tmp_path: Path
) -> None:
    """A separate process's task tree, sent by OTEL_* variables, is queryable in Phoenix."""
    env = clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=phoenix, OTEL_SERVICE_NAME="phoenix-e2e")
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
    while True:
        data = _get_json(f"{phoenix}/v1/projects/default/spans?limit=100")
        spans = [s for s in data["data"] if s["context"]["trace_id"] == root.trace_id]  # type: ignore[index]
        if len(spans) >= len(expected) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    found = {s["context"]["span_id"]: (s["name"], s["parent_id"]) for s in spans}
    assert found == expected
    statuses = {s["name"]: s["status_code"] for s in spans}
    assert statuses["evaluate"] == "ERROR"
    assert statuses["experiment"] == "OK"
