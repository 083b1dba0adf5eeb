"""Dask distributed: tasks carry the submitting task as an annotation; records come home.

Set-up, once in the driver, for a client (yours, or ``get_client()``): ``setup(client)``
(``await setup(client)`` for an asynchronous client), after ``tasktrace.configure(...)``.

How it works:

- **Context.** :func:`setup` wraps the client's graph-submitting methods (``submit``, ``map``,
  ``compute``, ``persist``, ``get``, which ``dask.compute`` and ``.compute()`` use) on *this
  client object*: while a task runs, each submission runs inside ``dask.annotate`` with the
  running task's carrier (:data:`ANNOTATION`), Dask's own channel for per-task metadata.
- **Work submitted from a worker's task** (``worker_client()``, ``get_client()``, or a
  ``Client`` made there): in each worker process the plugin wraps the same methods of the
  ``Client`` class (:mod:`tasktrace.integrations.dask_clients`), so that work carries the
  worker's running task. Its records come home as any worker task's do; the driver attaches
  each under the record of the worker task that submitted it, by its id (a record arriving
  before its parent's waits for it). Run on the submitting worker while that task still
  runs, the work is a plain subtask of it, in its record.
- **Workers.** A :class:`TaskTracePlugin` (a ``distributed`` ``WorkerPlugin``) sees each task
  go to ``executing`` and, when it has the annotation, wraps the task's function so that it
  runs in a remote scope: a ``Task`` it starts is a subprocess subtask of the submitting task,
  in the same trace. The plugin also applies the driver's export environment
  (:func:`~tasktrace.export.workers.worker_environment`) to the worker, so spans leave
  through the same exporter set-up.
- **Records home.** Each worker buffers its finished tasks' records and sends them every
  :data:`~tasktrace.integrations.batching.FLUSH_INTERVAL_S` through the scheduler, which
  passes them on to the set-up client without keeping them (:mod:`.dask_relay`). When a task
  that submitted work finishes in the driver, the client asks every worker for what it still
  holds (``client.run`` of :func:`flush_worker`) and waits for the batches sent before it
  (:mod:`.dask_inbox`), so the records are in the task's file when it finishes. A worker
  closing (``retire_workers``, a cluster scaled down or closed) lets its carried calls
  finish (at most :data:`TEARDOWN_WAIT_S`) and sends what it holds.
- **Client closed inside the task.** :func:`setup` also wraps the client's ``close`` and
  ``shutdown`` (and an asynchronous client's close coroutine): before the client goes away
  while a submitting task runs, the workers hand over what they hold. Tasks still running
  then can send nothing more: one warning counts them, and their records seen ``running``
  become ``failed`` ("Dask client closed while the task ran").
- **Long tasks and re-runs.** A root task still running one flush interval after it started
  is announced by a snapshot (re-sent every ``refresh_interval_s``). Each run of a key is one
  attempt (its roots carry ``dask_call``: worker process and call number); when Dask runs a
  key again (its worker lost, or ``retries=``), the key's records get ``attempt`` numbers in
  start order (:class:`~tasktrace.integrations.attempts.Attempts`): a raised attempt keeps
  its error, a lost one's running record becomes ``failed`` (one shorter than an interval
  leaves no record). At a submitting task's finish, a record still ``running`` on a worker
  that left the cluster (``KilledWorker``) becomes ``failed`` ("Dask worker lost").
- **Spans** of the worker's tasks are flushed within one flush interval, and when it closes.

Limits: ``async def`` task functions are not wrapped (their tasks are not carried); the
driver's ``configure()`` settings reach the workers when :func:`setup` runs (call it after
``configure``).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from dask._task_spec import Task as DaskTask
from dask.utils import funcname
from distributed import Client, WorkerPlugin, get_worker
from distributed.utils import iscoroutinefunction

from tasktrace.core.ids import HOSTNAME
from tasktrace.core.warn import WarnOnce
from tasktrace.export.provider import flush_spans
from tasktrace.export.workers import apply_environment, worker_environment
from tasktrace.integrations.batching import Batch, RecordBatcher
from tasktrace.integrations.dask_clients import (
    ANNOTATION,
    CLOSING_METHODS,
    SUBMITTING_METHODS,
    carry_every_client,
    wrap_client,
)
from tasktrace.integrations.dask_inbox import Inbox
from tasktrace.integrations.dask_relay import (
    TOPIC,
    post,
    register_relay,
    register_relay_async,
)
from tasktrace.task.carriers import Carrier, RemoteScope, remote_scope
from tasktrace.task.scope_cache import ScopeCache
from tasktrace.tree.processor import tree

__all__ = [
    "ANNOTATION",
    "CLOSING_METHODS",
    "PLUGIN_NAME",
    "SUBMITTING_METHODS",
    "TEARDOWN_WAIT_S",
    "TOPIC",
    "CarriedFunction",
    "TaskTracePlugin",
    "flush_worker",
    "setup",
]

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)

PLUGIN_NAME: Final = "tasktrace"
"""The name :func:`setup` registers the worker plugin under (re-registering replaces it)."""
TEARDOWN_WAIT_S: Final = 3.0
"""How long a closing worker waits, at most, for its carried calls still running to finish
(a nanny closing its worker kills the process after 4 s; what had finished was sent before)."""


class CarriedFunction:
    """A Dask task's function, run in a remote scope; ships its records when it ends.

    Presents the task's function as :func:`functools.update_wrapper` does (``__name__``,
    ``__qualname__``, ``__module__``, ``__doc__``, ``__wrapped__``; a callable without a
    ``__name__`` gets Dask's name for it), so Dask's logs and dashboard name the user's function.

    Args:
        func: The task's function.
        carrier: The submitting task's carrier.
        key: The Dask key (recorded on each root task as ``dask_key``).
    """

    def __init__(self, func: Callable[..., Any], carrier: Carrier, key: str) -> None:
        """Wrap ``func`` (see the class docstring)."""
        functools.update_wrapper(self, func, updated=())
        self.__wrapped__: Callable[..., Any] = func
        """The task's function."""
        if not isinstance(getattr(self, "__name__", None), str):
            self.__name__ = funcname(func)
        self.carrier = carrier
        """The submitting task's carrier."""
        self.key = key
        """The Dask key of the task."""

    def __repr__(self) -> str:
        """Return the wrapped function's ``repr`` (what Dask shows of the task)."""
        return repr(self.__wrapped__)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function in a remote scope; send the finished tasks' records home.

        Each call is one attempt of its key: the roots it starts carry ``dask_call`` (this
        worker process's id and the call's number in it), which tells two runs of a key on the
        same worker apart (:class:`~tasktrace.integrations.attempts.Attempts`).
        """
        side = _side(get_worker())
        call = f"{side.pid}-{next(_calls)}"
        token = _key.set((self.key, call))
        side.call_started()
        try:
            if self.carrier.here:  # the submitting process (processes=False, or a worker's task)
                with remote_scope(
                    self.carrier,
                    data={"dask_key": self.key, "dask_call": call, "dask_worker": side.address},
                    on_started=side.batcher.started,
                    on_finished=side.batcher.finished,
                    flush=False,
                ):
                    return self.__wrapped__(*args, **kwargs)
            with remote_scope(self.carrier, flush=False, scope=side.scopes.get(self.carrier)):
                return self.__wrapped__(*args, **kwargs)
        finally:
            side.call_ended()
            _key.reset(token)


_key: contextvars.ContextVar[tuple[str, str]] = contextvars.ContextVar(
    "tasktrace_dask_call", default=("", "")
)
_calls = itertools.count(1)  # next() is atomic under the GIL


def _key_data() -> dict[str, str]:
    key, call = _key.get()
    return {"dask_key": key, "dask_call": call}


def flush_worker(dask_worker: Any) -> dict[str, Any]:
    """Return what a worker holds, at once (run on each worker by ``client.run``).

    Returns:
        ``{"records": [task JSON, ...], "sender": id, "sent": n}``: the records, and how many
        batches this worker process (``sender``) had sent as events before them (the client
        waits for those that are still on their way).
    """
    side = _sides.get(dask_worker.address)
    if side is None:
        return {"records": [], "sender": "", "sent": 0}
    records = side.batcher.take_now()  # after every batch sent before it (the send lock)
    return {"records": records, "sender": side.sender, "sent": side.sent}


class _WorkerSide:
    """A worker's batcher (records go to the client through the scheduler) and its scopes."""

    def __init__(self, worker: Any) -> None:
        def send(batch: Batch) -> None:  # the batcher's thread (or teardown), under its send lock
            if batch.records:
                self.sent += 1
                msg = {"records": batch.records, "sender": self.sender, "seq": self.sent}
                if self.relay:
                    post(worker, msg)  # not kept by the scheduler (dask_relay)
                else:
                    worker.log_event(TOPIC, msg)

        self.pid = os.getpid()
        self.sender = f"{worker.address}/{self.pid}"
        """This worker process, as its batches name it (an address may be reused)."""
        self.sent = 0
        """How many batches of records this worker sent."""
        self.relay = False
        """Whether batches go through the scheduler's :class:`.RecordRelay` (else as events)."""
        self.address: str = worker.address
        self.batcher = RecordBatcher(worker.address, send)
        self.scopes = ScopeCache(self._make_scope)  # one per submitting task, not per call
        self.running = 0
        """Carried calls running now (a closing worker waits for them)."""
        self._lock = threading.Lock()

    def call_started(self) -> None:
        """Count a carried call starting (any thread)."""
        with self._lock:
            self.running += 1

    def call_ended(self) -> None:
        """Count a carried call ending (any thread)."""
        with self._lock:
            self.running -= 1

    def _make_scope(self, carrier: Carrier) -> RemoteScope:
        return RemoteScope(
            carrier,
            {"dask_worker": self.address},
            on_started=self.batcher.started,
            on_finished=self.batcher.finished,
            call_data=_key_data,
        )


