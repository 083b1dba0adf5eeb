"""The refresh thread: running tasks' files re-written every interval (tree.refresh)."""

from __future__ import annotations

import threading
from pathlib import Path

from tasktrace import Task, TaskStatus
from tasktrace.core.settings import Settings, reset_settings


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
