r"""Ray: remote functions and actor methods join the submitting task's tree and trace.

Set-up, once, where the cluster (or the local Ray) starts: Ray's own tracing start-up hook::

    ray.init(_tracing_startup_hook="tasktrace.integrations.ray:setup_tracing")
    # a cluster:  ray start --head \
    #                 --tracing-startup-hook=tasktrace.integrations.ray:setup_tracing

Ray runs the hook in the driver and in every worker process when it connects, and, with the
hook set, hands the submitter's OpenTelemetry context to each remote function and actor method
(its ``_ray_trace_ctx`` argument, written and read through the *global* OpenTelemetry
propagator). How tasktrace rides on it:

- **Context.** :func:`setup_tracing` adds :class:`TaskTracePropagator` to the global
  propagator. In the driver its ``inject`` adds the running task's carrier; in a worker its
  ``extract`` opens a remote scope for it, so a ``Task`` started by the remote function is a
  subprocess subtask of the submitting task, with ``ray_node_id``, ``ray_task_id``,
  ``ray_worker_id`` (and ``ray_actor_id``) recorded, and its span a child of the submitter's.
  No tracer provider is installed: Ray's own producer / consumer spans stay non-recording
  unless you install a provider yourself.
- **Records home.** A worker sends each root task's record to a :class:`RecordCollector` actor
  of the job when the task starts (running) and when it finishes, waiting for the actor's
  acknowledgement (so the record is there before the remote function's result is). The driver
  drains the actor just before the submitting task finishes (a record source) and delivers the
  records to its tree. Nothing touches a shared file system.
- **Retries.** Records carry the Ray task id and the worker; when one Ray task's records come
  from more than one worker, the earlier attempts' records stay as siblings with an
  ``attempt`` number, and a record still ``running`` from a dead attempt becomes ``failed``.

Limits (phase 1 prototype): the driver's ``configure()`` settings are not carried (workers
inherit the environment of the ``ray start`` / ``ray.init`` that started them); records of a
parent that already finished are drained only when another carrier parent finishes.
"""

from __future__ import annotations

import contextvars
import logging
import threading
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

from tasktrace import Task
from tasktrace._portable import (
    HEADER_PREFIX,
    Carrier,
    RemoteScope,
    capture,
    register_record_source,
)
from tasktrace.integrations._attempts import Attempts
from tasktrace.meters._base import WarnOnce

__all__ = [
    "HOOK",
    "RecordCollector",
    "TaskTracePropagator",
    "setup_tracing",
]

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)

HOOK: Final = "tasktrace.integrations.ray:setup_tracing"
"""The value for ``ray.init(_tracing_startup_hook=...)`` / ``--tracing-startup-hook``."""
COLLECTOR_PREFIX: Final = "tasktrace-records-"
"""Name prefix of the job's collector actor (the job id follows)."""
_internal: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "tasktrace_ray_internal", default=False
)


@ray.remote(num_cpus=0, max_restarts=-1)
class RecordCollector:
    """A job's mailbox of task records, filled by workers and drained by the driver."""

    def __init__(self) -> None:
        """Start empty."""
        self._records: list[str] = []

    def put(self, records: list[str]) -> int:
        """Keep ``records`` (task JSON); return how many are held."""
        self._records.extend(records)
        return len(self._records)

    def drain(self) -> list[str]:
        """Return and forget every record held."""
        out, self._records = self._records, []
        return out


