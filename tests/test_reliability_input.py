"""Bad input: broken task files, invalid settings in the environment, hostile labels."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from tasktrace import Task, TaskStatus
from tasktrace.cli import main

from .conftest import FIXTURES


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ('{"label": 5}', "label"),
        ('{"label": "x", "duration": "long"}', "duration"),
        ('{"label": "x", "status": "exploded"}', "status"),
        ('{"label": "x", "peak_memory": 1.5}', "peak_memory"),
        ('{"label": "x", "subtasks": [{"label": "y", "cpu_time": []}]}', "subtasks.0.cpu_time"),
        ('{"status": "finished"}', "label"),
    ],
)
def test_wrong_types_raise_validation_error_naming_the_field(content: str, field: str) -> None:
    """A value of the wrong type raises a ValidationError whose location is the field."""
    with pytest.raises(ValidationError) as info:
        Task.model_validate_json(content)
    assert field in {".".join(str(p) for p in e["loc"]) for e in info.value.errors()}


@pytest.mark.parametrize("content", ["", "   ", "not json", "[1, 2]", "null"])
def test_empty_or_non_json_raises_validation_error(content: str) -> None:
    """Empty, non-JSON and non-object files raise ValidationError (never another exception)."""
    with pytest.raises(ValidationError):
        Task.model_validate_json(content)


def test_truncated_task_file_raises_and_show_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A task file cut anywhere fails to load; `show` exits 2 with one line naming the file."""
    whole = (FIXTURES / "nested.json").read_bytes()
    bad = tmp_path / "cut.json"
    for cut in (1, len(whole) // 3, len(whole) - 2):
        bad.write_bytes(whole[:cut])
        with pytest.raises(ValidationError):
            Task.model_validate_json(bad.read_bytes())
        assert main(["show", str(bad)]) == 2
        err = capsys.readouterr().err.strip()
        assert str(bad) in err
        assert len(err.splitlines()) == 1
        assert "Traceback" not in err


@pytest.mark.parametrize(
    "kind",
    [
        "missing",
        "folder",
        "wrong type",
    ],
)
def test_show_unreadable_inputs_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    """`show` on a missing file, a folder or a wrongly-typed file: status 2, one line, the name."""
    path = tmp_path / "t.json"
    if kind == "folder":
        path.mkdir()
    elif kind == "wrong type":
        path.write_text(json.dumps({"label": "x", "duration": "soon"}))
    assert main(["show", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert str(path) in err
    assert len(err.splitlines()) == 1
    assert "Traceback" not in err


def test_file_from_a_newer_tasktrace_loads_and_keeps_unknown_fields() -> None:
    """Unknown fields (a newer tasktrace) load as extra data and are written back unchanged."""
    newer = {"label": "x", "status": "finished", "quantum_joules": 1.5, "nested": {"a": [1]}}
    task = Task.model_validate_json(json.dumps(newer))
    assert task.status is TaskStatus.FINISHED
    assert task.model_extra == {"quantum_joules": 1.5, "nested": {"a": [1]}}
    again = json.loads(task.model_dump_json())
    assert again["quantum_joules"] == 1.5
    assert again["nested"] == {"a": [1]}


def test_unserialisable_extra_data_fails_at_construction_naming_the_key() -> None:
    """An open file or a lambda as extra data: TypeError naming the key, before any work."""
    with open(os.devnull) as handle, pytest.raises(TypeError, match="'handle'"):
        Task("x", handle=handle)
    with pytest.raises(TypeError, match="'callback'"):
        Task("x", callback=lambda: None)


def test_hostile_labels_kept_in_file_and_escaped_in_show(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Long, Unicode and control-character labels are exact in the file and inert in `show`."""
    labels = ["é€🚀 \u202e" * 50, "bell\x07 clear\x1b[2J\x1b]0;title\x07", "x" * 5000, "[bold]m[/]"]
    path = tmp_path / "t.json"
    with Task(labels[0], file=path):
        for label in labels[1:]:
            with Task(label):
                pass
    loaded = Task.model_validate_json(path.read_bytes())
    assert [loaded.label, *(s.label for s in loaded.subtasks)] == labels
    assert main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "\x07" not in out
    assert "\u202e" not in out
    assert "\\x1b[2J" in out
    assert "[bold]m[/]" in out  # rich markup in a label is printed, not interpreted


def test_invalid_environment_values_warn_and_never_break_import() -> None:
    """Invalid TASKTRACE_* and OTEL_* values: a warning naming each variable, tasks still run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKTRACE_", "OTEL_"))}
    env.update(
        TASKTRACE_REFRESH_INTERVAL_S="soon",
        TASKTRACE_INCLUDE_SPANS="perhaps",
        TASKTRACE_PROMETHEUS__TIMEOUT_S="-3",
        OTEL_TRACES_EXPORTER="carrier-pigeon",
        OTEL_EXPORTER_OTLP_PROTOCOL="smoke-signals",
    )
    code = (
        "import tasktrace\n"
        "from tasktrace import Task\n"
        "from tasktrace.core.settings import get_settings\n"
        "with Task('x') as t: pass\n"
        "s = get_settings()\n"
        "print(t.status.value, s.refresh_interval_s, s.include_spans, s.prometheus.timeout_s)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["finished", "10.0", "True", "2.0"]
    for name in (
        "TASKTRACE_REFRESH_INTERVAL_S",
        "TASKTRACE_INCLUDE_SPANS",
        "TASKTRACE_PROMETHEUS__TIMEOUT_S",
        "carrier-pigeon",
    ):
        assert name in done.stderr, name
    assert "Traceback" not in done.stderr
    assert done.stderr.count("default") >= 3
