"""Ray: a two-node cluster's remote functions, actor methods and retries join the driver's tree.

One driver process per module (a real script, as users run Ray) starts a
``ray.cluster_utils.Cluster`` of two nodes with one CPU each and Ray's tracing start-up hook,
runs the work under ``Task("driver", file=...)`` and exports to a loopback OTLP receiver; the
tests read its task file and the received spans.
"""

from __future__ import annotations

import json
import statistics
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray", reason="the Ray integration needs ray installed")

from tasktrace import Task, TaskStatus  # noqa: E402
from tasktrace.integrations.batching import FLUSH_INTERVAL_S  # noqa: E402
from tasktrace.integrations.ray import DRAIN_WAIT_S  # noqa: E402

from ..otlp_receivers import OtlpHttpReceiver, SpanRecord  # noqa: E402
from .ray_drivers import run_driver  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(360)]

DRIVER = textwrap.dedent(
    """
    import json, os, sys, time
    import ray
    from ray.cluster_utils import Cluster
    import tasktrace
    from tasktrace import Task
    from tasktrace.integrations.ray import HOOK, collect
    from tests.integrations import engine_workers as work

    marker = sys.argv[1]
    tasktrace.configure(endpoint=sys.argv[2], headers={"authorization": "Bearer s3cret"})
    head = {"num_cpus": 1, "tracing_startup_hook": HOOK, "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address)
    cluster.wait_for_nodes()
    nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
    square = ray.remote(num_cpus=1, scheduling_strategy="SPREAD")(work.square_in_task)
    Accumulator = ray.remote(num_cpus=0)(work.Accumulator)
    die_once = ray.remote(num_cpus=1, max_retries=1)(work.die_once)

    def quick(i):
        with Task(f"quick {i}"):
            time.sleep(0.005)  # the worker's first batch (turning busy) leaves meanwhile
            return i

    def instant(i):
        with Task(f"quick {i}"):  # ends before the worker's batcher thread runs
            return i

    quick_remote = ray.remote(num_cpus=1)(quick)
    instant_remote = ray.remote(num_cpus=1)(instant)

    def short_tasks(remote):
        waits, subtasks = [], []
        for i in range(4):
            time.sleep(0.8)  # the workers turn idle: a call's first batch goes out as it starts
            with Task(f"short {i}") as short:
                ray.get(remote.remote(i))
                returned = time.perf_counter()
            waits.append(time.perf_counter() - returned)  # the finish, collecting the record
            subtasks.append([t.label for t in short.subtasks])
        return {"finish_waits": waits, "subtasks": subtasks}

    shorts_first = short_tasks(quick_remote)
    shorts_instant = short_tasks(instant_remote)
    with Task("driver", file="driver.json"):
        squares = ray.get([square.remote(i) for i in range(6)])
        acc = Accumulator.remote()
        totals = ray.get([acc.add.remote(n) for n in (1, 2)])
        survivor = ray.get(die_once.remote(marker))
        nested = ray.get(ray.remote(num_cpus=0)(work.outer_in_task).remote(7))
    slow = ray.remote(num_cpus=1)(work.slow_in_task)
    with Task("early", file="early.json"):
        late = slow.remote(0.3)  # not waited for: finishes after "early" did
    ray.get(late)
    time.sleep(0.5)  # the worker's batch reaches the collector
    collect()  # late records attached, early.json re-written
    ray.get(square.remote(99))  # no task running: nothing is carried or delivered
    shorts_after_death = short_tasks(quick_remote)  # the first "fragile" attempt's worker died busy
    out = {"nodes": nodes, "squares": squares, "totals": totals, "nested": nested}
    out.update(shorts_first=shorts_first, shorts_instant=shorts_instant)
    out.update(shorts_after_death=shorts_after_death)
    json.dump(out, open("out.json", "w"))
    ray.shutdown()
    cluster.shutdown()
    """
)


@dataclass
class RayRun:
    """What the driver process left: its task file, its printed results and the spans."""

    tree: Task
    out: dict[str, Any]
    spans: list[SpanRecord]
    early: Task
    stderr: str


