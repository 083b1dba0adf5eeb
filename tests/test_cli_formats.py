"""`tasktrace show` options, `export` and `replay`, called through ``main(argv)``."""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path

import pytest

from tasktrace import Task
from tasktrace.cli import main
from tasktrace.core.views import label_pattern
from tasktrace.formats.measures import measure_values

from .cli_helpers import run_cli
from .conftest import FIXTURES
from .export_helpers import same_to_span_precision
from .otlp_receivers import OtlpHttpReceiver


def _epochs_file(tmp_path: Path, n: int = 50) -> Path:
    base = 1_700_000_000.0
    subtasks = [
        {
            "label": f"epoch {i}",
            "status": "finished",
            "start_time": base + i,
            "finish_time": base + i + 1,
            "duration": 1.0,
            "tags": ["train"] if i == 7 else [],
        }
        for i in range(1, n + 1)
    ]
    root = {
        "label": "fit",
        "status": "finished",
        "start_time": base,
        "duration": 60.0,
        "subtasks": [{"label": "load", "status": "finished", "duration": 2.0}, *subtasks],
    }
    path = tmp_path / "fit.json"
    path.write_text(Task.model_validate(root).model_dump_json())
    return path


def test_show_collapse_prints_one_line_per_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--collapse turns 50 numbered siblings into "epoch 1…50: 50 tasks, total …"."""
    assert main(["show", "--collapse", str(_epochs_file(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "epoch 1…50: 50 tasks, total 50.00s" in out
    assert "epoch 7 " not in out
    assert "load" in out


def test_show_collapse_names_the_range_of_siblings_finished_out_of_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Workers' tasks arrive in any order: the collapsed line spans the lowest to highest number.

    Before: the first and last sibling's numbers, "fold 2…3: 4 tasks" for folds 2, 0, 1, 3, as
    a multiprocessing pool's tasks showed.
    """
    folds = [{"label": f"fold {i}", "status": "finished", "duration": 1.0} for i in (2, 0, 1, 3)]
    path = tmp_path / "cv.json"
    path.write_text(json.dumps({"label": "cv", "status": "finished", "subtasks": folds}))
    assert main(["show", "--collapse", str(path)]) == 0
    assert "fold 0…3: 4 tasks, total 4.00s" in capsys.readouterr().out


def test_show_collapses_a_large_tree_by_default_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Over 1,000 tasks, plain `show` collapses repeated siblings with a note; --all prints all."""
    path = _epochs_file(tmp_path, n=1000)  # 1,002 tasks with the root and "load"
    assert main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "epoch 1…1000: 1000 tasks" in out
    assert "epoch 7 " not in out
    assert "(1,002 tasks: repeated siblings collapsed; --all to print every task)" in out
    assert "\x1b" not in out  # not a terminal: plain text
    assert gc.isenabled()  # the collector, paused while loading, is back on
    assert main(["show", "--all", str(path)]) == 0
    out = capsys.readouterr().out
    assert all(f"epoch {i} " in out for i in range(1, 1001))
    assert "collapsed" not in out
    assert main(["show", "--depth", "0", str(path)]) == 0  # one task in view: not collapsed
    assert "collapsed" not in capsys.readouterr().out


def test_show_all_and_collapse_together_exit_2(tmp_path: Path) -> None:
    """--all and --collapse contradict each other: a usage error, exit status 2."""
    assert main(["show", "--all", "--collapse", str(_epochs_file(tmp_path))]) == 2


def test_show_filter_by_tag_keeps_ancestors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--filter TAG keeps the tagged task and its ancestors only; --json prints a task file."""
    assert main(["show", "--filter", "train", "--json", str(_epochs_file(tmp_path))]) == 0
    task = Task.model_validate_json(capsys.readouterr().out)
    assert task.label == "fit"
    assert [t.label for t in task.subtasks] == ["epoch 7"]


