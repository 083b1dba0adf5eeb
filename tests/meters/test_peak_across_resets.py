"""A high-water-mark reset never loses the process's peak: tasktrace keeps it, and reports it.

A top-level task resets the kernel's RSS high-water mark at its start (the seed's rule), after
which ``getrusage``, ``wait4`` and ``/usr/bin/time`` give the peak since that reset. A program
that loads 200 MiB of data before its first task, frees it and then trains under a task peaked
at 200 MiB and more: ``tasktrace run`` must say so, and the task keeps its own (small) peak.
Each case runs the program as a real process (under ``tasktrace run`` where it says so).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ..cli_helpers import run_cli
from ..export_helpers import clean_env

MIB = 1 << 20
ALLOCATED = 200 * MIB
"""What the programs allocate, touch and free before (or between) tasks."""

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the RSS high-water mark resets only on Linux"
)

# Loads a dataset outside any task, frees it, then trains under a top-level task. Prints the
# kernel's peak (VmHWM, the figure a reset clears; ru_maxrss also keeps the peak a thread that
# exited since saw) after the task, the task's peak and its extra data, as JSON.
_LOAD_THEN_TRAIN = """
import json, re, resource, sys
from tasktrace import Task

data = bytearray(b"\\x01") * int(sys.argv[1])  # every page written: resident
del data
with Task("train") as train:
    weights = bytearray(b"\\x01") * (8 << 20)
    del weights
print(json.dumps({
    "vm_hwm": int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read())[1]) * 1024,
    "peak_memory": train.peak_memory,
    "extra": train.__pydantic_extra__ or {},
}))
"""

# The same, then the process's peak as tasktrace keeps it, on a line of its own.
_LOAD_THEN_TRAIN_THEN_LIFETIME = (
    _LOAD_THEN_TRAIN
    + """
from tasktrace.meters.process import rss_marks
print(json.dumps({"lifetime_peak": rss_marks.lifetime_peak()}))
"""
)

# Two top-level tasks in turn: a big one, then a small one.
_BIG_TASK_THEN_SMALL_TASK = """
import json, sys
from tasktrace import Task

with Task("big") as big:
    data = bytearray(b"\\x01") * int(sys.argv[1])
    del data
with Task("small") as small:
    data = bytearray(b"\\x01") * (8 << 20)
    del data
print(json.dumps({
    t.label: {"peak_memory": t.peak_memory, "extra": t.__pydantic_extra__ or {}}
    for t in (big, small)
}))
"""

# mem.py of the report: two subtasks with reset_hwm=True, a big one and then a small one.
_BIG_THEN_SMALL = """
import json, re, resource, sys
from tasktrace import Task

with Task("mem") as root:
    with Task("big", reset_hwm=True) as big:
        data = bytearray(b"\\x01") * int(sys.argv[1])
        del data
    with open("/proc/self/statm") as f:
        before_small = int(f.read().split()[1]) * resource.getpagesize()
    with Task("small", reset_hwm=True) as small:
        data = bytearray(b"\\x01") * (8 << 20)
        del data
print(json.dumps({
    "vm_hwm": int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read())[1]) * 1024,
    "rss_before_small": before_small,
    "peaks": {t.label: t.peak_memory for t in (root, big, small)},
}))
"""


def _script(folder: Path, code: str) -> Path:
    path = folder / "program.py"
    path.write_text(textwrap.dedent(code))
    return path


def _run_alone(folder: Path, code: str, **env: str) -> list[dict]:
    """Run the program with plain Python (no ``tasktrace run``); return its JSON lines."""
    done = subprocess.run(
        [sys.executable, str(_script(folder, code)), str(ALLOCATED)],
        cwd=folder,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def _run_under_tasktrace_run(folder: Path, code: str) -> tuple[dict, dict]:
    """Run the program under ``tasktrace run -q -f``; return its JSON line and the task file."""
    out = folder / "run.json"
    done = run_cli(
        [
            "run",
            "-q",
            "-f",
            str(out),
            "--",
            sys.executable,
            str(_script(folder, code)),
            str(ALLOCATED),
        ],
        folder,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), json.loads(out.read_text())


def test_a_top_level_task_keeps_the_peak_its_reset_took_from_the_kernel(tmp_path: Path) -> None:
    """Its own peak stays small; the process's peak before it is recorded as extra data."""
    printed, lifetime = _run_alone(tmp_path, _LOAD_THEN_TRAIN_THEN_LIFETIME)
    # The reset took the 200 MiB from the kernel's figure: what getrusage reports now.
    assert printed["vm_hwm"] < ALLOCATED, printed
    assert printed["peak_memory"] < ALLOCATED, printed  # the task's own peak, unchanged
    assert printed["extra"]["peak_memory_before"] >= ALLOCATED, printed
    assert lifetime["lifetime_peak"] >= ALLOCATED, lifetime


