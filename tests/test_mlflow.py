"""End to end against MLflow's tracking server (its OTLP/HTTP trace ingestion), on loopback.

MLflow lives in a side virtual environment (about 850 MB), never in the project's ``.venv``;
``make test-mlflow`` creates it and runs these tests::

    python3 -m venv .venv-mlflow && .venv-mlflow/bin/pip install mlflow
    .venv/bin/python -m pytest -m mlflow

``MLFLOW_VENV`` may name another environment with MLflow installed; when it is set (as ``make
test-mlflow`` sets it) a missing ``mlflow`` there fails the tests. Without either, they are
skipped. What MLflow stored is read back with MLflow's own client API
(``tests/mlflow_client.py``, run by the side environment's Python).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tasktrace import Task
from tasktrace.core.attributes import HOST_NAME
from tasktrace.core.spans import span_attributes

from .export_helpers import NESTED_WORKLOAD, clean_env, run_script
from .otlp_receivers import closed_loopback_endpoint
from .side_servers import REPO, serve

pytestmark = pytest.mark.mlflow

MLFLOW_VENV = Path(os.environ.get("MLFLOW_VENV", REPO / ".venv-mlflow")).absolute()
CLIENT = Path(__file__).with_name("mlflow_client.py")
NO_TELEMETRY = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
"""MLflow's usage telemetry off (nothing leaves the machine anyway: no network in tests)."""
EXPORT_TIMEOUT_S = "30"
"""MLflow answers its first OTLP request only after setting up its trace jobs (seconds, on a
loaded machine); the default 10 s request timeout and 5 s exit bound can be too short."""


class MlflowServer:
    """A running MLflow tracking server: its base URL and its client (in the side env)."""

    def __init__(self, uri: str) -> None:
        """Remember the server's base URL (``http://127.0.0.1:PORT``)."""
        self.uri = uri

    def client(self, *args: str) -> str:
        """Run ``tests/mlflow_client.py`` with ``args`` in the side env; return its stdout."""
        done = subprocess.run(
            [str(MLFLOW_VENV / "bin" / "python"), str(CLIENT), args[0], self.uri, *args[1:]],
            env=clean_env(**NO_TELEMETRY),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def create_experiment(self, name: str) -> str:
        """Create an experiment; return its id."""
        return self.client("create-experiment", name).strip()

    def traces(self, experiment_id: str, spans: int) -> list[dict[str, Any]]:
        """Return the experiment's traces, waiting up to 20 s for ``spans`` spans in all."""
        deadline = time.monotonic() + 20.0
        while True:
            found = json.loads(self.client("traces", experiment_id))
            if sum(len(t["spans"]) for t in found) >= spans or time.monotonic() > deadline:
                return found
            time.sleep(0.5)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """Start an MLflow tracking server on 127.0.0.1 with its own SQLite store and artifacts."""
    mlflow_bin = MLFLOW_VENV / "bin" / "mlflow"
    if not mlflow_bin.exists():
        message = f"MLflow not installed at {mlflow_bin} (see this module's docstring)"
        if "MLFLOW_VENV" in os.environ:
            pytest.fail(message)
        pytest.skip(message)
    base = closed_loopback_endpoint()
    folder = tmp_path_factory.mktemp("mlflow")
    argv = [
        str(mlflow_bin),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        base.rsplit(":", 1)[1],
        "--backend-store-uri",
        f"sqlite:///{folder / 'mlflow.db'}",
        "--default-artifact-root",
        str(folder / "artifacts"),
        "--workers",
        "1",
    ]
    with serve(argv, clean_env(**NO_TELEMETRY), f"{base}/health", folder):
        yield MlflowServer(base)


def _expected_spans(root: Task) -> dict[str, tuple[str, str | None, str, dict[str, Any]]]:
    """span_id → (name, parent span_id, status, attributes) of every task of a task file.

    The attributes are the task's measurements, status, ids and data by tasktrace's one task →
    span mapping (:func:`tasktrace.core.spans.span_attributes`), JSON-normalised as MLflow
    returns them. ``host.name`` (in the resource of spans) is checked apart.
    """
    expected = {}
    stack: list[tuple[Task, Task | None]] = [(root, None)]
    while stack:
        task, parent = stack.pop()
        attrs = span_attributes(task)
        status = "ERROR" if task.status.value == "failed" else "OK"
        expected[task.span_id] = (
            task.label,
            parent.span_id if parent else None,
            status,
            json.loads(json.dumps(attrs)),
        )
        stack.extend((sub, task) for sub in task.subtasks)
    return expected


def _assert_trace_in_mlflow(server: MlflowServer, experiment_id: str, root: Task) -> dict[str, Any]:
    """Check the experiment holds exactly the task file's trace: each span, parent, attribute."""
    expected = _expected_spans(root)
    traces = server.traces(experiment_id, len(expected))
    assert len(traces) == 1, traces
    trace = traces[0]
    found = {s["span_id"]: s for s in trace["spans"]}
    assert set(found) == set(expected)
    for span_id, (name, parent_id, status, attrs) in expected.items():
        span = found[span_id]
        assert (span["name"], span["parent_id"], span["status"]) == (name, parent_id, status)
        got = span["attributes"]
        assert {key: got.get(key, "<missing>") for key in attrs} == attrs, name
        assert got.get(HOST_NAME, trace["tags"].get(HOST_NAME)) == root.hostname
    measured = {"tasktrace.task.duration_s", "tasktrace.task.cpu_time_s"}
    assert all(measured <= set(a) for *_, a in expected.values())  # the check saw measurements
    return trace


def test_live_run_lands_in_its_mlflow_experiment(mlflow_server: MlflowServer, tmp_path: Path):
    """A separate process configured by OTEL_* variables only: its whole tree is in MLflow."""
    experiment_id = mlflow_server.create_experiment("tasktrace live")
    env = clean_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=mlflow_server.uri,
        OTEL_EXPORTER_OTLP_HEADERS=f"x-mlflow-experiment-id={experiment_id}",
        OTEL_EXPORTER_OTLP_TIMEOUT=EXPORT_TIMEOUT_S,
        OTEL_SERVICE_NAME="mlflow-e2e",
        TASKTRACE_EXIT_TIMEOUT_S=EXPORT_TIMEOUT_S,
    )
    run = run_script(NESTED_WORKLOAD, tmp_path, env, str(tmp_path / "task.json"))
    assert run.returncode == 0, run.stderr
    assert run.export_warnings() == []
    root = Task.model_validate_json((tmp_path / "task.json").read_text())
    trace = _assert_trace_in_mlflow(mlflow_server, experiment_id, root)
    assert trace["tags"]["service.name"] == "mlflow-e2e"


