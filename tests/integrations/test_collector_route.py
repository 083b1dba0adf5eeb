"""The collector route: processes that share nothing but an OTLP receiver make one task tree.

Two independent processes (no shared folder, no engine, no spool) export OTLP to one receiver,
which stands in for an OpenTelemetry Collector and writes its file exporter's format (OTLP JSON
lines). The second process is given only ``TRACEPARENT`` and ``TASKTRACE_PARENT_TASK_ID`` (what
``sbatch --export`` would pass to a Slurm job); ``tasktrace show`` / ``export`` rebuild the one
tree from the file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from tasktrace import Task, TaskStatus
from tasktrace.cli import main

from ..otlp_receivers import OtlpHttpReceiver

pytestmark = pytest.mark.timeout(120)

STAGE_A = textwrap.dedent(
    """
    import json, sys
    from tasktrace import Task, child_environment

    with Task("pipeline") as task:
        env = child_environment()
        print(json.dumps({k: env[k] for k in ("TRACEPARENT", "TASKTRACE_PARENT_TASK_ID")}))
        sys.stdout.flush()
        sys.stdin.readline()  # the other node's stage runs meanwhile
    """
)

STAGE_B = textwrap.dedent(
    """
    from tasktrace import Task

    with Task("stage b", shard=3):
        with Task("load"):
            pass
    """
)


def _env(receiver: OtlpHttpReceiver, folder: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "TASKTRACE_", "TRACEPARENT", "TRACESTATE"))
    }
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
    env["TMPDIR"] = str(folder)  # each "node" its own temporary folder: no spool is shared
    return env


def test_two_processes_sharing_only_a_receiver_rebuild_one_tree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Process B, given TRACEPARENT and the parent task id only, is a subtask of A in the file."""
    node_a, node_b = tmp_path / "a", tmp_path / "b"
    node_a.mkdir()
    node_b.mkdir()
    with OtlpHttpReceiver() as receiver:
        with subprocess.Popen(
            [sys.executable, "-c", STAGE_A],
            cwd=node_a,
            env=_env(receiver, node_a),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        ) as a:
            try:
                assert a.stdout is not None
                assert a.stdin is not None
                handed = json.loads(a.stdout.readline())
                env_b = {**_env(receiver, node_b), **handed}
                subprocess.run(
                    [sys.executable, "-c", STAGE_B], cwd=node_b, env=env_b, check=True, timeout=60
                )
                a.stdin.write("done\n")
                a.stdin.close()
                assert a.wait(timeout=60) == 0
            finally:
                if a.poll() is None:
                    a.kill()
        receiver.wait_for(3, timeout_s=30)
        collector_file = tmp_path / "collector.jsonl"
        assert receiver.write_collector_file(collector_file) >= 2
    assert not list(node_b.glob("tasktrace-spool-*"))  # B wrote no spool record anywhere

    out = tmp_path / "tree.json"
    assert main(["export", str(collector_file), "--format", "task", "-o", str(out)]) == 0
    tree = Task.model_validate_json(out.read_text())
    assert tree.label == "pipeline"
    (stage,) = tree.subtasks
    assert (stage.label, stage.status, stage.subprocess) == ("stage b", TaskStatus.FINISHED, True)
    assert stage.parent_id == tree.task_id == uuid.UUID(handed["TASKTRACE_PARENT_TASK_ID"])
    assert stage.model_extra["shard"] == 3
    assert [t.label for t in stage.subtasks] == ["load"]

    capsys.readouterr()
    assert main(["show", str(collector_file)]) == 0
    shown = capsys.readouterr().out
    assert shown.index("pipeline") < shown.index("stage b") < shown.index("load")
