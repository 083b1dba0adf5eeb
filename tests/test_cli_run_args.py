"""`tasktrace run`'s own options end at the command: everything after it is the command's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasktrace import Task
from tasktrace.cli import main

_PRINT_ARGS = "import sys; print(sys.argv[1:])"


def _tasktrace(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``tasktrace ARGS`` as a real process in ``cwd``, without the caller's OTel settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TASKTRACE_"))}
    return subprocess.run(
        [sys.executable, "-m", "tasktrace.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_options_after_the_command_belong_to_the_command(tmp_path: Path) -> None:
    """`run -q python -c ... --file data.csv` passes `--file data.csv` on and leaves data.csv."""
    data = tmp_path / "data.csv"
    data.write_bytes(b"a,b\n1,2\n")
    proc = _tasktrace(
        "run", "-q", sys.executable, "-c", _PRINT_ARGS, "--file", "data.csv", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "['--file', 'data.csv']\n"
    assert data.read_bytes() == b"a,b\n1,2\n"


def test_help_flag_after_the_command_goes_to_the_command(tmp_path: Path) -> None:
    """`run python -c 'print(1)' -h` runs the command (prints 1), not tasktrace's help."""
    proc = _tasktrace("run", sys.executable, "-c", "print(1)", "-h", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "1\n"
    assert "Usage" not in proc.stdout + proc.stderr


def test_leading_double_dash_is_dropped_and_a_later_one_is_kept(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A `--` before the command is tasktrace's separator; one after it is the command's."""
    out = tmp_path / "run.json"
    code = main(
        [
            "run",
            "-q",
            "-f",
            str(out),
            "--",
            sys.executable,
            "-c",
            _PRINT_ARGS,
            "-q",
            "--",
            "-f",
            "x",
        ]
    )
    assert code == 0
    assert capfd.readouterr().out == "['-q', '--', '-f', 'x']\n"
    assert Task.model_validate_json(out.read_bytes()).exit_code == 0


def test_tasktrace_options_before_the_command_still_apply(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Options before the command (label, file, quiet) are tasktrace's, without a `--`."""
    out = tmp_path / "run.json"
    code = main(
        [
            "run",
            "-l",
            "train",
            "--file",
            str(out),
            "-q",
            sys.executable,
            "-c",
            _PRINT_ARGS,
            "--label",
            "x",
        ]
    )
    assert code == 0
    captured = capfd.readouterr()
    assert captured.out == "['--label', 'x']\n"
    assert captured.err == ""  # -q: no tree printed
    assert Task.model_validate_json(out.read_bytes()).label == "train"


def test_unknown_option_before_the_command_is_a_usage_error(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """An option tasktrace does not know, before the command, is refused (exit 2), not run."""
    marker = tmp_path / "ran"
    assert main(["run", "--bogus", "touch", str(marker)]) == 2
    assert "--bogus" in capfd.readouterr().err
    assert not marker.exists()


def test_an_executable_script_without_its_interpreter_line_is_run_by_sh(tmp_path: Path) -> None:
    """A script without ``#!`` (the kernel refuses it: ENOEXEC) runs with ``/bin/sh``, as by env.

    ``env ./job.sh``, ``time``, ``nohup`` and every shell run it so (POSIX ``execvp``); before,
    ``tasktrace run ./job.sh`` refused it with 126 ("Exec format error").
    """
    script = tmp_path / "job.sh"
    script.write_text('echo "ran with $1"; exit 4\n')
    script.chmod(0o755)
    done = _tasktrace("run", "-q", "-f", "run.json", "./job.sh", "one", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (4, "ran with one\n"), done.stderr
    task = Task.model_validate_json((tmp_path / "run.json").read_bytes())
    assert (task.label, task.exit_code) == ("job.sh", 4)
