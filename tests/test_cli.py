"""The command line, called through ``main(argv)``."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tasktrace import Task, TaskStatus
from tasktrace.cli import child_environment, main

from .cli_helpers import run_cli
from .conftest import FIXTURES


def test_run_records_command_cpu_and_exit_code(tmp_path: Path) -> None:
    """`run` returns the command's status and records its CPU time in its own field."""
    out = tmp_path / "run.json"
    code = main(
        [
            "run",
            "--quiet",
            "--file",
            str(out),
            "--",
            "sh",
            "-c",
            "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; exit 3",
        ]
    )
    assert code == 3
    task = Task.model_validate_json(out.read_text())
    assert task.status is TaskStatus.FAILED
    assert task.exit_code == 3
    assert task.children_cpu_time_s is not None
    assert task.children_cpu_time_s > 0.05
    assert task.cpu_time is not None
    assert task.cpu_time < task.children_cpu_time_s
    assert task.total_cpu() == pytest.approx(task.cpu_time + task.children_cpu_time_s)


def test_run_passes_traceparent_and_nests_python_child(tmp_path: Path) -> None:
    """A command gets TRACEPARENT with the run task's trace id and span id."""
    out = tmp_path / "run.json"
    env_dump = tmp_path / "env.txt"
    code = main(
        [
            "run",
            "-q",
            "-f",
            str(out),
            "--",
            sys.executable,
            "-c",
            f"import os; open({str(env_dump)!r}, 'w').write(os.environ['TRACEPARENT'])",
        ]
    )
    assert code == 0
    task = Task.model_validate_json(out.read_text())
    version, trace_id, span_id, flags = env_dump.read_text().split("-")
    assert (version, trace_id, span_id) == ("00", task.trace_id, task.span_id)
    assert int(flags, 16) & 1 == 1  # sampled


def test_run_command_not_found() -> None:
    """A command that cannot start exits 127 with a one-line error."""
    assert main(["run", "-q", "--", "/nonexistent/command"]) == 127


@pytest.mark.parametrize(
    ("kind", "code", "why"),
    [
        ("missing", 127, "No such file or directory"),
        ("not executable", 126, "Permission denied"),
        ("a directory", 126, "Is a directory"),
        (
            "a missing interpreter",
            127,
            "No such file or directory (a file it needs, such as its #! interpreter)",
        ),
    ],
)
def test_a_command_that_cannot_start_gets_its_error_alone(
    tmp_path: Path, kind: str, code: int, why: str
) -> None:
    """`run` of a command that cannot start: a shell's status, the error line alone (no tree).

    127 when it (or its interpreter) is not found, 126 when found but not executable, as
    bash and dash give; every failure to start was 127.
    """
    command = tmp_path / "train.sh"
    if kind == "not executable":
        command.write_text("echo hi\n")
        command.chmod(0o644)
    elif kind == "a directory":
        command.mkdir()
    elif kind == "a missing interpreter":
        command.write_text(f"#!{tmp_path / 'no-such-shell'}\necho hi\n")
        command.chmod(0o755)
    out = tmp_path / "run.json"
    result = run_cli(["run", "--file", str(out), "--", str(command), "--epochs", "3"], tmp_path)
    assert result.returncode == code
    assert result.stderr.splitlines() == [f"Error: cannot start {str(command)!r}: {why}"]
    assert result.stdout == ""
    task = Task.model_validate_json(out.read_text())  # the file still records the run
    assert (task.status, task.exit_code) == (TaskStatus.FAILED, code)
    assert task.error == f"cannot start {str(command)!r}: {why}"
    shell = subprocess.run(["sh", "-c", shlex.quote(str(command))], check=False)
    assert shell.returncode == code  # the shell's own status for the same command


def test_a_command_exiting_127_itself_is_reported_as_a_run(tmp_path: Path) -> None:
    """A command that ran and exited 127 (a shell's "not found"): tree and note, no error line."""
    result = run_cli(["run", "--", "sh", "-c", "exit 127"], tmp_path)
    assert result.returncode == 127
    assert "Error" not in result.stderr
    first, *rest = result.stderr.splitlines()
    assert first.startswith("sh -c  failed  exit 127 ")  # the label: the program, not its code
    assert rest[0].startswith("energy: ")


def test_run_records_child_peak_rss(tmp_path: Path) -> None:
    """The command's own peak RSS (from wait4) is recorded when larger than tasktrace's.

    ``tasktrace run`` runs in a fresh process (through ``sh``): run in this test process, its
    own peak would be whatever earlier tests left (an engine test's cluster client, several
    hundred MiB), and the command's 400 MB could not be told from it.
    """
    out = tmp_path / "run.json"
    done = run_cli(
        [
            "run",
            "-q",
            "-f",
            str(out),
            "--",
            sys.executable,
            "-c",
            "x = bytearray(b'1') * 400_000_000",
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    task = Task.model_validate_json(out.read_text())
    assert task.children_peak_rss_bytes is not None
    assert task.children_peak_rss_bytes >= 400_000_000


def test_child_environment_does_not_touch_os_environ() -> None:
    """child_environment injects TRACEPARENT into a copy; os.environ stays unchanged."""
    import os

    before = dict(os.environ)
    with Task("t") as t:
        env = child_environment()
    assert env["TRACEPARENT"].split("-")[2] == t.span_id
    assert dict(os.environ) == before


def test_show_prints_tree(capsys: pytest.CaptureFixture[str]) -> None:
    """`show` prints every task with status and human units."""
    assert main(["show", str(FIXTURES / "nested.json")]) == 0
    out = capsys.readouterr().out
    for label in ("experiment", "load data", "epoch 2", "measuring epoch 1"):
        assert label in out
    assert "684ms" in out
    assert "352.9 MiB" in out


def test_show_depth_limit(capsys: pytest.CaptureFixture[str]) -> None:
    """`show --depth 1` hides grandchildren and says how many."""
    assert main(["show", "--depth", "1", str(FIXTURES / "nested.json")]) == 0
    out = capsys.readouterr().out
    assert "training epoch 0" not in out
    assert "… 2 subtasks" in out


@pytest.mark.parametrize("content", ["", "{", "not json", '{"label": 5}'])
def test_show_bad_file_exits_2(
    tmp_path: Path, content: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad task file gives exit status 2 and one line naming the file, no traceback."""
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    assert main(["show", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert str(bad) in err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1


def test_show_control_characters_are_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Control characters in a label cannot reach the terminal raw."""
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"label": "evil\x1b[2Jlabel", "status": "finished"}))
    assert main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b[2J" not in out
    assert "evil\\x1b[2Jlabel" in out


def test_help() -> None:
    """Every command has --help."""
    for argv in (["--help"], ["run", "--help"], ["show", "--help"]):
        assert main(argv) == 0