def test_one_string_of_tags_is_one_tag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``Task("x", tags="train")`` is tagged ``train``: found by --filter, one group in table.

    Before: stored as the string ``"train"``, which --filter did not find (it looked for list
    items) and tags that are no strings were stored as given.
    """
    out = tmp_path / "t.json"
    with Task("fit", file=out):
        with Task("epoch 1", tags="train"):
            pass
        with Task("epoch 2", tags=("eval",)):
            pass
    assert json.loads(out.read_text())["subtasks"][0]["tags"] == ["train"]
    assert main(["show", "--filter", "train", "--json", str(out)]) == 0
    task = Task.model_validate_json(capsys.readouterr().out)
    assert [t.label for t in task.subtasks] == ["epoch 1"]
    assert main(["table", str(out), "--by", "tags", "-o", "-"]) == 0
    groups = [line.split(",")[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert groups == ["train", "eval"]  # before: "('train',)" once a list, ('t', 'r')-like
    for bad in (5, ["a", 1]):
        with pytest.raises(TypeError, match="'tags' must be a list of strings"):
            Task("x", tags=bad)


def test_filter_finds_a_files_single_string_tag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file written elsewhere (LensKit keeps ``"tags": "train"`` as given) is filtered too."""
    out = tmp_path / "lk.json"
    out.write_text(json.dumps({"label": "fit", "subtasks": [{"label": "e", "tags": "train"}]}))
    assert main(["show", "--filter", "train", "--json", str(out)]) == 0
    task = Task.model_validate_json(capsys.readouterr().out)
    assert [t.label for t in task.subtasks] == ["e"]


