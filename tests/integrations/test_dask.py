"""Dask distributed: tasks on two worker processes join the submitting task's tree and trace."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

distributed = pytest.importorskip(
    "distributed", reason="the Dask integration needs dask[distributed] installed"
)

import dask  # noqa: E402
from dask.utils import funcname  # noqa: E402
from distributed import Client, KilledWorker  # noqa: E402

from tasktrace import Task, TaskStatus  # noqa: E402
from tasktrace.integrations.dask import TOPIC, CarriedFunction  # noqa: E402
from tasktrace.task.carriers import capture  # noqa: E402

from ..export_helpers import clean_env  # noqa: E402
from ..otlp_receivers import OtlpHttpReceiver  # noqa: E402
from . import dask_work  # noqa: E402
from . import engine_workers as work  # noqa: E402
from .dask_plugins import DelayRecordEvents  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def test_client_closed_inside_the_task_brings_the_finished_work_home(tmp_path: Path) -> None:
    """`with LocalCluster() as cluster, Client(cluster) as c:` inside the task: records kept.

    Before: the client closed before the task's finish asked the workers for what they held;
    the driver's file had none of the worker tasks (the longer one stayed `running`).
    """
    out = tmp_path / "driver.json"
    with Task("driver", file=out) as driver, dask_work.set_up_client() as c:
        squares = c.gather(c.map(work.square_in_task, range(4)))
        slow = c.submit(work.slow_in_task, 0.6).result()  # seen running first
    assert (squares, slow) == ([0, 1, 4, 9], 0.6)
    saved = Task.model_validate_json(out.read_text())
    for tree in (driver, saved):
        got = sorted((t.label, t.status) for t in tree.subtasks)
        assert got == [("slow", TaskStatus.FINISHED)] + [
            (f"square {i}", TaskStatus.FINISHED) for i in range(4)
        ]


def test_client_closed_while_work_runs_warns_and_fails_its_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Closing the client while a task still runs: one warning with the count; not `running`.

    Before: no warning, and the task's record stayed `running` in the file for good.
    """
    out = tmp_path / "driver.json"
    with Task("driver", file=out) as driver, dask_work.set_up_client() as c:
        c.submit(work.square_in_task, 3).result()
        c.submit(work.slow_in_task, 30.0)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(t.label == "slow" for t in driver.subtasks):
            time.sleep(0.05)  # the running task's first snapshot arrives
        caplog.clear()
    dask_work.check_closed_with_work_running(caplog.records, driver, out, ["square 3"])


def test_final_attempt_lost_with_its_worker_is_failed(tmp_path: Path) -> None:
    """KilledWorker (no re-run left): the lost attempt's record is `failed`, not `running`.

    Before: the submitting task was failed but the attempt's record stayed `running` for good.
    """
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        dask_work.set_up_client() as c,
        pytest.raises(KilledWorker),
        Task("driver") as driver,
    ):
        c.submit(work.die_once, str(tmp_path / "marker")).result()
    (fragile,) = driver.subtasks
    assert fragile.label == "fragile"
    assert fragile.status is TaskStatus.FAILED
    assert "Dask worker lost" in (fragile.error or "")


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    """One LocalCluster of two single-threaded worker processes for the module, set up."""
    with dask_work.set_up_client() as c:
        yield c


def test_the_scheduler_keeps_none_of_the_records(client: Client) -> None:
    """Records reach the driver through the scheduler, which keeps none: a long run leaves none.

    Before: each batch of records was a Dask event, kept in the scheduler's event log (readable
    by any client with ``get_events``), growing with the run: about 2.4 MB for 3,000 tasks.
    """
    for n in (1, 2):
        with Task(f"round {n}") as round_:
            client.gather(client.map(work.square_in_task, range(100 * n, 100 * n + 60)))
        assert len(round_.subtasks) == 60
        assert all(t.status is TaskStatus.FINISHED for t in round_.subtasks)
        assert client.get_events(TOPIC) == ()


