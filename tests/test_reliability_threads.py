"""Refreshes racing finishes from threads: no lock per task, yet every file write consistent."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tasktrace import Task, TaskStatus
from tasktrace.core import attributes as attr
from tasktrace.core.settings import Settings, reset_settings
from tasktrace.tree import writer

from .export_helpers import is_microsecond_rounding

WORKERS = 4
TASKS_PER_WORKER = 150
ROOTS = 6


def _nodes(tree: dict[str, Any]) -> Iterator[dict[str, Any]]:
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(node["subtasks"])


def _final(task: Task) -> dict[str, Any]:
    return {
        "status": task.status.value,
        "finish_time": task.finish_time,
        "duration": task.duration,
        "cpu_time": task.cpu_time,
        "peak_memory": task.peak_memory,
    }


def _hammer(root_file: Path, stop: threading.Event) -> Task:
    """Run one root with a file; return it.

    Workers start and finish subtasks (some with their own files) while two threads refresh
    the root (and so its running subtasks) without pause.
    """
    with Task("root", file=root_file) as root:
        go = threading.Barrier(WORKERS + 2)

        def work(n: int) -> None:
            go.wait()
            for i in range(TASKS_PER_WORKER):
                own = (
                    root_file.with_name(f"{root_file.stem}-w{n}-{i}.json") if i % 25 == 0 else None
                )
                with Task(f"w{n}", parent=root, file=own) as mid, Task("leaf", parent=mid):
                    sum(range(50))

        def refresh() -> None:
            go.wait()
            while not stop.is_set():
                root.update()  # measures the running subtasks, then writes the root's file

        workers = [threading.Thread(target=work, args=(n,)) for n in range(WORKERS)]
        refreshers = [threading.Thread(target=refresh) for _ in range(2)]
        for t in workers + refreshers:
            t.start()
        for t in workers:
            t.join()
        stop.set()
        for t in refreshers:
            t.join()
    return root


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Path, bytes]]:
    """Every task-file write (path, bytes) in the order the writer made them."""
    seen: list[tuple[Path, bytes]] = []
    save = writer.save_atomic

    def recording(path: Path, data: bytes, *more: bytes, **kwargs: Any) -> bool:
        seen.append((path, b"".join((data, *more))))
        return save(path, data, *more, **kwargs)

    monkeypatch.setattr(writer, "save_atomic", recording)
    return seen


def test_refresh_racing_finish_never_overwrites_final_figures(
    tmp_path: Path, task_spans: InMemorySpanExporter, writes: list[tuple[Path, bytes]]
) -> None:
    """Refreshes racing finishes: each write shows a task running or final; files end final."""
    reset_settings(Settings(refresh_interval_s=0.001))  # the refresh thread joins the race
    roots = [_hammer(tmp_path / f"run{k}.json", threading.Event()) for k in range(ROOTS)]
    tasks: dict[str, Task] = {}
    for root in roots:
        stack = [root]
        while stack:
            task = stack.pop()
            tasks[str(task.task_id)] = task
            stack.extend(task.subtasks)
    assert len(tasks) == ROOTS * (1 + 2 * WORKERS * TASKS_PER_WORKER)
    spans = {s.attributes[attr.TASK_ID]: s for s in task_spans.get_finished_spans()}
    for task_id, task in tasks.items():  # final figures, never overwritten after the span ended
        assert task.status is TaskStatus.FINISHED
        a = spans[task_id].attributes
        assert is_microsecond_rounding(a[attr.DURATION_S], task.duration), task.label
        assert is_microsecond_rounding(a[attr.CPU_TIME_S], task.cpu_time), task.label
    assert len(writes) > 10 * ROOTS  # the refreshers did race the finishes
    for path, data in writes:
        for node in _nodes(json.loads(data)):
            task = tasks[node["task_id"]]
            if node["status"] == "finished":  # finished in a snapshot: its final figures
                assert {k: node[k] for k in _final(task)} == _final(task), path
            else:
                assert node["status"] == "running", path
                assert node["finish_time"] is None, path
    for k, root in enumerate(roots):  # on disk, each file is its task's final state
        on_disk = json.loads((tmp_path / f"run{k}.json").read_text())
        assert on_disk == json.loads(root.model_dump_json())
    own_files = sorted(tmp_path.glob("run*-w*.json"))
    assert len(own_files) == ROOTS * WORKERS * (TASKS_PER_WORKER // 25)
    for path in own_files:
        on_disk = json.loads(path.read_text())
        assert on_disk == json.loads(tasks[on_disk["task_id"]].model_dump_json()), path
