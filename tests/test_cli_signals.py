"""`tasktrace run` under a job manager's signals: forwarded to the command, recorded once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tasktrace import Task, TaskStatus

_CHILD = """
import signal, sys, time
from tasktrace import Task
def stop(signum, frame):
    raise SystemExit(143)
signal.signal(signal.SIGTERM, stop)
with Task("long inner"):
    open(sys.argv[1], "w").close()
    time.sleep(30)
"""


def test_sigterm_to_run_reaches_the_command_and_cancels_the_run(tmp_path: Path) -> None:
    """SIGTERM sent to `tasktrace run` stops the command too; the file records both ends."""
    out = tmp_path / "run.json"
    ready = tmp_path / "ready"
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TASKTRACE_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tasktrace.cli", "run", "-q", "-f", str(out), "--",
         sys.executable, str(script), str(ready)],
        env=env, cwd=tmp_path,
    )
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists(), "the command never started"
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=20)
    assert time.monotonic() - started < 10  # the command stopped; it did not sleep its 30 s
    assert code == 128 + signal.SIGTERM
    task = Task.model_validate_json(out.read_text())
    assert task.status is TaskStatus.CANCELLED
    assert task.error == "stopped by SIGTERM"
    (inner,) = task.subtasks
    assert inner.label == "long inner"
    assert inner.status is not TaskStatus.RUNNING


def test_run_with_file_in_missing_folder_is_one_line_error(tmp_path: Path) -> None:
    """`run --file` into a missing folder exits 2 with one line and never runs the command."""
    marker = tmp_path / "ran"
    proc = subprocess.run(
        [sys.executable, "-m", "tasktrace.cli", "run", "-q", "-f", str(tmp_path / "no" / "x.json"),
         "--", "touch", str(marker)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "does not exist" in proc.stderr
    assert not marker.exists()
