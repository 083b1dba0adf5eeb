"""Ray: the job's collector actor, the mailbox of task records between workers and driver.

See :mod:`tasktrace.integrations.ray` for how workers and the driver use it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

import ray

from tasktrace.integrations.batching import Batch

__all__ = ["GONE_S", "MAX_HELD", "RecordCollector"]

MAX_HELD: Final = 100_000
"""Most records the collector holds for the driver; beyond that the oldest are dropped."""
GONE_S: Final = 2.0
"""Seconds after which the collector takes a busy worker it has not heard of (no batch of it
held, none sent) for gone: a worker that died busy. A live busy worker is never silent for
more than one batch interval and its send."""


class _Seen:
    """What the collector knows of one worker (see :class:`RecordCollector`)."""

    __slots__ = ("busy_at", "flush", "heard", "idle", "sent_at", "waiting")

    def __init__(self) -> None:
        self.sent_at = 0.0  # worker's time.time() when its last batch was made
        self.busy_at = 0.0  # worker's time.time() of its last busy mark
        self.idle = True  # it holds nothing and runs no carried root
        self.waiting = False  # a batch of it is held here, to be answered
        self.heard = 0.0  # collector's loop time of its last batch or answer
        self.flush = 0  # the driver's last request (count) it was answered for


@ray.remote(num_cpus=0, max_restarts=-1)
class RecordCollector:
    """A job's mailbox of task records, filled by workers and drained by the driver.

    An asyncio actor: a worker's :meth:`put` is answered when its next batch is due (after
    :data:`~tasktrace.integrations.batching.FLUSH_INTERVAL_S`, or at once when the driver asks
    for the records), so a busy worker has one call waiting here and sends nothing else. A
    worker turning busy says so (:meth:`busy`) before its first carried call runs, so a drain
    never takes a worker for idle while it holds a record of a call the driver saw end.

    Args:
        environment: The driver's export set-up
            (:func:`~tasktrace.export.workers.worker_environment`), handed to each worker
            before its first carried call; it may hold secrets (headers), which stay in this
            actor's memory and the workers' environments.
    """

    def __init__(self, environment: dict[str, str]) -> None:
        """Start empty."""
        self._environment = environment
        self._records: list[str] = []
        self._workers: dict[str, _Seen] = {}
        self._changed: asyncio.Condition | None = None
        self._flush = 0  # how many times the driver asked for the records
        self._since = 0.0  # the driver's time.time() of its last request

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:  # made in the actor's event loop
            self._changed = asyncio.Condition()
        return self._changed

    def _seen(self, worker: str) -> _Seen:
        seen = self._workers.get(worker)
        if seen is None:
            seen = self._workers[worker] = _Seen()
        return seen

    async def environment(self) -> dict[str, str]:
        """Return the driver's export set-up for a worker to apply."""
        return self._environment

    async def busy(self, worker: str, at: float) -> None:
        """Note that ``worker`` turned busy at ``at`` (its ``time.time()``)."""
        changed = self._condition()
        async with changed:
            seen = self._seen(worker)
            seen.busy_at = max(seen.busy_at, at)
            seen.idle = False
            seen.heard = asyncio.get_running_loop().time()
            changed.notify_all()

    async def put(self, batch: Batch, interval_s: float) -> None:
        """Keep a worker's batch; answer when its next batch is due (see the class docstring).

        A batch made before the driver's last request, from a worker not answered since, is
        answered at once: the worker sends what it holds now. An idle batch made before the
        worker's last busy mark leaves it busy.
        """
        changed = self._condition()
        clock = asyncio.get_running_loop().time
        async with changed:
            self._records.extend(batch.records)
            if len(self._records) > MAX_HELD:  # nobody drains (no driver task): keep the last
                del self._records[: len(self._records) - MAX_HELD]
            seen = self._seen(batch.worker)
            seen.sent_at = max(seen.sent_at, batch.sent_at)
            seen.idle = batch.idle and batch.sent_at >= seen.busy_at
            seen.heard = clock()
            changed.notify_all()
            if batch.idle:
                return
            if seen.flush != self._flush and batch.sent_at < self._since:
                seen.flush = self._flush  # once per request: a worker's clock may lag
                return
            asked = self._flush
            seen.waiting = True
            try:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(
                        changed.wait_for(lambda: self._flush != asked), interval_s
                    )
            finally:
                seen.waiting = False
                seen.heard = clock()
                seen.flush = self._flush

    async def drain(self, since: float, wait_s: float) -> tuple[list[str], list[str]]:
        """Return and forget every record, after the busy workers' batches made since ``since``.

        Returns:
            The records (task JSON documents), and the ids of the workers taken for gone now.

        Busy workers are answered at once (they send what they hold); waits at most ``wait_s``
        seconds until every busy worker has sent a batch made at ``since`` (``time.time()``)
        or later. A busy worker not heard of for :data:`GONE_S` (no batch held here) is taken
        for gone (a worker that died busy) and not waited for, and forgotten.
        """
        changed = self._condition()
        clock = asyncio.get_running_loop().time
        async with changed:
            self._flush += 1
            self._since = max(self._since, since)
            changed.notify_all()

            def gone(seen: _Seen) -> bool:
                return not seen.waiting and clock() - seen.heard > GONE_S

            def caught_up() -> bool:
                return all(s.idle or s.sent_at >= since or gone(s) for s in self._workers.values())

            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(changed.wait_for(caught_up), wait_s)
            lost = [w for w, s in self._workers.items() if gone(s)]
            for worker in lost:
                del self._workers[worker]
            out, self._records = self._records, []
        return out, lost