@pytest.fixture(scope="module")
def ray_run(tmp_path_factory: pytest.TempPathFactory) -> RayRun:
    """Run the driver once for the module (the cluster's start-up dominates: ~8-20 s)."""
    folder = tmp_path_factory.mktemp("ray")
    with OtlpHttpReceiver(require_headers={"authorization": "Bearer s3cret"}) as receiver:
        stderr = run_driver(
            folder,
            DRIVER,
            str(folder / "attempt-marker"),
            receiver.endpoint,
            drop=("OTEL_EXPORTER",),
            env={"RAY_DEDUP_LOGS": "0"},
        )
        # driver, 6 squares, 2 adds, the surviving "fragile" (the killed one never ends),
        # "outer" and its nested "square 7",
        # "early" and its "slow"; the span of "square 99" (no task running) is exported, as
        # without tasktrace, only if its worker's batch processor runs before Ray ends it
        spans = receiver.wait_for_names(
            [
                *("driver", "add 1", "add 2", "fragile", "outer", "square 7", "early", "slow"),
                *(f"square {i}" for i in range(6)),
            ],
            timeout_s=30,
        )
    text = (folder / "driver.json").read_text()
    assert "s3cret" not in text
    assert all("s3cret" not in repr(s.attributes) for s in spans)
    tree = Task.model_validate_json(text)
    early = Task.model_validate_json((folder / "early.json").read_text())
    out = json.loads((folder / "out.json").read_text())
    return RayRun(tree, out, spans, early, stderr)


def _roots(tree: Task, prefix: str) -> list[Task]:
    return [t for t in tree.subtasks if t.label.startswith(prefix)]


def test_remote_functions_on_both_nodes_join_the_tree(ray_run: RayRun) -> None:
    """6 remote-function tasks under `driver` in its file, subprocess, same trace, both nodes."""
    tree = ray_run.tree
    squares = _roots(tree, "square ")
    assert sorted(t.label for t in squares) == [f"square {i}" for i in range(6)]
    assert ray_run.out["squares"] == [i * i for i in range(6)]
    for task in squares:
        assert task.parent_id == tree.task_id
        assert task.subprocess
        assert task.trace_id == tree.trace_id
        assert task.status is TaskStatus.FINISHED
    nodes = {t.model_extra["ray_node_id"] for t in squares}
    assert nodes == set(ray_run.out["nodes"])  # both nodes ran tasks, and are recorded
    assert tree.total_cpu() == pytest.approx(  # each process's CPU once (nested ones too)
        (tree.cpu_time or 0.0) + sum(t.total_cpu() or 0.0 for t in tree.subtasks)
    )


def test_actor_method_tasks_join_the_tree(ray_run: RayRun) -> None:
    """An actor's two method calls are subtasks of `driver` carrying the actor's id."""
    adds = _roots(ray_run.tree, "add ")
    assert sorted(t.label for t in adds) == ["add 1", "add 2"]
    assert ray_run.out["totals"] == [1, 3]
    assert len({t.model_extra["ray_actor_id"] for t in adds}) == 1
    assert all(t.subprocess and t.trace_id == ray_run.tree.trace_id for t in adds)


def test_killed_worker_attempt_is_a_failed_sibling_of_the_retry(ray_run: RayRun) -> None:
    """max_retries=1 after os._exit: attempt 1 `failed` (worker lost), attempt 2 finished."""
    fragile = sorted(_roots(ray_run.tree, "fragile"), key=lambda t: t.model_extra["attempt"])
    assert [(t.model_extra["attempt"], t.status) for t in fragile] == [
        (1, TaskStatus.FAILED),
        (2, TaskStatus.FINISHED),
    ]
    first, second = fragile
    assert "Ray worker lost" in (first.error or "")
    assert first.model_extra["ray_task_id"] == second.model_extra["ray_task_id"]
    assert first.model_extra["ray_worker_id"] != second.model_extra["ray_worker_id"]


def test_all_spans_are_one_trace_parented_on_the_driver(ray_run: RayRun) -> None:
    """configure(endpoint, headers) in the driver only: all spans arrive as one trace."""
    spans = ray_run.spans
    (root,) = [s for s in spans if s.name == "driver"]
    workers = [s for s in spans if s.trace_id == root.trace_id and s is not root]
    assert sorted(s.name for s in workers) == sorted(
        [f"square {i}" for i in range(6)] + ["add 1", "add 2", "fragile", "outer", "square 7"]
    )
    (outer,) = [s for s in workers if s.name == "outer"]
    (nested,) = [s for s in workers if s.name == "square 7"]
    assert nested.parent_span_id == outer.span_id
    assert {s.parent_span_id for s in workers if s is not nested} == {root.span_id}
    file_spans = {
        t.span_id
        for top in ray_run.tree.subtasks
        for t in [top, *top.subtasks]
        if t.status is TaskStatus.FINISHED
    }
    assert file_spans == {s.span_id for s in workers}


