"""Output options: ``-`` is standard output in every command that writes a file (`tasktrace`).

Each test runs the real command in a fresh process (:func:`run_cli`), in an empty folder, so that
a file named ``-`` written by mistake is seen.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from tasktrace.cli import cli
from tasktrace.cli.outputs import OutputPath

from .cli_helpers import run_cli
from .conftest import FIXTURES

NESTED = str(FIXTURES / "nested.json")


@pytest.mark.parametrize("fmt", ["otlp-json", "chrome", "task"])
def test_export_to_dash_writes_standard_output(tmp_path: Path, fmt: str) -> None:
    """`export -o -` prints what `-o FILE` writes and creates no file ``-``.

    Before: a file named ``-`` in the working folder, and nothing on standard output.
    """
    to_file = run_cli(["export", NESTED, "--format", fmt, "-o", "out.json"], tmp_path)
    assert to_file.returncode == 0, to_file.stderr
    written = (tmp_path / "out.json").read_text()
    (tmp_path / "out.json").unlink()
    done = run_cli(["export", NESTED, "--format", fmt, "-o", "-"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert _without_instance_ids(done.stdout) == _without_instance_ids(written)
    assert list(tmp_path.iterdir()) == []


def _without_instance_ids(text: str) -> list[Any]:
    """Parse JSON lines, without the resource's ``service.instance.id`` (new in each process)."""
    lines = [json.loads(line) for line in text.splitlines()]
    for line in lines:
        for spans in line.get("resourceSpans", []) if isinstance(line, dict) else []:
            attributes = spans["resource"]["attributes"]
            attributes[:] = [a for a in attributes if a["key"] != "service.instance.id"]
    assert lines  # something was written
    return lines


def test_export_to_dot_slash_dash_writes_a_file_named_dash(tmp_path: Path) -> None:
    """``./-`` is the way to a file named ``-``: written, nothing on standard output."""
    done = run_cli(["export", NESTED, "--format", "task", "--output", "./-"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert json.loads((tmp_path / "-").read_text())["label"] == "experiment"


def test_report_to_dash_writes_the_page_to_standard_output(tmp_path: Path) -> None:
    """`report -o -` prints the HTML page; the note on standard error names standard output."""
    done = run_cli(["report", NESTED, "-o", "-"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("<!DOCTYPE html>"), done.stdout[:200]
    assert done.stdout.rstrip().endswith("</html>")
    assert "standard output: report of 1 run(s)" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_table_to_dash_writes_csv_to_standard_output(tmp_path: Path) -> None:
    """`table -o -` prints the table as CSV (standard output has no suffix to choose by)."""
    done = run_cli(["table", NESTED, "--measure", "duration", "-o", "-"], tmp_path)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    labels = {row["label"] for row in rows}
    assert {"experiment", "load data"} <= labels
    assert all(float(row["duration_s_total"]) > 0 for row in rows)
    assert list(tmp_path.iterdir()) == []


def test_run_file_dash_is_refused_naming_the_option(tmp_path: Path) -> None:
    """`run --file -`: a task file is rewritten while the command runs, so it cannot stream.

    One usage error naming ``--file`` (exit 2), before the command runs; no file ``-``.
    Before: the run's task file was written to a file named ``-``.
    """
    marker = tmp_path / "ran"
    done = run_cli(["run", "-q", "--file", "-", "touch", str(marker)], tmp_path)
    assert done.returncode == 2, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert line.startswith("Error: --file -: standard output cannot take a task file"), line
    assert not marker.exists()
    assert list(tmp_path.iterdir()) == []


def test_every_output_path_option_takes_dash_the_same_way() -> None:
    """Every option that names a file to write goes through the one output type.

    A new command with a ``--output`` or ``--file`` of its own type would not follow the rule.
    """
    found = {}
    for name, command in cli.commands.items():
        for param in command.params:
            if {"--output", "--file"} & set(param.opts):
                found[f"{name} {param.opts[0]}"] = isinstance(param.type, OutputPath)
    assert found == {
        "export --output": True,
        "report --output": True,
        "table --output": True,
        "run --file": True,
    }
