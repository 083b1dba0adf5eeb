"""Dask: a worker closed gracefully, and an asynchronous client closed inside the task."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import pytest

distributed = pytest.importorskip(
    "distributed", reason="the Dask integration needs dask[distributed] installed"
)

from distributed import Client, LocalCluster  # noqa: E402

from tasktrace import Task, TaskStatus  # noqa: E402
from tasktrace.integrations.dask import setup  # noqa: E402

from . import dask_work  # noqa: E402
from . import engine_workers as work  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def _wait_until(done: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not done():
        time.sleep(0.05)


def test_a_retired_worker_sends_the_records_of_the_work_it_ran(tmp_path: Path) -> None:
    """``retire_workers`` while a task runs there (another one finished): both records finished.

    Dask runs the running task's key again elsewhere; the run on the retired worker still
    finishes (its span says so), and its record, with its CPU, comes home as finished.

    Before: the retired worker's running attempt was ``failed`` ("Dask worker lost") in the
    task file while its span said finished, and its CPU was missing from ``total_cpu()``.
    """
    out = tmp_path / "driver.json"
    with dask_work.set_up_client() as c:
        address = sorted(c.scheduler_info()["workers"])[0]
        with Task("driver", file=out) as driver:
            c.submit(dask_work.spin_in_task, "short", 0.05, workers=[address]).result()
            marker = tmp_path / "retired"  # "long" runs on until the worker was retired
            long = c.submit(
                dask_work.spin_until,
                "long",
                0.5,
                str(marker),
                workers=[address],
                allow_other_workers=True,
            )
            _wait_until(lambda: any(t.label == "long" for t in driver.subtasks))  # seen running
            assert c.retire_workers([address])
            marker.touch()
            assert long.result() != address  # the run Dask started again on the other worker
            _wait_until(  # the retired worker's run may end after the other one
                lambda: (
                    [t.status for t in driver.subtasks if t.label == "long"]
                    == [TaskStatus.FINISHED] * 2
                )
            )
    saved = Task.model_validate_json(out.read_text())
    for tree in (driver, saved):
        on_retired = sorted(
            (t for t in tree.subtasks if t.model_extra["dask_worker"] == address),
            key=lambda t: t.label,
        )
        assert [(t.label, t.status, t.error) for t in on_retired] == [
            ("long", TaskStatus.FINISHED, None),
            ("short", TaskStatus.FINISHED, None),
        ]
        assert (on_retired[0].cpu_time or 0.0) >= 0.4  # it spun 0.5 s of CPU
        others = [t for t in tree.subtasks if t.model_extra["dask_worker"] != address]
        assert [(t.label, t.status) for t in others] == [("long", TaskStatus.FINISHED)]
        workers_cpu_s = sum(t.cpu_time or 0.0 for t in tree.subtasks)
        assert tree.total_cpu() == pytest.approx((tree.cpu_time or 0.0) + workers_cpu_s)


async def _async_driver(out: Path, how: str) -> Task:
    """Run the work with an asynchronous client closed inside the task, as ``how`` says."""
    async with LocalCluster(**dask_work.cluster_kwargs(), asynchronous=True) as cluster:
        with Task("driver", file=out) as driver:
            client = await Client(cluster, asynchronous=True)
            async with client if how == "async with" else contextlib.nullcontext():
                await setup(client)
                squares = await client.gather(client.map(work.square_in_task, range(3)))
                assert squares == [0, 1, 4]
                client.submit(work.slow_in_task, 30.0)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and not any(
                    t.label == "slow" for t in driver.subtasks
                ):
                    await asyncio.sleep(0.05)  # the running task's first snapshot arrives
                if how == "await close":
                    await client.close()
    return driver


@pytest.mark.parametrize("how", ["await close", "async with"])
def test_asynchronous_client_closed_inside_the_task(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    """``await client.close()`` / ``async with`` in an asyncio driver: as a synchronous client.

    The finished work is in the tree; the work still running is ``failed`` with one warning.

    Before: ``setup`` of an asynchronous client never registered its worker plugin (the
    coroutine was not awaited: no task was carried), and its close went around the wrapper
    (the running task's record stayed ``running``, no warning).
    """
    out = tmp_path / "driver.json"
    caplog.set_level("WARNING", logger="tasktrace.integrations.dask")
    driver = asyncio.run(_async_driver(out, how))
    dask_work.check_closed_with_work_running(
        caplog.records, driver, out, [f"square {i}" for i in range(3)]
    )