def test_nested_remote_work_joins_the_remote_task_that_submitted_it(ray_run: RayRun) -> None:
    """A remote task's own remote call (nested) is its subtask in the driver's file."""
    (outer,) = _roots(ray_run.tree, "outer")
    assert ray_run.out["nested"] == 49
    (inner,) = outer.subtasks
    assert (inner.label, inner.status, inner.parent_id) == (
        "square 7",
        TaskStatus.FINISHED,
        outer.task_id,
    )
    assert inner.subprocess
    assert inner.model_extra["ray_worker_id"] != outer.model_extra["ray_worker_id"]
    assert inner.trace_id == outer.trace_id == ray_run.tree.trace_id


def test_work_outliving_its_parent_is_attached_late_and_the_file_rewritten(
    ray_run: RayRun,
) -> None:
    """A remote task finishing after its submitting task did is in that task's file (late)."""
    (slow,) = ray_run.early.subtasks
    assert (slow.label, slow.status) == ("slow", TaskStatus.FINISHED)
    assert slow.parent_id == ray_run.early.task_id
    assert slow.subprocess


def _check_short_finishes(shorts: dict[str, list[Any]]) -> None:
    """Each call's record is in its task at the finish, and the finishes do not wait.

    A finish waits at most ``DRAIN_WAIT_S`` for a live busy worker's batch; one whose drain ran
    that out (the worker's answer late on a loaded 2-core machine: seen at load 14.7) may miss
    its record, which is then attached late. A finish that returned sooner must have it. The
    median wait, under one batch interval, holds that the finishes do not all wait it out.
    """
    waits = shorts["finish_waits"]
    assert len(shorts["subtasks"]) == len(waits) == 4, shorts
    for i, (subtasks, wait_s) in enumerate(zip(shorts["subtasks"], waits, strict=True)):
        ran_out = wait_s >= DRAIN_WAIT_S
        assert subtasks == [f"quick {i}"] or (ran_out and subtasks == []), shorts
    assert statistics.median(waits) < FLUSH_INTERVAL_S, shorts


def test_a_finish_right_after_a_batch_went_out_does_not_wait_for_the_next_one(
    ray_run: RayRun,
) -> None:
    """A task's finish collects its call's record at once, though a batch just left before."""
    # A worker turning busy sends a batch as the call starts, just before the finish asks
    # for the records: it must send again at once, not sleep through an interval first.
    _check_short_finishes(ray_run.out["shorts_first"])


def test_a_call_ending_before_its_worker_said_it_is_busy_is_collected_at_the_finish(
    ray_run: RayRun,
) -> None:
    """An instant call on an idle worker: its record is in its task when that task finishes."""
    # The call's end reaches the driver, which asks the collector for the records, before
    # the worker's batcher thread has run: the collector must not take the worker for idle.
    _check_short_finishes(ray_run.out["shorts_instant"])


def test_a_worker_that_died_busy_is_not_waited_for(ray_run: RayRun) -> None:
    """Finishes after a busy worker died (the killed attempt) do not wait for its batch."""
    _check_short_finishes(ray_run.out["shorts_after_death"])


def test_work_without_a_running_task_is_not_carried(ray_run: RayRun) -> None:
    """`square 99`, submitted after the driver's task ended, is in no tree of the driver."""
    assert not _roots(ray_run.tree, "square 99")
    assert all(s.trace_id != ray_run.tree.trace_id for s in ray_run.spans if s.name == "square 99")


def test_the_driver_logs_no_ray_warning_of_tasktraces_making(ray_run: RayRun) -> None:
    """Telling the driver from a worker asks Ray nothing that warns ("only ... a worker")."""
    assert "only available when the process is a worker" not in ray_run.stderr


