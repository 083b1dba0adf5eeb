"""Assigning to a Task's fields: checked as the constructor checks, never silently overwritten."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tasktrace import Task, TaskStatus
from tasktrace.core.problems import InvalidTaskError


def test_a_measured_field_of_a_running_task_is_refused_saying_what_to_do(tmp_path: Path) -> None:
    """``t.duration = 5`` was kept until the finish overwrote it; now it says so at once."""
    path = tmp_path / "t.json"
    with Task("t", file=path) as t:
        with pytest.raises(InvalidTaskError, match=r"^Task duration: .* running .*my_duration"):
            t.duration = 5
        for name in ("cpu_time", "peak_memory", "start_time", "finish_time", "span_id"):
            with pytest.raises(InvalidTaskError, match=rf"^Task {name}: cannot be set"):
                setattr(t, name, 1)
        with pytest.raises(InvalidTaskError, match=r"task\.finish\(TaskStatus\.FAILED\)"):
            t.status = TaskStatus.FAILED
        t.my_duration = 5  # what the message says to do
    assert t.status is TaskStatus.FINISHED
    saved = json.loads(path.read_text())
    assert saved["my_duration"] == 5
    assert saved["duration"] == t.duration != 5
    with pytest.raises(ValueError, match="Task duration: cannot be set while the task is pending"):
        Task("not started").duration = 5  # an InvalidTaskError is a ValueError


def test_a_field_of_the_wrong_type_is_refused_naming_the_field() -> None:
    """``t.duration = "abc"`` was stored as given, breaking the file; on any task, now refused."""
    finished = Task.model_validate({"label": "from a file", "status": "finished"})
    with pytest.raises(InvalidTaskError, match=r'^Task duration: expected a number, got "abc"$'):
        finished.duration = "abc"
    with pytest.raises(InvalidTaskError, match=r"^Task peak_memory: expected a whole number"):
        finished.peak_memory = 1.5
    with pytest.raises(InvalidTaskError, match=r"^Task label: expected a string, got 5$"):
        finished.label = 5  # type: ignore[assignment]
    with pytest.raises(InvalidTaskError, match=r"^Task task_id: cannot be changed$"):
        finished.task_id = uuid.uuid4()
    with pytest.raises(InvalidTaskError, match=r"^Task subtasks\[0\]\.label: expected a string"):
        finished.subtasks = [{"label": 3}]  # type: ignore[list-item]
    with (
        Task("running") as t,
        pytest.raises(InvalidTaskError, match=r"^Task cpu_power: expected a number"),
    ):
        t.cpu_power = "lots"  # type: ignore[assignment]
    assert t.cpu_power is None
    assert json.loads(finished.model_dump_json())["label"] == "from a file"


def test_fields_set_by_hand_are_checked_and_kept() -> None:
    """A valid value is stored as the constructor would store it; tasktrace's own fields too."""
    finished = Task.model_validate({"label": "from a file", "status": "finished"})
    finished.duration = 5  # a finished task's figures may be corrected
    finished.status = "failed"  # type: ignore[assignment]
    finished.parent_id = str(uuid.UUID(int=1))  # type: ignore[assignment]
    assert (finished.duration, type(finished.duration)) == (5.0, float)
    assert finished.status is TaskStatus.FAILED
    assert finished.parent_id == uuid.UUID(int=1)
    with Task("running") as t:
        t.cpu_power = 12  # as an energy meter would set it (none measured it here)
        t.label = "renamed"
        t.error = None
    assert (t.cpu_power, t.label) == (12.0, "renamed")


class _Epoch(Task):
    """A user's subclass with a field of its own."""

    epoch: int = 0


def test_a_subclass_field_is_checked_too() -> None:
    """A subclass's own field is validated on assignment as in its constructor."""
    with _Epoch("e") as t:
        t.epoch = 3
        with pytest.raises(
            InvalidTaskError, match=r'^Task epoch: expected a whole number, got "x"'
        ):
            t.epoch = "x"  # type: ignore[assignment]
    assert t.epoch == 3