def test_map_and_delayed_tasks_join_the_tree(client: Client, tmp_path: Path) -> None:
    """client.map and dask.delayed(...).compute(): worker tasks under the driver's, one trace."""
    out = tmp_path / "driver.json"
    addresses = sorted(client.scheduler_info()["workers"])
    with Task("driver", file=out) as driver:
        squares = client.gather(client.map(work.square_in_task, range(4)))
        pinned = client.gather(  # one task on each worker process, whatever the scheduler does
            [
                client.submit(work.square_in_task, 10 + i, workers=[a])
                for i, a in enumerate(addresses)
            ]
        )
        total = dask.delayed(work.add_in_task)(
            dask.delayed(work.square_in_task)(5), dask.delayed(work.square_in_task)(6)
        ).compute()
    assert squares == [0, 1, 4, 9]
    assert pinned == [100, 121]
    assert total == 61
    saved = Task.model_validate_json(out.read_text())
    for tree in (driver, saved):
        labels = sorted(t.label for t in tree.subtasks)
        assert labels == ["add"] + [f"square {i}" for i in (0, 1, 10, 11, 2, 3, 5, 6)]
        for sub in tree.subtasks:
            assert sub.parent_id == tree.task_id
            assert sub.trace_id == tree.trace_id
            assert sub.subprocess
            assert sub.status is TaskStatus.FINISHED
        workers = {t.model_extra["dask_worker"] for t in tree.subtasks}
        assert workers == set(addresses)  # each record names the worker process that ran it
        by_label = {t.label: t.model_extra["dask_worker"] for t in tree.subtasks}
        assert [by_label["square 10"], by_label["square 11"]] == addresses
        worker_cpu_s = sum(t.cpu_time or 0.0 for t in tree.subtasks)
        assert tree.total_cpu() == pytest.approx((tree.cpu_time or 0.0) + worker_cpu_s)


def test_failing_worker_task_is_failed_in_the_driver_tree(client: Client) -> None:
    """A task raising in a worker is `failed` with its error; the future re-raises it."""
    with Task("driver") as driver:
        future = client.submit(work.failing_fold, 1)
        with pytest.raises(ValueError, match="fold 1 is odd"):
            future.result()
    (failed,) = driver.subtasks
    assert failed.status is TaskStatus.FAILED
    assert failed.error == "ValueError: fold 1 is odd"


def test_dask_logs_name_the_users_function_of_a_failed_task(client: Client) -> None:
    """Dask's "Compute Failed" log of a carried task names the user's function, not the wrapper.

    Before: ``Task: <Task 'failing_fold-…' <tasktrace.integrations.dask.CarriedFunction objec(…)>``.
    """
    with Task("driver"):
        future = client.submit(work.failing_fold, 3)
        with pytest.raises(ValueError, match="fold 3 is odd"):
            future.result()
    logs = client.get_worker_logs()
    failed = [
        msg
        for lines in logs.values()
        for _, msg in lines
        if "Compute Failed" in msg and future.key in msg
    ]
    assert len(failed) == 1
    assert f"<Task {future.key!r} failing_fold(" in failed[0]
    assert "CarriedFunction" not in failed[0]


def test_wrapped_function_presents_the_users_name() -> None:
    """The wrapper shows the user's function's name, qualname, module and doc (functools-style)."""
    with Task("driver"):
        carrier = capture()
    assert carrier is not None
    wrapped = CarriedFunction(work.failing_fold, carrier, "key-1")
    assert (wrapped.__name__, wrapped.__qualname__, wrapped.__module__, wrapped.__doc__) == (
        "failing_fold",
        "failing_fold",
        work.__name__,
        work.failing_fold.__doc__,
    )
    assert funcname(wrapped) == "failing_fold"
    assert funcname(CarriedFunction(partial(work.failing_fold, 2), carrier, "key-2")) == (
        "failing_fold"
    )


def test_retries_of_a_raising_task_on_one_worker_are_numbered_in_start_order(
    client: Client, tmp_path: Path
) -> None:
    """``retries=2``, raising twice then succeeding on the same worker: attempts 1, 2, 3.

    Before: attempts were numbered by the distinct workers seen: 1, 1, 1 on one worker (and
    1, 2, 1 when Dask moved the second run elsewhere).
    """
    address = sorted(client.scheduler_info()["workers"])[0]
    with Task("driver") as driver:
        ran_on = client.submit(
            dask_work.fail_before, str(tmp_path / "count"), 2, retries=2, workers=[address]
        ).result()
    assert ran_on == address
    flaky = sorted(driver.subtasks, key=lambda t: t.start_time or 0.0)
    assert [(t.model_extra.get("attempt"), t.status, t.error) for t in flaky] == [
        (1, TaskStatus.FAILED, "RuntimeError: flake 0"),
        (2, TaskStatus.FAILED, "RuntimeError: flake 1"),
        (3, TaskStatus.FINISHED, None),
    ]
    assert len({t.model_extra["dask_key"] for t in flaky}) == 1  # one key, three runs
    assert len({t.model_extra["dask_call"] for t in flaky}) == 3


def test_key_rerun_after_a_lost_worker_keeps_the_lost_attempt(
    client: Client, tmp_path: Path
) -> None:
    """A worker dying mid-task (os._exit): Dask re-runs the key; attempt 1 failed, 2 finished."""
    with Task("driver") as driver:
        survivor = client.submit(work.die_once, str(tmp_path / "marker")).result()
    fragile = sorted(driver.subtasks, key=lambda t: t.model_extra["attempt"])
    assert [(t.model_extra["attempt"], t.status) for t in fragile] == [
        (1, TaskStatus.FAILED),
        (2, TaskStatus.FINISHED),
    ]
    first, second = fragile
    assert "Dask worker lost" in (first.error or "")
    assert first.model_extra["dask_key"] == second.model_extra["dask_key"]
    assert first.model_extra["dask_worker"] != second.model_extra["dask_worker"]
    assert survivor != int((tmp_path / "marker").read_text())


