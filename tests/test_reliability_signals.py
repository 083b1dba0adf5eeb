"""Faults that end the process: SIGKILL and SIGTERM sent to a real child process mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tasktrace import Task, TaskStatus

from .otlp_receivers import OtlpHttpReceiver

# A nested run that works (busy loop) until told to stop or killed. argv: mode, task file, ready
# marker. Modes: "plain" (no handler of its own), "chain" (its own SIGTERM handler that asks the
# loop to stop), "ignore" (SIGTERM ignored), "thread" (first task started in another thread).
WORKLOAD = r"""
import signal, sys, threading, time
from pathlib import Path
from tasktrace import Task

mode, path, ready = sys.argv[1], sys.argv[2], Path(sys.argv[3])
stop = threading.Event()
if mode == "chain":
    def on_term(signum, frame):
        Path(str(ready) + ".handled").write_text(str(signum))
        stop.set()
    signal.signal(signal.SIGTERM, on_term)
elif mode == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
elif mode == "thread":
    th = threading.Thread(target=lambda: Task("in a thread").__enter__().finish())
    th.start(); th.join()
    Path(str(ready) + ".thread").write_text(repr(signal.getsignal(signal.SIGTERM)))

with Task("outer", file=path, run="nested"):
    with Task("inner"):
        ready.write_text("ready")
        deadline = time.monotonic() + 120  # stopped by the test long before
        while not stop.is_set() and time.monotonic() < deadline:
            sum(range(20_000))
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKTRACE_", "OTEL_"))}
    env.update(extra)
    return env


def _start(tmp_path: Path, mode: str, **env: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    script = tmp_path / "workload.py"
    script.write_text(WORKLOAD)
    path = tmp_path / "run.json"
    ready = tmp_path / "ready"
    with (tmp_path / "stderr.txt").open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(script), mode, str(path), str(ready)],
            env=_env(**env),
            stderr=stderr,
        )
    return proc, path, ready


def _wait(condition: Callable[[], bool], proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 120  # a loaded 2-core machine: starting took over 20 s
    while not condition():
        if proc.poll() is not None:
            err = Path(str(proc.args[3])).with_name("stderr.txt").read_text()  # type: ignore[index]
            pytest.fail(f"workload exited ({proc.returncode}) before {what}: {err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def _refreshed_inner(path: Path) -> bool:
    """Tell whether the file exists and shows the inner task with a refreshed duration."""
    try:
        task = Task.model_validate_json(path.read_bytes())
    except (OSError, ValueError):
        return False
    return bool(task.subtasks) and (task.subtasks[0].duration or 0) > 0.2


def test_sigkill_leaves_valid_file_with_refreshed_running_tasks(tmp_path: Path) -> None:
    """After SIGKILL the task file is whole JSON: RUNNING statuses, refreshed nested durations."""
    proc, path, _ = _start(tmp_path, "plain", TASKTRACE_REFRESH_INTERVAL_S="0.05")
    _wait(lambda: _refreshed_inner(path), proc, "a refreshed inner task in the file")
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(10) == -signal.SIGKILL
    task = Task.model_validate_json(path.read_bytes())
    assert task.status is TaskStatus.RUNNING
    assert task.run == "nested"
    (inner,) = task.subtasks
    assert inner.status is TaskStatus.RUNNING
    assert inner.duration is not None
    assert inner.duration > 0.2
    assert inner.cpu_time is not None
    assert inner.cpu_time > 0
    assert task.duration is not None
    assert task.duration >= inner.duration
    # The refresh thread writes the file every 0.05 s (a temporary file renamed over it): a
    # SIGKILL that lands inside a write leaves that write's temporary file, which nothing can
    # remove; never more than that one.
    assert len([p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]) <= 1


def test_sigterm_cancels_tasks_writes_file_flushes_spans_and_dies_by_sigterm(
    tmp_path: Path,
) -> None:
    """SIGTERM: tasks CANCELLED in file and spans (flushed before exit), exit status -SIGTERM."""
    with OtlpHttpReceiver() as receiver:
        proc, path, ready = _start(
            tmp_path,
            "plain",
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="600000",  # no timed export: only a flush sends spans
        )
        _wait(ready.exists, proc, "the inner task to start")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == -signal.SIGTERM
        spans = receiver.wait_for(2, timeout_s=5.0)
    task = Task.model_validate_json(path.read_bytes())
    assert task.status is TaskStatus.CANCELLED
    assert task.finish_time is not None
    assert task.error == "stopped by SIGTERM"  # as `tasktrace run` words it
    assert [(s.label, s.status, s.error) for s in task.subtasks] == [
        ("inner", TaskStatus.CANCELLED, "stopped by SIGTERM")
    ]
    statuses = {s.name: s.attributes.get("tasktrace.task.status") for s in spans}
    assert statuses == {"outer": "cancelled", "inner": "cancelled"}
    errors = {s.name: s.attributes.get("tasktrace.task.error") for s in spans}
    assert errors == {"outer": "stopped by SIGTERM", "inner": "stopped by SIGTERM"}


def test_sigterm_chains_to_the_programs_own_handler(tmp_path: Path) -> None:
    """With its own SIGTERM handler, the program's handler runs and decides: here it carries on."""
    proc, path, ready = _start(tmp_path, "chain")
    _wait(ready.exists, proc, "the inner task to start")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert Path(str(ready) + ".handled").read_text() == str(int(signal.SIGTERM))
    task = Task.model_validate_json(path.read_bytes())
    assert task.status is TaskStatus.FINISHED
    assert task.subtasks[0].status is TaskStatus.FINISHED


def test_sigterm_ignored_by_the_program_stays_ignored(tmp_path: Path) -> None:
    """A program that ignores SIGTERM keeps ignoring it: tasktrace installs no handler."""
    proc, _path, ready = _start(tmp_path, "ignore")
    _wait(ready.exists, proc, "the inner task to start")
    proc.send_signal(signal.SIGTERM)
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(0.5)
    proc.kill()
    assert proc.wait(10) == -signal.SIGKILL


def test_sigterm_handler_installed_from_main_thread_only(tmp_path: Path) -> None:
    """A first task in another thread installs nothing; the main thread's first task does."""
    proc, path, ready = _start(tmp_path, "thread")
    _wait(ready.exists, proc, "the inner task to start")
    assert Path(str(ready) + ".thread").read_text() == repr(signal.SIG_DFL)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == -signal.SIGTERM
    assert Task.model_validate_json(path.read_bytes()).status is TaskStatus.CANCELLED


LEFT_RUNNING_SCRIPT = """
import sys
from tasktrace import Task
task = Task("manual", file=sys.argv[1])
task.start()
for i in range(3):
    with Task(f"epoch {i}"):
        sum(range(10**5))
raise RuntimeError("crash after 3 epochs")
"""


def test_a_task_left_running_at_exit_is_saved_with_its_finished_subtasks(tmp_path: Path) -> None:
    """Started by hand, never finished, the program dies of an exception: the file keeps it all."""
    out = tmp_path / "manual.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TASKTRACE_"))}
    proc = subprocess.run(
        [sys.executable, "-c", LEFT_RUNNING_SCRIPT, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert "crash after 3 epochs" in proc.stderr
    task = Task.model_validate_json(out.read_text())
    assert task.status is TaskStatus.RUNNING  # the program's outcome is not known at exit
    assert [(t.label, t.status) for t in task.subtasks] == [
        (f"epoch {i}", TaskStatus.FINISHED) for i in range(3)
    ]
    assert task.duration is not None
    assert task.duration >= sum(t.duration or 0 for t in task.subtasks)
