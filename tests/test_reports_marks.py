"""Every view marks the same figures: ≈ for an energy of a too-short task, — for a missing value.

The runs are real: a program with a root task, a sub-millisecond subtask (``step``) and a 0.5 s one
(``fit``), its CPU energy from Prometheus (a stand-in server answering 12.5 J, with a 0.2 s
scrape interval: ``step`` is flagged, ``fit`` and the root are not) and DRAM energy from RAPL (a
fake powercap tree); and the same program on a machine with no energy meter at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import tasktrace
from tasktrace.cli import main

from .export_helpers import clean_env, run_script
from .meters.energy_helpers import FakePrometheus, RaplTree

PROGRAM = """
import sys
import time

from tasktrace import Task

with Task("job", file=sys.argv[1]):
    with Task("step"):
        pass
    with Task("fit"):
        time.sleep(0.5)
"""
SCRAPE_INTERVAL_S = 0.2  # shorter than fit (0.5 s), far longer than step (nothing in it)
ANSWER = {"status": "success", "data": {"resultType": "scalar", "result": [0, "12.5"]}}


def _run(folder: Path, env: dict[str, str]) -> Path:
    folder.mkdir()
    out = folder / "run.json"
    done = run_script(PROGRAM, folder, env, str(out))
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"measured": ..., "bare": ...}``: the program's task file with energy, and without."""
    tmp = tmp_path_factory.mktemp("marks")
    stub = tmp / "no-nvml"
    stub.mkdir()
    (stub / "pynvml.py").write_text("raise ImportError('nvidia-ml-py is not installed')\n")
    rapl = RaplTree(tmp / "powercap")
    rapl.zone("intel-rapl:0", "package-0", 10_000_000)
    rapl.zone("intel-rapl:0:0", "dram", 5_000_000)
    prometheus = FakePrometheus(body=json.dumps(ANSWER).encode())
    try:
        measured = _run(
            tmp / "measured",
            clean_env(
                PYTHONPATH=str(stub),
                TASKTRACE_ENERGY__RAPL_ROOT=str(rapl.root),
                TASKTRACE_MACHINE="box",
                TASKTRACE_MACHINES__BOX__POWER_QUERIES__CPU="box_cpu_joules",
                TASKTRACE_PROMETHEUS__URL=prometheus.url,
                TASKTRACE_PROMETHEUS__SCRAPE_INTERVAL_S=str(SCRAPE_INTERVAL_S),
            ),
        )
    finally:
        prometheus.close()
    (tmp / "no-powercap").mkdir()
    bare = _run(
        tmp / "bare",
        clean_env(PYTHONPATH=str(stub), TASKTRACE_ENERGY__RAPL_ROOT=str(tmp / "no-powercap")),
    )
    root = json.loads(measured.read_text())
    flags = {t["label"]: t["cpu_energy_short_task"] for t in [root, *root["subtasks"]]}
    assert flags == {"job": False, "step": True, "fit": False}, flags  # the premise
    assert root["dram_energy_j"] is not None
    return {"measured": measured, "bare": bare}


