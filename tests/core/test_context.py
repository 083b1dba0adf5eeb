"""Threads and asyncio: the active task per thread / asyncio task, carried into workers."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan

from tasktrace import (
    ContextThread,
    ContextThreadPoolExecutor,
    Task,
    TaskStatus,
    with_current_context,
)
from tasktrace.testing import InMemorySpanExporter
from tests.export_helpers import clean_env


def _thread_work(i: int) -> None:
    with Task(f"thread {i}"):
        for _ in range(1000):
            with Task("leaf"):
                pass


def test_8_threads_x_1000_tasks_one_tree(task_spans: InMemorySpanExporter, tmp_path: Path) -> None:
    """8 threads x 1,000 tasks under one root: 8,000 + 8 nodes, right parents, file and spans."""
    out = tmp_path / "threads.json"
    with Task("root", file=out) as root, ContextThreadPoolExecutor(8) as pool:
        list(pool.map(_thread_work, range(8)))
    saved = Task.model_validate_json(out.read_text())
    for tree in (root, saved):
        assert sorted(t.label for t in tree.subtasks) == [f"thread {i}" for i in range(8)]
        nodes = 0
        for thread_task in tree.subtasks:
            assert thread_task.parent_id == root.task_id
            assert len(thread_task.subtasks) == 1000
            assert all(leaf.parent_id == thread_task.task_id for leaf in thread_task.subtasks)
            nodes += 1 + len(thread_task.subtasks)
        assert nodes == 8000 + 8
    trace_id = int(root.trace_id or "0", 16)
    spans = [s for s in task_spans.get_finished_spans() if s.context.trace_id == trace_id]
    assert len(spans) == 8000 + 8 + 1
    by_id = {s.context.span_id: s for s in spans}
    for span in spans:
        if span.name == "leaf":
            assert span.parent is not None
            assert by_id[span.parent.span_id].name.startswith("thread ")
        elif span.name.startswith("thread "):
            assert span.parent is not None
            assert span.parent.span_id == int(root.span_id or "0", 16)


def test_plain_threads_and_map_carry_the_context() -> None:
    """ContextThread and with_current_context give worker tasks the submitter's parent."""
    seen: list[Task] = []

    def work() -> None:
        with Task("in thread") as t:
            seen.append(t)

    with Task("root") as root:
        thread = ContextThread(target=work)
        thread.start()
        thread.join(10)
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(with_current_context(lambda _: work()), range(4)))
        bare = threading.Thread(target=work)
        bare.start()
        bare.join(10)
    assert [t.parent_id for t in seen[:5]] == [root.task_id] * 5
    assert seen[5].parent_id is None  # a bare thread starts from an empty context
    assert Task.current() is None


async def _async_work(i: int) -> Task:
    with Task(f"a{i}") as t:
        await asyncio.sleep(0)
        if i % 3 == 0:
            with Task(f"n{i}"):
                await asyncio.sleep(0)
        if i % 5 == 0:
            raise ValueError(i)
        await asyncio.sleep(0)
    return t


def test_1000_asyncio_tasks_nested_and_failing(caplog: pytest.LogCaptureFixture) -> None:
    """1,000 concurrent asyncio tasks: right parents and statuses, no context errors logged."""

    async def main() -> tuple[Task, list[object]]:
        with Task("async root") as root:
            results = await asyncio.gather(
                *(_async_work(i) for i in range(1000)), return_exceptions=True
            )
            assert Task.current() is root
        return root, results

    with caplog.at_level(logging.DEBUG):
        root, results = asyncio.run(main())
    assert not [r for r in caplog.records if "Failed to detach" in r.getMessage()]
    assert sum(isinstance(r, ValueError) for r in results) == 200
    by_label = {t.label: t for t in root.subtasks}
    assert len(by_label) == 1000
    for i in range(1000):
        task = by_label[f"a{i}"]
        assert task.parent_id == root.task_id
        assert task.status is (TaskStatus.FAILED if i % 5 == 0 else TaskStatus.FINISHED)
        nested = [(s.label, s.parent_id) for s in task.subtasks]
        assert nested == ([(f"n{i}", task.task_id)] if i % 3 == 0 else [])
    assert Task.current() is None