class _Mailbox:
    """The handle of this process on the job's collector (created by the driver on first use)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handle: Any = None
        self._unregister: Any = None

    def _name(self) -> str:
        return COLLECTOR_PREFIX + ray.get_runtime_context().get_job_id()

    def handle(self, *, create: bool) -> Any:
        with self._lock:
            if self._handle is None:
                token = _internal.set(True)
                try:
                    if create:
                        self._handle = RecordCollector.options(  # type: ignore[attr-defined]
                            name=self._name(), get_if_exists=True
                        ).remote()
                        self._unregister = register_record_source(self.drain)
                    else:
                        self._handle = ray.get_actor(self._name())
                finally:
                    _internal.reset(token)
            return self._handle

    def send(self, record: bytes) -> None:
        token = _internal.set(True)
        try:
            ray.get(self.handle(create=False).put.remote([record.decode()]))
        except Exception as e:  # noqa: BLE001 - shipping must not break the user's task
            _warn("ray-send", "tasktrace: cannot send a task record to the driver: %r", e)
        finally:
            _internal.reset(token)

    def drain(self) -> list[Task]:
        if self._handle is None or not ray.is_initialized():
            return []
        token = _internal.set(True)
        try:
            raw = ray.get(self._handle.drain.remote())
        finally:
            _internal.reset(token)
        return _attempts.sort_out(Task.model_validate_json(r) for r in raw)


_mailbox = _Mailbox()


_attempts = Attempts("ray_task_id", "ray_worker_id", "Ray")


def _worker_data() -> dict[str, Any]:
    ctx = ray.get_runtime_context()
    data = {
        "ray_node_id": ctx.get_node_id(),
        "ray_worker_id": ctx.get_worker_id(),
    }
    task_id = ctx.get_task_id()
    if task_id:
        data["ray_task_id"] = task_id
    actor_id = ctx.get_actor_id()
    if actor_id:
        data["ray_actor_id"] = actor_id
    return data


class TaskTracePropagator(TextMapPropagator):
    """Carries the running task in OpenTelemetry propagation (keys :data:`HEADER_PREFIX`*).

    ``inject``: in a process with a running task, adds its carrier (and creates the job's
    collector actor on first use, in a Ray driver). ``extract``: opens a remote scope for a
    carrier from another process and returns a context in which it is the current task.
    """

    def inject(
        self,
        carrier: CarrierT,
        context: otel_context.Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        """Add the running task's carrier to ``carrier`` (nothing when no task runs)."""
        if _internal.get() or context is not None:
            return
        found = capture()
        if found is None:
            return
        if ray.is_initialized():
            _mailbox.handle(create=True)
        for key, value in found.to_headers().items():
            setter.set(carrier, key, value)

    def extract(
        self,
        carrier: CarrierT,
        context: otel_context.Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> otel_context.Context:
        """Return ``context`` with the carrier's task current, via a remote scope."""
        ctx = context if context is not None else otel_context.get_current()
        headers: dict[str, str] = {}
        for key in getter.keys(carrier):
            if key.startswith(HEADER_PREFIX):
                values = getter.get(carrier, key)
                if values:
                    headers[key] = values[0]
        try:
            found = Carrier.from_headers(headers)
        except ValueError as e:
            _warn("ray-carrier", "tasktrace: bad task carrier in a Ray call: %s", e)
            return ctx
        if found is None or found.here:
            return ctx
        scope = RemoteScope(
            found,
            _worker_data(),
            on_started=_mailbox.send,
            on_finished=_mailbox.send,
        )
        return scope.context(ctx)

    @property
    def fields(self) -> set[str]:
        """The keys this propagator writes."""
        return {f"{HEADER_PREFIX}{k}" for k in ("parent", "origin", "traceparent", "tracestate")}


def setup_tracing() -> None:
    """Ray's tracing start-up hook: add :class:`TaskTracePropagator` to the global propagator.

    Runs in the driver and in every worker when it connects. Idempotent. Installs no tracer
    provider (tasktrace sets up its own on the first task, from the environment).
    """
    current = propagate.get_global_textmap()
    if _has_ours(current):
        return
    propagate.set_global_textmap(CompositePropagator([current, TaskTracePropagator()]))


def _has_ours(propagator: TextMapPropagator) -> bool:
    if isinstance(propagator, TaskTracePropagator):
        return True
    inner: Iterable[TextMapPropagator] = getattr(propagator, "_propagators", ())
    return any(_has_ours(p) for p in inner)
