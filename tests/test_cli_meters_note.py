"""The energy note of `run`, `show` and the report: which meters measured, why the others not."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tasktrace import Task
from tasktrace.cli import main
from tasktrace.core.ids import HOSTNAME
from tasktrace.core.units import friendly_bytes, friendly_duration
from tasktrace.meters.base import MeterCheck, meter_available, meter_checks

from .cli_helpers import run_cli
from .export_helpers import clean_env
from .meters.energy_helpers import RaplTree

NVML_MISSING = "nvidia-ml-py is not installed (pip install 'tasktrace[nvml]')"
NO_PROMETHEUS = "no Prometheus URL is set ([prometheus] url, TASKTRACE_PROMETHEUS__URL)"
NO_DRAM = [
    "what the rest needs:",
    "  DRAM energy needs RAPL dram zones (an intel-rapl:N:M zone named dram, readable as the "
    "CPU's; many CPUs and most virtual machines have none)",
]
RECORDED = {
    "rapl": {"available": True},
    "nvml": {"available": False, "reason": NVML_MISSING},
    "prometheus": {"available": False, "reason": NO_PROMETHEUS},
}


def _env(folder: Path, rapl_root: Path) -> dict[str, str]:
    """Return an environment where RAPL is read at ``rapl_root`` and ``import pynvml`` fails."""
    stub = folder / "no-nvml"
    stub.mkdir()
    (stub / "pynvml.py").write_text("raise ImportError('nvidia-ml-py is not installed')\n")
    env = clean_env(TASKTRACE_ENERGY__RAPL_ROOT=str(rapl_root), PYTHONPATH=str(stub))
    return env


def _file(path: Path, hostname: str, **fields: Any) -> Path:
    """Write a one-task file from ``hostname`` with ``fields`` (energy, a meters record)."""
    task = {"task_id": str(uuid.uuid4()), "label": "job", "hostname": hostname}
    task.update(status="finished", duration=2.0, cpu_time=1.0, **fields)
    path.write_text(json.dumps(task))
    return path


def test_run_says_which_meters_measured_and_why_the_others_did_not(tmp_path: Path) -> None:
    """The end of `run`: the energy measured, each other meter's reason with its fix; recorded."""
    rapl = RaplTree(tmp_path / "powercap")
    rapl.zone("intel-rapl:0", "package-0", 10_000_000)
    out = tmp_path / "run.json"
    done = run_cli(
        ["run", "-f", str(out), "-l", "job", "true"], tmp_path, _env(tmp_path, rapl.root)
    )
    assert done.returncode == 0, done.stderr
    note = done.stderr.splitlines()[1:]
    assert note == [
        "energy: CPU energy in 1 of 1 tasks, from rapl (package); no GPU energy, no system "
        "energy, no DRAM energy",
        "why (this run's meters):",
        f"  nvml: not available: {NVML_MISSING}",
        f"  prometheus: not available: {NO_PROMETHEUS}",
        *NO_DRAM,  # RAPL measured the CPU: only its missing DRAM zone can say why
    ]
    assert json.loads(out.read_text())["meters"] == RECORDED


