"""What `show` and `run` print: one line per task when piped, named columns, the meters note."""

from __future__ import annotations

import json
import shlex
import sys
import uuid
from pathlib import Path
from typing import Any

import click
import pytest

from tasktrace import Task
from tasktrace.cli import cli, main
from tasktrace.core.units import friendly_bytes, friendly_duration, friendly_grams
from tasktrace.core.views import task_line

from .cli_helpers import run_cli

LONG = "a task label long enough that a tree line of it cannot fit in eighty columns"


def _task(label: str, subtasks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "task_id": str(uuid.uuid4()),
        "label": label,
        "status": "finished",
        "duration": 12.5,
        "cpu_time": 24.0,
        "peak_memory": 3 * 2**30,
        "cpu_power": 1234.0,
        "cpu_energy_source": "rapl",
        "cpu_energy_scope": "package",
        "gpu_power": 567.0,
        "gpu_energy_source": "nvml-counter",
        "gpu_energy_scope": "device",
        "subtasks": subtasks or [],
    }


def _long_tree(path: Path, depth: int = 6) -> list[str]:
    """Write a chain of ``depth`` tasks with long labels; return the labels, root first."""
    labels = [f"{LONG} {level}" for level in range(depth)]
    node: dict[str, Any] | None = None
    for label in reversed(labels):
        node = _task(label, [node] if node else [])
    path.write_text(json.dumps(node))
    return labels


def test_piped_show_prints_each_task_on_one_line(tmp_path: Path) -> None:
    """`show file | cat`: every task is one line with all its fields, however long, unwrapped."""
    path = tmp_path / "long.json"
    labels = _long_tree(path)
    done = run_cli(["show", str(path)], tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for label in labels:
        (line,) = [line for line in lines if f"{label}  finished" in line]
        assert line.rstrip().endswith("GPU energy 567.0 J"), line  # the line's last field
    assert max(len(line) for line in lines) > 120  # long lines were kept, not wrapped


def test_piped_run_prints_its_final_tree_unwrapped(tmp_path: Path) -> None:
    """`tasktrace run` with stderr piped prints the run's task on one line, exit code included."""
    done = run_cli(["run", "-l", LONG, "--", "sh", "-c", "exit 3"], tmp_path)
    assert done.returncode == 3
    (line,) = [line for line in done.stderr.splitlines() if line.startswith(LONG)]
    assert "failed  exit 3" in line
    assert "CPU time" in line


def test_show_names_each_measure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every measure on a `show` line is named: CPU time, peak RSS, peak GPU memory, energies."""
    task = _task("named")
    task.update(peak_gpu_memory=2**30, system_power=4500.0, system_energy_source="prometheus")
    path = tmp_path / "named.json"
    path.write_text(json.dumps(task))
    assert main(["show", str(path), "--totals"]) == 0
    out = capsys.readouterr().out
    line = out.splitlines()[0]
    assert line == (
        "named  finished  12.50s  CPU time 24.00s (1.9 cores)  peak RSS 3.0 GiB  "
        "peak GPU memory 1.0 GiB  CPU energy 1.2 kJ  GPU energy 567.0 J  system energy 4.5 kJ"
    )
    header = next(line for line in out.splitlines() if "label" in line)
    assert "total CPU time" in header
    assert "max peak RSS" in header


def test_cores_are_shown_only_where_cpu_time_exceeds_the_duration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """CPU time above 1.05 × the duration shows busy cores; at or below it, nothing is added.

    Nor for a task shorter than 10 ms, where the ratio is noise (a tester's 12 µs task showed
    ``CPU time 14µs (1.2 cores)``; seen failing).
    """
    busy = _task("busy") | {"duration": 2.0, "cpu_time": 3.0}
    idle = _task("idle") | {"duration": 2.0, "cpu_time": 2.1}
    tiny = _task("tiny") | {"duration": 12e-6, "cpu_time": 14e-6}
    path = tmp_path / "cores.json"
    root = _task("root") | {"cpu_time": 1.0, "subtasks": [busy, idle, tiny]}
    path.write_text(json.dumps(root))
    assert main(["show", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "CPU time 3.00s (1.5 cores)" in lines[1]
    assert "CPU time 2.10s  " in lines[2]
    assert "CPU time 14µs" in lines[3], lines[3]
    assert "cores" not in lines[0] + lines[2] + lines[3]


def test_run_headline_is_the_commands_cpu_and_peak_rss(tmp_path: Path) -> None:
    """A `run` line: the command's total CPU and peak RSS, and the CPU in no task named so."""
    out = tmp_path / "run.json"
    script = tmp_path / "work.py"
    script.write_text(
        "import time\nfrom tasktrace import Task\n"
        "with Task('work'):\n"
        "    end = time.process_time() + 0.3\n"
        "    while time.process_time() < end:\n"
        "        pass\n"
        "    block = bytearray(300_000_000)\n"
    )
    done = run_cli(
        ["run", "-f", str(out), "-l", "job", "--", sys.executable, str(script)], tmp_path
    )
    assert done.returncode == 0, done.stderr
    task = Task.model_validate_json(out.read_text())
    (work,) = task.subtasks
    assert work.subprocess
    total, unaccounted = task.total_cpu(), task.children_cpu_time_s
    assert total is not None
    assert unaccounted is not None
    assert (work.cpu_time or 0.0) >= 0.3  # the work's CPU is the subtask's, not unaccounted
    assert total > unaccounted + 0.3
    assert task.children_peak_rss_bytes is not None, (task.peak_memory, done.stderr)
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("job  ")]
    assert f"CPU time {friendly_duration(total)} (" in line
    assert f"{friendly_duration(unaccounted)} in no task)" in line
    assert f"peak RSS {friendly_bytes(task.children_peak_rss_bytes)}" in line
    assert "children" not in line
    assert task.peak_memory is not None
    assert friendly_bytes(task.peak_memory) not in line  # tasktrace's own RSS is not the headline


