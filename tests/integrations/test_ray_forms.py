"""Ray: later sessions of one driver, remote generators and async actors join the tree.

One driver process (a real script, as users run Ray) runs local Ray sessions with Ray's
tracing start-up hook one after the other, as notebooks and test suites do (``ray.init`` ...
``ray.shutdown()`` ... ``ray.init``; the third in another namespace; the last two inside one
task), and in the first: generator remote functions (streaming, ``num_returns=N``), an async
actor's methods, and actors' generator methods (which Ray rejects with tracing on: a
documented limit). Workers log to the driver (``log_to_driver``), so the driver's stderr
holds what Ray printed in them. The tests read a task file per session.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from typing import Any

import pytest

ray = pytest.importorskip("ray", reason="the Ray integration needs ray installed")

from tasktrace import Task, TaskStatus  # noqa: E402

from .ray_drivers import run_driver  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(360)]

DRIVER = textwrap.dedent(
    """
    import asyncio, json, os, time
    import ray
    from tasktrace import Task
    from tasktrace.integrations.ray import HOOK

    @ray.remote
    def square(i):
        with Task(f"square {i}"):
            return i * i

    @ray.remote(num_cpus=2, max_retries=2, retry_exceptions=True)  # one at a time: one worker
    def flaky(marker):
        with Task("flaky") as task:
            task.worker_pid = os.getpid()
            if not os.path.exists(marker):
                open(marker, "w").close()
                raise ValueError("flaky: the first attempt raises")
            return "ok"

    @ray.remote
    def streamed(n):  # a generator: Ray streams its items (num_returns="streaming")
        for i in range(n):
            with Task(f"streamed {i}"):
                time.sleep(0.01)
            yield i

    @ray.remote(num_returns=2)
    def pair():
        for i in range(2):
            with Task(f"pair {i}"):  # open across the yield
                time.sleep(0.01)
                yield i

    @ray.remote
    class Counter:
        def count(self, n):
            for i in range(n):
                with Task(f"counted {i}"):
                    time.sleep(0.01)
                yield i

    @ray.remote
    class Waiter:
        async def wait(self, k):
            with Task(f"awaited {k}"):
                await asyncio.sleep(0.05)
            return k

        async def ticks(self, n):
            for i in range(n):
                with Task(f"tick {i}"):
                    await asyncio.sleep(0.01)
                yield i

    @ray.remote
    class Late:  # an async actor whose batcher makes a batch as its method's task finishes
        def __init__(self):
            import threading
            from tasktrace.integrations import batching
            self.window, self.done = threading.Event(), threading.Event()
            real, calls = batching.hand_on_finished, []

            def hand_on():  # the batcher's hand-on; the second (after the start's batch):
                real()
                calls.append(1)
                if len(calls) == 2:  # the task finishes before this batch is made
                    self.window.set()
                    self.done.wait(10)

            batching.hand_on_finished = hand_on

        async def late(self):
            with Task("late 0"):
                await asyncio.get_running_loop().run_in_executor(None, self.window.wait, 10)
            self.done.set()
            return self.window.is_set()

    def session(name, **init):
        ray.init(num_cpus=2, _tracing_startup_hook=HOOK, include_dashboard=False, **init)
        try:
            with Task(name, file=f"{name}.json"):
                return work(name)
        finally:
            ray.shutdown()

    def work(name):
        out = {"squares": ray.get([square.remote(i) for i in range(2)])}
        if name != "first":
            return out
        out["flaky"] = ray.get(flaky.remote(os.path.abspath("flaky-marker")))
        out["streamed"] = [ray.get(ref) for ref in streamed.remote(3)]
        out["pair"] = ray.get(list(pair.remote()))
        waiter = Waiter.remote()
        out["awaited"] = ray.get([waiter.wait.remote(k) for k in range(2)])
        out["late"] = ray.get(Late.remote().late.remote())
        for label, method in (("counted", Counter.remote().count), ("ticks", waiter.ticks)):
            try:  # Ray rejects calls to actor generator methods with tracing on
                out[label] = [ray.get(ref) for ref in method.remote(2)]
            except TypeError as e:
                out[label] = str(e)
        return out

    out = {"first": session("first")}
    out["second"] = session("second")
    out["third"] = session("third", namespace="elsewhere")
    init = {"num_cpus": 1, "_tracing_startup_hook": HOOK, "include_dashboard": False}
    with Task("restarted", file="restarted.json"):
        ray.init(**init)
        lost = ray.get(square.remote(4))  # its record is not home yet at the shutdown
        ray.shutdown()
        ray.init(**init)
        kept = ray.get(square.remote(5))
    ray.shutdown()
    out["restarted"] = [lost, kept]
    json.dump(out, open("out.json", "w"))
    """
)


@dataclass
class Sessions:
    """What the driver process left: a task file per session, its results, its stderr."""

    trees: dict[str, Task]
    out: dict[str, Any]
    stderr: str


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> Sessions:
    """Run the driver once for the module (five local Ray starts: ~40-100 s)."""
    folder = tmp_path_factory.mktemp("ray-forms")
    (folder / "flaky-marker").unlink(missing_ok=True)
    stderr = run_driver(
        folder,
        DRIVER,
        drop=("OTEL_",),
        env={"RAY_DEDUP_LOGS": "0", "OTEL_TRACES_EXPORTER": "none"},
    )
    trees = {
        name: Task.model_validate_json((folder / f"{name}.json").read_text())
        for name in ("first", "second", "third", "restarted")
    }
    return Sessions(trees, json.loads((folder / "out.json").read_text()), stderr)


def _labels(tree: Task, prefix: str) -> list[str]:
    return sorted(t.label for t in tree.subtasks if t.label.startswith(prefix))


def _check_carried(tree: Task, prefix: str, count: int) -> None:
    """``count`` finished subprocess subtasks ``prefix 0..``, in ``tree``'s trace."""
    assert _labels(tree, prefix) == [f"{prefix} {i}" for i in range(count)], [
        t.label for t in tree.subtasks
    ]
    for task in tree.subtasks:
        if task.label.startswith(prefix):
            assert task.parent_id == tree.task_id
            assert task.trace_id == tree.trace_id
            assert task.subprocess
            assert task.status is TaskStatus.FINISHED


