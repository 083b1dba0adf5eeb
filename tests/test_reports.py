"""Reports, comparisons and cost tables: ``report``, ``compare``, ``table``, ``read_tasks``."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import tasktrace
from tasktrace.cli import main
from tasktrace.core.units import friendly_bytes, friendly_duration

from .conftest import FIXTURES


def _walk(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every task of a parsed task file, read with json (independently of tasktrace)."""
    stack = [node]
    while stack:
        task = stack.pop()
        yield task
        stack.extend(task.get("subtasks") or [])


def _tasks(path: Path) -> list[dict[str, Any]]:
    return list(_walk(json.loads(path.read_text())))


def _as_plotly_json(text: str) -> str:
    r"""``text`` inside a string of plotly's figure JSON (``<``, ``>``, ``/`` as ``\uXXXX``)."""
    encoded = json.dumps(text)[1:-1]
    for char in "<>/":
        encoded = encoded.replace(char, f"\\u{ord(char):04x}")
    return encoded


def _in_page(page: str, text: str) -> bool:
    """Whether ``text`` is in the page, HTML-escaped, as the figure JSON or the HTML holds it."""
    escaped = html.escape(text)
    return _as_plotly_json(escaped) in page or escaped in page


def test_report_holds_every_label_and_the_measures(
    demo_runs: dict[int, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A report of the demo and two LensKit files holds every label and the measures, offline."""
    files = [demo_runs[5], FIXTURES / "nested.json", FIXTURES / "failed.json"]
    out = tmp_path / "report.html"
    assert main(["report", *map(str, files), "-o", str(out)]) == 0
    assert "report of 3 run(s)" in capsys.readouterr().err
    page = out.read_text()
    for path in files:
        for task in _tasks(path):
            assert _in_page(page, task["label"]), task["label"]
    root = json.loads(demo_runs[5].read_text())
    for text in (
        f"duration: {friendly_duration(root['duration'])}",
        f"CPU time: {friendly_duration(root['cpu_time'])}",
        f"peak RSS: {friendly_bytes(root['peak_memory'])}",
    ):
        assert _in_page(page, text), text
    assert _in_page(page, "status: failed")  # the LensKit file's failed root
    assert not re.search(r"<script[^>]*\bsrc=", page)  # nothing fetched: plotly.js is inline
    assert "Plotly.newPlot" in page
    assert len(page) > 3_000_000
    for div in ("icicle-0", "timeline-0", "labels-0", "icicle-2", "comparison"):
        assert f'id="{div}"' in page


def test_report_from_python_refuses_to_replace_a_file_unless_asked(
    demo_runs: dict[int, Path], tmp_path: Path
) -> None:
    """``tasktrace.report`` writes the page; an existing file is kept unless overwrite=True."""
    out = tmp_path / "report.html"
    assert tasktrace.report(demo_runs[3], out) == out
    assert _in_page(out.read_text(), "measuring epoch 2")
    out.write_text("my notes")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        tasktrace.report([demo_runs[3]], out)
    assert out.read_text() == "my notes"
    tasktrace.report([demo_runs[3], demo_runs[5]], out, names=["short", "long"], overwrite=True)
    page = out.read_text()
    assert "<h2>short</h2>" in page
    assert "<h2>long</h2>" in page


def test_cli_outputs_never_replace_an_existing_file_without_force(
    demo_runs: dict[int, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``report -o`` and ``table -o`` on a user's file: exit 2, file unchanged; --force."""
    for command, name in (("report", "r.html"), ("table", "t.csv"), ("table", "t.tex")):
        out = tmp_path / name
        out.write_text("keep me")
        assert main([command, str(demo_runs[3]), "-o", str(out)]) == 2
        assert "exists" in capsys.readouterr().err
        assert out.read_text() == "keep me"
        assert main([command, str(demo_runs[3]), "-o", str(out), "--force"]) == 0
        assert out.read_text() != "keep me"


def test_cli_outputs_replace_their_own_earlier_output(
    demo_runs: dict[int, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Running ``report -o`` or ``table -o X.tex`` again replaces the earlier one (no --force).

    A CSV table carries no mark of tasktrace's (a comment would break CSV readers): replacing
    one still needs --force, and the error says so (it used to say the file was not a table
    tasktrace wrote, when it was).
    """
    for command, name in (("report", "r.html"), ("table", "t.tex")):
        out = tmp_path / name
        assert main([command, str(demo_runs[3]), "-o", str(out)]) == 0
        first = out.read_bytes()
        assert main([command, str(demo_runs[5]), "-o", str(out)]) == 0, capsys.readouterr().err
        assert out.read_bytes() != first
    out = tmp_path / "t.csv"
    assert main(["table", str(demo_runs[3]), "-o", str(out)]) == 0
    assert main(["table", str(demo_runs[5]), "-o", str(out)]) == 2
    err = capsys.readouterr().err  # says why, not that tasktrace did not write it
    assert "exists and a CSV table carries no mark of who wrote it" in err, err
    assert "not a report or LaTeX table tasktrace wrote" not in err, err
    assert "--force" in err, err


def test_compare_lists_the_extra_epochs_as_unmatched_and_gives_ratios(
    demo_runs: dict[int, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """5 epochs against 3: epochs 3 and 4 unmatched, ratios second / first; --json parses."""
    five, three = demo_runs[5], demo_runs[3]
    assert main(["compare", str(five), str(three), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["runs"] == ["demo-5-epochs", "demo-3-epochs"]
    only_five = result["unmatched"]["demo-5-epochs"]
    assert [u["path"][-1] for u in only_five] == ["epoch 3", "epoch 4"]
    assert all(u["subtasks"] == 2 for u in only_five)
    assert result["unmatched"]["demo-3-epochs"] == []
    matched = {tuple(m["path"][1:]): m for m in result["matched"]}
    assert ("epoch 2", "training epoch 2") in matched
    assert ("epoch 3",) not in matched
    a, b = (json.loads(p.read_text()) for p in (five, three))
    root = matched[()]["measures"]["duration_s"]
    assert root["values"] == [a["duration"], b["duration"]]
    assert root["ratio"][1] == pytest.approx(b["duration"] / a["duration"])
    assert root["difference"][1] == pytest.approx(b["duration"] - a["duration"])

    assert main(["compare", str(five), str(three)]) == 0
    text = capsys.readouterr().out
    assert "Only in demo-5-epochs" in text
    assert "epoch 4 (+2 subtasks)" in text
    assert f"{b['duration'] / a['duration']:.3f}×" in text


def test_compare_and_table_reject_bad_input_in_one_line(
    demo_runs: dict[int, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing file, an unknown measure or column: exit 2 with one line naming it."""
    missing = tmp_path / "missing.json"
    assert main(["compare", str(demo_runs[3]), str(missing)]) == 2
    assert f"{missing}: cannot read file" in capsys.readouterr().err
    assert main(["table", str(demo_runs[3]), "--measure", "speed"]) == 2
    assert "unknown measure 'speed'" in capsys.readouterr().err
    assert main(["table", str(demo_runs[3]), "--by", "colour"]) == 2
    assert "no task has a column 'colour'" in capsys.readouterr().err


def test_read_tasks_gives_one_row_per_task_with_si_columns(demo_runs: dict[int, Path]) -> None:
    """``read_tasks`` on 3 files: one row per task, run/path/depth/parent, SI units, extras."""
    files = [demo_runs[5], FIXTURES / "nested.json", FIXTURES / "failed.json"]
    frame = tasktrace.read_tasks(files)
    assert isinstance(frame, pd.DataFrame)
    assert len(frame) == sum(len(_tasks(p)) for p in files)
    assert list(frame["run"].unique()) == ["demo-5-epochs", "nested", "failed"]
    for column in (
        "path",
        "depth",
        "parent_id",
        "label",
        "status",
        "duration_s",
        "cpu_time_s",
        "peak_memory_bytes",
        "energy_j",
        "start_time_s",
        "tags",
        "epoch",
        "accuracy",
    ):
        assert column in frame.columns, column
    assert "emissions_g" not in frame.columns  # no carbon intensity set
    root = json.loads(demo_runs[5].read_text())
    row = frame[(frame["run"] == "demo-5-epochs") & (frame["label"] == "epoch 1")].iloc[0]
    assert row["path"] == "digits experiment / epoch 1"
    assert row["depth"] == 1
    assert row["parent_id"] == root["task_id"]
    assert row["epoch"] == 1
    assert row["duration_s"] == root["subtasks"][2]["duration"]
    assert frame.loc[frame["label"] == "will fail", "status"].item() == "failed"


def _label_totals(paths: list[Path]) -> dict[str, tuple[int, float]]:
    totals: dict[str, tuple[int, float]] = {}
    for path in paths:
        for task in _tasks(path):
            count, total = totals.get(task["label"], (0, 0.0))
            totals[task["label"]] = (count + 1, total + task["duration"])
    return totals


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_table_output_round_trips_through_pandas(
    demo_runs: dict[int, Path], tmp_path: Path, suffix: str
) -> None:
    """``table -o x.csv`` / ``x.parquet``: pandas reads back the counts and totals per label."""
    files = [demo_runs[5], demo_runs[3], FIXTURES / "nested.json"]
    out = tmp_path / f"x{suffix}"
    argv = ["table", *map(str, files), "--by", "label", "--measure", "duration,cpu_time,energy"]
    assert main([*argv, "-o", str(out)]) == 0
    table = pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
    expected = _label_totals(files)
    assert sorted(table["label"]) == sorted(expected)
    assert {
        "tasks",
        "duration_s_total",
        "duration_s_mean",
        "cpu_time_s_total",
        "energy_j_total",
    } <= set(table.columns)
    for row in table.itertuples():
        count, total = expected[row.label]
        assert row.tasks == count
        assert row.duration_s_total == pytest.approx(total, rel=1e-12)
        assert row.duration_s_mean == pytest.approx(total / count, rel=1e-12)
        assert pd.isna(row.energy_j_total)  # no energy meter on these runs: missing, not 0


def test_table_prints_and_writes_latex(
    demo_runs: dict[int, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``table`` prints a rich table per group; ``-o x.tex`` writes a LaTeX tabular."""
    files = [str(demo_runs[5]), str(demo_runs[3])]
    assert main(["table", *files, "--by", "run", "--measure", "duration"]) == 0
    text = capsys.readouterr().out
    durations = [json.loads(Path(f).read_text())["duration"] for f in files]
    for name, duration in zip(("demo-5-epochs", "demo-3-epochs"), durations, strict=True):
        line = next(line for line in text.splitlines() if name in line)
        assert friendly_duration(duration) in line  # --by run: the root alone, counted once
        assert re.search(r"│\s+1\s+│", line)  # one task: the root
    out = tmp_path / "x.tex"
    assert main(["table", *files, "--by", "label_pattern", "-o", str(out)]) == 0
    tex = out.read_text()
    assert "\\begin{tabular}" in tex
    assert "training epoch \\#" in tex


def _energy_file(path: Path, **fields: Any) -> Path:
    task = {"label": "train", "status": "finished", "duration": 100.0, **fields}
    path.write_text(json.dumps(task))
    return path


def test_large_trees_are_folded_in_the_report(tmp_path: Path) -> None:
    """A 3,000-step run: repeated siblings become one node with a count and summed measures."""
    steps = [
        {
            "label": f"step {i}",
            "status": "finished",
            "duration": 0.5,
            "subtasks": [{"label": f"load batch {i}", "status": "finished", "duration": 0.1}],
        }
        for i in range(1500)
    ]
    steps[7]["status"] = "failed"
    run = tmp_path / "big.json"
    run.write_text(
        json.dumps({"label": "train", "status": "finished", "duration": 900.0, "subtasks": steps})
    )
    out = tmp_path / "big.html"
    tasktrace.report(run, out)
    page = out.read_text()
    assert _in_page(page, "step 0…1499 ×1,500")
    assert _in_page(page, "1,500 tasks folded: 1,499 finished, 1 failed")
    assert _in_page(page, "total duration: 12m30.00s (mean 500ms)")
    assert _in_page(page, "load batch 0…1499 ×1,500")
    assert "repeated siblings folded into 3 nodes" in page


@pytest.mark.parametrize(
    ("blocked", "call", "extra"),
    [
        ("plotly", "tasktrace.report('x.json', 'r.html')", "tasktrace[report]"),
        ("pandas", "tasktrace.read_tasks('x.json')", "tasktrace[pandas]"),
    ],
)
def test_a_missing_extra_is_named_in_the_error(blocked: str, call: str, extra: str) -> None:
    """Without plotly / pandas, the error says which extra to install."""
    code = (
        f"import sys; sys.modules[{blocked!r}] = None\n"  # import of it fails, as if missing
        "import tasktrace\n"
        "try:\n"
        f"    {call}\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert f"needs {blocked}, which is not installed: pip install '{extra}'" in out


@pytest.mark.parametrize(
    ("blocked", "args", "says"),
    [
        ("plotly", ["report", "-o", "r.html"], "tasktrace report needs plotly"),
        ("pandas", ["table", "-o", "r.csv"], "tasktrace table -o needs pandas"),
        ("pandas", ["table", "-o", "-"], "tasktrace table -o needs pandas"),
    ],
)
def test_cli_without_an_extra_names_the_command_and_the_extra(
    tmp_path: Path, blocked: str, args: list[str], says: str
) -> None:
    """``report`` / ``table -o`` without their extra exit 2 with one line naming both.

    The command, not a Python function (``tasktrace.read_tasks``) nor the output
    (``standard output: ...``), as a new user saw it.
    """
    extra = {"plotly": "report", "pandas": "pandas"}[blocked]
    argv = [args[0], str(FIXTURES / "nested.json"), *args[1:]]
    code = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        "from tasktrace.cli import main\n"
        f"sys.exit(main({argv!r}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines == [f"Error: {says}, which is not installed: pip install 'tasktrace[{extra}]'"]
    assert list(tmp_path.iterdir()) == []


def test_hostile_labels_are_escaped_in_the_report(tmp_path: Path) -> None:
    """A label holding HTML is shown as text in the report, never as markup."""
    label = "<img src=x onerror=alert(1)>"
    run = tmp_path / "run.json"
    run.write_text(
        json.dumps(
            {
                "label": "run",
                "status": "finished",
                "duration": 2.0,
                "subtasks": [
                    {"label": label, "status": "failed", "duration": 1.0, "error": "<b>boom</b>"}
                ],
            }
        )
    )
    page = tasktrace.report(run, tmp_path / "r.html").read_text()
    for markup in (label, "<b>boom</b>"):
        assert markup not in page  # in the HTML
        assert _as_plotly_json(markup) not in page  # in the figures' JSON
    assert _in_page(page, label)
    assert _in_page(page, "status: failed (<b>boom</b>)")


def test_carbon_intensity_400_turns_3_6_megajoules_into_400_grams(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """3.6 MJ at 400 g CO₂e/kWh is 400 g in show, table, compare, report and read_tasks."""
    run = _energy_file(tmp_path / "run.json", system_power=3.6e6)
    assert main(["show", str(run)]) == 0
    assert "CO₂e" not in capsys.readouterr().out  # no intensity: no emissions shown
    assert main(["show", str(run), "--carbon-intensity", "400"]) == 0
    assert "CO₂e 400 g" in capsys.readouterr().out
    out = tmp_path / "t.csv"
    assert (
        main(
            ["table", str(run), "--measure", "energy", "--carbon-intensity", "400", "-o", str(out)]
        )
        == 0
    )
    assert pd.read_csv(out)["emissions_g_total"].item() == pytest.approx(400.0)
    assert main(["compare", str(run), str(run), "--json", "--carbon-intensity", "400"]) == 0
    compared = json.loads(capsys.readouterr().out)["matched"][0]["measures"]
    assert compared["emissions_g"]["values"] == [pytest.approx(400.0)] * 2
    page = tmp_path / "r.html"
    tasktrace.report(run, page, carbon_intensity_g_per_kwh=400)
    assert _in_page(page.read_text(), "CO₂e: 400 g")
    frame = tasktrace.read_tasks(run, carbon_intensity_g_per_kwh=400)
    assert frame["emissions_g"].item() == pytest.approx(400.0)


def test_a_run_saved_at_its_start_is_reported_with_what_it_lacks(tmp_path: Path) -> None:
    """A task file saved when its task started (no duration yet) gets a report saying so.

    Before: ``KeyError: 'duration_s'`` (a traceback from ``tasktrace report``): the facts knew
    no reason for a missing duration.
    """
    run = tmp_path / "run.json"
    with tasktrace.Task("still running", file=run):
        assert json.loads(run.read_text())["duration"] is None  # the case: saved at start
        out = tmp_path / "r.html"
        assert main(["report", str(run), "-o", str(out)]) == 0
    page = out.read_text()
    assert _in_page(page, "still running")
    assert re.search(r"duration: [^<]*not in the file", page)


@pytest.mark.parametrize("value", ["nan", "inf", "1e400"])
@pytest.mark.parametrize("command", ["show", "compare", "table", "report"])
def test_a_carbon_intensity_that_is_not_finite_is_a_usage_error(
    command: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--carbon-intensity nan`` (or inf) exits 2 naming the option.

    Before: click's FloatRange(min=0) let them through, and CarbonIntensity raised a
    ValueError traceback.
    """
    run = str(FIXTURES / "nested.json")
    files = [run, run] if command == "compare" else [run]
    extra = ["-o", str(tmp_path / "r.html")] if command == "report" else []
    assert main([command, *files, *extra, f"--carbon-intensity={value}"]) == 2
    err = capsys.readouterr().err
    assert "--carbon-intensity" in err
    assert "finite" in err


def test_a_difference_of_zero_has_no_sign(
    demo_runs: dict[int, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``compare`` of a run with itself: every difference is ``0…``, never ``+0µs``/``−0 B``."""
    same = tmp_path / "same.json"
    same.write_bytes(demo_runs[3].read_bytes())
    assert main(["compare", str(demo_runs[3]), str(same)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"(?<![\w.])0(\.0+)?\s?[µm]?s\b", out), out  # a zero duration difference
    assert not re.search(r"[+−]0(\.0+)?\s?([µmk]?s|[KMG]i?B|B|[mk]?J)\b", out), out


def test_read_tasks_gives_a_measure_no_task_took_as_a_float_column_of_nan(tmp_path: Path) -> None:
    """Energy measured by no task: a float64 column of NaN, so pandas' figures stay "missing".

    Seen failing before the fix (docs persona): the column held ``None`` as ``object``;
    ``mean()`` raised and a group's ``sum()`` was 0, against the docs' "missing (NaN)".
    """
    path = tmp_path / "t.json"
    with tasktrace.Task("root", file=path), tasktrace.Task("step"):
        pass
    tree = json.loads(path.read_text())
    for node in _walk(tree):  # no energy, on any machine (one with RAPL measures it)
        for field in ("system_power", "cpu_power", "gpu_power", "dram_energy_j"):
            node[field] = None
    path.write_text(json.dumps(tree))
    frame = tasktrace.read_tasks(path)
    for name in ("energy_j", "cpu_energy_j", "gpu_energy_j", "dram_energy_j"):
        assert frame[name].dtype == "float64", (name, frame[name].dtype)
        assert frame[name].isna().all(), frame[name]
    assert pd.isna(frame["energy_j"].mean())
    assert pd.isna(frame.groupby("label_pattern")["energy_j"].sum(min_count=1)).all()
    assert frame["duration_s"].dtype == "float64"  # measured: numbers, as before
    assert (frame["duration_s"] >= 0).all()
