"""A folder of OTLP JSON-lines files read as one run: each process of a run writes its own file.

With ``TASKTRACE_OTLP_JSON_DIR`` every process (the parent, a subprocess given
``child_environment()``, a pool worker) writes a file of its own in the folder, so one file
holds only its process's tasks; ``show``, ``export`` and ``replay`` take the folder and
rebuild the whole tree from all of them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from tasktrace import Task, TaskStatus
from tasktrace.core.units import friendly_duration
from tasktrace.formats import spans_to_task, task_to_spans

from .cli_helpers import clean_env, run_cli

_PARENT = textwrap.dedent(
    """
    import subprocess, sys
    from tasktrace import Task, child_environment

    with Task("pipeline", file="pipeline.json"):
        with Task("prepare"):
            pass
        subprocess.run([sys.executable, "child.py"], env=child_environment(), check=True)
    """
)
_CHILD = textwrap.dedent(
    """
    from tasktrace import Task

    with Task("evaluate"):
        with Task("score"):
            pass
    """
)


def _labels(tree: dict[str, Any]) -> list[str]:
    out = [tree["label"]]
    for sub in tree.get("subtasks", []):
        out.extend(_labels(sub))
    return out


def _run_pipeline(tmp_path: Path) -> Path:
    (tmp_path / "parent.py").write_text(_PARENT)
    (tmp_path / "child.py").write_text(_CHILD)
    spans = tmp_path / "spans"
    spans.mkdir()
    env = clean_env()
    env["TASKTRACE_OTLP_JSON_DIR"] = str(spans)
    subprocess.run([sys.executable, "parent.py"], cwd=tmp_path, env=env, check=True, timeout=120)
    (tmp_path / "spans" / "notes.txt").write_text("not spans\n")  # skipped, as task files are
    return spans


def test_a_folder_of_span_files_is_the_whole_run(tmp_path: Path) -> None:
    """``show`` and ``export`` of the folder give the task file's tree; one file gives half."""
    spans = _run_pipeline(tmp_path)
    files = sorted(p for p in spans.iterdir() if p.suffix == ".jsonl")
    assert len(files) == 2, files  # the parent's and the child's

    expected = _labels(json.loads((tmp_path / "pipeline.json").read_text()))
    assert expected == ["pipeline", "prepare", "evaluate", "score"]
    shown = run_cli(["show", "--json", str(spans)], tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert _labels(json.loads(shown.stdout)) == expected

    one = [json.loads(run_cli(["show", "--json", str(f)], tmp_path).stdout) for f in files]
    assert all(_labels(t) != expected for t in one)  # each file: one process's tasks only

    done = run_cli(["export", str(spans), "--format", "task", "-o", "rebuilt.json"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert _labels(json.loads((tmp_path / "rebuilt.json").read_text())) == expected


def test_a_folder_without_span_files_is_a_one_line_error(tmp_path: Path) -> None:
    """A folder holding no OTLP JSON-lines file is named in a one-line error, exit 2."""
    empty = tmp_path / "nothing"
    empty.mkdir()
    (empty / "pipeline.json").write_text('{"label": "a task file, not spans"}')
    shown = run_cli(["show", str(empty)], tmp_path)
    assert shown.returncode == 2
    assert "no OTLP JSON-lines file" in shown.stderr
    assert str(empty) in shown.stderr
    assert "Traceback" not in shown.stderr


def test_a_span_folder_that_does_not_exist_yet_is_created(tmp_path: Path) -> None:
    """``TASKTRACE_OTLP_JSON_DIR`` naming a per-job folder not made yet keeps every span.

    A Slurm array's tasks given ``$SCRATCH/traces/$SLURM_ARRAY_JOB_ID`` start side by side;
    each creates the folder (and its parents) at its first export. Before: each lost all its
    spans ("cannot write OTLP JSON ... No such file or directory"), the warning coming only
    after its work was done.
    """
    (tmp_path / "parent.py").write_text(_PARENT)
    (tmp_path / "child.py").write_text(_CHILD)
    spans = tmp_path / "scratch" / "traces" / "job-17"
    env = clean_env()
    env["TASKTRACE_OTLP_JSON_DIR"] = str(spans)
    done = subprocess.run(
        [sys.executable, "parent.py"],
        cwd=tmp_path,
        env=env,
        check=True,
        timeout=120,
        capture_output=True,
        text=True,
    )
    assert "cannot write" not in done.stderr, done.stderr
    shown = run_cli(["show", "--json", str(spans)], tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert _labels(json.loads(shown.stdout)) == ["pipeline", "prepare", "evaluate", "score"]


def test_a_span_file_cut_in_its_last_line_loses_that_line_only(tmp_path: Path) -> None:
    """A span file whose last line is cut short gives the rest of the run and one warning.

    Its process was still writing, or was killed while writing (a Slurm job at its time
    limit). Before: ``show`` of the folder failed as a whole ("line 2: not an OTLP JSON
    ExportTraceServiceRequest: Unterminated string"), every other process's tasks with it.
    """
    spans = _run_pipeline(tmp_path)
    files = sorted(p for p in spans.iterdir() if p.suffix == ".jsonl")
    whole = files[0].read_bytes()
    line = files[1].read_bytes().count(b"\n") + 1  # the cut line's number
    with files[1].open("ab") as cut:  # another batch, cut half-way through its line
        cut.write(whole[: len(whole) // 2])
    shown = run_cli(["show", "--json", str(spans)], tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert _labels(json.loads(shown.stdout)) == ["pipeline", "prepare", "evaluate", "score"]
    assert f"{files[1]}: line {line} is incomplete" in shown.stderr
    assert shown.stderr.count("incomplete") == 1

    with files[1].open("ab") as more:  # a line after the cut one: no cut, an error
        more.write(b"\n" + whole)
    broken = run_cli(["show", "--json", str(spans)], tmp_path)
    assert broken.returncode != 0
    assert f"{files[1]}: line {line}: not an OTLP JSON" in broken.stderr


def test_a_span_file_whose_only_line_is_cut_is_named_not_skipped(tmp_path: Path) -> None:
    """A process killed while writing its first request: its file is said to be cut.

    Before: the file was not recognised as OTLP JSON (its first line does not parse) and was
    skipped unsaid; ``show`` exited 0 with that process's tasks missing and no warning.
    """
    spans = _run_pipeline(tmp_path)
    files = sorted(p for p in spans.iterdir() if p.suffix == ".jsonl")
    only = files[1].read_bytes().splitlines()[0]
    files[1].write_bytes(only[: len(only) // 2])  # one line, cut half-way
    shown = run_cli(["show", "--json", str(spans)], tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert f"{files[1]}: line 1 is incomplete" in shown.stderr


def test_a_span_file_given_alone_whose_only_line_is_cut_is_named_as_cut(tmp_path: Path) -> None:
    """The same file given alone (not its folder): the error names the cut line, not a task file.

    Seen failing before the fix (docs persona): ``show cut.otlp.jsonl`` said "not a tasktrace
    task file: invalid JSON: the text ends inside a JSON value", the cut line unnamed.
    """
    spans = _run_pipeline(tmp_path)
    first = sorted(p for p in spans.iterdir() if p.suffix == ".jsonl")[0]
    only = first.read_bytes().splitlines()[0]
    cut = tmp_path / "cut.otlp.jsonl"
    cut.write_bytes(only[: len(only) // 2])
    for command in (["show"], ["export", "--format", "chrome", "-o", str(tmp_path / "t.json")]):
        shown = run_cli([*command, str(cut)], tmp_path)
        assert shown.returncode == 2, shown.stderr
        assert f"{cut}: line 1 is incomplete" in shown.stderr, shown.stderr
        assert "not a tasktrace task file" not in shown.stderr, shown.stderr
        assert "no spans" in shown.stderr, shown.stderr


def test_a_span_read_twice_is_one_task(tmp_path: Path) -> None:
    """The same span read twice makes one node: no task twice, no CPU counted twice.

    A Collector writes a retried request again; a copy of a process's file lies beside it.
    Before: each copy was attached again (the same node twice under its parent, so both
    copies of a task showed every subtask of both) and ``show`` added the CPU up twice.
    """
    spans = _run_pipeline(tmp_path)
    once = json.loads(run_cli(["show", "--json", str(spans)], tmp_path).stdout)
    for file in sorted(p for p in spans.iterdir() if p.suffix == ".jsonl"):
        (spans / f"copy-{file.name}").write_bytes(file.read_bytes())
    shown = run_cli(["show", "--json", str(spans)], tmp_path)
    assert shown.returncode == 0, shown.stderr
    twice = json.loads(shown.stdout)
    assert _labels(twice) == ["pipeline", "prepare", "evaluate", "score"]
    assert twice == once


_ONE_RUN = textwrap.dedent(
    """
    import sys, time
    from tasktrace import Task

    with Task(sys.argv[1]):
        time.sleep(0.2)
    """
)


def test_runs_gathered_under_one_root_give_it_their_duration(tmp_path: Path) -> None:
    """Two unrelated runs in one folder: their root lasts from the first start to the last end.

    Before: the root made above them had their start and finish but no duration, so ``show``
    printed none for it, and ``--totals`` and ``compare`` had none.
    """
    (tmp_path / "run.py").write_text(_ONE_RUN)
    spans = tmp_path / "spans"
    env = clean_env()
    env["TASKTRACE_OTLP_JSON_DIR"] = str(spans)
    for label in ("train", "evaluate"):  # one after the other, neither the other's parent
        subprocess.run(
            [sys.executable, "run.py", label], cwd=tmp_path, env=env, check=True, timeout=120
        )
    shown = run_cli(["show", "--json", str(spans)], tmp_path)
    assert shown.returncode == 0, shown.stderr
    root = json.loads(shown.stdout)
    runs = root["subtasks"]
    assert [root["label"], *(r["label"] for r in runs)] == ["spans", "train", "evaluate"]
    assert root["start_time"] == runs[0]["start_time"]
    assert root["finish_time"] == runs[1]["finish_time"]
    assert root["duration"] == root["finish_time"] - root["start_time"]
    assert root["duration"] > runs[0]["duration"] + runs[1]["duration"]  # and the time between
    line = run_cli(["show", str(spans)], tmp_path).stdout.splitlines()[0]
    assert line == f"spans  finished  {friendly_duration(root['duration'])}"


def test_a_root_above_a_run_not_ended_has_no_finish_yet() -> None:
    """While one of the gathered runs has not ended, their root runs: no finish, no duration.

    Before: it was finished at the last finish of the others, as if the run still going had
    ended then.
    """
    done = Task.model_validate(
        {"label": "a", "status": "finished", "start_time": 1000.0, "finish_time": 1002.5}
    )
    going = Task.model_validate({"label": "b", "status": "running", "start_time": 1001.0})
    root = spans_to_task([*task_to_spans(done), *task_to_spans(going)], root_label="both")
    assert [t.label for t in root.subtasks] == ["a", "b"]
    assert root.status is TaskStatus.RUNNING
    assert root.start_time == 1000.0
    assert root.finish_time is None
    assert root.duration is None


def test_a_root_above_runs_says_when_one_failed_or_was_cancelled() -> None:
    """Ended runs of which one failed (or was cancelled): their root says so, with a count.

    Before: "finished", as if every run under it had finished.
    """

    def run(label: str, status: str, start: float) -> Task:
        return Task.model_validate(
            {"label": label, "status": status, "start_time": start, "finish_time": start + 1.0}
        )

    cases = [
        (["finished", "failed", "cancelled"], TaskStatus.FAILED, "1 of 3 runs failed"),
        (["finished", "cancelled"], TaskStatus.CANCELLED, "1 of 2 runs cancelled"),
        (["finished", "finished"], TaskStatus.FINISHED, None),
    ]
    for statuses, status, error in cases:
        runs = [run(f"r{i}", s, 1000.0 + i) for i, s in enumerate(statuses)]
        root = spans_to_task([s for r in runs for s in task_to_spans(r)], root_label="all")
        assert [t.status.value for t in root.subtasks] == statuses
        assert (root.status, root.error) == (status, error)
        assert root.duration == len(statuses)  # first start to last finish, as before
