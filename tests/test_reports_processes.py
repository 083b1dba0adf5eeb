"""Reports, comparisons and tables count the CPU and memory of other processes as ``show`` does.

A ``tasktrace run`` file's root holds tasktrace's own CPU time and peak RSS in ``cpu_time`` and
``peak_memory``, and the command's in ``children_cpu_time_s`` and ``children_peak_rss_bytes``;
a task with a subprocess subtask holds its own process's CPU, and the child's is in the
subtask. ``tasktrace show`` prints each task's CPU time as ``total_cpu()`` and a command's peak
RSS as the command's: ``compare``, ``table``, ``report`` and ``read_tasks`` must give the same
figures, or a run's cost reads as tasktrace's few milliseconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

import tasktrace

from .cli_helpers import run_cli
from .conftest import FIXTURES

_BURN = textwrap.dedent(
    """
    import time
    from tasktrace import Task
    start = time.process_time()
    while time.process_time() - start < 0.3:
        pass
    with Task("in child"):
        block = bytearray(64 * 1024 * 1024)  # the command's peak RSS, far above tasktrace's
        block[::4096] = b"x" * len(block[::4096])
    """
)
"""A command that spends 0.3 s of CPU outside any task, then a task that touches 64 MiB."""


@pytest.fixture(scope="module")
def command_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two ``tasktrace run`` files of the same CPU-burning command."""
    folder = tmp_path_factory.mktemp("command-runs")
    (folder / "burn.py").write_text(_BURN)
    files = []
    for name in ("a.json", "b.json"):
        done = run_cli(["run", "-q", "--file", name, "--", sys.executable, "burn.py"], folder)
        assert done.returncode == 0, done.stderr
        files.append(folder / name)
    return files


def _root(path: Path) -> tasktrace.Task:
    return tasktrace.Task.model_validate_json(path.read_text())


def test_compare_and_table_give_a_commands_cpu_and_peak_rss(
    command_runs: list[Path], tmp_path: Path
) -> None:
    """The run's line in ``compare`` and ``table`` holds the command's CPU and peak RSS."""
    roots = [_root(p) for p in command_runs]
    for root in roots:  # the file is as expected: the command's usage beside tasktrace's
        assert root.children_cpu_time_s is not None
        assert root.children_cpu_time_s >= 0.3
        assert root.children_peak_rss_bytes is not None
    done = run_cli(["compare", "--json", *map(str, command_runs)], tmp_path)
    assert done.returncode == 0, done.stderr
    matched = {tuple(m["path"]): m for m in json.loads(done.stdout)["matched"]}
    top = matched[(roots[0].label,)]["measures"]
    assert top["cpu_time_s"]["values"] == pytest.approx([r.total_cpu() for r in roots])
    assert top["peak_memory_bytes"]["values"] == [r.children_peak_rss_bytes for r in roots]

    frame = tasktrace.read_tasks(command_runs)
    first = frame[frame["depth"] == 0].set_index("run")
    for path, root in zip(command_runs, roots, strict=True):
        assert first.loc[path.stem, "cpu_time_s"] == pytest.approx(root.total_cpu())
        assert first.loc[path.stem, "peak_memory_bytes"] == root.children_peak_rss_bytes

    table = tmp_path / "costs.csv"
    args = ["table", *map(str, command_runs), "--by", "run", "--measure", "cpu_time,peak_memory"]
    done = run_cli([*args, "-o", str(table)], tmp_path)
    assert done.returncode == 0, done.stderr
    costs = pd.read_csv(table).set_index("run")
    for path, root in zip(command_runs, roots, strict=True):
        assert costs.loc[path.stem, "cpu_time_s_total"] == pytest.approx(root.total_cpu())
        assert costs.loc[path.stem, "peak_memory_bytes_max"] == root.children_peak_rss_bytes


def test_a_subprocess_subtasks_cpu_is_in_its_parents_figures(tmp_path: Path) -> None:
    """A task whose child process did the work: its CPU in ``read_tasks`` includes the child's."""
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            """
            import subprocess, sys
            from tasktrace import Task, child_environment
            child = "from tasktrace import Task\\nwith Task('work'):\\n    sum(range(10**7))"
            with Task("parent", file="parent.json"):
                with Task("spawn"):
                    subprocess.run([sys.executable, "-c", child], env=child_environment(),
                                   check=True)
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKTRACE_", "OTEL_"))}
    subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, check=True, timeout=60)
    root = _root(tmp_path / "parent.json")
    spawn = root.subtasks[0]
    work = spawn.subtasks[0]
    assert work.subprocess
    assert work.cpu_time is not None
    assert spawn.cpu_time is not None
    assert work.cpu_time > spawn.cpu_time  # the child did the work
    frame = tasktrace.read_tasks([tmp_path / "parent.json"]).set_index("label")
    assert frame.loc["spawn", "cpu_time_s"] == pytest.approx(spawn.total_cpu())
    assert frame.loc["parent", "cpu_time_s"] == pytest.approx(root.total_cpu())
    assert frame.loc["parent", "cpu_time_s"] >= work.cpu_time


def test_a_chrome_trace_among_task_files_is_named_as_such(tmp_path: Path) -> None:
    """A Chrome trace given as a task file: the error says what it is, not a missing "label".

    The README writes ``run.trace.json`` beside ``run.json`` and then reads ``runs/*.json``:
    among several files the trace is skipped with one warning naming it; alone, an error.
    """
    task = tmp_path / "run.json"
    task.write_bytes((FIXTURES / "nested.json").read_bytes())
    done = run_cli(["export", "run.json", "--format", "chrome", "-o", "run.trace.json"], tmp_path)
    assert done.returncode == 0, done.stderr
    done = run_cli(["table", "run.json", "run.trace.json"], tmp_path)
    assert done.returncode == 0, done.stderr
    skipped = "Warning: run.trace.json: skipped: a Chrome trace, not a task file"
    assert done.stderr.strip() == skipped
    for args in (["table", "run.trace.json"], ["show", "run.trace.json"]):
        done = run_cli(args, tmp_path)
        assert done.returncode == 2
        assert "run.trace.json: not a tasktrace task file: a Chrome trace" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
