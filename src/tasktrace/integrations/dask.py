"""Dask distributed: tasks carry the submitting task as an annotation; records return as events.

Set-up, once in the driver, for a client (yours, or ``get_client()``)::

    from distributed import Client, LocalCluster
    from tasktrace.integrations.dask import setup

    client = Client(LocalCluster(n_workers=2))
    setup(client)                                   # the one set-up line

How it works:

- **Context.** :func:`setup` wraps the client's graph-submitting methods (``submit``, ``map``,
  ``compute``, ``persist``, ``get``, which ``dask.compute`` and ``.compute()`` use) on *this
  client object*: while a task runs, each submission runs inside ``dask.annotate`` with the
  running task's carrier (:data:`ANNOTATION`), Dask's own channel for per-task metadata.
- **Work submitted from a worker's task** (``worker_client()``, ``get_client()``, or a
  ``Client`` made there): in each worker process the plugin wraps the same methods of the
  ``Client`` class (:mod:`tasktrace.integrations.dask_clients`), so that work carries the
  worker's running task. Its records come home as any worker task's do (as events of the
  worker that ran it, to the driver's client; at the driver task's finish, from what the
  workers hold), and the driver attaches each under the record of the worker task that
  submitted it, by its id (a record that arrives before its parent's waits for it). Run on
  the submitting worker while that task still runs, the work is a plain subtask of it, in its
  record.
- **Workers.** A :class:`TaskTracePlugin` (a ``distributed`` ``WorkerPlugin``) sees each task
  go to ``executing`` and, when it has the annotation, wraps the task's function so that it
  runs in a remote scope: a ``Task`` it starts is a subprocess subtask of the submitting task,
  in the same trace. The plugin also applies the driver's export environment
  (:func:`~tasktrace.export.workers.worker_environment`) to the worker, so spans leave
  through the same exporter set-up.
- **Records home.** Each worker buffers its finished tasks' records and sends them every
  :data:`~tasktrace.integrations.batching.FLUSH_INTERVAL_S` in one
  ``worker.log_event(TOPIC, ...)``, which reaches the client's ``subscribe_topic`` handler
  and is delivered to the driver's tree. When a task that submitted work finishes in the
  driver, the client asks every worker for what it still holds (``client.run`` of
  :func:`flush_worker`), so the records are in the task's file when it finishes. The answer
  says how many batches each worker had sent before it: batches still on their way through
  the scheduler are waited for (at most
  :data:`~tasktrace.integrations.dask_inbox.EVENT_WAIT_S`; one later than that is attached
  late, the file re-written). The client side is :mod:`tasktrace.integrations.dask_inbox`.
- **Client closed inside the task.** :func:`setup` also wraps the client's ``close`` and
  ``shutdown`` (which ``with Client(...)`` and ``__del__`` call): before the client goes
  away while a submitting task runs, the workers hand over what they hold, so the work that
  finished is in the tree. Tasks still running then can send nothing more: one warning
  counts them, and their records seen ``running`` become ``failed`` ("Dask client closed
  while the task ran"). Not covered: an asynchronous client's ``async with`` / ``await
  client.close()``. (Closing the cluster before the client: the workers send what they hold
  when they close, through the client still open.)
- **Long tasks and re-runs.** A root task still running one flush interval
  (:data:`~tasktrace.integrations.batching.FLUSH_INTERVAL_S`) after it started is announced
  by a snapshot (and re-sent every ``refresh_interval_s``); a task shorter than that sends one
  record. Each run of a key is one attempt: its roots carry ``dask_call`` (worker process and
  call number). When Dask runs a key again (after its worker was lost, or after it raised,
  with ``retries=``, on the same worker or another), the key's records get ``attempt``
  numbers in the order the runs started (:class:`~tasktrace.integrations.attempts.Attempts`);
  an attempt that raised keeps its error, and a lost attempt's still-running record becomes
  ``failed``; a lost attempt shorter than one flush interval leaves no record to tell.
  At a submitting task's finish, a record still ``running`` on a worker that has left the
  cluster (the last attempt, when Dask gives up with ``KilledWorker``) becomes ``failed``
  ("Dask worker lost").
- **Spans** of the worker's tasks are flushed by the worker's batcher thread within one flush
  interval, and when the worker closes.

Limits: ``async def`` task functions are not wrapped (their tasks are not carried); the
driver's ``configure()`` settings reach the workers when :func:`setup` runs (call it after
``configure``).
"""

from __future__ import annotations

import contextvars
import functools
import itertools
import logging
import os
import threading
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
from tasktrace.task.carriers import Carrier, RemoteScope, remote_scope
from tasktrace.task.scope_cache import ScopeCache
from tasktrace.tree.processor import tree

__all__ = [
    "ANNOTATION",
    "CLOSING_METHODS",
    "PLUGIN_NAME",
    "SUBMITTING_METHODS",
    "TOPIC",
    "CarriedFunction",
    "TaskTracePlugin",
    "flush_worker",
    "setup",
]

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)

TOPIC: Final = "tasktrace-records"
"""The ``distributed`` event topic on which workers send task records to the client."""
PLUGIN_NAME: Final = "tasktrace"
"""The name :func:`setup` registers the worker plugin under (re-registering replaces it)."""


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
    """A worker's batcher (records go to the client as events, in batches) and its scopes."""

    def __init__(self, worker: Any) -> None:
        def send(batch: Batch) -> None:  # the batcher's thread, under its send lock
            if batch.records:
                self.sent += 1
                msg = {"records": batch.records, "sender": self.sender, "seq": self.sent}
                worker.log_event(TOPIC, msg)

        self.pid = os.getpid()
        self.sender = f"{worker.address}/{self.pid}"
        """This worker process, as its batches name it (an address may be reused)."""
        self.sent = 0
        """How many batches of records this worker sent as events."""
        self.address: str = worker.address
        self.batcher = RecordBatcher(worker.address, send)
        self.scopes = ScopeCache(self._make_scope)  # one per submitting task, not per call

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

    def __init__(self, environment: Mapping[str, str] | None = None) -> None:
        """Keep the environment to apply at set-up."""
        self.environment = dict(environment or {})
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
        if (os.getpid(), HOSTNAME) != self.origin:
            carry_every_client()

    def teardown(self, worker: Any) -> None:
        """Send what the worker's batcher holds and flush its spans (the worker closes)."""
        side = _sides.pop(worker.address, None)
        if side is not None:
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


def setup(client: Client) -> Client:
    """Make work submitted through ``client`` join the submitting task's tree and trace.

    Registers :class:`TaskTracePlugin` on every current and future worker, subscribes the
    client to :data:`TOPIC`, and wraps this client object's :data:`SUBMITTING_METHODS` and
    :data:`CLOSING_METHODS` (:func:`~tasktrace.integrations.dask_clients.wrap_client`). In
    the worker processes, the plugin makes every client carry the worker's running task.
    Calling it again is harmless.

    Returns:
        ``client``, for chaining.
    """
    client.register_plugin(TaskTracePlugin(worker_environment()), name=PLUGIN_NAME)
    client.subscribe_topic(TOPIC, _inbox.handle)
    _inbox.clients.add(client)
    if _inbox.unregister is None:
        _inbox.unregister = tree.register_record_source(_inbox.pull)
    wrap_client(client, _note_carrier, _before_close)
    return client
