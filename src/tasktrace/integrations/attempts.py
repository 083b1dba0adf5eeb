"""Attempts of one unit of engine work, told apart by the worker that ran them (driver side).

An engine may run the same unit of work (a Ray task id, a Dask key) again on another worker
after the first worker died. The worker sends each root task's record when the task starts
(running) and when it finishes; its records carry the work id and the worker. When records of
one work id come from more than one worker, every record of that work gets an ``attempt``
number (1 for the first worker seen, in start order) and a record still ``running`` from an
earlier attempt becomes ``failed``: its worker is gone, since the engine ran the work again.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable

from tasktrace.core.record import TaskRecord
from tasktrace.core.status import TaskStatus

__all__ = ["Attempts"]


class Attempts:
    """Per-process book of the attempts seen (thread-safe).

    Args:
        work_key: Extra-data key of a record naming its unit of work (``"ray_task_id"``).
        worker_key: Extra-data key naming the worker that ran it (``"ray_worker_id"``).
        engine: The engine's name for error messages (``"Ray"``).
    """

    def __init__(self, work_key: str, worker_key: str, engine: str) -> None:
        """Start with no attempts seen."""
        self.work_key = work_key
        self.worker_key = worker_key
        self.engine = engine
        self._lock = threading.Lock()
        self._workers: dict[str, list[str]] = {}
        self._records: dict[str, dict[uuid.UUID, TaskRecord]] = {}

    def sort_out(self, records: Iterable[TaskRecord]) -> list[TaskRecord]:
        """Give each attempt among ``records`` (and those seen before) its number.

        Returns:
            ``records`` in start order, plus earlier records whose ``attempt`` or status changed
            (to be delivered again: :func:`tasktrace.tree.delivery.deliver` replaces by task id).
        """
        ordered = sorted(records, key=lambda t: t.start_time or 0.0)
        out: dict[uuid.UUID, TaskRecord] = {}
        with self._lock:
            for record in ordered:
                out[record.task_id] = record
                extra = record.model_extra or {}
                work, worker = extra.get(self.work_key), extra.get(self.worker_key)
                if not work or not worker:
                    continue
                workers = self._workers.setdefault(work, [])
                if worker not in workers:
                    workers.append(worker)
                known = self._records.setdefault(work, {})
                known[record.task_id] = record
                if len(workers) > 1:
                    for task in known.values():
                        if self._number(task, work, workers):
                            out[task.task_id] = task
        return list(out.values())

    def _number(self, task: TaskRecord, work: str, workers: list[str]) -> bool:
        attempt = workers.index((task.model_extra or {})[self.worker_key]) + 1
        changed = (task.model_extra or {}).get("attempt") != attempt
        task.attempt = attempt  # type: ignore[attr-defined]  # extra data
        if attempt < len(workers) and task.status is TaskStatus.RUNNING:
            task.status = TaskStatus.FAILED
            task.error = (
                f"{self.engine} worker lost: attempt {attempt} of {work} was run again as "
                f"attempt {len(workers)}"
            )
            changed = True
        return changed
