"""The background worker thread shared by the late readings, the poller and the refresh thread."""

from __future__ import annotations

import collections
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasktrace.core.worker_thread import WorkerThread


class _Queue:
    """A queue of items drained by a worker, as the late readings' queue is."""

    def __init__(self, name: str = "test-worker", *, fail: tuple[object, ...] = ()) -> None:
        self.items: collections.deque[object] = collections.deque()
        self.done: list[object] = []
        self.fail = fail
        self.release = threading.Event()
        self.release.set()
        self.started = threading.Event()
        self.forked = 0
        self.worker: WorkerThread[object] = WorkerThread(
            name, self.take, self.work, after_fork=self.forget
        )

    def take(self) -> object | None:
        return self.items.popleft() if self.items else None

    def work(self, item: object) -> None:
        self.started.set()
        self.release.wait(10)
        if item in self.fail:
            raise ValueError(f"job {item!r} failed")
        with self.worker.cond:
            self.done.append(item)
            self.worker.cond.notify_all()

    def forget(self) -> None:
        self.forked += 1
        self.items.clear()
        self.done.clear()

    def put(self, *items: object) -> None:
        with self.worker.cond:
            self.items.extend(items)
            self.worker.notify()

    def wait_done(self, count: int, timeout_s: float = 10) -> bool:
        with self.worker.cond:
            return self.worker.cond.wait_for(lambda: len(self.done) >= count, timeout_s)


@pytest.fixture
def queue() -> Iterator[_Queue]:
    """Give the test a worker's queue; its thread is stopped afterwards."""
    q = _Queue()
    yield q
    q.release.set()
    q.worker.stop(5)


def _threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name and t.is_alive()]


def test_no_thread_until_the_first_notify(queue: _Queue) -> None:
    """Creating a worker starts nothing; the first notify starts one daemon thread."""
    before = len(_threads("test-worker"))
    assert not queue.worker.running
    assert len(_threads("test-worker")) == before
    queue.put(1)
    queue.put(2)
    assert queue.wait_done(2)
    assert queue.worker.running
    started = [t for t in _threads("test-worker") if t.daemon]
    assert len(started) == before + 1
    assert queue.done == [1, 2]


def test_notify_wakes_the_idle_thread(queue: _Queue) -> None:
    """A thread waiting with nothing to take runs an item put later, without a timeout."""
    queue.put("first")
    assert queue.wait_done(1)
    time.sleep(0.1)  # the thread is waiting on its condition with no time limit now
    queue.put("second")
    assert queue.wait_done(2, timeout_s=5)
    assert queue.done == ["first", "second"]


def test_idle_s_wakes_the_thread_without_notify() -> None:
    """With ``idle_s``, the thread looks again after that many seconds on its own."""
    due_at = time.monotonic() + 0.2
    ran = threading.Event()
    state = {"taken": False}

    def take() -> str | None:
        if state["taken"] or time.monotonic() < due_at:
            return None
        state["taken"] = True
        return "due"

    def idle_s() -> float | None:
        return None if state["taken"] else max(0.0, due_at - time.monotonic())

    worker: WorkerThread[str] = WorkerThread("test-idle", take, lambda _: ran.set(), idle_s=idle_s)
    with worker.cond:
        worker.notify()  # starts the thread; nothing is due yet
    try:
        assert ran.wait(5)
        assert time.monotonic() >= due_at
    finally:
        worker.stop(5)


def test_stop_waits_for_the_item_in_progress_within_the_limit(queue: _Queue) -> None:
    """stop() waits at most its limit; the item in progress finishes; no item is taken after."""
    queue.release.clear()
    queue.put("slow", "never")
    assert queue.started.wait(5)
    t0 = time.monotonic()
    assert queue.worker.stop(0.3) is False  # the slow item is still running
    waited = time.monotonic() - t0
    assert 0.25 <= waited < 3, waited
    queue.release.set()
    assert queue.wait_done(1)
    deadline = time.monotonic() + 5
    while queue.worker.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not queue.worker.running
    assert queue.done == ["slow"]
    assert list(queue.items) == ["never"]


