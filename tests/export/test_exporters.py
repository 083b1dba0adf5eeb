"""Which exporters are built: none unless asked, the standard variables (export.exporters)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tasktrace.core.warn import reset_warnings
from tasktrace.export.config import ExportConfig
from tasktrace.export.exporters import metric_exporters, span_exporters

from ..export_helpers import (
    clean_env,
    run_script,
    run_workload,
)
from ..otlp_receivers import closed_loopback_endpoint


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


def test_otlp_json_dir_setting_writes_spans_to_a_file(tmp_path: Path) -> None:
    """TASKTRACE_OTLP_JSON_DIR alone makes a run write its spans as OTLP JSON lines there."""
    out = tmp_path / "spans"
    out.mkdir()
    run_workload({"TASKTRACE_OTLP_JSON_DIR": str(out)}, tmp_path)
    (path,) = out.iterdir()
    names = []
    for line in path.read_text().splitlines():
        request = json_format.Parse(line, ExportTraceServiceRequest())
        names += [
            s.name for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans
        ]
    assert sorted(names) == ["child", "root"]


def test_a_missing_grpc_package_is_one_warning_for_spans_and_metrics_alike(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Without tasktrace[grpc], span and metric export each warn once, the same way; no OTLP."""
    for module in ("trace_exporter", "metric_exporter"):
        monkeypatch.setitem(sys.modules, f"opentelemetry.exporter.otlp.proto.grpc.{module}", None)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", closed_loopback_endpoint())
    reset_warnings()
    with caplog.at_level(logging.WARNING):
        assert span_exporters(ExportConfig(exporters=["otlp"])) == []
        assert span_exporters(ExportConfig(exporters=["otlp"])) == []
        assert metric_exporters() == []
    assert [r.getMessage() for r in caplog.records] == [
        "tasktrace: OTLP/gRPC needs the gRPC exporter: pip install 'tasktrace[grpc]'; "
        f"no OTLP {signal} export"
        for signal in ("traces", "metrics")
    ]


FORK_POOL_SCRIPT = """
import multiprocessing as mp
from tasktrace import Task

def job(parent, i):
    with Task(f"job {i}", parent=parent):
        pass

if __name__ == "__main__":
    with Task("root") as root:
        with mp.get_context("fork").Pool(2) as pool:
            pool.starmap(job, [(root, i) for i in range(4)])
"""


def test_forked_workers_write_otlp_json_files_of_their_own(tmp_path: Path) -> None:
    """A fork pool under TASKTRACE_OTLP_JSON_DIR: every span is kept, each process its own file.

    Each file's spans carry its writer's ``process.pid`` (a worker's resource is its own).
    """
    out = tmp_path / "spans"
    out.mkdir()
    run = run_script(FORK_POOL_SCRIPT, tmp_path, clean_env(TASKTRACE_OTLP_JSON_DIR=str(out)))
    assert run.returncode == 0, run.stderr
    assert "cannot write OTLP JSON" not in run.stderr
    names = []
    for path in out.iterdir():
        file_pid = int(path.name.split("-")[2])  # tasktrace-<time>-<pid>-<random>.otlp.jsonl
        for line in path.read_text().splitlines():
            request = json_format.Parse(line, ExportTraceServiceRequest())
            for rs in request.resource_spans:  # each process's spans say it is theirs
                pid = [a.value.int_value for a in rs.resource.attributes if a.key == "process.pid"]
                assert pid == [file_pid], path.name
                names += [s.name for ss in rs.scope_spans for s in ss.spans]
    assert sorted(names) == ["job 0", "job 1", "job 2", "job 3", "root"]
    assert len(list(out.iterdir())) >= 2  # the parent's file, and the workers' own