def test_work_outliving_its_parent_is_attached_late_and_the_file_rewritten(
    client: Client, tmp_path: Path
) -> None:
    """A task finishing after its submitting task is attached late; the file is rewritten."""
    out = tmp_path / "early.json"
    with Task("early", file=out) as early:
        future = client.submit(work.slow_in_task, 0.3)
    assert future.result() == 0.3
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        saved = Task.model_validate_json(out.read_text())
        if saved.subtasks and saved.subtasks[0].status is not TaskStatus.RUNNING:
            break  # (a running snapshot may come first, when the task was seen running)
        time.sleep(0.05)
    (slow,) = saved.subtasks
    assert (slow.label, slow.status, slow.parent_id) == ("slow", TaskStatus.FINISHED, early.task_id)
    assert [t.label for t in early.subtasks] == ["slow"]


def test_records_on_their_way_at_the_finish_are_waited_for(client: Client, tmp_path: Path) -> None:
    """Records already sent when the finish asks the workers arrive before the finish ends."""
    out = tmp_path / "driver.json"
    plugin = DelayRecordEvents(0.6)
    client.register_plugin(plugin, name=plugin.name)
    try:
        with Task("driver", file=out) as driver:
            client.gather(client.map(work.square_in_task, range(40), pure=False))
            time.sleep(0.5)  # the workers' batches leave now, and arrive 0.6 s later
        labels = sorted(t.label for t in driver.subtasks)
        saved = sorted(t.label for t in Task.model_validate_json(out.read_text()).subtasks)
    finally:
        client.unregister_worker_plugin(plugin.name)
    assert labels == sorted(f"square {i}" for i in range(40))
    assert saved == labels


def test_no_running_task_behaves_as_without_tasktrace(client: Client) -> None:
    """Submitting with no task running: results as usual, no annotation, nothing delivered."""
    assert client.gather(client.map(work.plain, range(5))) == [0, 1, 4, 9, 16]
    assert Task.current() is None


DRIVER = textwrap.dedent(
    """
    import sys
    from distributed import Client, LocalCluster
    import tasktrace
    from tasktrace import Task
    from tasktrace.integrations.dask import setup
    from tests.integrations.engine_workers import square_in_task

    def main():
        tasktrace.configure(endpoint=sys.argv[1], headers={"authorization": "Bearer s3cret"})
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)
        client = setup(Client(cluster))
        with Task("driver", file="driver.json"):
            client.gather(client.map(square_in_task, range(4)))
        client.close()
        cluster.close()

    if __name__ == "__main__":
        main()
    """
)


def test_workers_export_with_the_drivers_configure_settings(tmp_path: Path) -> None:
    """configure(endpoint, headers) in the driver reaches the workers: one trace, no secret out."""
    with OtlpHttpReceiver(require_headers={"authorization": "Bearer s3cret"}) as receiver:
        script = tmp_path / "driver.py"
        script.write_text(DRIVER)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
        subprocess.run(
            [sys.executable, str(script), receiver.endpoint],
            cwd=tmp_path,
            env=env,
            check=True,
            timeout=120,
        )
        spans = receiver.wait_for(5, timeout_s=30)
    (root,) = [s for s in spans if s.name == "driver"]
    squares = [s for s in spans if s.name.startswith("square ")]
    assert len(squares) == 4
    assert {s.trace_id for s in spans} == {root.trace_id}
    assert {s.parent_span_id for s in squares} == {root.span_id}
    text = (tmp_path / "driver.json").read_text()
    assert "s3cret" not in text
    assert all("s3cret" not in repr(s.attributes) for s in spans)


def _docs_example(page: str, marker: str) -> str:
    """Return the Python block of ``docs/<page>`` that contains ``marker``."""
    text = (Path(__file__).parents[2] / "docs" / page).read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    (block,) = [b for b in blocks if marker in b]
    return block


def test_the_documented_dask_example_runs_as_a_script(tmp_path: Path) -> None:
    """docs/clusters.md's Dask example, saved as a file and run, writes the documented tree.

    Before: it created the LocalCluster at import, so the spawned workers (which import the
    script) tried to start a cluster of their own: "Nanny failed to start", no driver.json.
    """
    (tmp_path / "example.py").write_text(_docs_example("clusters.md", "integrations.dask"))
    done = subprocess.run(
        [sys.executable, "example.py"],
        check=False,
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    driver = Task.model_validate_json((tmp_path / "driver.json").read_text())
    assert sorted(s.label for s in driver.subtasks) == [f"square {i}" for i in (0, 1, 2, 3, 5)]
    assert all(s.subprocess for s in driver.subtasks)
