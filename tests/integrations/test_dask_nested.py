"""Dask work submitted from a task running on a worker is carried: subtasks of that task.

Before: a client that a worker's task got (``worker_client()``, ``get_client()``) was not the
set-up client, so its submissions carried nothing; their tasks were roots of traces of their
own, missing from the driver's tree and file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

distributed = pytest.importorskip(
    "distributed", reason="the Dask integration needs dask[distributed] installed"
)

from distributed import Client  # noqa: E402

from tasktrace import Task, TaskStatus  # noqa: E402

from . import dask_work  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    """Two worker processes of three threads each.

    Both submitting tasks may land on one worker; with ``get_client()`` (no ``secede``) each
    holds a thread while it waits, and the square pinned to that worker needs a third.
    """
    with dask_work.set_up_client(threads_per_worker=3) as c:
        yield c


@pytest.mark.parametrize("how", ["worker_client", "get_client"])
def test_work_submitted_from_a_worker_task_is_its_subtask(
    client: Client, tmp_path: Path, how: str
) -> None:
    """Each worker task's squares (one on its own worker, one on the other) are its subtasks."""
    out = tmp_path / "driver.json"
    with Task("driver", file=out) as driver:
        pinned = client.gather(client.map(dask_work.submit_from_worker, range(2), how=how))
    saved = Task.model_validate_json(out.read_text())
    for tree in (driver, saved):
        outers = sorted(tree.subtasks, key=lambda t: t.label)
        assert [(t.label, t.status) for t in outers] == [
            ("outer 0", TaskStatus.FINISHED),
            ("outer 1", TaskStatus.FINISHED),
        ]
        for i, outer in enumerate(outers):
            assert outer.parent_id == tree.task_id
            squares = {t.label: t for t in outer.subtasks}
            assert sorted(squares) == [f"square {100 * i + j}" for j in range(2)]
            for j, address in enumerate(pinned[i]):
                square = squares[f"square {100 * i + j}"]
                assert square.parent_id == outer.task_id
                assert square.trace_id == tree.trace_id
                assert square.status is TaskStatus.FINISHED
                # run on another worker, the square came home as a record of its own
                elsewhere = address != outer.model_extra["dask_worker"]
                assert square.subprocess is elsewhere
                if elsewhere:
                    assert square.model_extra["dask_worker"] == address


def test_work_submitted_from_a_worker_function_without_a_task_joins_the_submitter(
    client: Client, tmp_path: Path
) -> None:
    """A worker function with no Task of its own submits: the squares are the driver's subtasks."""
    out = tmp_path / "driver.json"
    with Task("driver", file=out) as driver:
        client.gather(client.map(dask_work.submit_bare, range(2)))
    saved = Task.model_validate_json(out.read_text())
    for tree in (driver, saved):
        assert sorted((t.label, t.status) for t in tree.subtasks) == [
            (f"square {100 * i + j}", TaskStatus.FINISHED) for i in range(2) for j in range(2)
        ]
        assert {(t.parent_id, t.trace_id) for t in tree.subtasks} == {(tree.task_id, tree.trace_id)}