def test_each_session_of_one_driver_keeps_its_work(sessions: Sessions) -> None:
    """init/shutdown three times (the last in another namespace): each tree is complete."""
    for name in ("first", "second", "third"):
        assert sessions.out[name]["squares"] == [0, 1]
        _check_carried(sessions.trees[name], "square", 2)
    assert "Can't find actor" not in sessions.stderr


def test_a_session_shut_down_inside_a_task_loses_only_its_own_calls(sessions: Sessions) -> None:
    """Ray shut down and started again inside one task: the new session's call is kept."""
    assert sessions.out["restarted"] == [16, 25]
    assert _labels(sessions.trees["restarted"], "square") == ["square 5"]
    assert "records of 1 call(s) made under task 'restarted'" in sessions.stderr


def test_streaming_generator_tasks_are_subtasks(sessions: Sessions) -> None:
    """A generator remote function's tasks (streamed items) are subtasks of the submitter."""
    assert sessions.out["first"]["streamed"] == [0, 1, 2]
    _check_carried(sessions.trees["first"], "streamed", 3)
    streamed = [t for t in sessions.trees["first"].subtasks if t.label.startswith("streamed")]
    assert len({t.model_extra["ray_task_id"] for t in streamed}) == 1  # one Ray task


def test_num_returns_generator_tasks_are_subtasks(sessions: Sessions) -> None:
    """``num_returns=2`` on a generator function: its tasks (open across a yield) too."""
    assert sessions.out["first"]["pair"] == [0, 1]
    _check_carried(sessions.trees["first"], "pair", 2)


def test_async_actor_methods_arrive_without_ray_warning(sessions: Sessions) -> None:
    """An async actor's method tasks come home; Ray warns of no blocking get of tasktrace's."""
    assert sessions.out["first"]["awaited"] == [0, 1]
    _check_carried(sessions.trees["first"], "awaited", 2)
    assert "blocking ray.get inside async actor" not in sessions.stderr


def test_async_actor_task_finishing_as_its_worker_makes_a_batch_arrives(
    sessions: Sessions,
) -> None:
    """An async actor's task that finishes between a batch's hand-on and its making arrives.

    The driver's task ends right after the call: before, that batch went out as idle, the
    worker sent nothing more and the drain did not wait for it (under load, the last calls
    of an async actor were missing from the driver's file).
    """
    assert sessions.out["first"]["late"] is True  # the batch was made in the window
    _check_carried(sessions.trees["first"], "late", 1)


def test_actor_generator_methods_are_rejected_by_ray_with_tracing_on(sessions: Sessions) -> None:
    """The documented limit: Ray itself refuses actor generator calls under a tracing hook."""
    for label in ("counted", "ticks"):  # a generator method, an async generator method
        assert "unexpected keyword argument '_ray_trace_ctx'" in sessions.out["first"][label]
        assert not _labels(sessions.trees["first"], label)


def test_a_task_retried_after_it_raised_numbers_each_attempt(sessions: Sessions) -> None:
    """``retry_exceptions``: the attempt that raised and the retry are attempts 1 and 2.

    The retry ran in the same worker process (one call at a time, the worker reused): told
    apart by the call (``ray_call``), not the worker. Before: both records unnumbered.
    """
    assert sessions.out["first"]["flaky"] == "ok"
    flaky = [t for t in sessions.trees["first"].subtasks if t.label == "flaky"]
    flaky.sort(key=lambda t: t.model_extra.get("attempt", 0))
    assert [(t.model_extra.get("attempt"), t.status) for t in flaky] == [
        (1, TaskStatus.FAILED),
        (2, TaskStatus.FINISHED),
    ]
    assert "flaky: the first attempt raises" in (flaky[0].error or "")
    pids = {t.model_extra["worker_pid"] for t in flaky}
    assert len(pids) == 1, "the retry ran in another worker: the same-worker case is untested"
