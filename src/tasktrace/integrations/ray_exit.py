"""Ray: workers that end, after a call (worker side) or unheard of (driver side).

Ray ends a worker right after a call when the remote function's ``max_calls`` is reached or
the call asked its actor to exit (``ray.actor.exit_actor()``); by the time the process's exit
handlers run, the worker is disconnected from Ray. :mod:`tasktrace.integrations.ray` asks
:func:`exits_after_call` at each carried call's end and, if so, sends the worker's records
home from the call's thread before it returns.

A worker that died (killed, ``os._exit``) sends nothing more: when the collector takes it for
gone, :class:`GoneWorkers` (in the driver) makes the records it left ``running`` ``failed``.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any, Final

import ray

from tasktrace.core.record import TaskRecord
from tasktrace.core.status import TaskStatus
from tasktrace.tree.delivery import delivered

__all__ = ["LOST_ERROR", "GoneWorkers", "exits_after_call"]

LOST_ERROR: Final = "Ray worker gone: its process ended before it sent this task's end"
"""The error of a record left ``running`` by a worker the collector took for gone."""


def exits_after_call() -> bool:
    """Return whether Ray ends this worker when the running call returns.

    Reads Ray's worker internals (the function manager's ``max_calls`` and call counts, the
    actor's exit flag: public attributes of objects in ``ray._private``), as no public API
    tells; with a Ray whose internals differ, returns ``False`` (never raises). Call it in the
    thread running the call, before it returns.
    """
    try:
        worker: Any = ray._private.worker.global_worker
        should_exit = getattr(worker.core_worker, "get_current_actor_should_exit", None)
        if should_exit is not None and should_exit():
            return True
        manager = worker.function_actor_manager
        name = worker.current_task_function_name.rpartition(".")[2]
        for descriptor, info in list(manager.execution_infos.items()):
            if info.max_calls and descriptor.function_name == name:
                return bool(manager.get_task_counter(descriptor) + 1 >= info.max_calls)
    except Exception:  # noqa: BLE001 - another Ray version: the batcher's thread sends
        return False
    return False


class GoneWorkers:
    """The driver's book of each worker's records last seen ``running`` (thread-safe)."""

    def __init__(self) -> None:
        """Start with no worker known."""
        self._lock = threading.Lock()
        self._running: dict[str, set[uuid.UUID]] = {}

    def failed(self, records: list[TaskRecord], lost: list[str]) -> list[TaskRecord]:
        """Note ``records``; make the running records of the ``lost`` workers ``failed``.

        Args:
            records: Records about to be delivered (changed in place when failed).
            lost: Ids of the workers the collector took for gone.

        Returns:
            The records delivered before that were failed now (to be delivered again).
        """
        with self._lock:
            for record in records:
                worker = (record.model_extra or {}).get("ray_worker_id")
                if worker and record.status is TaskStatus.RUNNING:
                    self._running.setdefault(worker, set()).add(record.task_id)
                elif worker in self._running:
                    self._running[worker].discard(record.task_id)
                    if not self._running[worker]:
                        del self._running[worker]
            ids = [i for worker in lost for i in self._running.pop(worker, ())]
        batch = {r.task_id: r for r in records}
        again = []
        for task_id in ids:
            task = batch.get(task_id) or delivered(task_id)
            if task is not None and task.status is TaskStatus.RUNNING:
                task.status = TaskStatus.FAILED
                task.error = LOST_ERROR
                if task_id not in batch:
                    again.append(task)
        return again
