"""A view that leaves tasks out never changes what a shown task measured.

``show --filter`` keeps the matching tasks and their ancestors; ``--depth`` with ``--json`` and the
live panel's running tasks prune too. A task's CPU time is ``total_cpu()``: its process's CPU
plus what its subprocess subtasks reported, so a pruned copy that lost those subtasks printed a
smaller figure for its ancestors (``grid`` 2.42 s whole, 1.13 s under ``--filter fold``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

import tasktrace
from tasktrace.core.units import friendly_duration
from tasktrace.core.views import filter_tree, label_totals

from .cli_helpers import run_cli

_TREE: dict[str, Any] = {
    "label": "grid",
    "status": "finished",
    "duration": 18.0,
    "cpu_time": 0.25,
    "subtasks": [
        {
            "label": "manual folds",
            "status": "finished",
            "duration": 16.0,
            "cpu_time": 0.5,
            "subtasks": [
                {"label": f"fold {i}", "status": "finished", "duration": 0.8, "cpu_time": 0.125}
                for i in range(4)
            ],
        },
        {
            "label": "gridsearch",
            "status": "finished",
            "duration": 2.0,
            "cpu_time": 0.0625,
            "subtasks": [
                {
                    "label": "fit",
                    "status": "finished",
                    "duration": 0.2,
                    "cpu_time": 0.25,
                    "subprocess": True,  # a worker's: not inside its ancestors' cpu_time
                }
                for _ in range(3)
            ],
        },
    ],
}


@pytest.fixture
def grid(tmp_path: Path) -> Path:
    """Write a task file whose root's CPU time counts three worker tasks (0.75 s of 1 s)."""
    path = tmp_path / "grid.json"
    path.write_text(json.dumps(_TREE))
    return path


def _cpu_of(line: str) -> str:
    found = re.search(r"CPU time (\S+)", line)
    assert found is not None, line
    return found.group(1)


def test_a_filter_keeps_the_ancestors_whole_cpu_time(grid: Path, tmp_path: Path) -> None:
    """``grid``'s CPU time is the same whatever the filter shows; ``--totals`` too."""
    whole = tasktrace.Task.model_validate_json(grid.read_text())
    expected = friendly_duration(whole.total_cpu())
    assert whole.total_cpu() == pytest.approx(0.25 + 3 * 0.25)  # its process's and the workers'
    for args in ([], ["--filter", "fold"], ["--filter", "gridsearch"], ["--depth", "1"]):
        done = run_cli(["show", str(grid), *args], tmp_path)
        assert done.returncode == 0, done.stderr
        assert _cpu_of(done.stdout.splitlines()[0]) == expected, (args, done.stdout)
    done = run_cli(["show", str(grid), "--filter", "fold", "--totals", "--json"], tmp_path)
    assert done.returncode == 0, done.stderr
    rows = {row["pattern"]: row for row in json.loads(done.stdout)}
    assert rows["grid"]["total_cpu_time_s"] == pytest.approx(whole.total_cpu())


def test_a_filtered_copy_measures_as_its_task_and_keeps_its_json(grid: Path) -> None:
    """:func:`filter_tree`'s copies: the whole task's ``total_cpu()``, their own fields' JSON."""
    whole = tasktrace.Task.model_validate_json(grid.read_text())
    shown = filter_tree(whole, "fold")
    assert shown is not None
    assert [t.label for t in shown.subtasks] == ["manual folds"]
    assert shown.total_cpu() == pytest.approx(whole.total_cpu())
    assert isinstance(shown, tasktrace.Task)
    data = json.loads(shown.model_dump_json())
    assert data["cpu_time"] == whole.cpu_time
    assert "_whole" not in data
    assert [t["label"] for t in data["subtasks"]] == ["manual folds"]
    totals = {row["pattern"]: row for row in label_totals(shown)}
    assert totals["grid"]["total_cpu_time_s"] == pytest.approx(whole.total_cpu())
    assert whole.subtasks[1].label == "gridsearch"  # the tree is not modified
