"""`tasktrace run` records the command's CPU time and peak RSS however the run ends.

Each case runs `tasktrace run` as a real process on a real command that holds a known amount of
memory and burns CPU, then ends one way: stopped by a signal sent to `tasktrace run` (SIGTERM,
SIGHUP, as a job manager does), by Ctrl-C to the process group, or by itself (exit 0, exit 3,
killed by SIGKILL). The command reports its own usage once it has done its work; the run's
``children_*`` fields, from ``wait4``, can only be at least that.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasktrace import Task, TaskStatus
from tasktrace.meters.process import MAXRSS_UNIT

_MARGIN_BYTES = 128 << 20


def _held_bytes() -> int:
    """Return what the command holds: more than `tasktrace run`'s own peak, so that it shows.

    `tasktrace run` started straight from this process inherits this process's peak RSS
    (Linux keeps ``ru_maxrss`` across ``vfork`` + ``exec``), so the command holds more.
    """
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * MAXRSS_UNIT
    return own + _MARGIN_BYTES


_COMMAND = """
import os, resource, signal, sys, time
from pathlib import Path

ready, mode, held_bytes = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
held = b"x" * held_bytes  # written, so resident
start = time.process_time()
while time.process_time() - start < 0.2:
    pass
usage = resource.getrusage(resource.RUSAGE_SELF)
ready.with_suffix(".tmp").write_text(f"{usage.ru_utime + usage.ru_stime} {usage.ru_maxrss}")
ready.with_suffix(".tmp").rename(ready)
if mode == "wait":
    time.sleep(30)
elif mode == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
sys.exit(3 if mode == "fail" else 0)
"""


def _default_sigint() -> None:
    # A job started in the background by a shell without job control inherits SIGINT ignored;
    # a terminal's foreground job, which gets Ctrl-C, has it at its default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize(
    ("mode", "signum", "group", "code"),
    [
        ("wait", signal.SIGTERM, False, 128 + signal.SIGTERM),
        ("wait", signal.SIGHUP, False, 128 + signal.SIGHUP),
        ("wait", signal.SIGINT, True, 128 + signal.SIGINT),
        ("ok", None, False, 0),
        ("fail", None, False, 3),
        ("kill", None, False, 128 + signal.SIGKILL),
    ],
    ids=["sigterm-to-run", "sighup-to-run", "ctrl-c-to-group", "exit-0", "exit-3", "sigkill"],
)
def test_the_commands_cpu_and_peak_rss_are_recorded_however_the_run_ends(
    tmp_path: Path, mode: str, signum: int | None, group: bool, code: int
) -> None:
    """Signals to the run, Ctrl-C, success, failure, a kill: children_* are always recorded."""
    out, ready, script = tmp_path / "run.json", tmp_path / "ready", tmp_path / "command.py"
    script.write_text(_COMMAND)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TASKTRACE_"))}
    argv = [sys.executable, "-m", "tasktrace.cli", "run", "-q", "-f", str(out), "--"]
    held = _held_bytes()
    argv += [sys.executable, str(script), str(ready), mode, str(held)]
    proc = subprocess.Popen(
        argv,
        env=env,
        cwd=tmp_path,
        start_new_session=True,  # its own process group, as a terminal's job
        preexec_fn=_default_sigint,  # noqa: PLW1509 - a test; no threads fork here
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), "the command never got to its end"
        if signum is not None and group:
            os.killpg(proc.pid, signum)
        elif signum is not None:
            proc.send_signal(signum)
        assert proc.wait(timeout=30) == code
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    cpu_s, maxrss = ready.read_text().split()
    task = Task.model_validate_json(out.read_bytes())
    assert task.exit_code == code
    assert task.children_cpu_time_s is not None
    assert task.children_cpu_time_s >= float(cpu_s)
    assert task.children_peak_rss_bytes is not None
    assert task.children_peak_rss_bytes >= int(maxrss) * MAXRSS_UNIT >= held


_SURVIVOR = """
import sys, time
from pathlib import Path
Path(sys.argv[1]).touch()
time.sleep(1)
"""


def _ignore_sighup() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as nohup leaves it


def test_under_nohup_a_sighup_is_ignored_by_the_run_as_by_the_command(tmp_path: Path) -> None:
    """`nohup tasktrace run ...`: a SIGHUP neither cancels the run nor reaches the command."""
    out, ready, script = tmp_path / "run.json", tmp_path / "ready", tmp_path / "command.py"
    script.write_text(_SURVIVOR)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TASKTRACE_"))}
    argv = [sys.executable, "-m", "tasktrace.cli", "run", "-q", "-f", str(out), "--"]
    proc = subprocess.Popen(
        [*argv, sys.executable, str(script), str(ready)],
        env=env,
        cwd=tmp_path,
        preexec_fn=_ignore_sighup,  # noqa: PLW1509 - a test; no threads fork here
    )
    deadline = time.monotonic() + 60
    while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists(), "the command never started"
    proc.send_signal(signal.SIGHUP)
    assert proc.wait(timeout=30) == 0
    task = Task.model_validate_json(out.read_bytes())
    assert (task.status, task.exit_code, task.error) == (TaskStatus.FINISHED, 0, None)