def test_show_totals_json_sums_per_label_pattern(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--totals --json gives one row per label pattern with counts and summed durations."""
    assert main(["show", "--totals", "--json", str(_epochs_file(tmp_path))]) == 0
    rows = {r["pattern"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["epoch #"]["tasks"] == 50
    assert rows["epoch #"]["total_duration_s"] == pytest.approx(50.0)


_BUSY = (
    "import time; block = bytearray(150 * 2**20); end = time.process_time() + 0.3\n"
    "while time.process_time() < end: pass"
)


def test_show_totals_take_the_measures_the_tree_lines_show(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--totals sums the CPU time and peak RSS the lines show: a command's, not tasktrace's.

    The root of ``tasktrace run`` holds tasktrace's own ``cpu_time`` and ``peak_memory``; its
    line (and compare, table, report) shows the command's CPU (``total_cpu()``) and peak RSS.
    A task whose subprocess subtask did the work counts that subtask's CPU likewise.
    """
    out = tmp_path / "run.json"
    result = run_cli(["run", "-q", "--file", str(out), "--", sys.executable, "-c", _BUSY], tmp_path)
    assert result.returncode == 0, result.stderr
    root = Task.model_validate_json(out.read_text())
    root.subtasks = [  # a task of the command's whose subprocess did the work
        Task.model_validate(
            {
                "label": "fit",
                "status": "finished",
                "duration": 1.0,
                "cpu_time": 0.001,
                "subtasks": [
                    {"label": "worker", "status": "finished", "subprocess": True, "cpu_time": 0.8}
                ],
            }
        )
    ]
    out.write_text(root.model_dump_json())
    root = Task.model_validate_json(out.read_text())
    assert main(["show", "--totals", "--json", str(out)]) == 0
    rows = {r["pattern"]: r for r in json.loads(capsys.readouterr().out)}
    for task in (root, root.subtasks[0]):
        shown = measure_values(task)
        row = rows[label_pattern(task.label)]
        assert row["total_cpu_time_s"] == pytest.approx(shown["cpu_time_s"])
        assert row["max_peak_memory_bytes"] == shown["peak_memory_bytes"]
    assert rows[label_pattern(root.label)]["total_cpu_time_s"] > 0.25  # the command's 0.3 s
    assert rows[label_pattern(root.label)]["max_peak_memory_bytes"] > 150 * 2**20
    assert rows["fit"]["total_cpu_time_s"] == pytest.approx(0.801)


def test_export_otlp_json_then_show_and_export_task_round_trip(tmp_path: Path) -> None:
    """Export --format otlp-json then --format task gives back the tree (floats to 1 µs)."""
    lines, back = tmp_path / "n.jsonl", tmp_path / "n.json"
    assert (
        main(["export", str(FIXTURES / "nested.json"), "--format", "otlp-json", "-o", str(lines)])
        == 0
    )
    assert main(["export", str(lines), "--format", "task", "-o", str(back)]) == 0
    original = Task.model_validate_json((FIXTURES / "nested.json").read_bytes())
    back_task = Task.model_validate_json(back.read_bytes())
    same_to_span_precision(back_task.model_dump(), original.model_dump())


def test_a_value_left_off_the_spans_is_named_in_the_tree_rebuilt_from_them(
    tmp_path: Path,
) -> None:
    """Extra data over a span's budget: the tree rebuilt from the spans says which key is gone.

    Before: ``tasktrace.data_omitted`` was dropped with the other unknown ``tasktrace.*``
    attributes, so the rebuilt task simply lacked ``scores``, with nothing to say it was omitted.
    """
    run, lines, back = tmp_path / "run.json", tmp_path / "run.jsonl", tmp_path / "back.json"
    with Task("big", file=run, scores=[0.5] * 20_000, epochs=3):  # scores: ~100 KB as JSON
        pass
    assert main(["export", str(run), "--format", "otlp-json", "-o", str(lines)]) == 0
    assert main(["export", str(lines), "--format", "task", "-o", str(back)]) == 0
    rebuilt = json.loads(back.read_text())
    assert "scores" not in rebuilt
    assert rebuilt["epochs"] == 3
    assert rebuilt["data_omitted"] == ["scores"]


def test_export_chrome_writes_trace_events(tmp_path: Path) -> None:
    """Export --format chrome writes a traceEvents document with one X event per task."""
    out = tmp_path / "t.json"
    assert (
        main(["export", str(FIXTURES / "nested.json"), "--format", "chrome", "-o", str(out)]) == 0
    )
    events = json.loads(out.read_text())["traceEvents"]
    assert sum(e["ph"] == "X" for e in events) == 11


def test_export_bad_input_exits_2_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A broken OTLP JSON line is reported in one line naming the file and line; exit 2."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"resourceSpans": []}\n{"resourceSpans": 3}\n')
    assert main(["export", str(bad), "--format", "chrome", "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count(str(bad)) == 1  # named once (before: "bad.jsonl: bad.jsonl: line 2: ...")
    assert "line 2" in err


def test_replay_command_sends_every_task(otlp_http_receiver: OtlpHttpReceiver) -> None:
    """`replay FILE --endpoint URL` sends one span per task of the file."""
    assert main(["replay", str(FIXTURES / "nested.json"), "-e", otlp_http_receiver.endpoint]) == 0
    spans = otlp_http_receiver.wait_for(11, timeout_s=10)
    assert {s.name for s in spans} >= {"experiment", "load data"}


def test_replay_without_endpoint_or_with_a_bad_one_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No endpoint, a port out of range or a non-URL: exit 2, one line naming the problem."""
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    path = FIXTURES / "nested.json"
    for argv, expected in (
        ([], "no OTLP endpoint"),
        (["-e", "http://127.0.0.1:99999"], "Port out of range"),
        (["-e", "notaurl"], "expected http(s)://host:port"),
    ):
        assert main(["replay", str(path), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err
        assert len(err.splitlines()) == 1


def test_replay_to_a_closed_port_says_why_once(capsys: pytest.CaptureFixture[str]) -> None:
    """A refused connection: exit 3 at once, one line with the reason and spans sent."""
    import time

    from .otlp_receivers import closed_loopback_endpoint

    started = time.monotonic()
    assert main(["replay", str(FIXTURES / "failed.json"), "-e", closed_loopback_endpoint()]) == 3
    assert time.monotonic() - started < 3.0  # no seconds of retries against nothing
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "Connection refused" in err
    assert "0 of 2 spans were sent" in err


def test_replay_refused_with_a_4xx_says_what_to_check(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A backend answering 401 (a missing token): the error names the headers to check.

    Before: "export to ... failed (HTTP 401 Unauthorized); 0 of 2 spans were sent" and no
    more, where the same refusal of a live run's spans says what to check
    (phoenix-mlflow.md, "When the backend refuses the spans").
    """
    with OtlpHttpReceiver(require_headers={"authorization": "Bearer right"}) as receiver:
        assert main(["replay", str(FIXTURES / "failed.json"), "-e", receiver.endpoint]) == 3
    err = capsys.readouterr().err.strip()
    assert "401" in err
    assert "0 of 2 spans were sent" in err
    assert "authorization" in err.lower()
    assert "OTEL_EXPORTER_OTLP_HEADERS" in err


def test_replay_sends_the_others_and_names_a_span_too_large(
    otlp_http_receiver: OtlpHttpReceiver, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Replaying a task file with a 5 MB task: the others arrive; exit 3 names the span.

    The task is big by its error (a 5 MB exception message, on the span twice: the error
    attribute and the status description); extra data that large would be left off the span
    by the span's data budget, on replay as live.
    """
    path = tmp_path / "run.json"
    with Task("run", file=path):
        for i in range(3):
            with Task(f"t{i}"):
                pass
        with pytest.raises(ValueError, match="x"), Task("big"):
            raise ValueError("x" * 5_000_000)
    assert main(["replay", str(path), "-e", otlp_http_receiver.endpoint]) == 3
    err = capsys.readouterr().err
    assert "span 'big' is " in err
    assert "4 of 5 spans were sent" in err
    spans = otlp_http_receiver.wait_for(4, timeout_s=10)
    assert sorted(s.name for s in spans) == ["run", "t0", "t1", "t2"]


def test_compare_of_files_saved_at_their_start_says_why_no_measure_is_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A task with no measure in either file gets a row saying why, never an empty row."""
    saved = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.json"
        with Task("train", file=path):
            saved.append(tmp_path / f"{name}-at-start.json")
            saved[-1].write_bytes(path.read_bytes())  # the file as written at the task's start
    assert Task.model_validate_json(saved[0].read_text()).duration is None
    assert main(["compare", *map(str, saved)]) == 0
    (row,) = [line for line in capsys.readouterr().out.splitlines() if "train" in line]
    assert "no measures yet: the task was still running when saved" in row, row
    assert main(["compare", *map(str, saved), "--json"]) == 0
    (root,) = json.loads(capsys.readouterr().out)["matched"]
    assert root["measures"] == {}
    assert root["note"] == "no measures yet: the task was still running when saved"


@pytest.mark.parametrize(
    ("names", "message"), [(["a"], "1 name given"), (["a", "b", "c"], "3 names given")]
)
def test_a_wrong_count_of_run_names_is_said_in_good_grammar(
    names: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--name`` given once for two files: "1 name given for 2 files" (not "1 names")."""
    files = [str(FIXTURES / "nested.json"), str(FIXTURES / "failed.json")]
    argv = ["compare", *files]
    for name in names:
        argv += ["--name", name]
    assert main(argv) == 2
    assert f"{message} for 2 files" in capsys.readouterr().err


def test_table_of_a_folder_skips_the_chrome_traces_exported_beside_the_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``export --format chrome`` into the runs' folder, then ``table runs/*.json``: it works.

    The README suggests both; the glob picked up the trace and the whole table failed (exit 2,
    "not a tasktrace task file: a Chrome trace"). A trace among several files is skipped with
    one warning; alone it is still an error.
    """
    runs = tmp_path / "runs"
    runs.mkdir()
    for name in ("a", "b"):
        with Task("train", file=runs / f"{name}.json"):
            pass
    trace = runs / "a.trace.json"
    assert main(["export", str(runs / "a.json"), "--format", "chrome", "-o", str(trace)]) == 0
    capsys.readouterr()
    files = [str(p) for p in sorted(runs.glob("*.json"))]
    assert main(["table", *files, "--by", "label", "--measure", "duration"]) == 0
    out, err = capsys.readouterr()
    assert "train" in out
    assert err.strip() == f"Warning: {trace}: skipped: a Chrome trace, not a task file"
    assert main(["table", str(trace)]) == 2  # an input error, as before
    assert "a Chrome trace" in capsys.readouterr().err
