"""Users' code type-checks: mypy --strict on a small program using the public API as LensKit's.

The package ships ``py.typed``, so a user's mypy checks their calls against tasktrace's
annotations. These tests run the real mypy (the dev extra's) on a user file in a fresh folder,
with no configuration but ``--strict`` (as a user's project would have), and once more with
pydantic's mypy plugin enabled, which many pydantic users turn on.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

USER_CODE = """
from __future__ import annotations

import uuid
from pathlib import Path

from tasktrace import Task, TaskStatus


class MyTask(Task):
    \"\"\"A user's subclass without fields of its own.\"\"\"


class EpochTask(Task):
    \"\"\"A user's subclass with a field of its own.\"\"\"

    epoch: int = 0

    def next_epoch(self) -> int:
        return self.epoch + 1


def durations(task: Task) -> list[str | None]:
    out: list[str | None] = []
    for sub in task.subtasks:  # subtasks are Tasks: every Task method checks
        sub.update()
        out.append(sub.friendly_duration)
        out.extend(durations(sub))
    return out


def run(folder: Path) -> None:
    with Task("experiment", file=folder / "task.json", tags=["exp"]) as t:
        with {construct_my} as m:
            m.save_to_file(folder / "inner.json", monitor=False)
        with {construct_epoch} as e:
            print(e.next_epoch(), e.total_cpu())
        child = Task("child", parent=t.task_id, reset_hwm=False)
        child.start()
        child.finish(TaskStatus.FINISHED)
    first: Task = t.subtasks[0]
    parent_id: uuid.UUID | None = first.parent_id
    print(parent_id, first.status, durations(t))
    loaded: Task = Task.model_validate_json((folder / "task.json").read_text())
    for sub in loaded.subtasks:
        sub.add_subtask(Task("extra"))
        print(sub.update_resources(), sub.total_cpu())
    again: EpochTask = EpochTask.model_validate_json(e.model_dump_json())
    print(again.epoch, Task.current(), Task.root())
"""
"""The user file; ``{construct_*}`` are how the subclasses are built (the plugin differs)."""


def _mypy(tmp_path: Path, code: str, config: str = "") -> subprocess.CompletedProcess[str]:
    """Run mypy --strict on ``code`` with the mypy ``config`` (ini text; none by default)."""
    (tmp_path / "user_code.py").write_text(textwrap.dedent(code))
    (tmp_path / "mypy.ini").write_text(f"[mypy]\n{config}")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--config-file=mypy.ini",  # not this project's, whatever the working folder
            "user_code.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_user_code_type_checks_strictly(tmp_path: Path) -> None:
    """Subclasses built as Tasks are (positional label), subtasks are Tasks, loads are Tasks."""
    code = USER_CODE.format(
        construct_my='MyTask("inner")', construct_epoch='EpochTask("epoch", epoch=3)'
    )
    run = _mypy(tmp_path, code)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Success: no issues found in 1 source file" in run.stdout


def test_user_code_type_checks_with_the_pydantic_plugin(tmp_path: Path) -> None:
    """With pydantic's mypy plugin: subtasks are still Tasks, subclasses built by keyword.

    The plugin gives every model class that does not define ``__init__`` itself a
    keyword-only ``__init__`` of its fields (a subclass of :class:`~tasktrace.Task` too, so
    its label is ``label=``); what tasktrace declares must not add to it (a required
    ``subtasks`` argument did, when ``Task`` re-declared the field for type checkers).
    """
    code = USER_CODE.format(
        construct_my='MyTask(label="inner")', construct_epoch='EpochTask(label="epoch", epoch=3)'
    )
    run = _mypy(tmp_path, code, "plugins = pydantic.mypy\n")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Success: no issues found in 1 source file" in run.stdout
