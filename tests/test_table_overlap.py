"""``table`` says where a group's CPU time counts one process's CPU once per task.

A task's ``cpu_time`` is its process's CPU over its span (every thread): two tasks in two threads
each burning 0.3 s hold about 0.6 s each, so ``--by label_pattern`` summed 1.2 s for 0.6 s used.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import tasktrace
from tasktrace import ContextThreadPoolExecutor, Task
from tasktrace.formats.fold import fold_tree, hover_text

from .cli_helpers import run_cli


def _burn(seconds: float) -> None:
    start = time.thread_time()
    while time.thread_time() - start < seconds:
        pass


def _spin(i: int) -> None:
    with Task(f"spin {i}"):
        _burn(0.3)


@pytest.fixture(scope="module")
def threads_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Write a run with two threads' tasks at the same time, then two tasks one after the other."""
    path = tmp_path_factory.mktemp("threads") / "mt.json"
    with Task("mt", file=path):
        with Task("pool"), ContextThreadPoolExecutor(2) as pool:
            list(pool.map(_spin, range(2)))
        for i in range(2):
            with Task(f"step {i}"):
                _burn(0.1)
    return path


def test_overlapping_tasks_of_one_process_are_flagged(threads_file: Path, tmp_path: Path) -> None:
    """The spins overlap in one process: marked ‡ with a note; the sequential steps are not."""
    root = tasktrace.Task.model_validate_json(threads_file.read_text())
    spins = root.subtasks[0].subtasks
    assert [t.label for t in spins] in (["spin 0", "spin 1"], ["spin 1", "spin 0"])
    done = run_cli(
        ["table", str(threads_file), "--by", "label_pattern", "--measure", "cpu_time"], tmp_path
    )
    assert done.returncode == 0, done.stderr
    spin_row = next(line for line in done.stdout.splitlines() if "spin #" in line)
    step_row = next(line for line in done.stdout.splitlines() if "step #" in line)
    assert "‡" in spin_row
    assert "‡" not in step_row
    assert "CPU time of spin #: 2 of its tasks ran at the same time in one process" in done.stdout
    out = tmp_path / "t.csv"
    done = run_cli(
        ["table", str(threads_file), "--by", "label_pattern", "-m", "cpu_time", "-o", str(out)],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "cpu_time_s_overlapping_tasks" in text.splitlines()[0]


def test_the_reports_label_table_flags_them_too(threads_file: Path, tmp_path: Path) -> None:
    """The report's per-label totals carry ‡ and the page says what it means."""
    page = tmp_path / "r.html"
    done = run_cli(["report", str(threads_file), "-o", str(page)], tmp_path)
    assert done.returncode == 0, done.stderr
    text = page.read_text()
    assert "‡ after a total: some of the label's tasks ran at the same time" in text
    assert "\\u2021" in text or "s‡" in text  # in a cell of the label table's data


def test_a_folded_node_of_overlapping_tasks_says_so_in_its_hover(tmp_path: Path) -> None:
    """1,200 thread tasks at the same time, folded in the report: the hover's total is marked."""
    spins = [
        {
            "label": f"spin {i}",
            "status": "finished",
            "start_time": 100.0 + i * 1e-3,
            "finish_time": 102.0,
            "duration": 2.0,
            "cpu_time": 1.0,
        }
        for i in range(1200)
    ]
    steps = [
        {
            "label": f"step {i}",
            "status": "finished",
            "start_time": 200.0 + i,
            "finish_time": 200.5 + i,
            "duration": 0.5,
            "cpu_time": 0.25,
        }
        for i in range(3)
    ]
    root = tasktrace.Task.model_validate(
        {"label": "mt", "cpu_time": 2.0, "subtasks": [{"label": "pool", "subtasks": spins}, *steps]}
    )
    nodes = {n.title: n for n in fold_tree(root)}
    spin = nodes["spin 0…1199"]
    assert spin.overlapping == {"cpu_time_s": 1200}
    assert "‡ (1,200 ran at the same time in one process" in hover_text(spin)
    assert nodes["step 0…2"].overlapping == {}
    assert "‡" not in hover_text(nodes["step 0…2"])
