"""A fork while another thread holds tasktrace's locks: the child's tasks never hang."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from tasktrace import Task, TaskStatus
from tasktrace.meters.process import rss_marks
from tasktrace.tree.processor import tree


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_fork_while_locks_are_held_does_not_hang_the_child(tmp_path: Path) -> None:
    """The refresh-thread and high-water-mark locks held at fork() are fresh in the child.

    (The tree's lock is taken by tasktrace's own before-fork hook, so it is never held then.)
    """
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with tree.monitor._lock, rss_marks._lock:  # as the refresh thread and a reset might
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(10)
    path = tmp_path / "child.json"
    pid = os.fork()
    if pid == 0:  # the child: before the fix, its first task waited for ever
        code = 1
        try:
            with Task("in child", file=path, reset_hwm=True):
                pass
            code = 0
        finally:
            os._exit(code)
    release.set()
    holder.join()
    deadline = time.monotonic() + 20
    status = None
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung on a lock held at fork()")
    assert os.waitstatus_to_exitcode(status) == 0
    assert Task.model_validate_json(path.read_text()).status is TaskStatus.FINISHED