def test_stop_then_notify_restarts_unless_stopped_for_good(queue: _Queue) -> None:
    """After stop() a notify starts a new thread; after stop(restart=False) none starts."""
    queue.put(1)
    assert queue.wait_done(1)
    assert queue.worker.stop(5) is True
    assert not queue.worker.running
    queue.put(2)
    assert queue.wait_done(2)
    assert queue.worker.running
    assert queue.worker.stop(5, restart=False) is True
    queue.put(3)
    assert not queue.worker.running
    assert not queue.wait_done(3, timeout_s=0.2)
    assert queue.worker.stop(5) is True  # again: nothing left to stop


def test_a_failing_item_is_warned_once_and_the_thread_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An exception from the work is logged once per kind; the next items still run."""
    q = _Queue("test-failing", fail=("bad", "worse"))
    try:
        with caplog.at_level(logging.WARNING, logger="tasktrace.core.worker_thread"):
            q.put("bad", "worse", "good")
            assert q.wait_done(1)
        assert q.done == ["good"]
        assert q.worker.running
        warned = [r.getMessage() for r in caplog.records if "test-failing" in r.getMessage()]
        assert len(warned) == 1, warned
        assert "job 'bad' failed" in warned[0]
    finally:
        q.worker.stop(5)


def test_a_thread_ended_by_take_is_started_again_by_the_next_notify() -> None:
    """``take`` must not raise; if it does, that thread ends and the next notify starts another."""
    boom = [True]
    ran = threading.Event()
    items: collections.deque[int] = collections.deque()

    def take() -> int | None:
        if boom[0]:
            boom[0] = False
            raise KeyError("a bug in take")
        return items.popleft() if items else None

    worker: WorkerThread[int] = WorkerThread("test-take", take, lambda _: ran.set())
    hook, seen = threading.excepthook, []
    threading.excepthook = lambda args: seen.append(args.exc_type)
    try:
        with worker.cond:
            worker.notify()
        deadline = time.monotonic() + 5
        while worker.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not worker.running
        assert seen == [KeyError]
        with worker.cond:
            items.append(1)
            worker.notify()
        assert ran.wait(5)
    finally:
        threading.excepthook = hook
        worker.stop(5)


def _wait_child(pid: int, timeout_s: float = 20) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail("the forked child hung")


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_has_no_thread_a_fresh_condition_and_no_parent_items(
    queue: _Queue,
) -> None:
    """Forked while another thread holds the condition and items wait: the child starts clean.

    The child has a fresh condition (the held one would block it for ever), no thread, the
    owner's ``after_fork`` has forgotten the parent's items, and its first notify starts a
    thread of its own.
    """
    queue.put("parent")
    assert queue.wait_done(1)
    queue.release.clear()
    queue.put("in progress", "queued")
    assert queue.started.wait(5)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with queue.worker.cond:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(5)
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            worker = queue.worker
            clean = (
                not worker.running
                and queue.forked == 1
                and not queue.items
                and not queue.done
                and worker.cond.acquire(timeout=2)
            )
            if clean:
                worker.cond.release()
                queue.release = threading.Event()  # the parent's may be mid-wait: a fresh one
                queue.release.set()
                queue.put("child")
                if queue.wait_done(1, timeout_s=5) and queue.done == ["child"]:
                    code = 0
        finally:
            os._exit(code)
    release.set()
    holder.join()
    queue.release.set()
    assert _wait_child(pid) == 0
    assert queue.wait_done(2)  # the parent's own thread carried on
    assert queue.forked == 0


_AT_EXIT = """
import sys, time
from tasktrace.core.worker_thread import WorkerThread

def at_exit():
    print("at exit", flush=True)

started = WorkerThread("exit-started", lambda: None, print, at_exit=at_exit)
idle = WorkerThread("exit-idle", lambda: None, print, at_exit=at_exit)
with started.cond:
    started.notify()
    started.notify()
started.stop(5)
with started.cond:
    started.notify()  # a second thread: at_exit is registered once all the same
print("exiting", flush=True)
"""


def test_at_exit_runs_once_for_a_started_worker_only(tmp_path: Path) -> None:
    """``at_exit`` is registered when the thread first starts, once (a restart adds none).

    A worker whose thread never started registers nothing.
    """
    script = tmp_path / "exit.py"
    script.write_text(_AT_EXIT)
    run = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["exiting", "at exit"]