_sides_lock = threading.Lock()
_sides: dict[str, _WorkerSide] = {}


def _side(worker: Any) -> _WorkerSide:
    side = _sides.get(worker.address)
    if side is None:
        with _sides_lock:
            side = _sides.get(worker.address)
            if side is None:
                side = _sides[worker.address] = _WorkerSide(worker)
    return side


class TaskTracePlugin(WorkerPlugin):
    """Worker side of the Dask integration (registered by :func:`setup`).

    Args:
        environment: Export environment variables to apply in each worker
            (:func:`~tasktrace.export.workers.worker_environment` of the driver). Values may include
            secrets (``OTEL_EXPORTER_OTLP_HEADERS``): they are only ever set in the worker's
            ``os.environ``, never logged, written to records or put on spans.
    """

    idempotent = False

    def __init__(
        self, environment: Mapping[str, str] | None = None, *, relay: bool = False
    ) -> None:
        """Keep the environment to apply at set-up."""
        self.environment = dict(environment or {})
        self.relay = relay
        """Whether the scheduler has the record relay (:mod:`.dask_relay`): records go through
        it, not as events the scheduler keeps."""
        self.origin = (os.getpid(), HOSTNAME)
        """The driver process (pid, host) that made the plugin."""
        self.worker: Any = None

    def setup(self, worker: Any) -> None:
        """Apply the driver's export environment; remember the worker.

        In a worker process other than the driver's, every ``distributed.Client`` is made to
        carry the running task (:func:`~tasktrace.integrations.dask_clients.carry_every_client`):
        work a task submits from its worker is a subtask of it.
        """
        self.worker = worker
        apply_environment(self.environment)
        _side(worker).relay = self.relay
        if (os.getpid(), HOSTNAME) != self.origin:
            carry_every_client()

    async def teardown(self, worker: Any) -> None:
        """Send what the closing worker holds, and flush its spans.

        What is finished goes at once; then carried calls still running (a worker closed
        gracefully, by ``retire_workers`` or a cluster scaled down, lets its running tasks
        finish) are waited for, at most :data:`TEARDOWN_WAIT_S`, and their records go too,
        before the worker's stream to the scheduler closes.
        """
        side = _sides.get(worker.address)
        if side is not None:
            side.batcher.flush()  # kept even if the process is killed while waiting
            deadline = time.monotonic() + TEARDOWN_WAIT_S
            while side.running > 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            with _sides_lock:
                if _sides.get(worker.address) is side:
                    del _sides[worker.address]
            side.batcher.flush()
        flush_spans()

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        """When an annotated task starts executing, wrap its function in a remote scope."""
        if finish != "executing" or self.worker is None:
            return
        ts = self.worker.state.tasks.get(key)
        if ts is None or not ts.annotations or ANNOTATION not in ts.annotations:
            return
        spec = ts.run_spec
        if not isinstance(spec, DaskTask) or isinstance(spec.func, CarriedFunction):
            return
        if iscoroutinefunction(spec.func):
            _warn("dask-async", "tasktrace: async Dask tasks are not carried (prototype limit)")
            return
        try:
            carrier = Carrier.from_headers(ts.annotations[ANNOTATION])
        except ValueError as e:
            _warn(
                "dask-annotation", "tasktrace: bad %r annotation on a Dask task: %s", ANNOTATION, e
            )
            return
        if carrier is not None:
            spec.func = CarriedFunction(spec.func, carrier, str(key))


