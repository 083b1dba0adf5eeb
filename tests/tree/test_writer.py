"""Task files written from the tree: at start, at refresh, at finish, on request (tree.writer)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tasktrace import ContextThread, Task, TaskStatus


def test_task_file_written_at_start_and_finish(tmp_path: Path) -> None:
    """The file shows RUNNING during the task and the finished tree afterwards."""
    path = tmp_path / "task.json"
    with Task("filed", file=path) as t:
        running = Task.model_validate_json(path.read_text())
        assert running.status is TaskStatus.RUNNING
        assert running.task_id == t.task_id
        with Task("child"):
            pass
    done = Task.model_validate_json(path.read_text())
    assert done.status is TaskStatus.FINISHED
    assert [s.label for s in done.subtasks] == ["child"]
    assert done.duration == t.duration
    assert list(tmp_path.iterdir()) == [path]  # no temporary files left behind


def test_missing_folder_fails_before_work(tmp_path: Path) -> None:
    """A task file in a missing folder is a clear error at start, before the body runs."""
    ran = False
    with (
        pytest.raises(FileNotFoundError, match="does not exist"),
        Task("x", file=tmp_path / "nope" / "t.json"),
    ):
        ran = True
    assert not ran


def test_save_to_file_and_update(tmp_path: Path) -> None:
    """save_to_file writes now; update() re-measures and re-writes a running task."""
    path = tmp_path / "t.json"
    t = Task("x")
    t.save_to_file(path, monitor=False)
    assert Task.model_validate_json(path.read_text()).status is TaskStatus.PENDING
    t.start()
    sum(range(200_000))
    t.update()
    mid = Task.model_validate_json(path.read_text())
    assert mid.status is TaskStatus.RUNNING
    assert mid.cpu_time is not None
    assert mid.duration is not None
    t.finish()
    assert Task.model_validate_json(path.read_text()).status is TaskStatus.FINISHED


_GC_IN_LOCK = """
import gc, pathlib, tempfile
from tasktrace import Task
folder = pathlib.Path(tempfile.mkdtemp())
for threshold in (19, 29, 31, 37):  # collections land inside the writer's critical section
    gc.set_threshold(threshold, 1, 1)
    for i in range(1500):
        task = Task(f"t{i}")
        holder = [task]
        holder.append(holder)  # only the garbage collector frees this task (and its targets)
        task.save_to_file(folder / f"t{i % 10}.json", monitor=False)
        del task, holder
print("done")
"""


def test_a_task_collected_while_the_writer_holds_its_lock_does_not_deadlock() -> None:
    """A task freed by the collector inside the writer's critical section never blocks it."""
    try:
        result = subprocess.run(
            [sys.executable, "-c", _GC_IN_LOCK],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the writer deadlocked on its own lock (a collector callback took it)")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "done"


def test_a_subtask_finishing_after_its_filed_root_rewrites_the_file(tmp_path: Path) -> None:
    """A subtask still running (in another thread) when its filed root finishes is written later.

    When it finishes, the file is written again: it ends with the subtask's final status and
    figures, not "running".
    """
    path = tmp_path / "run.json"
    started, release = threading.Event(), threading.Event()

    def work() -> None:
        with Task("late"), Task("late inner"):
            started.set()
            release.wait(10)
            time.sleep(0.01)

    with Task("root", file=path):
        thread = ContextThread(target=work)
        thread.start()
        assert started.wait(10)
    # The root finished with its subtask running: the file says so, for now.
    late = json.loads(path.read_text())["subtasks"][0]
    assert (late["label"], late["status"]) == ("late", "running")
    release.set()
    thread.join(10)
    root = json.loads(path.read_text())
    late = root["subtasks"][0]
    assert root["status"] == "finished"
    assert (late["label"], late["status"]) == ("late", "finished")
    assert late["duration"] >= 0.01
    assert late["subtasks"][0]["status"] == "finished"


def test_many_late_subtasks_write_the_file_a_few_times_not_once_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """50 subtasks outliving their filed root: the file ends whole, written a few times."""
    from tasktrace.tree import writer

    writes: list[Path] = []
    save = writer.save_atomic

    def counting_save(path: Path, data: bytes, *more: bytes, **kwargs: Any) -> bool:
        writes.append(path)
        return save(path, data, *more, **kwargs)

    monkeypatch.setattr(writer, "save_atomic", counting_save)
    path = tmp_path / "run.json"
    started = threading.Barrier(51)
    release = threading.Event()

    def work(i: int) -> None:
        with Task(f"late {i}"):
            started.wait(10)
            release.wait(10)

    with Task("root", file=path):
        threads = [ContextThread(target=work, args=(i,)) for i in range(50)]
        for thread in threads:
            thread.start()
        started.wait(10)
    before = len(writes)
    release.set()
    for thread in threads:
        thread.join(10)
    subtasks = json.loads(path.read_text())["subtasks"]
    assert sorted(s["label"] for s in subtasks) == sorted(f"late {i}" for i in range(50))
    assert {s["status"] for s in subtasks} == {"finished"}
    assert 1 <= len(writes) - before <= 3  # the first late finish, the last, maybe one between
