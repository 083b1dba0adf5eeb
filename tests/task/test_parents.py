"""How a starting task finds its parent; the warning for a thread's task cut off (task.parents)."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from opentelemetry import trace

from tasktrace import ContextThreadPoolExecutor, Task

LOGGER = "tasktrace.task.parents"


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def _fold(i: int) -> object:
    with Task(f"fold {i}") as t:
        return t.parent_id


def test_a_plain_thread_pool_s_tasks_are_named_once_as_cut_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A new user's repro: a plain ThreadPoolExecutor under a task; one warning, with the fix."""
    caplog.set_level(logging.WARNING, LOGGER)
    with Task("cv") as cv, ThreadPoolExecutor(2) as pool:
        parents = list(pool.map(_fold, range(4)))
    assert parents == [None] * 4  # as documented: a new thread starts from an empty context
    assert cv.subtasks == []
    (message,) = _warnings(caplog)
    assert "task 'fold " in message
    assert "while task 'cv' runs in the main thread" in message
    assert "ContextThreadPoolExecutor" in message
    assert "parent=" in message


def test_nothing_is_said_where_the_threads_tasks_are_meant_to_be_their_own(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No warning: the context carried, no task in the main thread, or under a current span."""
    caplog.set_level(logging.WARNING, LOGGER)
    with Task("cv") as cv, ContextThreadPoolExecutor(2) as pool:
        assert list(pool.map(_fold, range(2))) == [cv.task_id] * 2
    with ThreadPoolExecutor(2) as pool:  # no task runs in the main thread: workers' own roots
        assert list(pool.map(_fold, range(2))) == [None] * 2

    def in_request(i: int) -> object:  # a web framework's request span in the worker thread
        with trace.get_tracer("web").start_as_current_span("GET /"):
            return _fold(i)

    with Task("serve"), ThreadPoolExecutor(2) as pool:
        list(pool.map(in_request, range(2)))
    assert _warnings(caplog) == []


def test_a_main_thread_root_that_finished_is_not_named(caplog: pytest.LogCaptureFixture) -> None:
    """Only a task still running in the main thread counts (finished ones are let go)."""
    caplog.set_level(logging.WARNING, LOGGER)
    for i in range(3):
        with Task(f"earlier {i}"):
            pass
    worker = threading.Thread(target=_fold, args=(0,))
    worker.start()
    worker.join()
    assert _warnings(caplog) == []
