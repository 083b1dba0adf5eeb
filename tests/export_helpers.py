"""Run small tasktrace scripts in fresh interpreters with a controlled environment."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

EXPORT_WARNING = "tasktrace: span export to"
"""The start of the one warning tasktrace logs when span export fails."""

SDK_FAILURE_LINES = (
    "Transient error",
    "Failed to export",
    "Exporter already shutdown",
    "Shutdown in progress",
    "Channel closed",
)
"""Messages of the OTel exporters' own per-attempt logging, which tasktrace must silence."""

NESTED_WORKLOAD = """
import sys, time
from tasktrace import Task
print("start", time.time(), flush=True)
with Task("experiment", file=sys.argv[1], tags=["exp", "otlp"]):
    with Task("load data"):
        sum(range(20000))
    for epoch in range(2):
        with Task(f"epoch {epoch}", tags=["train"], epoch=epoch):
            sum(range(10000))
    try:
        with Task("evaluate"):
            raise ValueError("boom")
    except ValueError:
        pass
print("end", time.time(), flush=True)
"""
"""A script writing a 5-task tree (one failed task) to the file named by its first argument."""


@dataclass
class ScriptRun:
    """The outcome of :func:`run_script`."""

    returncode: int
    stdout: str
    stderr: str
    pid: int
    exit_s: float | None
    """Seconds from the script's ``end`` line to the end of its exit handlers (:func:`run_script`).

    None: no ``end`` line, or the exit handlers did not all run (``os._exit``, a signal).
    """

    def sdk_failure_lines(self) -> list[str]:
        """Lines of stderr from the OTel exporters' own failure logging (not tasktrace's)."""
        return [
            line
            for line in self.stderr.splitlines()
            if EXPORT_WARNING not in line and any(m in line for m in SDK_FAILURE_LINES)
        ]

    def export_warnings(self) -> list[str]:
        """Lines of stderr that are tasktrace's export warning."""
        return [line for line in self.stderr.splitlines() if EXPORT_WARNING in line]


def clean_env(**extra: str) -> dict[str, str]:
    """Return the current environment without OTEL_* / TASKTRACE_* variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TASKTRACE_"))}
    env.update(extra)
    return env


EXIT_MARGIN_S = 1.0
"""Seconds of a program's exit beyond tasktrace's exit bound that :attr:`ScriptRun.exit_s` allows.

The last export attempt's answer, the exit report and the OTel SDK's own shutdown, on a loaded
2-core machine; interpreter start-up and teardown are not in :attr:`ScriptRun.exit_s`.
"""

_EXIT_MARK = (
    "import atexit as _mark_exit, time as _mark_time\n"
    "_mark_exit.register(lambda: open({path!r}, 'w').write(repr(_mark_time.time())))\n"
)
"""First lines of every script: the first exit handler registered, so it runs last (LIFO)."""


def run_script(
    code: str, folder: Path, env: dict[str, str], *args: str, timeout_s: float = 60.0
) -> ScriptRun:
    """Write ``code`` to ``folder/script.py``, run it with ``args`` and ``env``; wait for exit.

    If the script prints a line ``end <time.time()>`` (after its own work, as its last line),
    :attr:`ScriptRun.exit_s` is the time from that moment to the end of the program's exit
    handlers: the script's first lines register a handler (before tasktrace is imported, so it
    runs after tasktrace's and the OTel SDK's, :mod:`atexit` being last in, first out) that
    writes the time to ``folder/exit-handlers-done``. So the time measured is the exit's wait
    for threads and its handlers' work, without the interpreter's start-up and teardown (4 s
    of them seen on a loaded 2-core machine). ``timeout_s`` bounds the whole process (a hang).
    """
    script = folder / "script.py"
    done = folder / "exit-handlers-done"
    done.unlink(missing_ok=True)
    script.write_text(_EXIT_MARK.format(path=str(done)) + textwrap.dedent(code))
    proc = subprocess.Popen(
        [sys.executable, str(script), *args],
        env=env,
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = proc.communicate(timeout=timeout_s)
    end = [line.split()[1] for line in stdout.splitlines() if line.startswith("end ")]
    handlers_done = float(done.read_text()) if done.exists() else None
    return ScriptRun(
        returncode=proc.returncode,
        stdout=stdout,
        stderr=stderr,
        pid=proc.pid,
        exit_s=handlers_done - float(end[-1]) if end and handlers_done is not None else None,
    )


ROOT_CHILD_WORKLOAD = """
import time
from tasktrace import Task
with Task("root"):
    with Task("child"):
        time.sleep(0.35)
"""
"""A script running a task "root" with one subtask "child" (0.35 s)."""


def run_workload(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run :data:`ROOT_CHILD_WORKLOAD` in ``cwd`` with :func:`clean_env` plus ``env``; check it."""
    return subprocess.run(
        [sys.executable, "-c", ROOT_CHILD_WORKLOAD],
        env=clean_env(**env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


TIME_PRECISION_S = 0.5e-6
"""Half of 1 µs: a span's times are rounded to 1 µs (``core.spans.TIME_DECIMALS``)."""

SPAN_PRECISION = 0.5e-3
"""Half of the coarsest span rounding (1 mJ for NVML energy, ``core.spans.ENERGY_DECIMALS``)."""


def same_to_span_precision(back: object, original: object, path: str = "task") -> None:
    """Assert that ``back`` (through spans) equals ``original`` but for floats rounded by spans.

    Compares nested dicts and lists (``model_dump()`` output) exactly, except that floats
    may differ by :data:`SPAN_PRECISION` (relative 1e-12 for huge values), and times
    (``duration``, ``cpu_time``) by :data:`TIME_PRECISION_S`. The assertion names the path.
    """
    if isinstance(original, dict) and isinstance(back, dict):
        assert back.keys() == original.keys(), path
        for key, value in original.items():
            same_to_span_precision(back[key], value, f"{path}.{key}")
    elif isinstance(original, list) and isinstance(back, list):
        assert len(back) == len(original), path
        for i, (b, o) in enumerate(zip(back, original, strict=True)):
            same_to_span_precision(b, o, f"{path}[{i}]")
    elif isinstance(original, float) and isinstance(back, float):
        tol = TIME_PRECISION_S if path.rsplit(".", 1)[-1] in {"duration", "cpu_time"} else None
        limit = max(tol or SPAN_PRECISION, abs(original) * 1e-12)
        assert abs(back - original) <= limit, f"{path}: {back!r} != {original!r}"
    else:
        assert back == original, f"{path}: {back!r} != {original!r}"


def is_microsecond_rounding(attribute: object, measured: float | None) -> bool:
    """Whether a span's time ``attribute`` is ``measured`` seconds rounded to 1 µs.

    The nearest whole microsecond, or the neighbour where ``measured`` lies within a rounding
    error of a half step: within 0.5 µs of ``measured``, and a value of 6 decimals.
    """
    if not isinstance(attribute, float) or measured is None:
        return False
    return abs(attribute - measured) <= 5.000001e-7 and attribute == round(attribute, 6)


def file_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Return the messages of the warnings logged by ``tasktrace.tree.files`` (task files)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "tasktrace.tree.files" and r.levelno == logging.WARNING
    ]
