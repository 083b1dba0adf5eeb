"""Bad input: broken task files, invalid settings in the environment, hostile labels."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from tasktrace import Task, TaskStatus
from tasktrace.cli import main
from tasktrace.formats.replay import load_spans

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


_NOT_TASK_FILES = {  # content -> what the one line must say, in plain words
    "array.json": ("[1, 2]", "a JSON array, expected a task object"),
    "object.json": ('{"epochs": 3, "lr": 0.1}', 'a JSON object without the "label"'),
    "notes.txt": ("epoch 1: loss 0.3\n", "invalid JSON at line 1 column 1"),
    "cut.json": ('{"label": "train", "subtasks": [{"la', "the text ends inside a JSON value"),
    "empty.json": ("", "the file is empty"),
    "null.json": ("null", "JSON null, expected a task object"),
}


@pytest.mark.parametrize("command", ["show", "export", "replay", "report", "compare", "table"])
@pytest.mark.parametrize("name", sorted(_NOT_TASK_FILES))
def test_every_reader_says_plainly_that_a_file_is_not_a_task_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, name: str
) -> None:
    """Each command reading task files: exit 2, one line 'FILE: not a tasktrace task file: why'."""
    content, reason = _NOT_TASK_FILES[name]
    bad = tmp_path / name
    bad.write_text(content)
    argv = {
        "show": ["show", str(bad)],
        "export": ["export", str(bad), "--format", "chrome", "-o", str(tmp_path / "out.json")],
        "replay": ["replay", str(bad), "-e", "http://127.0.0.1:9"],
        "report": ["report", str(bad), "-o", str(tmp_path / "out.html")],
        "compare": ["compare", str(FIXTURES / "nested.json"), str(bad)],
        "table": ["table", str(bad)],
    }[command]
    assert main(argv) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.splitlines()
    assert line.startswith(f"Error: {bad}: not a tasktrace task file: "), line
    assert reason in line, line
    for internal in ("errors)", "Invalid JSON", "Input should", "validation error", "Traceback"):
        assert internal not in captured.err, captured.err
    assert not captured.out


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            '{"label": "x", "duration": "soon", "cpu_time": "x"}',
            'invalid task file: duration: expected a number, got "soon"; 1 more problem',
        ),
        (  # a persona's file: pydantic's parser details were shown ("found `x` at 0")
            '{"label": "x", "task_id": "x"}',
            "invalid task file: task_id: expected a UUID (32 hex digits, as "
            '0b7cbd8e-7f4c-4c8e-9a57-4ea1f5b1d1a9), got "x"',
        ),
        (
            '{"label": "x", "status": "done"}',
            "invalid task file: status: expected one of 'pending', 'running', 'finished', "
            "'failed' or 'cancelled', got \"done\"",
        ),
        (
            '{"label": "x", "subtasks": [{"label": "y"}, 7]}',
            "invalid task file: subtasks[1]: a JSON number, expected a task object",
        ),
        (
            '{"label": "x", "subtasks": [{"cpu_time": 1.0}]}',
            'invalid task file: subtasks[0]: no "label" (every task has one)',
        ),
    ],
)
def test_a_bad_value_in_a_task_file_is_located_in_plain_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, expected: str
) -> None:
    """A task file with a bad value: one line with the path to it, never pydantic's counts."""
    bad = tmp_path / "t.json"
    bad.write_text(content)
    assert main(["show", str(bad)]) == 2
    assert capsys.readouterr().err.splitlines() == [f"Error: {bad}: {expected}"]


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"label": 5}, "Task label: expected a string, got 5"),
        ({"label": "x", "task_id": "x"}, "Task task_id: expected a UUID (32 hex digits, as "),
        ({"label": "x", "duration": "soon", "cpu_time": []}, "; 1 more problem"),
        ({"label": "x", "subtasks": [{"label": 5}]}, "Task subtasks[0].label: expected a string"),
    ],
)
def test_a_bad_task_argument_is_a_plain_value_error(
    arguments: dict[str, object], expected: str
) -> None:
    """``Task(label=5)``: a ValueError (as LensKit's pydantic error) in one line of plain words.

    Before: pydantic's ValidationError rendering ("1 validation error for Task", "Input
    should be", an errors.pydantic.dev link).
    """
    with pytest.raises(ValueError, match=re.escape(expected)) as info:
        Task(**arguments)  # type: ignore[arg-type]
    text = str(info.value)
    assert "\n" not in text
    for internal in ("Input should", "validation error", "pydantic.dev", "found `"):
        assert internal not in text


def test_a_file_that_is_no_path_is_a_type_error_naming_file() -> None:
    """``Task("x", file=123)`` names ``file`` (before: os.fspath's message, no argument name)."""
    with pytest.raises(TypeError, match=r"^file must be a path \(str or os.PathLike\), not int"):
        Task("x", file=123)  # type: ignore[arg-type]


_TOO_DEEP = r"task tree nested too deeply to read \(over \d+ levels\)"  # pydantic's limit: 255


def _nested(levels: int, leaf: dict[str, object]) -> dict[str, object]:
    task = leaf
    for level in range(levels):
        task = {"label": f"level {level}", "subtasks": [task]}
    return task


@pytest.mark.parametrize(
    "argv",
    [["show"], ["export", "--format", "chrome"], ["export", "--format", "otlp-json"], ["replay"]],
)
def test_every_reader_words_a_deep_tree_the_same_short_way(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """Too deep for pydantic, or a bad value deep down: one short line from any reader."""
    extra = {
        "export": ["-o", str(tmp_path / "out.json")],
        "replay": ["-e", "http://127.0.0.1:9"],
    }.get(argv[0], [])
    too_deep = tmp_path / "too-deep.json"
    too_deep.write_text(json.dumps(_nested(300, {"label": "leaf"})))
    bad_leaf = tmp_path / "bad-leaf.json"
    bad_leaf.write_text(json.dumps(_nested(40, {"label": "leaf", "duration": "soon"})))
    assert main([*argv, str(too_deep), *extra]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert re.fullmatch(rf"Error: {re.escape(str(too_deep))}: {_TOO_DEEP}", line), line
    assert main([*argv, str(bad_leaf), *extra]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"Error: {bad_leaf}: invalid task file: subtasks[0]…(40 levels)…subtasks[0].duration: "
        'expected a number, got "soon"'
    ]


def test_every_reader_reads_a_tree_beyond_the_json_parsers_depth(tmp_path: Path) -> None:
    """A 150-level tree (beyond pydantic's JSON parser) exports to OTLP JSON, as show reads it."""
    deep = tmp_path / "deep.json"
    deep.write_text(json.dumps(_nested(150, {"label": "leaf"})))
    out = tmp_path / "deep.otlp.jsonl"
    assert main(["show", "--depth", "1", str(deep)]) == 0
    assert main(["export", str(deep), "--format", "otlp-json", "-o", str(out)]) == 0
    assert len(load_spans(out)) == 151