def _generator() -> Iterator[int]:
    with Task("generator"):
        yield 1
        yield 2


def test_suspended_generator_does_not_corrupt_the_stack(caplog: pytest.LogCaptureFixture) -> None:
    """A generator suspended inside a task, resumed or closed elsewhere, logs no detach error."""
    with caplog.at_level(logging.DEBUG), Task("root") as root:
        gen = _generator()
        assert next(gen) == 1
        assert next(gen) == 2
        assert list(gen) == []  # finished in the same context: a clean detach
        assert Task.current() is root
        abandoned = _generator()
        next(abandoned)
        closer = threading.Thread(target=abandoned.close)  # closed in another context
        closer.start()
        closer.join(10)
    assert not [r for r in caplog.records if "Failed to detach" in r.getMessage()]
    # closing raises GeneratorExit inside the task: recorded as cancelled (see test_generators)
    assert [t.status for t in root.subtasks] == [TaskStatus.FINISHED, TaskStatus.CANCELLED]
    assert Task.current() is None


# ----- finishing out of order in one thread ---------------------------------------------------
# Each scenario runs in a copy of the test's context: a stale context left current by a failure
# must not reach the tests that follow.


def _by_name(spans: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {s.name: s for s in spans.get_finished_spans()}


def _a_finished_under_b_then_b(parent: Task | None) -> tuple[Task, Task, Task]:
    """Run the scenario: A, then B in A (by hand), A finished, then B; a user's span, then a task.

    Return A, the task started inside the user's span, and the task started after it.
    """
    tracer = trace.get_tracer("user-code")
    a = Task("A")
    a.start()
    b = Task("B")
    b.start()
    assert b.parent_id == a.task_id
    a.finish()
    b.finish()
    assert Task.current() is parent
    with tracer.start_as_current_span("mine"), Task("inside mine") as inside:
        pass
    with Task("next") as following:
        pass
    return a, inside, following


def test_out_of_order_finish_leaves_no_finished_task_current(
    task_spans: InMemorySpanExporter,
) -> None:
    """A finished before B (started in A, same thread): after B, no task's context is current.

    The user's span is a root span of a new trace (not a child of A's ended span), and the tasks
    started after B are in that trace or their own, not in A's.
    """
    a, inside, following = contextvars.copy_context().run(_a_finished_under_b_then_b, None)
    finished = _by_name(task_spans)
    mine = finished["mine"]
    assert mine.parent is None
    assert mine.context.trace_id != int(a.trace_id or "0", 16)
    assert inside.parent_id is None
    assert inside.trace_id == format(mine.context.trace_id, "032x")
    assert finished["inside mine"].parent is not None
    assert finished["inside mine"].parent.span_id == mine.context.span_id
    assert following.parent_id is None
    assert finished["next"].parent is None
    assert following.trace_id not in (a.trace_id, inside.trace_id)


def test_out_of_order_finish_under_a_running_task(task_spans: InMemorySpanExporter) -> None:
    """The same under a running root: after B, the root's context is current again."""

    def scenario() -> tuple[Task, Task, Task]:
        with Task("root") as root:
            a, inside, _ = _a_finished_under_b_then_b(root)
        assert Task.current() is None
        assert not trace.get_current_span().get_span_context().is_valid
        return root, a, inside

    root, a, inside = contextvars.copy_context().run(scenario)
    finished = _by_name(task_spans)
    root_span_id = int(root.span_id or "0", 16)
    assert finished["mine"].parent is not None
    assert finished["mine"].parent.span_id == root_span_id
    # a user's span inside a task is a node of the tree: the task inside it is its subtask
    assert [(t.label, t.parent_id) for t in root.subtasks] == [
        ("A", root.task_id),
        ("mine", root.task_id),
        ("next", root.task_id),
    ]
    assert inside.parent_id == root.subtasks[1].task_id
    assert finished["next"].parent is not None
    assert finished["next"].parent.span_id == root_span_id
    assert a.parent_id == root.task_id


def test_finish_under_a_users_span_leaves_the_span_current(
    task_spans: InMemorySpanExporter,
) -> None:
    """B finishing inside a user's span (started on a task finished elsewhere) leaves it current."""
    tracer = trace.get_tracer("user-code")

    def scenario() -> tuple[Task, Task]:
        with Task("root") as root:
            b = Task("B")
            b.start()
            elsewhere = Task("finished elsewhere")
            elsewhere.start()
            closer = threading.Thread(target=elsewhere.finish)
            closer.start()
            closer.join(10)
            with tracer.start_as_current_span("mine") as mine:
                b.finish()
                assert trace.get_current_span() is mine
                with Task("inside mine") as inside:
                    pass
        assert Task.current() is None
        assert not trace.get_current_span().get_span_context().is_valid
        return root, inside

    root, inside = contextvars.copy_context().run(scenario)
    finished = _by_name(task_spans)
    assert inside.parent_id == root.task_id  # the task tree skips the finished tasks
    assert finished["inside mine"].parent is not None
    assert finished["inside mine"].parent.span_id == finished["mine"].context.span_id


def test_finish_in_a_copy_of_the_context_leaves_the_copy_live(
    task_spans: InMemorySpanExporter,
) -> None:
    """A task finished by another asyncio task (a copy of its context) is not current there."""
    tracer = trace.get_tracer("user-code")

    async def finish_then_span(task: Task) -> None:
        task.finish()
        assert Task.current() is None
        with tracer.start_as_current_span("mine"):
            pass

    async def main() -> Task:
        handed = Task("handed over")
        handed.start()
        await asyncio.create_task(finish_then_span(handed))
        return handed

    handed = asyncio.run(main())
    assert handed.status is TaskStatus.FINISHED
    assert _by_name(task_spans)["mine"].parent is None


_COUNTING_RUNTIME = '''
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext

CALLS = {"attach": 0, "get_current": 0}


class Counting(ContextVarsRuntimeContext):
    """The default runtime context, counting its calls (a subclass adding to it)."""

    def attach(self, context):
        CALLS["attach"] += 1
        return super().attach(context)

    def get_current(self):
        CALLS["get_current"] += 1
        return super().get_current()
'''

_COUNT_TASKS = """
import json
from tasktrace import Task  # loads the runtime context (OTEL_PYTHON_CONTEXT) first
import counting_runtime

before = dict(counting_runtime.CALLS)
with Task("root"):
    for i in range(10):
        with Task(f"step {i}"):
            pass
after = counting_runtime.CALLS
print(json.dumps({k: after[k] - before[k] for k in after}))
"""


def test_a_runtime_context_named_in_otel_python_context_sees_every_tasks_attach(
    tmp_path: Path,
) -> None:
    """A runtime context subclassing OpenTelemetry's default one still gets the tasks' calls.

    Seen failing before the fix (a tester of the context fast path): the fast path used the
    variable's own ``set``/``get`` for any runtime built on a ``ContextVar``, so a subclass's
    ``attach`` and ``get_current`` (a runtime that mirrors or defaults the context) saw none
    of the 11 tasks' calls.
    """
    import json
    import subprocess
    import sys

    (tmp_path / "counting_runtime.py").write_text(_COUNTING_RUNTIME)
    dist = tmp_path / "counting_runtime-0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: counting-runtime\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text(
        "[opentelemetry_context]\ncounting = counting_runtime:Counting\n"
    )
    env = clean_env(OTEL_PYTHON_CONTEXT="counting")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", _COUNT_TASKS],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    calls = json.loads(done.stdout.strip().splitlines()[-1])
    assert calls["attach"] >= 11, (calls, done.stderr)  # every task attached its context
    assert calls["get_current"] >= 11, (calls, done.stderr)
