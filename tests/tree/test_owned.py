"""A task file changed by someone else while the task runs is not replaced: written beside it."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasktrace import Task

from ..export_helpers import clean_env


def _beside(path: Path) -> Path:
    return path.with_name(f"{path.stem}.{os.getpid()}{path.suffix}")


def test_a_users_file_put_at_the_path_while_the_task_runs_is_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: the finish (or a refresh) replaced the user's file without a word."""
    path = tmp_path / "run.json"
    with caplog.at_level(logging.WARNING, logger="tasktrace"), Task("mine", file=path):
        assert Task.model_validate_json(path.read_bytes()).label == "mine"  # written at start
        path.write_text("precious user data\n")
    assert path.read_text() == "precious user data\n"
    beside = _beside(path)
    record = Task.model_validate_json(beside.read_bytes())
    assert (record.label, record.status.value) == ("mine", "finished")
    warnings = [
        r.getMessage() for r in caplog.records if "changed by someone else" in r.getMessage()
    ]
    assert len(warnings) == 1
    assert str(path) in warnings[0]
    assert str(beside) in warnings[0]


def test_two_processes_writing_one_path_both_keep_their_records(tmp_path: Path) -> None:
    """A task of this process and a `tasktrace run -f` of its path: both records survive.

    Before: both exited 0 and the record written first was replaced by the later one.
    """
    path = tmp_path / "same.json"
    with Task("first", file=path):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "tasktrace.cli",
                "run",
                "-q",
                "-l",
                "second",
                "-f",
                str(path),
                "true",
            ],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    assert Task.model_validate_json(path.read_bytes()).label == "second"
    first = Task.model_validate_json(_beside(path).read_bytes())
    assert (first.label, first.status.value) == ("first", "finished")


def test_a_file_removed_while_the_task_runs_is_written_again_in_place(tmp_path: Path) -> None:
    """Nothing to lose: a removed task file is written at its own path again, nothing beside."""
    path = tmp_path / "run.json"
    with Task("t", file=path):
        path.unlink()
    assert Task.model_validate_json(path.read_bytes()).status.value == "finished"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def test_the_tasks_own_writes_are_not_taken_for_someone_elses(tmp_path: Path) -> None:
    """Start, save_to_file again and finish of one task: always the same path, nothing beside."""
    path = tmp_path / "run.json"
    with Task("t", file=path) as task:
        task.save_to_file(path)
        with Task("child"):
            pass
    record = Task.model_validate_json(path.read_bytes())
    assert [s.label for s in record.subtasks] == ["child"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]