_inbox = Inbox(flush_worker)


def _note_carrier(carrier: Carrier) -> None:
    _inbox.submitted.add(carrier.parent_task_id)


def _before_close(client: Client) -> None:
    try:
        _inbox.closing(client)
    except Exception as e:  # noqa: BLE001 - collecting must not break closing
        _warn("dask-close", "tasktrace: cannot collect task records from Dask: %r", e)


async def _before_close_async(client: Client) -> None:
    try:
        await _inbox.closing_async(client)
    except Exception as e:  # noqa: BLE001 - collecting must not break closing
        _warn("dask-close", "tasktrace: cannot collect task records from Dask: %r", e)


def setup(client: Client) -> Any:
    """Make work submitted through ``client`` join the submitting task's tree and trace.

    Registers a :class:`~tasktrace.integrations.dask_relay.RecordRelay` on the scheduler (the
    workers' records reach this client through it, not kept there) and :class:`TaskTracePlugin`
    on every current and future worker, subscribes the client to :data:`TOPIC`, and wraps this
    client object's :data:`SUBMITTING_METHODS` and :data:`CLOSING_METHODS`
    (:func:`~tasktrace.integrations.dask_clients.wrap_client`). In the worker processes, the
    plugin makes every client carry the worker's running task. Calling it again is harmless.
    A scheduler that refuses the relay (one that does not take pickled plugins) gets the
    records as Dask events, which it keeps in its event log (one warning says so).

    Returns:
        ``client``, for chaining; for an asynchronous client (``Client(asynchronous=True)``,
        in its event loop), an awaitable of it, as the client's own methods return:
        ``client = await setup(await Client(..., asynchronous=True))``.
    """
    _listen(client)
    if client.asynchronous:
        return _setup_async(client)
    plugin = TaskTracePlugin(worker_environment(), relay=register_relay(client))
    client.register_plugin(plugin, name=PLUGIN_NAME)
    return client


async def _setup_async(client: Client) -> Client:
    plugin = TaskTracePlugin(worker_environment(), relay=await register_relay_async(client))
    await client.register_plugin(plugin, name=PLUGIN_NAME)
    return client


def _listen(client: Client) -> None:
    client.subscribe_topic(TOPIC, _inbox.handle)
    _inbox.clients.add(client)
    if _inbox.unregister is None:
        _inbox.unregister = tree.register_record_source(_inbox.pull)
    wrap_client(client, _note_carrier, _before_close, _before_close_async)
