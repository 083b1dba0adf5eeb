"""A file the user asked for that cannot be written: one clear error, never a silent success.

`tasktrace run --file` checks that the file can be written before the command runs (exit 2,
the command does not run); if it cannot be written at the end, the run exits 125 with an error
line after the tree. `report -o` and `table -o` say the file and the OS's reason in one line,
before the work. A task file's warning says whether a previous file is kept or there is none.

A read-only folder is a folder the test cannot write: ``chmod`` for a user, a read-only tmpfs
for root (whom ``chmod`` does not stop; skipped where root cannot mount). The other cases need
no privilege: a path through a regular file, or a folder replaced by a file mid-run.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasktrace import Task, TaskStatus
from tasktrace.core.lines import printable

from .cli_helpers import run_cli
from .export_helpers import clean_env, file_warnings


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """Yield a folder that cannot be written, and the OS's reason a write there fails."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield folder, os.strerror(errno.EACCES)
        finally:
            folder.chmod(0o755)
        return
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:  # chmod does not stop root: only a read-only mount does
        pytest.skip(f"root cannot mount a read-only tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield folder, os.strerror(errno.EROFS)
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def test_run_file_in_a_read_only_folder_is_one_error_before_the_command(
    tmp_path: Path, read_only: tuple[Path, str]
) -> None:
    """`run -f ro/x.json`: exit 2, one line naming the file and the reason; no command ran."""
    folder, reason = read_only
    marker, path = tmp_path / "ran", folder / "x.json"
    done = run_cli(["run", "-q", "-f", str(path), "--", "touch", str(marker)], tmp_path)
    assert done.returncode == 2
    assert _error_lines(done.stderr) == [f"Error: {path}: cannot be written: {reason}"]
    assert not marker.exists()


def test_run_file_through_a_regular_file_is_one_error_before_the_command(tmp_path: Path) -> None:
    """`run -f notes.txt/x.json`: exit 2, one line saying the parent is not a folder."""
    (tmp_path / "notes.txt").write_text("mine\n")
    marker = tmp_path / "ran"
    args = ["run", "-q", "-f", "notes.txt/x.json", "--", "touch", str(marker)]
    done = run_cli(args, tmp_path)
    assert done.returncode == 2
    (line,) = _error_lines(done.stderr)
    assert "notes.txt/x.json" in line
    assert "is not a folder" in line
    assert not marker.exists()
    assert (tmp_path / "notes.txt").read_text() == "mine\n"


@pytest.mark.parametrize("status", [0, 3])
def test_run_file_unwritable_at_the_end_exits_125_with_an_error_last(
    tmp_path: Path, status: int
) -> None:
    """The command replaces the file's folder by a file: exit 125, the error says its status."""
    (tmp_path / "runs").mkdir()
    path = "runs/x.json"  # relative, as typed: the library writes it by its absolute path
    # the folder (and the file written at the start) moves away; a file takes its name
    command = f"mv runs moved && echo mine > runs && exit {status}"
    done = run_cli(["run", "-f", path, "--", "sh", "-c", command], tmp_path)
    assert done.returncode == 125, done.stderr
    reason = os.strerror(errno.ENOTDIR)
    last = _error_lines(done.stderr)[-1]
    assert last == (
        f"Error: {path}: cannot be written: {reason}; there is no file "
        f"(the command's exit status: {status})"
    )
    assert (tmp_path / "runs").read_text() == "mine\n"  # the user's file is untouched


def test_a_task_file_warning_says_there_is_no_file_when_there_is_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its folder replaced by a file mid-task: the warning never claims a previous file is kept."""
    folder = tmp_path / "runs"
    folder.mkdir()
    path = folder / "x.json"
    with caplog.at_level(logging.WARNING), Task("job", file=path) as task:
        folder.rename(tmp_path / "moved")
        folder.write_text("mine\n")
    assert task.status is TaskStatus.FINISHED
    (warning,) = file_warnings(caplog)
    assert f"cannot write task file {path} ({os.strerror(errno.ENOTDIR)}); there is no file" in (
        warning
    )
    assert "previous file" not in warning


@pytest.mark.parametrize(("command", "name"), [("report", "r.html"), ("table", "r.csv")])
def test_report_or_table_into_a_read_only_folder_is_one_error_with_the_reason(
    tmp_path: Path, read_only: tuple[Path, str], command: str, name: str
) -> None:
    """`report -o ro/r.html`, `table -o ro/r.csv`: exit 2, one line: the file and the reason."""
    folder, reason = read_only
    run_file = tmp_path / "run.json"
    assert run_cli(["run", "-q", "-f", str(run_file), "--", "true"], tmp_path).returncode == 0
    path = folder / name
    done = run_cli([command, str(run_file), "-o", str(path)], tmp_path)
    assert done.returncode == 2
    assert _error_lines(done.stderr) == [f"Error: {path}: cannot be written: {reason}"]


def test_the_report_function_refuses_a_read_only_folder_before_reading_the_runs(
    tmp_path: Path, read_only: tuple[Path, str]
) -> None:
    """`tasktrace.report(..., ro/r.html)`: an OSError naming the file and the reason, at once."""
    pytest.importorskip("plotly", reason="the report extra (plotly) is not installed")
    from tasktrace import report

    folder, reason = read_only
    missing = tmp_path / "never-read.json"  # an error reading it would come after the check
    with pytest.raises(OSError, match="cannot be written") as raised:
        report(missing, folder / "r.html")
    assert str(raised.value) == f"{folder / 'r.html'}: cannot be written: {reason}"


def test_run_file_names_in_its_errors_are_escaped(tmp_path: Path) -> None:
    """A file name holding a terminal escape sequence reaches the terminal escaped, not raw."""
    folder = "runs\x1b[2J"
    (tmp_path / folder).mkdir()
    path = f"{folder}/x.json"
    command = 'mv "$D" moved && echo mine > "$D"'
    done = run_cli(["run", "-f", path, "--", "sh", "-c", command], tmp_path, clean_env(D=folder))
    assert done.returncode == 125, done.stderr
    assert "\x1b" not in done.stderr
    assert _error_lines(done.stderr)[-1].startswith(f"Error: {printable(path)}: cannot be written")


def test_run_file_does_not_replace_a_runs_otlp_json_lines(tmp_path: Path) -> None:
    """`run -f spans.jsonl` over OTLP JSON lines (a run's record): refused before the command."""
    source = tmp_path / "run.json"
    with Task("run", file=source):
        pass
    spans = tmp_path / "spans.jsonl"
    exported = run_cli(["export", str(source), "--format", "otlp-json", "-o", str(spans)], tmp_path)
    assert exported.returncode == 0, exported.stderr
    before = spans.read_bytes()
    done = run_cli(["run", "-f", str(spans), "--", "sh", "-c", "echo ran > ran"], tmp_path)
    assert done.returncode == 2, done.stderr
    assert "OTLP JSON lines" in done.stderr
    assert spans.read_bytes() == before
    assert not (tmp_path / "ran").exists()  # refused before the command ran
