"""The Dask integration's client side: task records coming home (see :mod:`.dask`).

Records arrive as events relayed by the scheduler (:meth:`Inbox.handle`,
:mod:`.dask_relay`); at a submitting task's finish, and before a set-up client closes, the
client asks every worker for what it still holds (:meth:`Inbox.collect`; an asynchronous
client at its close: :meth:`Inbox.closing_async`). A record still ``running`` that can no
longer come home (its worker left the cluster, or its client closed) becomes ``failed`` with a
note.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from distributed import Client

from tasktrace.core.record import TaskRecord, node_class
from tasktrace.core.status import TaskStatus
from tasktrace.core.warn import WarnOnce
from tasktrace.integrations.attempts import Attempts
from tasktrace.tree.delivery import deliver, delivered

__all__ = ["EVENT_WAIT_S", "WORKER_LEFT_ERROR", "Inbox"]

_log = logging.getLogger("tasktrace.integrations.dask")
_warn = WarnOnce(_log)

EVENT_WAIT_S: Final = 5.0
"""How long a submitting task's finish waits, at most, for batches of records that the workers
had sent as events before its request (they travel through the scheduler; the answer to the
request can arrive first)."""

WORKER_LEFT_ERROR: Final = (
    "Dask worker lost: the worker running the task left the cluster before the task finished"
)
"""The error of a record left ``running`` on a worker no longer in the cluster (the retry's
error replaces it once Dask is seen running the task again: :class:`.Attempts`)."""


class Inbox:
    """The client side: records arriving as events, and what the workers hold, collected.

    Args:
        flush: The function ``client.run`` calls on each worker to take what it holds
            (:func:`tasktrace.integrations.dask.flush_worker`).

    Thread-safe: events arrive on the client's event loop, finishes and closes come from the
    user's threads.
    """

    def __init__(self, flush: Callable[[Any], Mapping[str, Any]]) -> None:
        """Start with no client and nothing received."""
        self.flush = flush
        self.attempts = Attempts(
            "dask_key", "dask_worker", "Dask", (WORKER_LEFT_ERROR,), call_key="dask_call"
        )
        self.unregister: Callable[[], None] | None = None
        self.clients: weakref.WeakSet[Client] = weakref.WeakSet()
        self.submitted: set[Any] = set()  # task ids of tasks whose carriers went out
        self.received: dict[str, int] = {}  # sender: the last batch delivered (its seq)
        self.arrived = threading.Condition()
        self.running: dict[uuid.UUID, str] = {}  # records delivered as running: their Dask key

    def handle(self, event: tuple[float, Mapping[str, Any]]) -> None:
        """``subscribe_topic`` handler (the client's event loop): deliver the records."""
        _, msg = event
        self.deliver(msg.get("records", ()))
        sender, seq = msg.get("sender"), msg.get("seq")
        if isinstance(sender, str) and isinstance(seq, int):
            with self.arrived:
                if seq > self.received.get(sender, 0):
                    self.received[sender] = seq
                self.arrived.notify_all()

    def wait_for(self, sent: Mapping[str, int]) -> None:
        """Wait until the batches each sender had ``sent`` arrived (:data:`EVENT_WAIT_S` at most).

        A batch travels through the scheduler, while ``client.run``'s answer takes another
        route: it can arrive first. Batches that do not come in time are not waited for again
        (their records are attached late, when they come).
        """
        with self.arrived:
            if not self.arrived.wait_for(lambda: self._all_arrived(sent), EVENT_WAIT_S):
                self._give_up(sent)

    async def wait_for_async(self, sent: Mapping[str, int]) -> None:
        """:meth:`wait_for` on the event loop that receives the batches (polls, never blocks)."""
        deadline = time.monotonic() + EVENT_WAIT_S
        while time.monotonic() < deadline:
            with self.arrived:
                if self._all_arrived(sent):
                    return
            await asyncio.sleep(0.01)
        with self.arrived:
            self._give_up(sent)

    def _all_arrived(self, sent: Mapping[str, int]) -> bool:
        return all(self.received.get(k, 0) >= n for k, n in sent.items())

    def _give_up(self, sent: Mapping[str, int]) -> None:
        for k, n in sent.items():
            self.received[k] = max(self.received.get(k, 0), n)

    def deliver(self, raw: Iterable[str]) -> None:
        """Deliver task JSON records (numbered as attempts); remember those still running."""
        cls = node_class()
        records = [cls.model_validate_json(r) for r in raw]
        if records:
            sorted_out = self.attempts.sort_out(records)
            with self.arrived:
                for record in sorted_out:
                    key = (record.model_extra or {}).get("dask_key")
                    if key and record.status is TaskStatus.RUNNING:
                        self.running[record.task_id] = key
                    else:
                        self.running.pop(record.task_id, None)
            deliver(sorted_out)

    def pull(self, finished: TaskRecord | None) -> None:
        """At a submitting task's finish: the workers hand over what they hold (a record source)."""
        if finished is None or finished.task_id not in self.submitted:
            return
        self.submitted.discard(finished.task_id)
        live: set[str] = set()
        asked = False
        for client in list(self.clients):
            if client.status == "running" and not client.asynchronous:
                self.collect(client)
                try:
                    live.update(client.scheduler_info().get("workers") or ())
                    asked = True
                except Exception:  # noqa: BLE001, S112 - then no worker is taken for lost
                    continue
        if asked:  # a record still running on a worker that left can never finish
            self.fail(lambda worker: worker not in live, WORKER_LEFT_ERROR)

    def fail(self, lost_on: Callable[[str], bool], error: str) -> int:
        """Make ``failed`` with ``error`` the running records of workers ``lost_on`` is true for.

        Returns:
            How many records became ``failed`` (delivered again).
        """
        with self.arrived:
            lost = [t for t in self.running if lost_on(_worker(delivered(t)))]
            for t in lost:
                del self.running[t]
        failed = []
        for task_id in lost:
            record = delivered(task_id)
            if record is not None and record.status is TaskStatus.RUNNING:
                record = record.model_copy()
                record.status = TaskStatus.FAILED
                record.error = error
                failed.append(record)
        if failed:
            deliver(failed)
        return len(failed)

    def collect(self, client: Client) -> None:
        """Take what ``client``'s workers hold, and the batches they had sent before."""
        try:
            held = client.run(self.flush, on_error="ignore")
        except Exception as e:  # noqa: BLE001 - collecting must not break the user's task
            _warn("dask-flush", "tasktrace: cannot collect task records from Dask: %r", e)
            return
        sent = self._take(held)
        if sent:
            self.wait_for(sent)

    async def collect_async(self, client: Client) -> None:
        """:meth:`collect` for an asynchronous ``client``, on its event loop."""
        try:
            held = await client.run(self.flush, on_error="ignore")
        except Exception as e:  # noqa: BLE001 - collecting must not break the user's task
            _warn("dask-flush", "tasktrace: cannot collect task records from Dask: %r", e)
            return
        sent = self._take(held)
        if sent:
            await self.wait_for_async(sent)

    def _take(self, held: Mapping[str, Any]) -> dict[str, int]:
        sent: dict[str, int] = {}
        for reply in held.values():
            if isinstance(reply, Mapping):
                self.deliver(reply.get("records") or ())
                if reply.get("sent"):
                    sent[reply["sender"]] = reply["sent"]
        return sent

    def closing(self, client: Client) -> None:
        """Before ``client`` closes while a submitting task runs: bring its workers' records home.

        Afterwards no record of its workers can come home (unless another set-up client of the
        same scheduler stays open): the tasks they still run are lost. One warning says how
        many, and their records delivered as ``running`` become ``failed``.
        """
        if client.status != "running" or client.asynchronous or not self.submitted:
            return  # (an asynchronous client: closing_async, from its close coroutine)
        self.collect(client)
        if not self._other_client(client):
            self._lose(client, client.scheduler_info().get("workers") or ())

    async def closing_async(self, client: Client) -> None:
        """:meth:`closing` for an asynchronous ``client``, from its close coroutine.

        (``await client.close()`` and ``async with`` both reach it; ``close`` marks the client
        ``closing`` first, its connection still open.)
        """
        if client.status not in ("running", "closing") or not self.submitted:
            return
        await self.collect_async(client)
        if not self._other_client(client):
            identity = await client.scheduler.identity(n_workers=-1)
            self._lose(client, identity.get("workers") or ())

    def _other_client(self, client: Client) -> bool:
        """Whether another set-up client of ``client``'s scheduler stays open (records come)."""
        address = _scheduler_address(client)
        return any(
            c is not client and c.status == "running" and _scheduler_address(c) == address
            for c in list(self.clients)
        )

    def _lose(self, client: Client, workers: Iterable[str]) -> None:
        """``client`` closes: fail its workers' running records; warn once with the count."""
        with self.arrived:
            keys = set(self.running.values())
        failed = self.fail(
            set(workers).__contains__,
            "Dask client closed while the task ran: its record cannot come home",
        )
        pending = {str(k) for k, f in list(client.futures.items()) if f.status == "pending"}
        unseen = len(pending - keys)
        if failed or unseen:
            _log.warning(
                "tasktrace: a Dask client closed while %d Dask task(s) still running had not sent "
                "their task records (%d seen started, now failed; %d not seen started): the "
                "records are lost. Close the client after the work finished.",
                failed + unseen,
                failed,
                unseen,
            )


def _scheduler_address(client: Client) -> str | None:
    try:
        return str(client.scheduler.address)
    except AttributeError:
        return None


def _worker(record: TaskRecord | None) -> str:
    return str(((record.model_extra if record is not None else None) or {}).get("dask_worker"))