def test_show_gives_the_reasons_the_file_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`show` of a `run` file from another machine: the file's energy and its recorded reasons."""
    path = _file(
        tmp_path / "run.json",
        "elsewhere",
        cpu_power=12.0,
        cpu_energy_source="rapl",
        cpu_energy_scope="package",
        meters=RECORDED,
    )
    assert main(["show", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        "energy: CPU energy in 1 of 1 tasks, from rapl (package); no GPU energy, no system "
        "energy, no DRAM energy",
        "why (recorded on elsewhere):",
        f"  nvml: not available: {NVML_MISSING}",
        f"  prometheus: not available: {NO_PROMETHEUS}",
        *NO_DRAM,
    ]


def test_show_of_another_machines_file_says_what_each_missing_measure_needs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a record, from another machine: what each missing energy needs, no local meters."""
    path = _file(tmp_path / "lib.json", "elsewhere", gpu_power=3.0)
    assert main(["show", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        "energy: GPU energy in 1 of 1 tasks; no CPU energy, no system energy, no DRAM energy",
        "what each needs:",
        "  CPU energy needs a readable RAPL counter (/sys/class/powercap, often root-only) or a "
        "Prometheus cpu power query for the machine",
        "  system energy comes only from a Prometheus system power query for the machine",
        NO_DRAM[1],
    ]


def test_show_of_this_machines_file_checks_this_machines_meters(tmp_path: Path) -> None:
    """Without a record, written here: this machine's meters now say why, labelled as such."""
    empty = tmp_path / "no-powercap"
    empty.mkdir()
    path = _file(tmp_path / "lib.json", HOSTNAME)
    done = run_cli(["show", str(path)], tmp_path, _env(tmp_path, empty))
    assert done.returncode == 0, done.stderr
    note = done.stdout.splitlines()[1:]
    assert note[:3] == [
        "energy: no CPU energy, no GPU energy, no system energy, no DRAM energy",
        "why (this machine's meters now):",
        f"  rapl: not available: no RAPL zones under {empty} (no powercap RAPL here: a virtual "
        "machine, a container without /sys/class/powercap, or a CPU without RAPL); a Prometheus "
        "power query can measure such a machine",
    ]
    assert note[3:] == [
        f"  nvml: not available: {NVML_MISSING}",
        f"  prometheus: not available: {NO_PROMETHEUS}",
    ]


def test_report_facts_give_the_recorded_reasons(tmp_path: Path) -> None:
    """The HTML report's facts list each recorded meter: available, or why not (escaped)."""
    path = _file(tmp_path / "run.json", "elsewhere", meters=RECORDED)
    out = tmp_path / "report.html"
    assert main(["report", str(path), "-o", str(out)]) == 0
    page = out.read_text()
    assert "<dt>meters</dt>" in page
    assert "rapl: available" in page
    assert "nvml: not available: nvidia-ml-py is not installed (pip install &#x27;tasktrace" in page


class _Meter:
    """A meter whose availability check answers ``available``, or raises it."""

    reason = "the fixture says no"

    def __init__(self, name: str, available: bool | Exception) -> None:
        self.name = name
        self.answer = available

    def available(self) -> bool:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    def start(self) -> None:
        return None

    def read(self, snapshot: object, elapsed_s: float, *, final: bool) -> dict[str, Any]:
        return {}


def test_meter_checks_record_each_outcome_without_an_exceptions_text() -> None:
    """Each check is recorded: available, the meter's reason, or only the type of what it raised."""
    secret = "token=s3cret"
    for meter in (_Meter("yes", True), _Meter("no", False), _Meter("broken", ValueError(secret))):
        meter_available(meter)
    checks = meter_checks()
    assert checks["yes"] == MeterCheck("yes", available=True)
    assert checks["no"] == MeterCheck("no", available=False, reason="the fixture says no")
    assert checks["broken"] == MeterCheck(
        "broken", False, "its availability check raised ValueError"
    )


def test_every_built_in_meter_that_cannot_measure_says_why() -> None:
    """After a task, each built-in meter checked is available or has a reason of its own.

    Seen failing before the fix (docs persona): ``torch-gpu-memory`` was recorded with
    ``reason='it gave no reason'`` on a machine without a GPU driver.
    """
    with Task("x"):
        pass
    checks = meter_checks()
    for name in ("rapl", "nvml", "prometheus", "torch-gpu-memory"):  # other tests add their own
        check = checks[name]
        if check.available:
            continue
        assert check.reason, (name, check)
        assert "it gave no reason" not in check.reason, (name, check)


def test_report_hover_names_the_commands_peak_and_its_cpu_in_no_task(tmp_path: Path) -> None:
    """A `run` file's report: the root's hover has the command's peak RSS and CPU in no task.

    Its peak RSS is the command's, as in ``show``; tasktrace's own is named beside it.
    """
    run, out = tmp_path / "run.json", tmp_path / "report.html"
    big = "x = bytearray(300_000_000)"
    command = ["run", "-q", "-f", str(run), "--", sys.executable, "-c", big]
    done = run_cli(command, tmp_path)
    assert done.returncode == 0, done.stderr
    task = Task.model_validate_json(run.read_text())
    assert task.children_peak_rss_bytes is not None, (task.peak_memory, done.stderr)
    assert task.children_cpu_time_s is not None
    assert main(["report", str(run), "-o", str(out)]) == 0
    page = out.read_text()
    line_break = "\\u003cbr\\u003e"  # <br> as plotly's figure JSON holds it
    assert f"{line_break}peak RSS: {friendly_bytes(task.children_peak_rss_bytes)}" in page
    assert task.peak_memory is not None
    assert f"tasktrace's peak RSS: {friendly_bytes(task.peak_memory)}" in page
    assert f"command's CPU in no task: {friendly_duration(task.children_cpu_time_s)}" in page


LIBRARY_RUN = """
import sys
from tasktrace import Task
with Task("job", file=sys.argv[1]):
    with Task("step"):
        pass
    with Task("inner", file=sys.argv[2]):
        pass
"""


def test_a_library_root_with_a_file_records_the_meters_as_run_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`Task("job", file=...)` records this machine's meters as `tasktrace run` does; read back.

    Only the root with the file: not its subtasks, nor a nested task with a file of its own.
    `show` on another machine then explains the missing energy with the recording machine's
    reasons. Before: no ``meters`` in the file, so `show` elsewhere could only say what each
    missing measure needs.
    """
    rapl = RaplTree(tmp_path / "powercap")
    rapl.zone("intel-rapl:0", "package-0", 10_000_000)
    root_file, inner_file = tmp_path / "job.json", tmp_path / "inner.json"
    script = tmp_path / "job.py"
    script.write_text(LIBRARY_RUN)
    done = subprocess.run(
        [sys.executable, str(script), str(root_file), str(inner_file)],
        env=_env(tmp_path, rapl.root),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    root = json.loads(root_file.read_text())
    assert root["meters"] == RECORDED
    assert [("meters" in sub) for sub in root["subtasks"]] == [False, False]
    assert "meters" not in json.loads(inner_file.read_text())
    root["hostname"] = "elsewhere"  # read on another machine: its own meters say nothing
    root_file.write_text(json.dumps(root))
    assert main(["show", str(root_file)]) == 0
    note = capsys.readouterr().out.splitlines()[3:]  # after the root and its two subtasks
    note[0] = note[0].split("; ≈:")[0]  # the two sub-millisecond subtasks: RAPL's flag (1 ms)
    assert note == [
        "energy: CPU energy in 3 of 3 tasks, from rapl (package); no GPU energy, no system "
        "energy, no DRAM energy",
        "why (recorded on elsewhere):",
        f"  nvml: not available: {NVML_MISSING}",
        f"  prometheus: not available: {NO_PROMETHEUS}",
        *NO_DRAM,
    ]
