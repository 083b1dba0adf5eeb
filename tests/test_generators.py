"""Generators holding a task, left early: however they are closed, the consumer's context holds."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import weakref
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import StatusCode

from tasktrace import ContextThreadPoolExecutor, Task, TaskStatus
from tasktrace.testing import InMemorySpanExporter


def _stream(label: str = "stream") -> Iterator[int]:
    with Task(label):
        yield 1
        yield 2


async def _astream() -> AsyncIterator[int]:
    with Task("stream"):
        yield 1
        await asyncio.sleep(0)
        yield 2


class _Cycle:
    """Holds a generator in a reference cycle, so that only the cyclic collector frees it."""

    def __init__(self, gen: object) -> None:
        self.gen = gen
        self.me = self


def _in_thread(fn: object) -> None:
    thread = threading.Thread(target=fn)  # type: ignore[arg-type]
    thread.start()
    thread.join(10)
    assert not thread.is_alive()


def _leave_sync(how: str) -> None:
    """Start a generator's task, then leave it by ``how``; every reference is gone on return."""
    gen = _stream()
    assert next(gen) == 1
    if how == "close here":
        gen.close()
    elif how == "close in another thread":
        _in_thread(gen.close)
    elif how == "dropped":
        del gen  # the last reference: closed at once, here
    elif how == "collected in another thread":
        gc.disable()  # only the collection below may free the cycle
        try:
            _Cycle(gen)
            del gen
            _in_thread(gc.collect)
        finally:
            gc.enable()
    else:
        raise AssertionError(how)


async def _leave_async(how: str) -> None:
    """Async flavour of :func:`_leave_sync`: ``async for ... break``, then close by ``how``."""
    agen = _astream()
    async for _ in agen:
        break
    if how == "aclose in this task":
        await agen.aclose()
    elif how == "aclose in another task":
        await asyncio.create_task(agen.aclose())  # type: ignore[arg-type]
    elif how == "aclose in another thread":

        async def close() -> None:
            await agen.aclose()

        _in_thread(lambda: asyncio.run(close()))
    elif how == "dropped":
        del agen  # asyncio's finaliser hook closes it in a new asyncio task
        for _ in range(5):
            await asyncio.sleep(0)
    else:
        raise AssertionError(how)


GENERATOR_CLOSED = "GeneratorExit: the generator was closed before it finished"
"""The error of a generator's task left early (the table in docs/parallel.md)."""


async def _astream_into(tasks: list[Task], wait_s: float = 0) -> AsyncIterator[int]:
    with Task("stream") as task:
        tasks.append(task)
        yield 1
        await asyncio.sleep(wait_s)
        yield 2


def _check_closed(task: Task, spans: InMemorySpanExporter) -> None:
    assert task.status is TaskStatus.CANCELLED
    assert task.error == GENERATOR_CLOSED
    (span,) = [s for s in spans.get_finished_spans() if s.name == task.label]
    assert span.status.status_code is StatusCode.UNSET
    assert span.attributes is not None
    assert span.attributes["tasktrace.task.error"] == GENERATOR_CLOSED


