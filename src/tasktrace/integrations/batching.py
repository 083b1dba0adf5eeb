"""Worker side: records of carried root tasks, sent home in batches by one timer thread.

Sending a record per task costs a message per task; an engine worker running thousands of
1 ms calls pays that many times over. A :class:`RecordBatcher` (one per worker process) buffers
the records instead and a timer thread sends them every :data:`FLUSH_INTERVAL_S`:

- **finished records**: the remote scopes' finished roots are collected when a batch is made
  (:func:`~tasktrace.task.roots.hand_on_finished` hands them to each scope's ``on_finished``,
  :meth:`RecordBatcher.finished`) and serialised then, many in a row with warm caches, in the
  batcher's thread: nothing of the batcher runs at a root's finish, between two user calls.
  One message per interval;
- **start records only for long tasks**: a root still running one interval after it started
  is announced by a snapshot (so a worker killed mid-task leaves a ``running`` record that the
  driver can mark ``failed``), and re-sent every ``refresh_interval_s`` while it runs; a task
  shorter than the interval sends one record, when it finished;
- **activity marks**: each batch says when it was sent (``sent_at``, wall clock) and whether the
  worker is idle (nothing happened for a whole interval, and no finished root's record is
  still to be handed on: it sends nothing more until a root starts again); a worker that
  turns busy after being idle says so at once, so the driver knows whose batch to wait for
  (:mod:`tasktrace.integrations.ray`). A busy worker sends one message per interval, however
  many tasks it runs.

Spans of the worker are flushed before each batch that carries a finished record, so they
reach the exporter before the driver sees the records (engine workers may be ended without
running exit handlers): a batch holds only the records collected before that flush, and a
root that finished during it goes with the next batch.

Thread-safety: every method may be called from any thread.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from tasktrace.core.record import TaskRecord, dump_json
from tasktrace.core.settings import get_settings
from tasktrace.core.status import TaskStatus
from tasktrace.core.warn import WarnOnce
from tasktrace.export.provider import flush_spans
from tasktrace.task.carriers import snapshot
from tasktrace.task.roots import hand_on_finished
from tasktrace.tree.processor import tree
from tasktrace.tree.refresh import EXIT_WAIT_S

__all__ = ["FLUSH_INTERVAL_S", "Batch", "RecordBatcher"]

_warn = WarnOnce(logging.getLogger(__name__))

FLUSH_INTERVAL_S: Final = 0.25
"""Seconds between two batches of a busy worker (also how long a root runs before its start
record is sent). Each batch is a message through the engine (a Ray actor call, a Dask event)
that costs milliseconds of CPU in the worker, the engine and the driver (Ray's collector actor
alone about 2 ms a batch on a 2-core machine): a quarter of a second keeps that small. The
driver does not wait for the interval at a submitting task's finish: it asks the workers for
what they hold."""


@dataclass
class Batch:
    """One message of a worker to the driver (plain data: picklable by every engine).

    Attributes:
        worker: The worker's id in its engine.
        records: Task JSON documents (finished roots, snapshots of long running ones).
        sent_at: ``time.time()`` when the batch was made, in seconds.
        idle: Whether the worker had no carried root running and no carried call started
            since the previous batch (it sends nothing more until it turns busy again).
    """

    worker: str
    records: list[str] = field(default_factory=list)
    sent_at: float = 0.0
    idle: bool = False


@dataclass
class _Root:
    task: TaskRecord
    started: float  # time.monotonic()
    sent: float = 0.0  # time.monotonic() of the last snapshot sent, 0: none yet


class RecordBatcher:
    """Buffers a worker's records and sends them in batches (see the module docstring).

    Args:
        worker: The worker's id, put in every batch.
        send: Sends a batch home, from the batcher's thread; a raise is warned about once.
        interval_s: Seconds between batches while busy.
        paced: ``send`` itself returns when the next batch is due (the Ray collector answers
            after at most ``interval_s``, or at once when the driver asks for the records: the
            next batch then goes out at once; only after a failed ``send`` does the thread
            sleep ``interval_s``); otherwise ``send`` returns at once and the thread sleeps
            ``interval_s``.
    """

    def __init__(
        self,
        worker: str,
        send: Callable[[Batch], None],
        interval_s: float = FLUSH_INTERVAL_S,
        *,
        paced: bool = False,
    ) -> None:
        """Create an idle batcher (its thread starts with the first activity)."""
        self.worker = worker
        self.send = send
        self.interval_s = interval_s
        self.paced = paced
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._wake = threading.Event()
        self._finished: list[TaskRecord] = []  # serialised when a batch is made
        self._roots: dict[int, _Root] = {}
        self._busy = False
        self._touched = False
        self._spans = False
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._stopping = False

    # ----- what the remote scopes report ---------------------------------------------------------

    def started(self, task: TaskRecord) -> None:
        """Note a root task as it starts (a scope's ``on_started``); announced if it runs long.

        A worker that was idle says at once that it is busy (its thread sends a first batch
        without waiting for the interval).
        """
        with self._lock:
            self._roots[id(task)] = _Root(task, time.monotonic())
            self._touched = True
            if not self._busy:
                self._busy = True
                self._ensure_thread()

    def finished(self, task: TaskRecord) -> None:
        """Send a finished root's record (a scope's ``on_finished``) with the batch being made.

        Called while a batch is made (:func:`~tasktrace.task.roots.hand_on_finished`); the
        record is serialised then, and the root let go.
        """
        with self._lock:
            self._roots.pop(id(task), None)
            self._finished.append(task)
            self._touched = True
            if not self._busy:
                self._busy = True
                self._ensure_thread()

    def spans_pending(self) -> None:
        """Flush spans at the next tick (roots finished whose records went home another way)."""
        with self._lock:
            self._spans = True
            if not self._busy:
                self._busy = True
                self._ensure_thread()

    # ----- sending ----------------------------------------------------------------------------

    def flush(self) -> None:
        """Send what is buffered now (at a worker's teardown), with the spans first."""
        hand_on_finished()  # the roots whose spans the flush below covers
        flush_spans()
        with self._send_lock:
            self._send(self._take(time.monotonic(), final=True, hand_on=False))

    def take_now(self) -> list[str]:
        """Return what is buffered now instead of sending it (the driver asked for it).

        Spans are left to the batcher's thread (within one interval): this runs where waiting
        for an exporter would hold the engine up (Dask's event loop).
        """
        with self._send_lock:
            return self._take(time.monotonic()).records

    def _ensure_thread(self) -> None:
        if self._pid != os.getpid():  # a forked copy: the parent's thread is not ours
            self._pid = os.getpid()
            self._thread = None
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="tasktrace-record-batcher", daemon=True
            )
            self._thread.start()
            atexit.register(self.stop)
        self._wake.set()

    def stop(self, timeout_s: float = EXIT_WAIT_S) -> None:
        """Let a batch being made or sent finish (at most ``timeout_s``); send no more after it.

        Runs at interpreter exit: a daemon thread cut off inside pydantic's serialiser (a
        snapshot) or an engine's C++ client (a send) aborts the whole process ("FATAL:
        exception not rethrown"). What is still buffered is not sent: a worker's teardown
        (:meth:`flush`) sends it where the engine allows.
        """
        self._stopping = True
        if self._send_lock.acquire(timeout=timeout_s):  # the thread's batch in progress
            self._send_lock.release()

    def _take(self, now: float, *, final: bool = False, hand_on: bool = True) -> Batch:
        """Make the next batch: the finished records handed on, the long runners' snapshots.

        ``hand_on``: first collect the scopes' finished roots; ``False`` where the caller
        collected them before flushing their spans, so that the batch holds no record whose
        span was not flushed (one finished in between waits for the next batch).
        """
        refresh_s = get_settings().refresh_interval_s
        if hand_on:
            hand_on_finished()  # the scopes' finished roots, to finished()
        with self._lock:
            finished, self._finished = self._finished, []
            long_running: list[_Root] = []
            unhanded = False  # a root finished, its record not handed on yet
            for key, root in list(self._roots.items()):
                if root.task.status is not TaskStatus.RUNNING:
                    # Not handed on (finished() drops it): it finished since this batch's
                    # hand_on_finished; its record goes with the next batch, so this one is
                    # not idle (an idle batch ends the thread's sending: it would stay here).
                    del self._roots[key]
                    unhanded = True
                elif (root.sent == 0.0 and now - root.started >= self.interval_s) or (
                    root.sent and now - root.sent >= refresh_s
                ):
                    long_running.append(root)
            idle = final or not (finished or self._roots or self._touched or unhanded)
            self._touched = False
            if idle:
                self._busy = False
        records: list[str] = []
        if finished:
            with tree.lock:  # once for all (as tree.snapshot takes it for each)
                for task in finished:  # one after the other: warm caches
                    data = dump_json(task)
                    if data is not None:
                        records.append(data.decode())
        del finished
        for root in long_running:
            data = snapshot(root.task)
            if data is not None:
                records.append(data.decode())
                root.sent = now
        return Batch(self.worker, records, time.time(), idle)

    def _send(self, batch: Batch) -> bool:
        try:
            self.send(batch)
        except Exception as e:  # noqa: BLE001 - shipping must not break the user's task
            _warn("batch-send", "tasktrace: cannot send task records to the driver: %r", e)
            return False
        return True

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            first = True  # the busy mark: at once
            while True:
                if not first and not self.paced:
                    time.sleep(self.interval_s)
                first = False
                hand_on_finished()
                if self._finished or self._spans:
                    self._spans = False
                    flush_spans()  # finished roots: their spans leave before their records
                with self._send_lock:
                    if self._stopping:
                        return
                    # Only the records handed on above: a root finished during the flush
                    # has its span still queued (a worker killed now would lose it).
                    batch = self._take(time.monotonic(), hand_on=False)
                    sent = self._send(batch)
                if batch.idle:
                    break
                if self.paced and not sent:
                    time.sleep(self.interval_s)  # the sender failed: pace the next try