def test_the_reset_hwm_setting_keeps_the_kernels_mark_whole(tmp_path: Path) -> None:
    """``TASKTRACE_RESET_HWM=false``: no reset, so the kernel's figure and the task hold 200 MiB.

    For a program whose peak another tool reads (``/usr/bin/time``, a scheduler). Seen failing
    before the setting: the variable was ignored and ``VmHWM`` said less than 200 MiB.
    """
    (printed,) = _run_alone(tmp_path, _LOAD_THEN_TRAIN, TASKTRACE_RESET_HWM="false")
    assert printed["vm_hwm"] >= ALLOCATED, printed  # the kernel's mark was never reset
    assert printed["peak_memory"] >= ALLOCATED, printed  # the process's peak since it started
    assert "peak_memory_before" not in printed["extra"], printed  # nothing was taken


def test_a_tasks_own_reset_hwm_wins_over_the_setting(tmp_path: Path) -> None:
    """With the setting off, ``Task(..., reset_hwm=True)`` still resets: its peak is its own."""
    code = _LOAD_THEN_TRAIN.replace('Task("train")', 'Task("train", reset_hwm=True)')
    (printed,) = _run_alone(tmp_path, code, TASKTRACE_RESET_HWM="false")
    assert printed["vm_hwm"] < ALLOCATED, printed
    assert printed["peak_memory"] < ALLOCATED, printed
    assert printed["extra"]["peak_memory_before"] >= ALLOCATED, printed


def test_a_peak_a_task_holds_is_not_repeated_on_the_next(tmp_path: Path) -> None:
    """A big task then a small one: the big peak is the first task's, not the second's data."""
    (printed,) = _run_alone(tmp_path, _BIG_TASK_THEN_SMALL_TASK)
    assert printed["big"]["peak_memory"] >= ALLOCATED, printed
    assert printed["small"]["peak_memory"] < ALLOCATED, printed
    assert "peak_memory_before" not in printed["small"]["extra"], printed


def test_tasktrace_run_reports_a_peak_from_before_the_commands_first_task(
    tmp_path: Path,
) -> None:
    """The run's peak RSS (children_peak_rss_bytes) is the command's, reset or not."""
    printed, run = _run_under_tasktrace_run(tmp_path, _LOAD_THEN_TRAIN)
    assert printed["vm_hwm"] < ALLOCATED, printed  # so wait4 alone says less, too
    assert run["children_peak_rss_bytes"] >= ALLOCATED, run
    (train,) = run["subtasks"]
    assert train["label"] == "train"
    assert train["peak_memory"] == printed["peak_memory"] < ALLOCATED


def test_a_reset_subtask_keeps_its_own_peak_and_the_run_the_commands(tmp_path: Path) -> None:
    """mem.py: the small task after a freed big one reports its own peak; the run the big one."""
    printed, run = _run_under_tasktrace_run(tmp_path, _BIG_THEN_SMALL)
    peaks = printed["peaks"]
    assert peaks["big"] >= ALLOCATED, printed
    assert peaks["mem"] >= peaks["big"], printed
    # The small task's peak is its own: what the process held before it, plus about 8 MiB.
    assert printed["rss_before_small"] <= peaks["small"] < printed["rss_before_small"] + 64 * MIB
    assert printed["vm_hwm"] < ALLOCATED, printed  # the kernel's figure lost the big peak
    assert run["children_peak_rss_bytes"] >= ALLOCATED, run
    (mem,) = run["subtasks"]
    small = next(t for t in mem["subtasks"] if t["label"] == "small")
    assert small["peak_memory"] == peaks["small"]
    assert "peak_memory_before" not in small  # the big peak is big's and mem's, not small's