def _check_next_is_under_root(
    root: Task, out: Path, spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    saved = Task.model_validate_json(out.read_text())
    for tree in (root, saved):
        by_label = {t.label: t for t in tree.subtasks}
        assert sorted(by_label) == ["next", "stream"]
        assert by_label["stream"].status is TaskStatus.CANCELLED
        assert by_label["stream"].error == GENERATOR_CLOSED
        assert by_label["stream"].subtasks == []
        assert by_label["next"].parent_id == tree.task_id
    finished = {s.name: s for s in spans.get_finished_spans()}
    assert finished["next"].parent is not None
    assert finished["next"].parent.span_id == int(root.span_id or "0", 16)
    assert finished["stream"].status.status_code is StatusCode.UNSET
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


SYNC_WAYS = ["close here", "close in another thread", "dropped", "collected in another thread"]
ASYNC_WAYS = [
    "aclose in this task",
    "aclose in another task",
    "aclose in another thread",
    "dropped",
]


@pytest.mark.parametrize("how", SYNC_WAYS)
def test_sync_generator_left_early_restores_the_consumer(
    how: str, task_spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """A generator task left early: the consumer's next task and span go under its own task."""
    out = tmp_path / "gen.json"
    with caplog.at_level(logging.DEBUG), Task("root", file=out) as root:
        _leave_sync(how)
        assert Task.current() is root
        assert Task.root() is root
        with Task("next"):
            pass
    assert Task.current() is None
    _check_next_is_under_root(root, out, task_spans, caplog)


@pytest.mark.parametrize("how", ASYNC_WAYS)
def test_async_generator_left_early_restores_the_consumer(
    how: str, task_spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """An async generator task left by break: the consumer's next task and span go under its own."""
    out = tmp_path / "agen.json"

    async def consumer() -> Task:
        with Task("root", file=out) as root:
            await _leave_async(how)
            assert Task.current() is root
            with Task("next"):
                await asyncio.sleep(0)
        assert Task.current() is None
        return root

    with caplog.at_level(logging.DEBUG):
        root = asyncio.run(consumer())
    _check_next_is_under_root(root, out, task_spans, caplog)


@pytest.mark.parametrize("how", ["dropped", "kept"])
def test_async_generator_closed_as_the_loop_ends(
    how: str, task_spans: InMemorySpanExporter
) -> None:
    """``async for ... break`` as the last thing ``asyncio.run`` runs: the generator is closed.

    Dropped, asyncio's finaliser hook closes it in a new asyncio task, which ``asyncio.run``
    cancels before it runs (its end cancels the tasks left): that throws ``CancelledError``
    into the generator, not ``GeneratorExit``. Kept, ``shutdown_asyncgens`` closes it. Either
    way its task ends as a generator closed early does, as the sync generator's.
    """
    tasks: list[Task] = []
    kept = []

    async def consumer() -> None:
        agen = _astream_into(tasks)
        async for _ in agen:
            break
        if how == "kept":
            kept.append(agen)  # still referenced as the loop ends

    asyncio.run(consumer())
    (task,) = tasks
    _check_closed(task, task_spans)  # as a sync generator's (test_sync_generator_left_early...)


def test_async_generator_whose_closing_task_is_cancelled(task_spans: InMemorySpanExporter) -> None:
    """``aclose()`` in an asyncio task cancelled before it runs: the generator is closed."""
    tasks: list[Task] = []

    async def consumer() -> None:
        agen = _astream_into(tasks)
        async for _ in agen:
            break
        closing = asyncio.create_task(agen.aclose())  # type: ignore[arg-type]
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing

    asyncio.run(consumer())
    (task,) = tasks
    _check_closed(task, task_spans)


def test_async_generator_closing_cancelled_while_it_cleans_up_is_cancelled(
    task_spans: InMemorySpanExporter,
) -> None:
    """``aclose()`` cancelled while the generator's ``finally`` awaits: ``CancelledError``."""
    tasks: list[Task] = []
    cleaning = asyncio.Event()

    async def stream() -> AsyncIterator[int]:
        with Task("stream") as task:
            tasks.append(task)
            try:
                yield 1
            finally:
                cleaning.set()
                await asyncio.sleep(60)

    async def consumer() -> None:
        agen = stream()
        async for _ in agen:
            break
        closing = asyncio.create_task(agen.aclose())  # type: ignore[arg-type]
        await cleaning.wait()
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing

    asyncio.run(consumer())
    (task,) = tasks
    assert task.status is TaskStatus.CANCELLED
    assert task.error == "CancelledError"


def test_async_generator_cancelled_while_it_awaits_is_cancelled(
    task_spans: InMemorySpanExporter,
) -> None:
    """The consumer's asyncio task cancelled while the generator awaits: ``CancelledError``."""
    tasks: list[Task] = []

    async def consume() -> None:
        async for _ in _astream_into(tasks, wait_s=60):
            pass

    async def main() -> None:
        consuming = asyncio.create_task(consume())
        while not tasks:
            await asyncio.sleep(0)
        await asyncio.sleep(0)  # the generator now awaits its sleep
        consuming.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consuming

    asyncio.run(main())
    (task,) = tasks
    assert task.status is TaskStatus.CANCELLED
    assert task.error == "CancelledError"


def test_interleaved_generators_finishing_out_of_order(
    task_spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """Two generators' tasks ending in the other order than they started leave no stale task."""
    out = tmp_path / "interleaved.json"
    with caplog.at_level(logging.DEBUG), Task("root", file=out) as root:
        first, second = _stream("first"), _stream("second")
        next(first)
        next(second)  # starts in the consumer's context, where "first" is the current task
        assert list(first) == [2]  # ends while the second's task is the current one
        assert list(second) == [2]
        assert Task.current() is root
        with trace.get_tracer("user-code").start_as_current_span("mine"):
            pass
        with Task("next"):
            pass
    assert Task.current() is None
    saved = Task.model_validate_json(out.read_text())
    for tree in (root, saved):
        assert [(t.label, t.parent_id, t.status) for t in tree.subtasks] == [
            ("first", tree.task_id, TaskStatus.FINISHED),
            ("mine", tree.task_id, TaskStatus.FINISHED),  # a user's span is a node too
            ("next", tree.task_id, TaskStatus.FINISHED),
        ]
        (second,) = tree.subtasks[0].subtasks
        assert (second.label, second.status) == ("second", TaskStatus.FINISHED)
    finished = {s.name: s for s in task_spans.get_finished_spans()}
    for name in ("mine", "next"):  # "second" went back past the finished "first"
        assert finished[name].parent is not None
        assert finished[name].parent.span_id == int(root.span_id or "0", 16)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_stale_context_carried_into_a_thread_resolves_to_the_live_task(
    task_spans: InMemorySpanExporter,
) -> None:
    """Work submitted after a generator was closed elsewhere is filed under the live task."""
    with Task("root") as root:
        gen = _stream()
        next(gen)
        _in_thread(gen.close)
        with ContextThreadPoolExecutor(1) as pool:
            worker = pool.submit(lambda: Task("worker").__enter__()).result()
            worker.finish()
    assert worker.parent_id == root.task_id
    finished = {s.name: s for s in task_spans.get_finished_spans()}
    assert finished["worker"].parent is not None
    assert finished["worker"].parent.span_id == int(root.span_id or "0", 16)


def test_task_finished_in_another_thread_is_no_longer_current() -> None:
    """A task started here and finished by another thread stops being this thread's current task."""
    with Task("root") as root:
        task = Task("handed over")
        task.start()
        _in_thread(task.finish)
        assert task.status is TaskStatus.FINISHED
        assert Task.current() is root
        with Task("next") as following:
            pass
    assert following.parent_id == root.task_id
    assert Task.current() is None


def test_user_span_after_a_generator_closed_elsewhere(task_spans: InMemorySpanExporter) -> None:
    """Documented limit: an OTel API span started in the stale context gets the ended span.

    A task started inside that span is filed under the running task, and its span stays the
    child of the user's span.
    """
    tracer = trace.get_tracer("user-code")
    with Task("root") as root:
        gen = _stream()
        next(gen)
        _in_thread(gen.close)
        with tracer.start_as_current_span("mine"), Task("inside mine") as inside:
            pass
    finished = {s.name: s for s in task_spans.get_finished_spans()}
    stream_span_id = finished["stream"].context.span_id
    assert finished["mine"].parent is not None
    assert finished["mine"].parent.span_id == stream_span_id  # OTel reads the context as it is
    assert inside.parent_id == root.task_id  # the task tree skips the finished task
    assert finished["inside mine"].parent is not None
    assert finished["inside mine"].parent.span_id == finished["mine"].context.span_id


def test_user_span_after_a_task_finished_past_a_closed_generator(
    task_spans: InMemorySpanExporter,
) -> None:
    """The limit above lasts until a task finishes in the consumer, past the closed generator.

    That task goes back past the generator's finished task: a user's span started after it is
    the running task's child.
    """
    tracer = trace.get_tracer("user-code")
    with Task("root") as root:
        gen = _stream()
        next(gen)
        _in_thread(gen.close)
        with Task("process"):
            pass
        with tracer.start_as_current_span("mine"):
            pass
    finished = {s.name: s for s in task_spans.get_finished_spans()}
    assert finished["mine"].parent is not None
    assert finished["mine"].parent.span_id == int(root.span_id or "0", 16)


def test_generators_closed_elsewhere_in_a_loop_leave_no_chain_of_contexts() -> None:
    """Stale contexts never pile up: after 50 generators closed elsewhere, at most one is kept."""
    contexts: list[weakref.ref[otel_context.Context]] = []

    def stream() -> Iterator[int]:
        with Task("stream"):
            contexts.append(weakref.ref(otel_context.get_current()))
            yield 1

    with Task("root") as root:
        for _ in range(50):
            gen = stream()
            next(gen)
            _in_thread(gen.close)
            del gen
            with Task("process") as process:
                pass
            assert process.parent_id == root.task_id
        gc.collect()
        assert len([ref for ref in contexts if ref() is not None]) <= 1