def test_run_without_the_commands_peak_names_tasktraces_own(tmp_path: Path) -> None:
    """A command smaller than tasktrace: the peak RSS shown is named as tasktrace's own."""
    out = tmp_path / "run.json"
    assert main(["run", "-q", "-f", str(out), "-l", "small", "true"]) == 0
    task = Task.model_validate_json(out.read_text())
    assert task.children_peak_rss_bytes is None
    assert task.peak_memory is not None
    assert f"tasktrace's peak RSS {friendly_bytes(task.peak_memory)}" in task_line(task)


def test_run_label_is_the_program_and_argv_keeps_the_commands_shell_quoting(
    tmp_path: Path,
) -> None:
    """The default label of `run` is the program (`sh -c`: not the code); argv has the rest."""
    out = tmp_path / "run.json"
    command = ["sh", "-c", "echo hi; exit 3", "--token=s3cret", "it's"]
    assert main(["run", "-q", "--record-argv", "-f", str(out), *command]) == 3
    task = Task.model_validate_json(out.read_text())
    assert task.label == "sh -c"
    assert shlex.join(task.argv) == "sh -c 'echo hi; exit 3' '--token=***' 'it'\"'\"'s'"


def test_each_short_option_has_one_meaning_across_commands() -> None:
    """A short option (-f, -o, ...) stands for the same long option in every command."""
    meanings: dict[str, set[str]] = {}
    for command in cli.commands.values():
        for param in command.params:
            if isinstance(param, click.Option):
                short = [o for o in param.opts if not o.startswith("--")]
                long = [o for o in param.opts if o.startswith("--")]
                for opt in short:
                    meanings.setdefault(opt, set()).update(long)
    assert {opt: names for opt, names in meanings.items() if len(names) != 1} == {}
    assert meanings["-f"] == {"--file"}
    assert meanings["-o"] == {"--output"}


_ENERGY_NAMES = {
    "CPU energy": "cpu_power",
    "GPU energy": "gpu_power",
    "system energy": "system_power",
    "DRAM energy": "dram_energy_j",
}


@pytest.mark.parametrize(
    "energies",
    [
        {"cpu_power": 113.5, "dram_energy_j": 11.3},
        {"cpu_power": 113.5, "gpu_power": 50.0, "dram_energy_j": 11.3},
        {"cpu_power": 113.5, "dram_energy_j": 11.3, "cpu_energy_scope": "platform"},
        {"cpu_power": 113.5, "dram_energy_j": 11.3, "system_power": 400.0},
        {"dram_energy_j": 11.3},
    ],
)
def test_a_lines_emissions_are_of_energies_it_shows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], energies: dict[str, Any]
) -> None:
    """Every energy the CO₂e on a `show` line is computed from is on the line, and named.

    Where the line shows more than one energy, the CO₂e says which ones it is of; the figure is
    those energies (as in the file) at the given intensity, as `compare` and `report` count it.
    """
    task = {"label": "fit", "status": "finished", "duration": 2.0, **energies}
    path = tmp_path / "fit.json"
    path.write_text(json.dumps(task))
    assert main(["show", "--carbon-intensity", "400", str(path)]) == 0
    (line,) = capsys.readouterr().out.splitlines()[:1]
    shown = {name: field for name, field in _ENERGY_NAMES.items() if f"  {name} " in f"{line} "}
    assert {field for field in shown.values()} == {
        f for f in energies if f in _ENERGY_NAMES.values()
    }, line  # every measured energy is on the line
    assert "CO₂e " in line, line
    of = line.split("CO₂e ", 1)[1]
    if len(shown) > 1:
        assert " (from " in of, line
        names = of.split(" (from ", 1)[1].rstrip(")").split(" + ")
    else:
        names = list(shown)
    assert set(names) <= set(shown), line  # of energies the line shows
    grams = sum(energies[_ENERGY_NAMES[n]] for n in names) / 3.6e6 * 400
    assert of.startswith(friendly_grams(grams) + (" (" if len(shown) > 1 else "")), line
    if "system_power" in energies:
        assert names == ["system energy"], line  # it covers the rest: nothing counted twice


def test_energy_of_a_task_shorter_than_its_source_update_period_is_marked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 0.3 s task with a 15 s Prometheus scrape: its energy and CO₂e show ``≈``, the note counts.

    The file's ``*_energy_short_task`` flags were never shown before: the figure looked as
    exact as any other.
    """
    short = {"label": "step", "status": "finished", "duration": 0.3, "system_power": 42.5}
    short |= {"system_energy_source": "prometheus", "system_energy_short_task": True}
    long = {"label": "fit", "status": "finished", "duration": 60.0, "system_power": 8100.0}
    long |= {"system_energy_source": "prometheus", "system_energy_short_task": False}
    root = {"label": "run", "status": "finished", "duration": 61.0, "subtasks": [short, long]}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(root))
    assert main(["show", "--carbon-intensity", "400", str(path)]) == 0
    out = capsys.readouterr().out
    (step,) = [line for line in out.splitlines() if "step" in line]
    (fit,) = [line for line in out.splitlines() if "fit" in line]
    assert "system energy ≈42.5 J" in step, step
    assert "CO₂e ≈" in step, step
    assert "≈" not in fit, fit
    assert "≈: 1 task shorter than the energy source's update period" in out, out
