"""The record batcher of engine workers (:mod:`tasktrace.integrations.batching`), in one process."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from tasktrace import Task
from tasktrace.integrations import batching
from tasktrace.integrations.batching import Batch, RecordBatcher
from tasktrace.task.carriers import capture, remote_scope

pytestmark = pytest.mark.timeout(60)


def test_a_root_finishing_as_a_batch_is_made_still_goes_home(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A root that finishes between a batch's hand-on and its making goes with the next batch.

    Before: the batch forgot the finished root (not handed on yet) and was sent as idle; the
    batcher's thread sent nothing more until another root started, and the collector took the
    worker for idle, so a drain did not wait for it: the record never came home (seen in Ray:
    an async actor's last method calls, missing from the driver's task file).
    """
    with Task("submitter"):
        carrier = capture()
    assert carrier is not None
    remote = dataclasses.replace(carrier, origin_pid=1, origin_host="another-node")
    real = batching.hand_on_finished
    calls = 0
    in_window, finished = threading.Event(), threading.Event()

    others = set(threading.enumerate())  # batcher threads of other tests call it too

    def hand_on_then_let_the_root_finish() -> None:
        nonlocal calls
        real()
        if threading.current_thread() in others:
            return
        calls += 1
        if calls == 2:  # the first batch after the start mark: nothing new since it
            in_window.set()
            finished.wait(10)

    monkeypatch.setattr(batching, "hand_on_finished", hand_on_then_let_the_root_finish)
    batches: list[Batch] = []
    batcher = RecordBatcher("worker", batches.append, interval_s=0.01)
    with remote_scope(remote, on_started=batcher.started, on_finished=batcher.finished):
        with Task("late"):
            assert in_window.wait(10)
        finished.set()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(b.records for b in batches):
        time.sleep(0.01)
    while time.monotonic() < deadline and not (batches and batches[-1].idle):
        time.sleep(0.01)  # then idle, once the record went
    records = [r for b in batches for r in b.records]
    assert len(records) == 1, batches
    assert '"late"' in records[0]
    assert batches[-1].idle
