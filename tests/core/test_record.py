"""The task record: the seed's fields, LensKit's files, and task-file JSON (core.record)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tasktrace import Task, TaskStatus

from ..conftest import load_json


def test_seed_fields_and_defaults() -> None:
    """A new task is PENDING with the seed's fields, a random id and this host's name."""
    t = Task("x")
    assert t.status is TaskStatus.PENDING
    assert isinstance(t.task_id, uuid.UUID)
    assert t.hostname
    assert t.subtasks == []
    for name in ("start_time", "finish_time", "duration", "cpu_time", "peak_memory"):
        assert getattr(t, name) is None
    assert str(t) == f"<Task {t.task_id}: x>"


def test_lenskit_fixtures_round_trip(lenskit_fixtures: list[Path]) -> None:
    """Every LensKit task file loads and re-serialises with exactly the same values."""
    for path in lenskit_fixtures:
        task = Task.model_validate_json(path.read_text())
        assert json.loads(task.model_dump_json()) == load_json(path), path.name


def test_lenskit_fixture_details(lenskit_fixtures: list[Path]) -> None:
    """Statuses, nesting, tags and extra data of the LensKit files survive loading."""
    files = {p.stem: Task.model_validate_json(p.read_text()) for p in lenskit_fixtures}
    assert files["failed"].status is TaskStatus.FAILED
    assert files["failed"].subtasks[0].status is TaskStatus.FINISHED
    assert files["cancelled"].status is TaskStatus.CANCELLED
    nested = files["nested"]
    assert nested.tags == ["exp"]
    epoch = nested.subtasks[1]
    assert (epoch.label, epoch.epoch, epoch.tags) == ("epoch 0", 0, ["train", "epoch"])
    assert [s.label for s in epoch.subtasks] == ["training epoch 0", "measuring epoch 0"]


def test_chassis_power_alias() -> None:
    """LensKit's older ``chassis_power`` key loads into ``system_power``."""
    t = Task.model_validate({"label": "x", "chassis_power": 12.5})
    assert t.system_power == 12.5


def test_total_cpu_adds_subprocess_subtasks() -> None:
    """total_cpu adds subprocess subtasks and reaped children to the task's own CPU."""
    t = Task.model_validate(
        {
            "label": "p",
            "cpu_time": 1.0,
            "children_cpu_time_s": 0.5,
            "subtasks": [
                {"label": "in-process", "cpu_time": 0.7},
                {"label": "worker", "cpu_time": 2.0, "subprocess": True},
            ],
        }
    )
    assert t.total_cpu() == pytest.approx(3.5)
    assert Task("x").total_cpu() is None


def test_total_cpu_reaches_subprocess_tasks_under_in_process_subtasks() -> None:
    """Workers under an in-process subtask (a pool started inside a fold) count once, at the top."""
    t = Task.model_validate(
        {
            "label": "cv",
            "cpu_time": 1.0,
            "subtasks": [
                {
                    "label": "fold",
                    "cpu_time": 0.5,  # inside cv's own 1.0: the same process
                    "subtasks": [
                        {"label": "w0", "cpu_time": 2.0, "subprocess": True},
                        {
                            "label": "step",
                            "cpu_time": 0.1,
                            "subtasks": [{"label": "w1", "cpu_time": 3.0, "subprocess": True}],
                        },
                    ],
                },
                {"label": "w2", "cpu_time": 4.0, "subprocess": True, "children_cpu_time_s": 0.25},
            ],
        }
    )
    fold = t.subtasks[0]
    assert fold.total_cpu() == pytest.approx(0.5 + 2.0 + 3.0)
    assert t.total_cpu() == pytest.approx(1.0 + 2.0 + 3.0 + 4.0 + 0.25)


def test_friendly_duration() -> None:
    """friendly_duration gives human units, or None before the task ran."""
    assert Task("x").friendly_duration is None
    assert Task.model_validate({"label": "x", "duration": 187.2}).friendly_duration == "3m07.20s"
    assert Task.model_validate({"label": "x", "duration": 0.85}).friendly_duration == "850ms"


def test_unencodable_label_never_breaks_the_task_file(tmp_path: Path) -> None:
    """A label with a lone surrogate (a non-UTF-8 file name) is written escaped, not raised."""
    path = tmp_path / "t.json"
    with Task("root", file=path), Task("file \udcff.csv"):
        pass
    loaded = Task.model_validate_json(path.read_text())
    assert loaded.status is TaskStatus.FINISHED
    assert loaded.subtasks[0].label == "file \\udcff.csv"


def test_deep_tree_is_written_and_read_back(tmp_path: Path) -> None:
    """A tree 150 levels deep (beyond pydantic's JSON depth limits) is saved and shown."""
    from contextlib import ExitStack

    from tasktrace.cli import main

    path = tmp_path / "deep.json"
    with Task("root", file=path), ExitStack() as stack:
        for i in range(150):
            stack.enter_context(Task(f"level {i}"))
    data = json.loads(path.read_text())
    depth = 0
    while data["subtasks"]:
        data = data["subtasks"][0]
        depth += 1
    assert depth == 150
    assert main(["show", "--depth", "2", str(path)]) == 0


def test_new_node_is_what_model_construct_builds() -> None:
    """``new_node`` gives the fields, fields set, extra and private state of ``model_construct``."""
    from tasktrace.core.record import new_node
    from tasktrace.core.settings import Settings, reset_settings

    reset_settings(Settings(machine="rig-7"))
    given = {"label": "query", "status": TaskStatus.RUNNING, "start_time": 12.5}
    fast = new_node(**given)
    slow = Task.model_construct(**given)
    assert type(fast) is Task
    assert fast.__dict__.keys() == slow.__dict__.keys()
    for name in fast.__dict__:
        if name != "task_id":  # a new id each
            assert fast.__dict__[name] == slow.__dict__[name], name
    assert isinstance(fast.task_id, uuid.UUID)
    assert fast.task_id != slow.task_id
    assert fast.machine == "rig-7"
    assert fast.model_fields_set == slow.model_fields_set == set(given)
    assert fast.__pydantic_extra__ == slow.__pydantic_extra__ == {}
    assert fast.__pydantic_private__ == slow.__pydantic_private__
    assert fast.subtasks is not new_node(label="other").subtasks  # a list of its own
    assert fast.model_dump(exclude={"task_id"}) == slow.model_dump(exclude={"task_id"})


def test_new_node_names_a_field_it_does_not_know() -> None:
    """A misspelt field is a TypeError naming it, not a silently extra value."""
    from tasktrace.core.record import new_node

    with pytest.raises(TypeError, match="not task record fields: lable"):
        new_node(lable="x")
