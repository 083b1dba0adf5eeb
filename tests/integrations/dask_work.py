"""Dask task bodies for the Dask tests (importable by the worker processes), and their cluster."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from distributed import Client, LocalCluster, get_client, get_worker, worker_client

from tasktrace import Task, TaskStatus
from tasktrace.integrations.dask import setup

from .engine_workers import busy_cpu, square_in_task


def cluster_kwargs(threads_per_worker: int = 1) -> dict[str, Any]:
    """``LocalCluster`` arguments of the Dask tests: two worker processes, no dashboard."""
    return {
        "n_workers": 2,
        "threads_per_worker": threads_per_worker,
        "processes": True,
        "dashboard_address": None,
    }


@contextmanager
def set_up_client(threads_per_worker: int = 1) -> Iterator[Client]:
    """Start a ``LocalCluster`` of :func:`cluster_kwargs` and a set-up client; close both after."""
    with (
        LocalCluster(**cluster_kwargs(threads_per_worker)) as cluster,
        Client(cluster) as client,
    ):
        setup(client)
        yield client


def spin_in_task(label: str, seconds: float) -> str:
    """Run ``Task(label)`` for about ``seconds`` of CPU; return the worker's address."""
    with Task(label):
        busy_cpu(seconds)
    return str(get_worker().address)


def spin_until(label: str, seconds: float, marker: str, timeout_s: float = 60.0) -> str:
    """Run ``Task(label)`` for ``seconds`` of CPU, then until ``marker`` exists (spinning).

    Returns the worker's address. Lets a test act while the task surely runs (a task of fixed
    length may end first on a quiet machine).
    """
    with Task(label):
        busy_cpu(seconds)
        deadline = time.monotonic() + timeout_s
        while not os.path.exists(marker) and time.monotonic() < deadline:
            busy_cpu(0.01)
    return str(get_worker().address)


def submit_from_worker(i: int, how: str) -> list[str]:
    """In ``Task(f"outer {i}")``, submit ``square_in_task`` to every worker from this task.

    Args:
        i: The task's number; the squares are of ``100 * i + j`` for the ``j``-th worker.
        how: ``"worker_client"`` (seceding while it waits) or ``"get_client"``.

    Returns:
        The worker addresses, in the order the squares were pinned to them (this task's own
        worker among them: the square sent there runs in this process, the other elsewhere).
    """
    with Task(f"outer {i}"):
        if how == "worker_client":
            with worker_client() as client:
                return _square_on_each_worker(client, i)
        return _square_on_each_worker(get_client(), i)


def submit_bare(i: int) -> list[str]:
    """Like :func:`submit_from_worker` with ``worker_client()``, but with no ``Task`` of its own."""
    with worker_client() as client:
        return _square_on_each_worker(client, i)


def _square_on_each_worker(client: object, i: int) -> list[str]:
    addresses = sorted(client.scheduler_info()["workers"])  # type: ignore[attr-defined]
    futures = [
        client.submit(square_in_task, 100 * i + j, workers=[a], pure=False)  # type: ignore[attr-defined]
        for j, a in enumerate(addresses)
    ]
    client.gather(futures)  # type: ignore[attr-defined]
    return addresses


def fail_before(counter: str, failures: int) -> str:
    """In ``Task("flaky")``, count the call in the file ``counter``; raise for the first few.

    Raises:
        RuntimeError: For the first ``failures`` calls ("flake <n>", n from 0).

    Returns:
        The address of the worker that ran the call.
    """
    with Task("flaky"):
        path = Path(counter)
        n = int(path.read_text()) if path.exists() else 0
        path.write_text(str(n + 1))
        if n < failures:
            raise RuntimeError(f"flake {n}")
        return str(get_worker().address)


def check_closed_with_work_running(
    records: list[logging.LogRecord], driver: Task, out: Path, squares: list[str]
) -> None:
    """Check a client closed while ``slow`` ran: one warning, ``squares`` done, ``slow`` failed.

    Checks the driver's tree and its file ``out`` alike.
    """
    lost = [r for r in records if "still running" in r.getMessage()]
    assert len(lost) == 1
    assert "1 Dask task" in lost[0].getMessage()
    saved = Task.model_validate_json(out.read_text())
    for tree in (driver, saved):
        by_label = {t.label: t for t in tree.subtasks}
        assert sorted(by_label) == sorted(["slow", *squares])
        assert all(by_label[label].status is TaskStatus.FINISHED for label in squares)
        assert by_label["slow"].status is TaskStatus.FAILED
        assert "client closed" in (by_label["slow"].error or "")
