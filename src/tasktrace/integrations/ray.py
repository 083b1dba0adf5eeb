r"""Ray: remote functions and actor methods join the submitting task's tree and trace.

Set-up, once, where the cluster (or the local Ray) starts: Ray's own tracing start-up hook::

    ray.init(_tracing_startup_hook="tasktrace.integrations.ray:setup_tracing")
    # a cluster:  ray start --head \
    #                 --tracing-startup-hook=tasktrace.integrations.ray:setup_tracing

Ray runs the hook in the driver and in every worker process when it connects, and, with the
hook set, hands the submitter's OpenTelemetry context to each remote function and actor method
(its ``_ray_trace_ctx`` argument, written and read through the *global* OpenTelemetry
propagator). How tasktrace rides on it:

- **Context.** :func:`setup_tracing` adds a :class:`~tasktrace.task.propagator.TaskTracePropagator`
  to the global propagator. In the driver its ``inject`` adds the running task's carrier; in a
  worker its ``extract`` opens a remote scope for it, so a ``Task`` started by the remote
  function is a subprocess subtask of the submitting task, with ``ray_node_id``,
  ``ray_task_id``, ``ray_worker_id``, ``ray_call`` (the call: worker process id and call
  number) and ``ray_actor_id`` (in an actor) recorded, and its span a child of
  the submitter's. No tracer provider is installed: Ray's own producer / consumer spans stay
  non-recording unless you install a provider yourself.
- **Records home.** Each worker process buffers its records and sends them every
  :data:`~tasktrace.integrations.batching.FLUSH_INTERVAL_S` to the job's
  :class:`RecordCollector` actor, from a thread of its own (the remote functions never wait
  for it); a task shorter than the interval sends one record, when it finished. A worker
  turning busy tells the collector before its first carried call runs (one message, waited
  for). When a task that submitted work finishes in the driver, the driver asks the collector
  for the records: the busy workers are told to send what they hold at once, and the driver
  waits (at most :data:`DRAIN_WAIT_S`) until each has; a busy worker not heard of for
  :data:`~tasktrace.integrations.ray_collector.GONE_S` (one that died) is not waited for.
  Records that still miss it (a
  worker's clock far behind, work the driver did not wait for) are attached *late* at the next
  drain (the next such task's finish, a task-file write at least a second after the last
  drain, :func:`collect`, or the driver's exit) and the task file re-written. Nothing touches a
  shared file system.
- **Settings.** The driver's export set-up (``OTEL_*``, ``tasktrace.configure``) is given to the
  collector when it is created; each worker applies it before its first carried call, so its
  spans go where the driver's go.
- **Retries.** Records carry the Ray task id and the call; when one Ray task's records come
  from more than one call (a retry after its worker died, or after it raised with
  ``retry_exceptions``, on another worker or the same), the attempts' records stay as
  siblings with ``attempt`` numbers in the order the calls started; an attempt that raised
  keeps its error, and a record still ``running`` from a dead attempt becomes ``failed``;
  so does one whose worker the collector took for gone (the last attempt's worker died:
  :data:`LOST_ERROR`). An attempt shorter than one flush interval leaves no record to tell.
- **Workers ending after a call** (``max_calls``, ``exit_actor``): the call's thread sends
  the worker's records before it returns to Ray (:mod:`~tasktrace.integrations.ray_exit`).
- **Sessions.** Each Ray session of the driver (``ray.init`` again after ``ray.shutdown()``,
  perhaps with another address or namespace) has its own collector
  (:mod:`~tasktrace.integrations.ray_driver`).
- **Generators.** A generator remote function's body runs under the carried task too, item by
  item (:mod:`~tasktrace.integrations.ray_generators`, which also says what is not covered).
- **Async actors.** A worker waits for the collector's answers through futures, never
  ``ray.get``, which Ray warns about in an async actor's process ("Using blocking ray.get
  inside async actor"). Its first carried call waits for the driver's set-up and a worker
  turning busy for its mark (each a few milliseconds, once) in the calling thread: the actor's
  event loop, for an async actor.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import threading
import time
from collections.abc import Iterable
from typing import Any, Final

import ray
from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)

from tasktrace.core.record import TaskRecord
from tasktrace.core.warn import WarnOnce
from tasktrace.export.workers import apply_environment
from tasktrace.integrations.batching import FLUSH_INTERVAL_S, Batch, RecordBatcher
from tasktrace.integrations.ray_collector import RecordCollector
from tasktrace.integrations.ray_driver import (
    COLLECTOR_PREFIX,
    DRAIN_WAIT_S,
    Driver,
    collector_name,
    internal,
)
from tasktrace.integrations.ray_exit import LOST_ERROR, exits_after_call
from tasktrace.integrations.ray_generators import carry_generators
from tasktrace.task.carriers import Carrier, RemoteScope
from tasktrace.task.propagator import TaskTracePropagator
from tasktrace.task.scope_cache import ScopeCache

__all__ = [
    "COLLECTOR_PREFIX",
    "DRAIN_WAIT_S",
    "ENVIRONMENT_WAIT_S",
    "HOOK",
    "LOST_ERROR",
    "MARK_WAIT_S",
    "RayTaskPropagator",
    "RecordCollector",
    "collect",
    "setup_tracing",
]

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)

HOOK: Final = "tasktrace.integrations.ray:setup_tracing"
"""The value for ``ray.init(_tracing_startup_hook=...)`` / ``--tracing-startup-hook``."""
MARK_WAIT_S: Final = 5.0
"""The longest a worker turning busy waits for the collector to note it, in seconds."""
ENVIRONMENT_WAIT_S: Final = 30.0
"""The longest a worker's first carried call waits for the driver's export set-up, in seconds."""


_driver = Driver()


def collect() -> None:
    """Deliver now the task records of work finished so far (late ones included).

    Busy workers are told to send what they hold at once, and waited for at most
    :data:`DRAIN_WAIT_S`. Called at the driver's exit too. Only the Ray session connected now
    is drained (a session shut down took its records not yet home with it). Never raises: a
    failure is warned about once.
    """
    _driver.collect()


def _result(ref: Any, timeout_s: float) -> Any:
    """Wait for ``ref`` without ``ray.get`` (which warns in an async actor's process)."""
    return ref.future().result(timeout_s)


class _Worker:
    """A worker process's side: its batcher, sending to the job's collector."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.handle: Any = None
        self.batcher: RecordBatcher | None = None
        self.worker_id = ""
        self._marks = threading.Lock()
        self._idle_out = True  # the collector may take this worker for idle
        self._last_start = 0.0  # time.time() of the last root's start

    def ready(self) -> RecordBatcher:
        batcher = self.batcher
        if batcher is not None:
            return batcher
        with self._lock:
            if self.batcher is None:
                token = internal.set(True)
                try:
                    self.handle = ray.get_actor(collector_name())
                    ref = self.handle.environment.remote()
                    apply_environment(_result(ref, ENVIRONMENT_WAIT_S))
                finally:
                    internal.reset(token)
                self.worker_id = ray.get_runtime_context().get_worker_id()
                self.batcher = RecordBatcher(self.worker_id, self.send, paced=True)
            return self.batcher

    def started(self, task: TaskRecord) -> None:
        """Note a root's start (``on_started``), telling the collector first if it thinks idle.

        The mark is waited for (once per idle spell, one message): the call's record must not
        be missed by a drain that the call's own end triggers in the driver.
        """
        now = time.time()
        with self._marks:
            self._last_start = now
            mark, self._idle_out = self._idle_out, False
        if mark:
            token = internal.set(True)
            try:  # not ray.get: a blocked task would lend its CPU to another worker
                _result(self.handle.busy.remote(self.worker_id, now), MARK_WAIT_S)
            except Exception as e:  # noqa: BLE001 - must not break the user's task
                _warn("ray-busy", "tasktrace: cannot reach the task-record collector: %r", e)
            finally:
                internal.reset(token)
        batcher = self.batcher
        if batcher is not None:
            batcher.started(task)

    def send(self, batch: Batch) -> None:
        with self._marks:
            if batch.idle:
                if self._last_start >= batch.sent_at:  # a root started since it was made
                    batch = dataclasses.replace(batch, idle=False)
                else:
                    self._idle_out = True
        token = internal.set(True)
        try:  # answered when the next batch is due (the collector paces the batcher)
            _result(self.handle.put.remote(batch, FLUSH_INTERVAL_S), FLUSH_INTERVAL_S + 30)
        finally:
            internal.reset(token)

    def call_ended(self) -> None:
        """At a carried call's end, in its thread: if Ray ends the worker now, send home first.

        Ray ends a worker right after a call when its ``max_calls`` is reached or the call
        asked its actor to exit (``exit_actor``); by the time exit handlers run, the worker is
        disconnected. The batcher's thread is stopped (it calls into Ray no more) and what is
        buffered goes out from this thread, before the call returns to Ray.
        """
        batcher = self.batcher
        if batcher is None or not exits_after_call():
            return
        token = internal.set(True)
        try:
            batcher.stop()
            batcher.flush()  # an idle batch: the collector answers at once
        finally:
            internal.reset(token)


_worker = _Worker()


class _CallEnd:
    """Put in a carried call's context: freed (CPython) as Ray detaches it, at the call's end."""

    __slots__ = ()

    def __del__(self) -> None:
        try:
            _worker.call_ended()
        except Exception as e:  # noqa: BLE001 - must not break the user's task
            _warn("ray-exit", "tasktrace: cannot send task records as the worker exits: %r", e)


_CALL_END: Final = otel_context.create_key("tasktrace-ray-call-end")
_CALL: Final = otel_context.create_key("tasktrace-ray-call")  # the call's ray_call
_calls = itertools.count(1)  # next() is atomic under the GIL


def _worker_data() -> dict[str, Any]:
    ctx = ray.get_runtime_context()
    return {"ray_node_id": ctx.get_node_id(), "ray_worker_id": ctx.get_worker_id()}


def _call_data() -> dict[str, Any]:
    """Return the Ray task, call (and actor) a root task starts in (called at its start)."""
    ctx = ray.get_runtime_context()
    data: dict[str, Any] = {}
    task_id = ctx.get_task_id()
    if task_id:
        data["ray_task_id"] = task_id
    actor_id = ctx.get_actor_id()
    if actor_id:
        data["ray_actor_id"] = actor_id
    call = otel_context.get_value(_CALL)
    if call is not None:  # tells two attempts of one Ray task on one worker apart
        data["ray_call"] = call
    return data


def _make_scope(carrier: Carrier) -> RemoteScope:
    batcher = _worker.ready()
    return RemoteScope(
        carrier,
        _worker_data(),
        on_started=_worker.started,
        on_finished=batcher.finished,
        call_data=_call_data,
    )


_scopes = ScopeCache(_make_scope)  # one scope per submitting task, not one per call


def _scope(carrier: Carrier) -> RemoteScope:
    try:
        return _scopes.get(carrier)
    except Exception as e:  # noqa: BLE001 - no collector: the tasks still run, spans only
        _warn("ray-collector", "tasktrace: no task-record collector for this Ray job: %r", e)
        return RemoteScope(carrier, _worker_data(), keep=False, call_data=_call_data)


class RayTaskPropagator(TaskTracePropagator):
    """The propagator :func:`setup_tracing` installs: tasktrace's own calls carry nothing."""

    def __init__(self) -> None:
        """Scopes send records to the job's collector; carriers prepare the driver."""
        super().__init__(scope_factory=_scope, on_inject=_driver.prepare)

    def inject(
        self,
        carrier: CarrierT,
        context: otel_context.Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        """Add the running task's carrier, except to tasktrace's own calls to its collector."""
        if not internal.get():
            super().inject(carrier, context, setter)

    def extract(
        self,
        carrier: CarrierT,
        context: otel_context.Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> otel_context.Context:
        """Open the carried scope; at the call's end, send home if the worker exits then."""
        base = context if context is not None else otel_context.get_current()
        extracted = super().extract(carrier, base, getter)
        if extracted is base:
            return extracted
        extracted = otel_context.set_value(_CALL, f"{os.getpid()}-{next(_calls)}", extracted)
        if _worker.batcher is None:
            return extracted
        return otel_context.set_value(_CALL_END, _CallEnd(), extracted)


def setup_tracing() -> None:
    """Ray's tracing start-up hook: add :class:`RayTaskPropagator` to the global propagator.

    Runs in the driver and in every worker when it connects. Idempotent. Installs no tracer
    provider (tasktrace sets up its own on the first task, from the environment). Has Ray
    wrap generator remote functions so their bodies are carried too
    (:mod:`~tasktrace.integrations.ray_generators`).
    """
    carry_generators()
    current = propagate.get_global_textmap()
    if _has_ours(current):
        return
    propagate.set_global_textmap(CompositePropagator([current, RayTaskPropagator()]))


def _has_ours(propagator: TextMapPropagator) -> bool:
    if isinstance(propagator, RayTaskPropagator):
        return True
    inner: Iterable[TextMapPropagator] = getattr(propagator, "_propagators", ())
    return any(_has_ours(p) for p in inner)
