"""Records a killed process never merged go into the task file its marker names, or say why not.

The sweep (:func:`tasktrace.tree.spool_owners.sweep`) on spool folders made by hand: markers of
an ended process naming a task file, records whose writers ended. The end-to-end case (a real
``tasktrace run --file`` killed by ``SIGKILL``) is in ``tests/test_spool_stale.py``.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

import tasktrace.tree.unmerged
from tasktrace.tree.spool_owners import mark_parent, owner_id, sweep
from tasktrace.tree.unmerged import describe

ENDED = f"{owner_id().split('-')[0]}-{2**22 + 7}-1"
"""An owner id of this machine naming no process (a pid above pid_max's default)."""


def _task(label: str, start: float, **fields: Any) -> dict[str, Any]:
    return {"task_id": str(uuid.uuid4()), "label": label, "start_time": start, **fields}


def _run_file(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write a killed run's file: a running root holding a running ``step``; return both."""
    step = _task("step", 2.0, status="running", subtasks=[])
    root = _task("run", 1.0, status="running", duration=5.0, extra="kept", subtasks=[step])
    path.write_text(json.dumps(root))
    return root, step


def _marker(folder: Path, parent: str, task_file: Path | None) -> Path:
    """Make the marker of ``parent`` as the ended process ``ENDED`` made it."""
    mark_parent(folder, uuid.UUID(parent), task_file)
    made = folder / f".parent-{parent}.{owner_id()}"
    ended = folder / f".parent-{parent}.{ENDED}"
    made.rename(ended)
    return ended


def _record(folder: Path, parent: str, task: dict[str, Any], writer: str = ENDED) -> Path:
    path = folder / f"{task['task_id']}.{writer}.json"
    path.write_text(json.dumps({**task, "parent_id": parent, "subprocess": True}))
    return path


def test_records_go_under_their_parent_replacing_a_refreshed_copy(tmp_path: Path) -> None:
    """Each record goes under its parent by id, an older copy replaced; the rest stays as it was."""
    spool, task_file = tmp_path / "spool", tmp_path / "k.json"
    spool.mkdir()
    root, step = _run_file(task_file)
    late = _task("late", 4.0, status="cancelled")
    early = _task("early", 3.0, status="running")  # a refresh's snapshot, in the file
    step["subtasks"] = [{**early, "parent_id": step["task_id"], "subprocess": True}]
    task_file.write_text(json.dumps(root))
    marker = _marker(spool, step["task_id"], task_file)
    records = [
        _record(spool, step["task_id"], late),
        _record(spool, step["task_id"], {**early, "status": "finished"}),
    ]
    settled = sweep(spool)
    assert list(settled.merged) == [task_file]
    assert sorted(settled.merged[task_file]) == ["early", "late"]  # in the folder's order
    assert settled.removed == []
    after = json.loads(task_file.read_text())
    assert {k: after[k] for k in ("task_id", "label", "status", "duration", "extra")} == {
        k: root[k] for k in ("task_id", "label", "status", "duration", "extra")
    }
    (merged_step,) = after["subtasks"]
    assert merged_step["status"] == "running"
    got = [(sub["label"], sub["status"]) for sub in merged_step["subtasks"]]
    assert got == [("early", "finished"), ("late", "cancelled")]  # by start, no duplicate
    assert not any(path.exists() for path in records)
    assert not marker.exists()
    text = describe(spool, settled)
    assert text is not None
    assert text.startswith("tasktrace: merged 2 task records (")
    assert f") into {task_file}, left in {spool} by an earlier run that was killed" in text


def test_a_file_that_holds_another_run_now_is_left_alone(tmp_path: Path) -> None:
    """A file replaced since (another run's, a user's) is not written: the records are removed."""
    spool, task_file = tmp_path / "spool", tmp_path / "k.json"
    spool.mkdir()
    _, step = _run_file(task_file)
    _marker(spool, step["task_id"], task_file)
    record = _record(spool, step["task_id"], _task("lost", 3.0, status="finished"))
    _run_file(task_file)  # another run wrote the same path since
    other = task_file.read_bytes()
    settled = sweep(spool)
    assert (settled.merged, settled.removed) == ({}, ["lost"])
    assert task_file.read_bytes() == other
    assert not record.exists()
    text = describe(spool, settled)
    assert text is not None
    assert text.startswith("tasktrace: removed 1 task record ('lost'), left in ")
    assert text.endswith(
        "there is no task file of that run to merge it into (none was given, or it was "
        "removed or replaced since)"
    )
    assert list(spool.iterdir()) == []


def test_a_file_that_cannot_be_written_keeps_the_records_for_a_later_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The records (and the marker naming their file) stay when the file cannot be written."""
    spool, task_file = tmp_path / "spool", tmp_path / "k.json"
    spool.mkdir()
    _, step = _run_file(task_file)
    marker = _marker(spool, step["task_id"], task_file)
    record = _record(spool, step["task_id"], _task("kept", 3.0, status="finished"))
    before = task_file.read_bytes()

    def full(path: Path, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(tasktrace.tree.unmerged, "replace_file", full)
        settled = sweep(spool)
    assert settled.kept == {task_file: ("No space left on device", ["kept"])}
    assert task_file.read_bytes() == before
    assert record.exists()
    assert marker.exists()
    text = describe(spool, settled)
    assert text is not None
    assert "kept 1 task record ('kept'), which could not be merged into " in text
    assert sweep(spool).merged == {task_file: ["kept"]}  # the next run merges them
    assert list(spool.iterdir()) == []


def test_a_record_still_written_is_merged_once_its_writer_ended(tmp_path: Path) -> None:
    """The ended parent's marker stays while a record under it is still written, then merges."""
    spool, task_file = tmp_path / "spool", tmp_path / "k.json"
    spool.mkdir()
    _, step = _run_file(task_file)
    marker = _marker(spool, step["task_id"], task_file)
    live = _record(spool, step["task_id"], _task("live", 3.0, status="running"), owner_id())
    assert sweep(spool).labels == []
    assert live.exists()
    assert marker.exists()
    ended = live.with_name(live.name.replace(owner_id(), ENDED))  # its writer ended
    live.rename(ended)
    assert sweep(spool).merged == {task_file: ["live"]}
    (merged_step,) = json.loads(task_file.read_text())["subtasks"]
    assert [sub["label"] for sub in merged_step["subtasks"]] == ["live"]


def test_the_marker_names_the_absolute_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative task file is named absolutely in the marker; none leaves the marker empty."""
    monkeypatch.chdir(tmp_path)
    task_id = uuid.uuid4()
    mark_parent(tmp_path, task_id, Path("k.json"))
    marker = tmp_path / f".parent-{task_id}.{owner_id()}"
    assert os.fsdecode(marker.read_bytes()) == str(tmp_path / "k.json")
    other = uuid.uuid4()
    mark_parent(tmp_path, other, None)
    assert (tmp_path / f".parent-{other}.{owner_id()}").read_bytes() == b""


def test_a_file_changed_while_merging_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another sweep writing the file meanwhile is not overwritten: the merge starts again."""
    spool, task_file = tmp_path / "spool", tmp_path / "k.json"
    spool.mkdir()
    root, step = _run_file(task_file)
    _marker(spool, step["task_id"], task_file)
    _record(spool, step["task_id"], _task("mine", 3.0, status="finished"))
    theirs = _task("theirs", 4.0, status="finished", parent_id=step["task_id"])
    dump = tasktrace.tree.unmerged.dump_json
    writes = []

    def another_sweep_writes_first(task: Any) -> bytes | None:
        if not writes:  # between this sweep's read and its write
            step["subtasks"] = [theirs]
            task_file.write_text(json.dumps(root) + " ")
        writes.append(task)
        return dump(task)

    monkeypatch.setattr(tasktrace.tree.unmerged, "dump_json", another_sweep_writes_first)
    assert sweep(spool).merged == {task_file: ["mine"]}
    assert len(writes) == 2
    (merged_step,) = json.loads(task_file.read_text())["subtasks"]
    assert [sub["label"] for sub in merged_step["subtasks"]] == ["mine", "theirs"]
