"""The ``meters`` record of a root task's file (tree.meters_record), in this process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tasktrace import Task, TaskStatus
from tasktrace.meters import register_meter, reset_meters


class _RaisingMeter:
    """A meter named like a built-in one whose availability check raises."""

    def __init__(self, name: str) -> None:
        self.name = name

    def available(self) -> bool:
        raise RuntimeError("the driver crashed")

    def start(self) -> None:
        return None

    def read(self, snapshot: object, elapsed_s: float, *, final: bool) -> dict[str, Any]:
        return {}


@pytest.fixture
def no_meters() -> Iterator[None]:
    """No meters for the test's tasks; the defaults are rebuilt (and checked again) after it."""
    reset_meters([])
    yield
    reset_meters()


@pytest.mark.usefixtures("no_meters")
def test_a_meter_check_that_raises_is_recorded_and_the_task_goes_on(tmp_path: Path) -> None:
    """A built-in meter's check raising: recorded as unavailable (the type only); task finishes."""
    assert not register_meter(_RaisingMeter("rapl"))
    path = tmp_path / "job.json"
    with Task("job", file=path) as task:
        pass
    assert task.status is TaskStatus.FINISHED
    record = json.loads(path.read_text())["meters"]
    assert record["rapl"] == {
        "available": False,
        "reason": "its availability check raised RuntimeError",
    }


def test_a_roots_own_meters_data_is_kept(tmp_path: Path) -> None:
    """A root given ``meters=`` data of its own keeps it: the record never replaces user data."""
    path = tmp_path / "job.json"
    with Task("job", file=path, meters={"mine": [1, 2]}):
        pass
    assert json.loads(path.read_text())["meters"] == {"mine": [1, 2]}


def test_a_task_saved_after_it_started_records_the_meters(tmp_path: Path) -> None:
    """``save_to_file`` on a running root records them too; the finished file keeps them."""
    path = tmp_path / "job.json"
    with Task("job") as task:
        task.save_to_file(path)
        assert "meters" in json.loads(path.read_text())
    assert json.loads(path.read_text())["meters"] == task.model_extra["meters"]
