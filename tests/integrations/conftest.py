"""Engine tests: a stuck worker process is reported (its stacks and signal state), then killed.

pytest-timeout fails a test that runs past its limit, but it only shows this process's threads;
an engine worker that does not exit (a forked pool worker ignoring ``SIGTERM``) would keep
``Pool.terminate()`` waiting, and the next test with it. Each test here gets a watchdog: past
:data:`WATCHDOG_S` it writes, for every child process, its ``/proc`` signal masks and its Python
stacks (``faulthandler``, registered on ``SIGUSR1`` before any worker is forked, so forked
workers inherit it), then kills the children, so the test fails with the evidence instead of
hanging until the time limit.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

import psutil
import pytest

WATCHDOG_S = 150.0
"""Seconds a test may run before its child processes are reported and killed."""

faulthandler.register(signal.SIGUSR1, all_threads=True)


def _report(child: psutil.Process) -> None:
    try:
        with open(f"/proc/{child.pid}/status") as f:
            status = {
                line.split(":")[0]: line.split(":", 1)[1].strip()
                for line in f
                if line.startswith(("State", "SigBlk", "SigIgn", "SigCgt"))
            }
        print(f"watchdog: child {child.pid} {child.cmdline()[:3]} {status}", file=sys.stderr)
        os.kill(child.pid, signal.SIGUSR1)  # faulthandler: the child's Python stacks
    except (OSError, psutil.Error) as e:
        print(f"watchdog: child {child.pid}: {e!r}", file=sys.stderr)


def _report_and_kill_children() -> None:
    children = psutil.Process().children(recursive=True)
    for child in children:
        _report(child)
    time.sleep(2)
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.kill()


@pytest.fixture(autouse=True)
def _watchdog() -> Iterator[None]:
    """Report and kill this test's child processes if it runs past WATCHDOG_S."""
    done = threading.Event()

    def watch() -> None:
        if not done.wait(WATCHDOG_S):
            print(f"watchdog: test still running after {WATCHDOG_S} s", file=sys.stderr)
            _report_and_kill_children()

    thread = threading.Thread(target=watch, name="engine-test-watchdog", daemon=True)
    thread.start()
    yield
    done.set()
