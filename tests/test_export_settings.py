"""Settings that shape tasktrace's own export pipeline, checked in fresh processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from .otlp_receivers import OtlpHttpReceiver

_WORKLOAD = """
import time
from tasktrace import Task
with Task("root"):
    with Task("child"):
        time.sleep(0.35)
"""


def _run(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TASKTRACE_"))}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-c", _WORKLOAD],
        env=full,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_otlp_json_dir_setting_writes_spans_to_a_file(tmp_path: Path) -> None:
    """TASKTRACE_OTLP_JSON_DIR alone makes a run write its spans as OTLP JSON lines there."""
    out = tmp_path / "spans"
    out.mkdir()
    _run({"TASKTRACE_OTLP_JSON_DIR": str(out)}, tmp_path)
    (path,) = out.iterdir()
    names = []
    for line in path.read_text().splitlines():
        request = json_format.Parse(line, ExportTraceServiceRequest())
        names += [
            s.name for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans
        ]
    assert sorted(names) == ["child", "root"]


@pytest.mark.parametrize(("delay_ms", "snapshots_expected"), [("60000", False), ("20", True)])
def test_pending_snapshots_in_the_real_spans_batch_are_dropped(
    tmp_path: Path, delay_ms: str, snapshots_expected: bool
) -> None:
    """Snapshots batched with their real span are dropped; ones sent earlier arrive."""
    with OtlpHttpReceiver() as receiver:
        _run(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_BSP_SCHEDULE_DELAY": delay_ms,  # 60 s: one batch, sent at exit
                "TASKTRACE_PENDING_SPANS": "true",
                "TASKTRACE_REFRESH_INTERVAL_S": "0.1",
            },
            tmp_path,
        )
        spans = receiver.wait_for(2, timeout_s=10)
    real = sorted(s.name for s in spans if "tasktrace.pending.span_id" not in s.attributes)
    snapshots = [s for s in spans if "tasktrace.pending.span_id" in s.attributes]
    assert real == ["child", "root"]
    assert bool(snapshots) is snapshots_expected


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
