"""Attempts of one unit of engine work, numbered in the order they started (driver side).

An engine may run the same unit of work (a Ray task id, a Dask key) again: on another worker
after the first worker died, or on the same worker after it raised (Dask's ``retries=``). The
worker sends each root task's record when the task starts (running) and when it finishes; its
records carry the work id, the worker and, where the engine's integration gives one, the call
(one run of the work: Dask's ``dask_call``). An *attempt* is one call (without a call key: the
runs on one worker). When records of one work id come from more than one attempt, every record
of that work gets an ``attempt`` number (1 for the attempt that started first: the earliest
start of its records) and a record still ``running`` from an earlier attempt becomes
``failed``: the engine ran the work again, so that attempt is over (a record of an attempt
that raised is already ``failed`` with its error, and keeps it). A record the driver already
failed because its worker was taken for gone (one of the engine's ``lost_errors``) gets the
same retry error, whichever of the two was seen first.

A unit of work is its work id under one parent (a Dask key that two tasks submit, each in
turn, is run once for each: two units, not attempts). The book keeps, per unit of work, only
its attempts (their earliest start) and the ids of its records, for the last
:data:`WORKS_KEPT` units; the records themselves are found again among those delivered
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
    __slots__ = ("attempts", "task_ids")

    def __init__(self) -> None:
        self.attempts: dict[tuple[str, str | None], float] = {}  # attempt: its earliest start
        self.task_ids: dict[uuid.UUID, tuple[str, str | None]] = {}  # record: its attempt


class Attempts:
    """Per-process book of the attempts seen (thread-safe).

    Args:
        work_key: Extra-data key of a record naming its unit of work (``"ray_task_id"``).
        worker_key: Extra-data key naming the worker that ran it (``"ray_worker_id"``).
        engine: The engine's name for error messages (``"Ray"``).
        lost_errors: Errors the driver gives a ``running`` record whose worker it took for
            gone; once the work is seen run again, such a record's error is the retry's.
        call_key: Extra-data key naming the call (one run of the work on its worker), when the
            integration records one (``"dask_call"``); without it (or on a record that lacks
            it), the runs on one worker count as one attempt.
    """

    def __init__(
        self,
        work_key: str,
        worker_key: str,
        engine: str,
        lost_errors: Iterable[str] = (),
        *,
        call_key: str | None = None,
    ) -> None:
        """Start with no attempts seen."""
        self.work_key = work_key
        self.worker_key = worker_key
        self.engine = engine
        self.lost_errors = frozenset(lost_errors)
        self.call_key = call_key
        self._lock = threading.Lock()
        self._works: collections.OrderedDict[tuple[str, uuid.UUID | None], _Work] = (
            collections.OrderedDict()
        )

    def sort_out(self, records: Iterable[TaskRecord]) -> list[TaskRecord]:
        """Give each attempt among ``records`` (and those seen before) its number.

        Returns:
            ``records`` in start order, plus earlier records whose ``attempt`` or status changed
            (to be delivered again: :func:`tasktrace.tree.delivery.deliver` replaces by task id).
        """
        ordered = sorted(records, key=_start)
        out: dict[uuid.UUID, TaskRecord] = {}
        works = self._works
        renumber: dict[int, tuple[str, _Work]] = {}
        with self._lock:
            for record in ordered:
                out[record.task_id] = record
                extra = record.model_extra or {}
                work, worker = extra.get(self.work_key), extra.get(self.worker_key)
                if not work or not worker:
                    continue
                call = extra.get(self.call_key) if self.call_key else None
                attempt = (str(worker), str(call) if call else None)
                entry = works.get((work, record.parent_id))  # a key reused elsewhere: not a retry
                if entry is None:
                    entry = works[(work, record.parent_id)] = _Work()
                    if len(works) > WORKS_KEPT:
                        works.popitem(last=False)
                start = _start(record)
                if start < entry.attempts.get(attempt, float("inf")):
                    entry.attempts[attempt] = start
                entry.task_ids[record.task_id] = attempt
                if len(entry.attempts) > 1:
                    renumber[id(entry)] = (work, entry)
            for work, entry in renumber.values():
                numbers = {
                    a: n
                    for n, a in enumerate(sorted(entry.attempts, key=entry.attempts.__getitem__), 1)
                }  # in start order (a tie: in the order seen)
                for task_id, attempt in entry.task_ids.items():
                    task = out.get(task_id) or delivered(task_id)
                    if task is not None and self._number(
                        task, work, numbers[attempt], len(numbers)
                    ):
                        out[task.task_id] = task
        return list(out.values())

    def _number(self, task: TaskRecord, work: str, attempt: int, last: int) -> bool:
        changed = (task.model_extra or {}).get("attempt") != attempt
        task.attempt = attempt  # type: ignore[attr-defined]  # extra data
        lost = task.status is TaskStatus.FAILED and task.error in self.lost_errors
        if attempt < last and (task.status is TaskStatus.RUNNING or lost):
            task.status = TaskStatus.FAILED
            task.error = (
                f"{self.engine} worker lost: attempt {attempt} of {work} was run again as "
                f"attempt {last}"
            )
            changed = True
        return changed


def _start(task: TaskRecord) -> float:
    return task.start_time if task.start_time is not None else float("inf")
