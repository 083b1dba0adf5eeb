"""How an exception leaving a task maps to its status: cancellation, ``sys.exit`` and failures."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import sys
import threading
from pathlib import Path

import click
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from tasktrace import Task, TaskStatus
from tasktrace.cli import main
from tasktrace.core import attributes as attr
from tasktrace.testing import InMemorySpanExporter


def _span(spans: InMemorySpanExporter, task: Task) -> ReadableSpan:
    span_id = int(task.span_id or "0", 16)
    (span,) = [s for s in spans.get_finished_spans() if s.context.span_id == span_id]
    return span


def _no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def _sleeper(started: asyncio.Event, seen: list[Task]) -> None:
    with Task("sleeper") as t:
        seen.append(t)
        started.set()
        await asyncio.sleep(30)


def _assert_cancelled(task: Task, spans: InMemorySpanExporter) -> None:
    assert task.status is TaskStatus.CANCELLED
    assert task.error == "CancelledError"
    span = _span(spans, task)
    assert span.status.status_code is StatusCode.UNSET
    assert span.attributes[attr.STATUS] == "cancelled"


def test_cancelled_asyncio_task_is_cancelled(
    task_spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """task.cancel(): the coroutine's task is CANCELLED with an UNSET span; its parent goes on."""
    out = tmp_path / "cancel.json"
    seen: list[Task] = []

    async def main() -> Task:
        with Task("root", file=out) as root:
            started = asyncio.Event()
            job = asyncio.create_task(_sleeper(started, seen))
            await started.wait()
            job.cancel()
            with pytest.raises(asyncio.CancelledError):
                await job
        return root

    with caplog.at_level(logging.DEBUG):
        root = asyncio.run(main())
    _assert_cancelled(seen[0], task_spans)
    assert root.status is TaskStatus.FINISHED
    saved = Task.model_validate_json(out.read_text())
    assert [(t.label, t.status) for t in saved.subtasks] == [("sleeper", TaskStatus.CANCELLED)]
    _no_errors_logged(caplog)


