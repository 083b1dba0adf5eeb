"""A command's output never replaces its input; paths in errors never reach the terminal raw."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from tasktrace import Task
from tasktrace.cli import main

from .conftest import FIXTURES
from .export_helpers import clean_env


def _run(tmp_path: Path) -> Path:
    run = tmp_path / "run.json"
    run.write_bytes((FIXTURES / "nested.json").read_bytes())
    return run


@pytest.mark.parametrize("form", ["same", "dot", "symlink", "hardlink"])
def test_export_never_replaces_its_own_input_unless_forced(
    tmp_path: Path,
    form: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`export run.json --format chrome -o run.json` (however the file is named) exits 2.

    Before: the task file was replaced by a Chrome trace (no task tree: the run was lost),
    without --force and without a word.
    """
    run = _run(tmp_path)
    before = run.read_bytes()
    monkeypatch.chdir(tmp_path)
    source = {
        "same": "run.json",
        "dot": "./run.json",
        "symlink": "link.json",
        "hardlink": "hard.json",
    }
    if form == "symlink":
        (tmp_path / "link.json").symlink_to("run.json")
    if form == "hardlink":
        os.link(run, tmp_path / "hard.json")
    for fmt in ("chrome", "task", "otlp-json"):
        assert main(["export", source[form], "--format", fmt, "-o", "run.json"]) == 2
        err = capsys.readouterr().err
        assert err.count("Error:") == 1
        assert "run.json: not replaced: this command reads it" in err
        assert "--force" in err
        assert run.read_bytes() == before
    # asked for: a task file read and written back whole
    assert main(["export", source[form], "--format", "task", "-o", "run.json", "--force"]) == 0
    assert (
        Task.model_validate_json(run.read_bytes()).label == Task.model_validate_json(before).label
    )


def test_export_does_not_replace_a_record_with_another_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A task file (or OTLP JSON lines) is replaced only by its own format unless --force.

    Before: `export a.json --format chrome -o b.json` turned the task file b.json into a trace.
    """
    source = _run(tmp_path)
    other = tmp_path / "other.json"
    assert main(["export", str(source), "--format", "task", "-o", str(other)]) == 0
    spans = tmp_path / "spans.jsonl"
    assert main(["export", str(source), "--format", "otlp-json", "-o", str(spans)]) == 0
    capsys.readouterr()
    for record, fmt, held in (
        (other, "chrome", "a task file"),
        (other, "otlp-json", "a task file"),
        (spans, "chrome", "OTLP JSON lines"),
        (spans, "task", "OTLP JSON lines"),
    ):
        before = record.read_bytes()
        assert main(["export", str(source), "--format", fmt, "-o", str(record)]) == 2
        err = capsys.readouterr().err
        assert f"{record}: not replaced: it holds {held}" in err
        assert record.read_bytes() == before
    assert main(["export", str(source), "--format", "chrome", "-o", str(other), "--force"]) == 0
    assert "traceEvents" in json.loads(other.read_bytes())
    # a view made from a record (a Chrome trace) is replaced by any format, as before
    assert main(["export", str(source), "--format", "task", "-o", str(other)]) == 0


def test_an_output_in_an_input_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder's files are all read: an existing output among them is an input too."""
    folder = tmp_path / "spans"
    folder.mkdir()
    part = folder / "part.jsonl"
    assert main(["export", str(_run(tmp_path)), "--format", "otlp-json", "-o", str(part)]) == 0
    before = part.read_bytes()
    assert main(["export", str(folder), "--format", "otlp-json", "-o", str(part)]) == 2
    assert f"(as {folder})" in capsys.readouterr().err
    assert part.read_bytes() == before


def test_report_and_table_refuse_their_input_even_when_it_is_their_own_kind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`table -o` over one of the files it reads: refused as an input, before its own check."""
    run = _run(tmp_path)
    before = run.read_bytes()
    for command in (["table", str(run), "-o", str(run)], ["report", str(run), "-o", str(run)]):
        assert main(command) == 2
        assert "this command reads it" in capsys.readouterr().err
        assert run.read_bytes() == before


def test_an_empty_path_is_refused_not_read_as_the_working_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`show ""` (an unset variable) is a usage error saying so; before: the folder '.' was read."""
    monkeypatch.chdir(tmp_path)
    for command in (
        ["show", ""],
        ["export", "", "--format", "task", "-o", "x.json"],
        ["table", ""],
        ["export", str(_run(tmp_path)), "--format", "task", "-o", ""],
    ):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "an empty path" in err
        assert "'.'" not in err


def test_a_path_in_a_descriptor_folder_is_refused_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`-o /dev/fd/1`: says it is a descriptor (for standard output give -); before: ENOENT."""
    source = str(_run(tmp_path))
    for path in ("/dev/fd/1", "/proc/self/fd/1"):
        assert main(["export", source, "--format", "chrome", "-o", path]) == 2
        err = capsys.readouterr().err
        assert f"{path}: not replaced: it is a process's descriptor" in err
        assert "No such file" not in err


def _on_terminal(args: list[str], cwd: Path) -> bytes:
    """Run ``tasktrace ARGS`` with stdout and stderr on a pseudo-terminal; return what it got."""
    leader, follower = pty.openpty()
    with subprocess.Popen(
        [sys.executable, "-m", "tasktrace.cli", *args],
        cwd=cwd,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
    ) as process:
        os.close(follower)
        out = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: the process ended
                break
            if not chunk:
                break
            out += chunk
        process.wait(60)
    os.close(leader)
    return out


def test_escape_codes_in_file_names_are_escaped_in_every_error(tmp_path: Path) -> None:
    """A file name holding CSI/OSC sequences reaches the terminal escaped in show/export/run -f.

    Before: ``Error: bad<ESC>[2J.json: ...`` cleared the screen (show, export, run -f), as
    labels never could.
    """
    bad = "bad\x1b[2J\x1b]0;PWNED\x07.json"
    (tmp_path / bad).write_bytes(b"junk")
    for args in (
        ["show", bad],
        ["show", "missing\x1b[31m.json"],
        ["export", bad, "--format", "chrome", "-o", "-"],
        ["export", "run.json", "--format", "chrome", "-o", bad],
        ["run", "-f", bad, "--", "true"],
    ):
        (tmp_path / "run.json").write_bytes((FIXTURES / "nested.json").read_bytes())
        out = _on_terminal(args, tmp_path)
        assert b"Error:" in out, (args, out)
        assert b"\x1b" not in out, (args, out)
        assert b"\\x1b" in out, (args, out)
