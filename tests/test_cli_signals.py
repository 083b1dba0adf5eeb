"""`tasktrace run` under a job manager's signals: forwarded to the command, recorded once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasktrace import Task, TaskStatus
from tasktrace.cli import main

from .export_helpers import clean_env
from .otlp_receivers import OtlpHttpReceiver

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
        [
            sys.executable,
            "-m",
            "tasktrace.cli",
            "run",
            "-q",
            "-f",
            str(out),
            "--",
            sys.executable,
            str(script),
            str(ready),
        ],
        env=env,
        cwd=tmp_path,
    )
    deadline = time.monotonic() + 120  # the start: over 20 s on a loaded 2-core machine
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


_IGNORES_SIGTERM = """
import signal, sys, time
from pathlib import Path
signal.signal(signal.SIGTERM, signal.SIG_IGN)
Path(sys.argv[1]).touch()
time.sleep(1.5)
"""


def test_a_command_that_ignores_sigterm_and_exits_0_is_finished(tmp_path: Path) -> None:
    """SIGTERM to `run` reaches a command that ignores it: its exit 0 is the run's, finished.

    A persona saw exit status 143 and ``cancelled`` for a command that went on and exited 0
    (what a scheduler then reads as a failure).
    """
    out, ready, script = tmp_path / "run.json", tmp_path / "ready", tmp_path / "stubborn.py"
    script.write_text(_IGNORES_SIGTERM)
    argv = ["run", "-q", "-f", str(out), "--", sys.executable, str(script), str(ready)]
    proc = subprocess.Popen([sys.executable, "-m", "tasktrace.cli", *argv], env=clean_env())
    deadline = time.monotonic() + 120  # the start: over 20 s on a loaded 2-core machine
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists(), "the command never started"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    task = Task.model_validate_json(out.read_text())
    assert (task.status, task.exit_code, task.error) == (TaskStatus.FINISHED, 0, None)


def test_run_with_file_in_missing_folder_is_one_line_error(tmp_path: Path) -> None:
    """`run --file` into a missing folder exits 2 with one line and never runs the command."""
    marker = tmp_path / "ran"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tasktrace.cli",
            "run",
            "-q",
            "-f",
            str(tmp_path / "no" / "x.json"),
            "--",
            "touch",
            str(marker),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "does not exist" in proc.stderr
    assert not marker.exists()


_CTRL_C_CHILD = """
import sys, time
from tasktrace import Task
with Task("inner"):
    with Task("step"):
        open(sys.argv[1], "w").close()
        time.sleep(30)
"""


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_to_the_process_group_cancels_the_run_and_exits_130(tmp_path: Path) -> None:
    """SIGINT to run's whole group, no terminal: root and the command's tasks cancelled.

    The command, in a group of its own, gets it once (passed on by run): twice, its second
    ``KeyboardInterrupt`` came during its tasks' clean-up and left ``step`` running.
    """
    out = tmp_path / "run.json"
    ready = tmp_path / "ready"
    script = tmp_path / "child.py"
    script.write_text(_CTRL_C_CHILD)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TASKTRACE_"))}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tasktrace.cli",
            "run",
            "-l",
            "train",
            "-f",
            str(out),
            sys.executable,
            str(script),
            str(ready),
        ],
        env=env,
        cwd=tmp_path,
        start_new_session=True,
        # A terminal's foreground job has SIGINT at its default; a job started in the background
        # by a shell without job control (some CI runners) inherits it ignored, and so would
        # the command here, which would then sleep through the Ctrl-C.
        preexec_fn=_default_sigint,  # noqa: PLW1509 - a test; no threads fork here
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120  # the start: over 20 s on a loaded 2-core machine
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists(), "the command never started"
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130
    task = Task.model_validate_json(out.read_text())
    assert task.status is TaskStatus.CANCELLED
    assert task.exit_code == 130
    assert task.error == "stopped by SIGINT"
    (inner,) = task.subtasks
    (step,) = inner.subtasks
    assert (inner.status, step.status) == (TaskStatus.CANCELLED, TaskStatus.CANCELLED)
    # the tree printed at the end (after the command's own KeyboardInterrupt traceback)
    (root_line,) = [line for line in stderr.splitlines() if line.startswith("train  ")]
    assert "cancelled  exit 130  (stopped by SIGINT)" in root_line


@pytest.mark.parametrize(
    ("command", "code", "status", "error"),
    [
        ("exit 130", 130, TaskStatus.CANCELLED, "stopped by SIGINT (exit status 130)"),
        ("exit 143", 143, TaskStatus.CANCELLED, "stopped by SIGTERM (exit status 143)"),
        ("kill -TERM $$", 143, TaskStatus.CANCELLED, "stopped by SIGTERM"),
        ("kill -HUP $$", 129, TaskStatus.CANCELLED, "stopped by SIGHUP"),
        ("kill -SEGV $$", 128 + signal.SIGSEGV, TaskStatus.FAILED, "killed by SIGSEGV"),
        ("kill -KILL $$", 137, TaskStatus.FAILED, "killed by SIGKILL"),
        ("exit 3", 3, TaskStatus.FAILED, "exit status 3"),
    ],
    ids=["exit-130", "exit-143", "sigterm", "sighup", "sigsegv", "sigkill", "exit-3"],
)
def test_a_command_stopped_by_a_stop_signal_is_cancelled_a_crash_failed(
    tmp_path: Path, command: str, code: int, status: TaskStatus, error: str | None
) -> None:
    """Killed by SIGINT/SIGTERM/SIGHUP or exit 130: cancelled; SIGSEGV, SIGKILL, exit 3: failed."""
    out = tmp_path / "run.json"
    assert main(["run", "-q", "-f", str(out), "sh", "-c", command]) == code
    task = Task.model_validate_json(out.read_text())
    assert (task.status, task.exit_code, task.error) == (status, code, error)


def test_show_prints_a_non_zero_exit_code_on_the_tree_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`show` prints `exit N` for a task whose command exited non-zero, nothing for 0."""
    failed, ok = tmp_path / "failed.json", tmp_path / "ok.json"
    assert main(["run", "-q", "-f", str(failed), "-l", "job", "sh", "-c", "exit 3"]) == 3
    assert main(["run", "-q", "-f", str(ok), "-l", "job", "true"]) == 0
    capsys.readouterr()
    assert main(["show", str(failed)]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert "failed" in line
    assert "exit 3" in line
    assert "exit status" not in line  # the recorded error only restates the exit code
    assert main(["show", str(ok)]) == 0
    assert "exit" not in capsys.readouterr().out


def test_a_command_exiting_non_zero_has_an_error_span_with_a_description(
    tmp_path: Path, otlp_http_receiver: OtlpHttpReceiver
) -> None:
    """`run` of a command exiting 3: the run's span is ERROR with "exit status 3".

    As a task failed by an exception has its error as the description (it had none: a bare
    ERROR).
    """
    env = clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=otlp_http_receiver.endpoint)
    done = subprocess.run(
        [sys.executable, "-m", "tasktrace.cli", "run", "-q", "-l", "job", "sh", "-c", "exit 3"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3, done.stderr
    (span,) = [s for s in otlp_http_receiver.wait_for(1, timeout_s=10) if s.name == "job"]
    assert (span.status_code, span.status_message) == ("ERROR", "exit status 3")
    assert span.attributes["tasktrace.task.error"] == "exit status 3"
