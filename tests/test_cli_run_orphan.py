"""A `tasktrace run` killed by SIGKILL takes its command with it (no orphan under PID 1)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .export_helpers import clean_env

_COMMAND = """
import os, sys, time
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs: it exists and is not a zombie (killed, waiting to be reaped)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_command_dies_with_a_sigkilled_run(tmp_path: Path) -> None:
    """SIGKILL to a real `tasktrace run`: its command is gone within a second.

    Before: the command kept running (sleeping its 60 s), reparented to PID 1.
    """
    ready = tmp_path / "pid"
    run = [sys.executable, "-m", "tasktrace.cli", "run", "-q", "-f", str(tmp_path / "run.json")]
    wrapper = subprocess.Popen(
        [*run, "--", sys.executable, "-c", _COMMAND, str(ready)],
        env=clean_env(),
        cwd=tmp_path,
    )
    command = None
    try:
        deadline = time.monotonic() + 120  # the start: over 20 s when loaded
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), "the command never started"
        command = int(ready.read_text())
        assert _alive(command)
        wrapper.send_signal(signal.SIGKILL)
        assert wrapper.wait(timeout=10) == -signal.SIGKILL
        deadline = time.monotonic() + 1.0
        while _alive(command) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(command), "the command outlived tasktrace run (an orphan)"
    finally:
        wrapper.kill()
        wrapper.wait()
        if command is not None and _alive(command):  # the failure above: leave no orphan
            with contextlib.suppress(ProcessLookupError):
                os.kill(command, signal.SIGKILL)
