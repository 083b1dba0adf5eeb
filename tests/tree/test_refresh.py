"""The refresh thread: running tasks' files re-written every interval (tree.refresh)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from tasktrace import Task, TaskStatus
from tasktrace.core.settings import Settings, reset_settings
from tasktrace.meters import reset_meters


def test_refresh_rewrites_running_file(tmp_path: Path) -> None:
    """A running task's file is refreshed with measurements so far every refresh interval."""
    reset_settings(Settings(refresh_interval_s=0.05))
    path = tmp_path / "t.json"
    seen: list[float] = []
    with Task("long", file=path):
        deadline = threading.Event()
        for _ in range(100):
            loaded = Task.model_validate_json(path.read_text())
            if loaded.duration is not None:
                seen.append(loaded.duration)
            if len(set(seen)) >= 2:
                break
            deadline.wait(0.02)
    assert len(set(seen)) >= 2, seen
    assert Task.model_validate_json(path.read_text()).status is TaskStatus.FINISHED


def test_a_finished_task_is_not_refreshed(tmp_path: Path) -> None:
    """A refresh that comes after the task finished (the thread's round began) leaves its file."""
    path = tmp_path / "t.json"
    with Task("short", file=path) as task:
        pass
    before = path.stat()
    task.monitor_refresh()  # what the refresh thread runs for a round that began before
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


_EXIT_DURING_REFRESH = """
import sys, time
from pathlib import Path
from tasktrace import Task
from tasktrace.meters import register_meter

marks = Path(sys.argv[2])

class SlowMeter:
    name = "slow"
    fields = ("slow",)
    def available(self):
        return True
    def start(self):
        return None
    def read(self, snapshot, elapsed_s, *, final):
        if not final:  # a refresh, in the refresh thread
            marks.write_text("read started\\n")
            time.sleep(0.5)
            with marks.open("a") as f:
                f.write("read done\\n")
        return {}

register_meter(SlowMeter())
task = Task("left running", file=sys.argv[1])
task.start()
while not marks.exists():  # the refresh thread is inside a refresh
    time.sleep(0.01)
print("exiting", flush=True)
"""


def test_exit_waits_for_a_refresh_in_progress(tmp_path: Path) -> None:
    """A program that ends during a refresh of a running task's file lets that refresh finish.

    A daemon thread cut off inside pydantic's serialiser aborts the process (exit 134), and one
    cut off mid-write leaves a temporary file: exit waits for the refresh thread's round.
    """
    path, marks = tmp_path / "t.json", tmp_path / "marks"
    script = tmp_path / "exit.py"
    script.write_text(_EXIT_DURING_REFRESH)
    env = {**os.environ, "TASKTRACE_REFRESH_INTERVAL_S": "0.05"}
    run = subprocess.run(
        [sys.executable, str(script), str(path), str(marks)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert marks.read_text().splitlines() == ["read started", "read done"]
    assert Task.model_validate_json(path.read_text()).status is TaskStatus.RUNNING
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exit.py", "marks", "t.json"]


class _SlowRefreshMeter:
    """A meter whose readings during refreshes take ``delay_s`` (a huge tree's file write)."""

    name = "slow-refresh"
    fields = ()

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.refreshes = 0

    def available(self) -> bool:
        return True

    def start(self) -> None:
        return None

    def read(self, snapshot: object, elapsed_s: float, *, final: bool) -> dict[str, object]:
        del snapshot, elapsed_s
        if not final:  # a refresh, in the refresh thread
            self.refreshes += 1
            threading.Event().wait(self.delay_s)
        return {}


def test_slow_refreshes_are_spaced_out(tmp_path: Path) -> None:
    """A refresh that takes long puts the next one off (``tree.refresh.MAX_SHARE``, 10%).

    At a 0.05 s interval, refreshes of 0.15 s each would otherwise run back to back (about 7 in
    1.5 s, the refresh thread busy all the time); spaced out, the second comes 1.35 s after the
    first ended.
    """
    meter = _SlowRefreshMeter(0.15)
    reset_settings(Settings(refresh_interval_s=0.05))
    reset_meters([meter])  # type: ignore[list-item]
    try:
        with Task("big tree", file=tmp_path / "t.json"):
            threading.Event().wait(1.5)
    finally:
        reset_meters()
    assert 1 <= meter.refreshes <= 3, meter.refreshes
