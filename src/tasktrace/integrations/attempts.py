"""Attempts of one unit of engine work, told apart by the worker that ran them (driver side).

An engine may run the same unit of work (a Ray task id, a Dask key) again on another worker
after the first worker died. The worker sends each root task's record when the task starts
(running) and when it finishes; its records carry the work id and the worker. When records of
one work id come from more than one worker, every record of that work gets an ``attempt``
number (1 for the first worker seen, in start order) and a record still ``running`` from an
earlier attempt becomes ``failed``: its worker is gone, since the engine ran the work again.
A record the driver already failed because its worker was taken for gone (one of the
engine's ``lost_errors``) gets the same retry error, whichever of the two was seen first.

The book keeps, per unit of work, only the workers seen and the ids of its records, for the
last :data:`WORKS_KEPT` units; the records themselves are found again among those delivered
(:func:`tasktrace.tree.delivery.delivered`), so a record is freed with the tree that holds it.
"""

from __future__ import annotations

import collections
import threading
import uuid
from collections.abc import Iterable
from typing import Final

from tasktrace.core.record import TaskRecord
from tasktrace.core.status import TaskStatus
from tasktrace.tree.delivery import delivered

__all__ = ["WORKS_KEPT", "Attempts"]

WORKS_KEPT: Final = 65_536
"""How many units of work the book remembers (the oldest are forgotten first): a retry seen
after that many other units of work is not numbered."""


class _Work:
    __slots__ = ("task_ids", "workers")

    def __init__(self) -> None:
        self.workers: list[str] = []
        self.task_ids: list[uuid.UUID] = []


class Attempts:
    """Per-process book of the attempts seen (thread-safe).

    Args:
        work_key: Extra-data key of a record naming its unit of work (``"ray_task_id"``).
        worker_key: Extra-data key naming the worker that ran it (``"ray_worker_id"``).
        engine: The engine's name for error messages (``"Ray"``).
        lost_errors: Errors the driver gives a ``running`` record whose worker it took for
            gone; once the work is seen run again, such a record's error is the retry's.
    """

    def __init__(
        self, work_key: str, worker_key: str, engine: str, lost_errors: Iterable[str] = ()
    ) -> None:
        """Start with no attempts seen."""
        self.work_key = work_key
        self.worker_key = worker_key
        self.engine = engine
        self.lost_errors = frozenset(lost_errors)
        self._lock = threading.Lock()
        self._works: collections.OrderedDict[str, _Work] = collections.OrderedDict()

    def sort_out(self, records: Iterable[TaskRecord]) -> list[TaskRecord]:
        """Give each attempt among ``records`` (and those seen before) its number.

        Returns:
            ``records`` in start order, plus earlier records whose ``attempt`` or status changed
            (to be delivered again: :func:`tasktrace.tree.delivery.deliver` replaces by task id).
        """
        ordered = sorted(records, key=lambda t: t.start_time or 0.0)
        out: dict[uuid.UUID, TaskRecord] = {}
        works = self._works
        with self._lock:
            for record in ordered:
                out[record.task_id] = record
                extra = record.model_extra or {}
                work, worker = extra.get(self.work_key), extra.get(self.worker_key)
                if not work or not worker:
                    continue
                entry = works.get(work)
                if entry is None:
                    entry = works[work] = _Work()
                    if len(works) > WORKS_KEPT:
                        works.popitem(last=False)
                if worker not in entry.workers:
                    entry.workers.append(worker)
                if record.task_id not in entry.task_ids:
                    entry.task_ids.append(record.task_id)
                if len(entry.workers) > 1:
                    for task_id in entry.task_ids:
                        task = out.get(task_id) or delivered(task_id)
                        if task is not None and self._number(task, work, entry.workers):
                            out[task.task_id] = task
        return list(out.values())

    def _number(self, task: TaskRecord, work: str, workers: list[str]) -> bool:
        attempt = workers.index((task.model_extra or {})[self.worker_key]) + 1
        changed = (task.model_extra or {}).get("attempt") != attempt
        task.attempt = attempt  # type: ignore[attr-defined]  # extra data
        lost = task.status is TaskStatus.FAILED and task.error in self.lost_errors
        if attempt < len(workers) and (task.status is TaskStatus.RUNNING or lost):
            task.status = TaskStatus.FAILED
            task.error = (
                f"{self.engine} worker lost: attempt {attempt} of {work} was run again as "
                f"attempt {len(workers)}"
            )
            changed = True
        return changed