def test_wait_for_timeout_cancels_the_inner_task(
    task_spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    """asyncio.wait_for timing out: the awaited task is CANCELLED, the waiting one FAILED."""
    seen: list[Task] = []

    async def main() -> Task:
        with pytest.raises(asyncio.TimeoutError), Task("waiter") as waiter:
            await asyncio.wait_for(_sleeper(asyncio.Event(), seen), 0.05)
        return waiter

    with caplog.at_level(logging.DEBUG):
        waiter = asyncio.run(main())
    _assert_cancelled(seen[0], task_spans)
    assert waiter.status is TaskStatus.FAILED  # a timeout is the waiter's failure
    assert _span(task_spans, waiter).status.status_code is StatusCode.ERROR
    _no_errors_logged(caplog)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.TaskGroup is new in Python 3.11")
def test_task_group_abort_cancels_the_siblings(
    task_spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    """A TaskGroup whose member fails: that task FAILED, its aborted siblings CANCELLED."""
    seen: list[Task] = []

    async def fail(started: asyncio.Event) -> None:
        await started.wait()
        with Task("failing"):
            raise ValueError("bad batch")

    async def main() -> None:
        started = asyncio.Event()
        async with asyncio.TaskGroup() as group:  # type: ignore[attr-defined]
            group.create_task(_sleeper(started, seen))
            group.create_task(fail(started))

    with caplog.at_level(logging.DEBUG), pytest.raises(BaseException) as info:  # noqa: PT011
        asyncio.run(main())
    assert type(info.value).__name__ == "ExceptionGroup"
    _assert_cancelled(seen[0], task_spans)
    (failing,) = [s for s in task_spans.get_finished_spans() if s.name == "failing"]
    assert failing.status.status_code is StatusCode.ERROR
    assert failing.attributes[attr.STATUS] == "failed"
    _no_errors_logged(caplog)


def test_concurrent_futures_cancelled_error_is_cancelled(task_spans: InMemorySpanExporter) -> None:
    """Waiting on a cancelled concurrent.futures Future inside a task: CANCELLED, span UNSET."""
    release = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(release.wait, 10)  # holds the only worker
        queued = pool.submit(int)
        assert queued.cancel()
        with pytest.raises(concurrent.futures.CancelledError), Task("waiting") as t:
            queued.result()
        release.set()
    _assert_cancelled(t, task_spans)


@pytest.mark.parametrize(
    ("code", "status", "span_status", "exit_code", "error"),
    [
        (None, TaskStatus.FINISHED, StatusCode.OK, 0, None),
        (0, TaskStatus.FINISHED, StatusCode.OK, 0, None),
        (3, TaskStatus.FAILED, StatusCode.ERROR, 3, "SystemExit: 3"),
        ("no data", TaskStatus.FAILED, StatusCode.ERROR, 1, "SystemExit: no data"),
    ],
)
def test_sys_exit_status_follows_the_exit_code(  # noqa: PLR0917 - one row per case
    task_spans: InMemorySpanExporter,
    tmp_path: Path,
    code: int | str | None,
    status: TaskStatus,
    span_status: StatusCode,
    exit_code: int,
    error: str | None,
) -> None:
    """sys.exit(0 or None) is FINISHED (span OK); another code is FAILED; both record exit_code."""
    out = tmp_path / "exit.json"
    with pytest.raises(SystemExit), Task("command", file=out) as t:
        sys.exit(code)
    saved = Task.model_validate_json(out.read_text())
    for task in (t, saved):
        assert task.status is status
        assert task.exit_code == exit_code
        assert task.error == error
    span = _span(task_spans, t)
    assert span.status.status_code is span_status
    assert span.attributes[attr.DATA_PREFIX + "exit_code"] == exit_code
    assert span.attributes[attr.STATUS] == status.value


def test_click_and_argparse_commands_end_as_their_exit_status(
    task_spans: InMemorySpanExporter,
) -> None:
    """A click command and argparse --help (sys.exit(0)) finish; an argparse usage error fails."""

    @click.command()
    @click.option("--n", type=int, default=1)
    def train(n: int) -> None:
        click.echo(f"trained {n}")

    with pytest.raises(SystemExit), Task("click command") as clicked:
        train.main(["--n", "2"], prog_name="train")  # standalone mode: ends by sys.exit(0)
    parser = argparse.ArgumentParser(prog="train")
    parser.add_argument("--n", type=int)
    with pytest.raises(SystemExit), Task("argparse help") as helped:
        parser.parse_args(["--help"])
    with pytest.raises(SystemExit), Task("argparse error") as refused:
        parser.parse_args(["--n", "x"])
    assert (clicked.status, clicked.exit_code) == (TaskStatus.FINISHED, 0)
    assert (helped.status, helped.exit_code) == (TaskStatus.FINISHED, 0)
    assert (refused.status, refused.exit_code) == (TaskStatus.FAILED, 2)
    assert _span(task_spans, clicked).status.status_code is StatusCode.OK
    assert _span(task_spans, refused).status.status_code is StatusCode.ERROR


def test_generator_exit_is_cancelled(task_spans: InMemorySpanExporter) -> None:
    """A generator closed inside its task (GeneratorExit): CANCELLED, span UNSET, error says so."""

    def rows() -> object:
        with Task("rows") as t:
            seen.append(t)
            yield 1
            yield 2

    seen: list[Task] = []
    gen = rows()
    next(gen)  # type: ignore[call-overload]
    gen.close()  # type: ignore[attr-defined]
    (t,) = seen
    assert t.status is TaskStatus.CANCELLED
    assert t.error == "GeneratorExit: the generator was closed before it finished"
    assert _span(task_spans, t).status.status_code is StatusCode.UNSET


def test_run_and_in_process_exit_agree(tmp_path: Path) -> None:
    """`tasktrace run` of a script calling sys.exit(3) in a task: both tasks FAILED, exit_code 3."""
    out = tmp_path / "run.json"
    script = "import sys\nfrom tasktrace import Task\nwith Task('script'):\n    sys.exit(3)\n"
    assert main(["run", "-q", "--file", str(out), "--", sys.executable, "-c", script]) == 3
    run = Task.model_validate_json(out.read_text())
    (child,) = run.subtasks
    assert (run.status, run.exit_code) == (TaskStatus.FAILED, 3)
    assert (child.label, child.status, child.exit_code) == ("script", TaskStatus.FAILED, 3)