EXITING = textwrap.dedent(
    """
    import json, os, time
    import ray
    import tasktrace
    from tasktrace import Task
    from tasktrace.integrations.ray import HOOK, collect

    @ray.remote(max_calls=1)
    def one_shot(i, seconds):
        with Task(f"one-shot {i}"):
            time.sleep(seconds)
        return tasktrace.__file__

    @ray.remote
    class Leaving:
        def leave(self):
            with Task("leaving"):
                time.sleep(0.05)
            ray.actor.exit_actor()

    @ray.remote(max_retries=1)
    def always_dies():
        with Task("doomed"):
            time.sleep(0.6)  # its running record goes out
            os._exit(1)

    ray.init(num_cpus=2, _tracing_startup_hook=HOOK, include_dashboard=False)
    errors = []
    with Task("driver", file="exiting.json"):
        seconds = (0.05, 0.05, 0.05, 0.4, 0.5, 0.6)  # shorter and longer than a batch interval
        files = ray.get([one_shot.remote(i, s) for i, s in enumerate(seconds)])
        try:
            ray.get(Leaving.remote().leave.remote())
        except ray.exceptions.RayActorError:
            errors.append("actor died")
        try:
            ray.get(always_dies.remote())
        except ray.exceptions.WorkerCrashedError:
            errors.append("worker crashed")
    time.sleep(3)  # longer than the collector's GONE_S: the dead worker is taken for gone
    collect()
    json.dump({"files": files, "errors": errors}, open("exiting-out.json", "w"))
    with Task("shutting down"):
        ray.get([one_shot.remote(i, 0.01) for i in (6, 7)])
        ray.shutdown()  # the calls' records are lost: warned about
    """
)


@pytest.fixture(scope="module")
def exiting_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Task, dict[str, Any], str]:
    """Run a driver whose workers exit right after their calls, or die; return file and output."""
    folder = tmp_path_factory.mktemp("ray-exiting")
    # Spans to files, as users export them: flushing them before a batch takes the time in
    # which Ray ends a worker that exits after its call.
    stderr = run_driver(
        folder,
        EXITING,
        drop=("OTEL_",),
        env={"OTEL_TRACES_EXPORTER": "tasktrace_otlp_json", "TASKTRACE_OTLP_JSON_DIR": "spans"},
    )
    assert "Fatal Python error" not in stderr  # no worker aborted at its exit
    tree = Task.model_validate_json((folder / "exiting.json").read_text())
    return tree, json.loads((folder / "exiting-out.json").read_text()), stderr


def test_workers_import_this_checkout(exiting_run: tuple[Task, dict[str, Any], str]) -> None:
    """The workers run the tasktrace under test (this checkout's ``src``)."""
    src = Path(__file__).resolve().parents[2] / "src"
    assert {str(Path(f).parent.parent) for f in exiting_run[1]["files"]} == {str(src)}


def test_a_worker_exiting_after_its_call_sends_its_records(
    exiting_run: tuple[Task, dict[str, Any], str],
) -> None:
    """max_calls=1 workers and an actor calling exit_actor: every record arrives, finished."""
    tree, out, _ = exiting_run
    assert out["errors"][0] == "actor died"
    ended = {t.label: t.status for t in tree.subtasks if not t.label.startswith("doomed")}
    assert ended == {
        **{f"one-shot {i}": TaskStatus.FINISHED for i in range(6)},
        "leaving": TaskStatus.FINISHED,
    }


def test_a_final_attempt_lost_with_its_worker_is_failed(
    exiting_run: tuple[Task, dict[str, Any], str],
) -> None:
    """max_retries=1, both attempts' workers die: both records `failed`, none `running`."""
    tree, out, _ = exiting_run
    assert out["errors"][1] == "worker crashed"
    doomed = sorted(_roots(tree, "doomed"), key=lambda t: t.model_extra["attempt"])
    assert [(t.model_extra["attempt"], t.status) for t in doomed] == [
        (1, TaskStatus.FAILED),
        (2, TaskStatus.FAILED),
    ]
    assert "Ray worker gone" in (doomed[1].error or "")


def test_ray_shut_down_inside_the_submitting_task_is_warned_about(
    exiting_run: tuple[Task, dict[str, Any], str],
) -> None:
    """ray.shutdown() before the submitting task ends: the lost records are counted, warned."""
    assert "records of 2 call(s) made under task 'shutting down'" in exiting_run[2]