def _out(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 0
    return capsys.readouterr().out


def _rows(out: str) -> list[list[str]]:
    """Return the cells of each body row of a rich table (``│ a │ b │``), stripped."""
    return [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in out.splitlines()
        if line.startswith("│")
    ]


def _marked_tasks(rows: list[list[str]]) -> set[str]:
    """Return the tasks (first column, carried down) with a cell starting with ≈."""
    marked, task = set(), ""
    for row in rows:
        task = row[0] or task
        if any(cell.startswith("≈") for cell in row[1:]):
            marked.add(task)
    return marked


def test_show_marks_the_short_task(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The reference: `show` marks step's energies, and the note counts it."""
    out = _out(capsys, ["show", "--carbon-intensity", "400", str(runs["measured"])])
    marked = {line.split()[1] for line in out.splitlines() if "≈" in line and "──" in line}
    assert marked == {"step"}, out
    assert "≈: 1 task shorter than the energy source's update period" in out


def test_compare_marks_the_figures_show_marks(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """`compare` of the run with itself: step's energy, CO₂e, difference, ratio after ≈.

    Before, compare printed them as exact figures (and its JSON had no flag).
    """
    path = str(runs["measured"])
    argv = ["compare", path, path, "-n", "x", "-n", "y", "--carbon-intensity", "400"]
    out = _out(capsys, argv)
    rows = _rows(out)
    assert _marked_tasks(rows) == {"step"}, out
    step = rows.index(next(r for r in rows if r[0] == "step"))
    energy = next(r for r in rows[step:] if r[1] == "energy")
    assert all(cell.startswith("≈") for cell in energy[2:]), energy  # x, y, difference, ratio
    assert "≈: 1 task shorter than the energy source's update period (approximate)" in out
    matched = json.loads(_out(capsys, [*argv, "--json"]))["matched"]
    flags = {m["path"][-1]: m["measures"]["energy_j"]["short_task"] for m in matched}
    assert flags == {"job": [False, False], "step": [True, True], "fit": [False, False]}


def test_table_marks_the_groups_counting_a_short_task(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`table`: ≈ in the printed and LaTeX cells of step's group, a count column in CSV.

    The CSV keeps numbers numbers: ``energy_j_short_tasks`` says how many of the group's
    values are approximate. Before, every output showed step's energy as exact.
    """
    files = [str(runs["measured"]), str(runs["measured"])]
    argv = ["table", *files, "-n", "x", "-n", "y", "-m", "energy,dram_energy"]
    printed = _out(capsys, [*argv, "--carbon-intensity", "400"])
    assert _marked_tasks(_rows(printed)) == {"step"}, printed
    csv = tmp_path / "costs.csv"
    assert main([*argv, "-o", str(csv)]) == 0
    frame = pd.read_csv(csv).set_index("label")
    assert frame["energy_j_short_tasks"].to_dict() == {"job": 0, "step": 2, "fit": 0}
    assert frame["dram_energy_j_short_tasks"].to_dict() == {"job": 0, "step": 2, "fit": 0}
    assert frame["energy_j_total"].dtype.kind == "f"  # still a number
    tex = tmp_path / "costs.tex"
    assert main([*argv, "-o", str(tex)]) == 0
    lines = tex.read_text().splitlines()
    marked = {line.split(" & ")[0] for line in lines if r"$\approx$" in line}
    assert marked == {"step"}, lines


def test_read_tasks_flags_each_approximate_figure(runs: dict[str, Path]) -> None:
    """`read_tasks`: a boolean per figure, the total's, DRAM's and the emissions' included."""
    frame = tasktrace.read_tasks(runs["measured"], carbon_intensity_g_per_kwh=400).set_index(
        "label"
    )
    for column in ("energy", "cpu_energy", "dram_energy", "emissions"):
        flags = frame[f"{column}_short_task"].to_dict()
        assert flags == {"job": False, "step": True, "fit": False}, column


def test_report_marks_the_figures_show_marks(runs: dict[str, Path], tmp_path: Path) -> None:
    """The report: step's hover text and label-table cells after ≈; the facts say what ≈ means."""
    out = tmp_path / "report.html"
    tasktrace.report(runs["measured"], out, carbon_intensity_g_per_kwh=400)
    page = out.read_text()
    for text in ("energy: ≈12.5 J", "CPU energy: ≈12.5 J", "DRAM energy: ≈", "CO₂e: ≈"):
        assert json.dumps(text)[1:-1] in page, text  # the hover text, in plotly's JSON
    assert '"\\u224812.5 J"' in page  # a cell of the per-label table
    assert "1 task shorter than the energy source&#x27;s update period" in page


def test_energy_note_speaks_of_dram_as_of_the_others(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The note counts DRAM energy and its source, and says 'no DRAM energy' and why.

    Before, the note was silent on DRAM: measured or not, it was not named.
    """
    measured = _out(capsys, ["show", str(runs["measured"])]).splitlines()
    (summary,) = [line for line in measured if line.startswith("energy: ")]
    assert "DRAM energy in 3 of 3 tasks, from rapl (dram)" in summary, summary
    bare = _out(capsys, ["show", str(runs["bare"])]).splitlines()
    (summary,) = [line for line in bare if line.startswith("energy: ")]
    assert summary == "energy: no CPU energy, no GPU energy, no system energy, no DRAM energy"
    assert any(line.startswith("  rapl: not available: no RAPL zones") for line in bare), bare


def test_compare_shows_a_value_one_run_lacks_as_not_measured_and_says_why_once(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """`compare` of a run with energy and one without: — in the cells, the reason said once.

    Before, the cells were empty (not measured? zero? a fault?) and nothing said why.
    """
    argv = ["compare", str(runs["measured"]), str(runs["bare"]), "-n", "lab", "-n", "laptop"]
    out = _out(capsys, argv)
    energy = [row for row in _rows(out) if row[1] == "energy"]
    assert len(energy) == 3, out  # job, step, fit
    for row in energy:
        assert row[3:] == ["—", "—", "—"], row  # laptop's value, the difference, the ratio
        assert row[2][-1] == "J", row
    lines = out.splitlines()
    assert lines.count("—: not measured in laptop: energy (3 tasks)") == 1, out
    reasons = [line for line in lines if line.strip().startswith("rapl: not available")]
    assert len(reasons) == 1, out  # laptop's recorded reason, once
    assert "no RAPL zones" in reasons[0]


def test_chrome_trace_carries_the_flags_with_the_energies(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    """`export --format chrome`: each slice's args have its energies and their flags.

    Before, the args had the CPU energy but neither its flag nor the DRAM energy.
    """
    out = tmp_path / "run.trace.json"
    assert main(["export", str(runs["measured"]), "--format", "chrome", "-o", str(out)]) == 0
    slices = {e["name"]: e["args"] for e in json.loads(out.read_text())["traceEvents"]}
    for label, short in (("job", False), ("step", True), ("fit", False)):
        args = slices[label]
        assert args["cpu_energy_short_task"] is short, args
        assert args["dram_energy_j"] is not None, args