def test_replayed_task_file_lands_in_its_mlflow_experiment(
    mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    """`tasktrace replay` of a file written without export: its whole tree is in MLflow."""
    run = run_script(NESTED_WORKLOAD, tmp_path, clean_env(), str(tmp_path / "task.json"))
    assert run.returncode == 0, run.stderr
    experiment_id = mlflow_server.create_experiment("tasktrace replay")
    env = clean_env(
        OTEL_EXPORTER_OTLP_HEADERS=f"x-mlflow-experiment-id={experiment_id}",
        OTEL_EXPORTER_OTLP_TIMEOUT=EXPORT_TIMEOUT_S,
    )
    replay = subprocess.run(
        [sys.executable, "-m", "tasktrace.cli", "replay", str(tmp_path / "task.json"),
         "--endpoint", mlflow_server.uri],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert replay.returncode == 0, replay.stderr
    root = Task.model_validate_json((tmp_path / "task.json").read_text())
    _assert_trace_in_mlflow(mlflow_server, experiment_id, root)


def test_missing_experiment_header_gets_a_warning_naming_it(
    mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    """MLflow's bare 422 for a request without x-mlflow-experiment-id: the warning names it."""
    env = clean_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=mlflow_server.uri,
        OTEL_EXPORTER_OTLP_TIMEOUT=EXPORT_TIMEOUT_S,
        TASKTRACE_EXIT_TIMEOUT_S=EXPORT_TIMEOUT_S,
    )
    run = run_script(NESTED_WORKLOAD, tmp_path, env, str(tmp_path / "task.json"))
    assert run.returncode == 0, run.stderr
    [warning] = run.export_warnings()
    assert "422" in warning
    assert "x-mlflow-experiment-id" in warning
