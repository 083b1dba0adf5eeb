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
- **Workers.** A :class:`TaskTracePlugin` (a ``distributed`` ``WorkerPlugin``) sees each task
  go to ``executing`` and, when it has the annotation, wraps the task's function so that it
  runs in a remote scope: a ``Task`` it starts is a subprocess subtask of the submitting task,
  in the same trace. The plugin also applies the driver's export environment
  (:data:`ENVIRONMENT_KEYS`) to the worker, so spans leave through the same exporter set-up.
- **Records home.** When the function returns or raises, the finished tasks' records go to
  the scheduler with ``worker.log_event(TOPIC, ...)`` and reach the client's
  ``subscribe_topic`` handler, which delivers them to the driver's tree. Events and the task's
  result travel on the same worker → scheduler → client streams, in that order.

- **Re-runs.** Each root task's record is also sent when it starts; when Dask runs a key again
  after its worker was lost, the records of the key from the two workers are numbered as
  attempts and the lost attempt's still-running record becomes ``failed``.

Limits (phase 1 prototype): ``async def`` task functions are not wrapped; the start record is
sent on the worker's batched stream, so a worker killed within milliseconds of a root task's
start may leave no trace of that attempt.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, Final

import dask
from dask._task_spec import Task as DaskTask
from distributed import Client, WorkerPlugin, get_worker
from distributed.utils import iscoroutinefunction

from tasktrace import Task, configure
from tasktrace._portable import Carrier, capture, deliver, remote_scope, worker_environment
from tasktrace.integrations._attempts import Attempts
from tasktrace.meters._base import WarnOnce

__all__ = ["ANNOTATION", "PLUGIN_NAME", "TOPIC", "CarriedFunction", "TaskTracePlugin", "setup"]

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)

ANNOTATION: Final = "tasktrace"
"""The Dask task annotation holding the submitting task's carrier (text form)."""
TOPIC: Final = "tasktrace-records"
"""The ``distributed`` event topic on which workers send task records to the client."""
PLUGIN_NAME: Final = "tasktrace"
"""The name :func:`setup` registers the worker plugin under (re-registering replaces it)."""
SUBMITTING_METHODS: Final = ("submit", "map", "compute", "persist", "get")
"""The client methods :func:`setup` wraps to annotate submissions with the carrier."""


class CarriedFunction:
    """A Dask task's function, run in a remote scope; ships its records when it ends.

    Args:
        func: The task's function.
        carrier: The submitting task's carrier.
        key: The Dask key (recorded on each root task as ``dask_key``).
    """

    __slots__ = ("__wrapped__", "carrier", "key")

    def __init__(self, func: Callable[..., Any], carrier: Carrier, key: str) -> None:
        """Wrap ``func`` (see the class docstring)."""
        self.__wrapped__ = func
        self.carrier = carrier
        self.key = key

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function in a remote scope; send the finished tasks' records home."""
        worker = get_worker()
        data = {"dask_key": self.key, "dask_worker": worker.address}

        def started(record: bytes) -> None:  # a killed attempt leaves this running record
            worker.log_event(TOPIC, {"records": [record.decode()]})

        with remote_scope(self.carrier, data=data, on_started=started) as scope:
            try:
                return self.__wrapped__(*args, **kwargs)
            finally:
                if scope is not None:
                    records = scope.take()
                    if records:
                        worker.log_event(TOPIC, {"records": [r.decode() for r in records]})


class TaskTracePlugin(WorkerPlugin):
    """Worker side of the Dask integration (registered by :func:`setup`).

    Args:
        environment: Export environment variables to apply in each worker
            (``tasktrace._portable.worker_environment()`` of the driver). Values may include
            secrets (``OTEL_EXPORTER_OTLP_HEADERS``): they are only ever set in the worker's
            ``os.environ``, never logged, written to records or put on spans.
    """

    idempotent = False

    def __init__(self, environment: Mapping[str, str] | None = None) -> None:
        """Keep the environment to apply at set-up."""
        self.environment = dict(environment or {})
        self.worker: Any = None

    def setup(self, worker: Any) -> None:
        """Apply the driver's export environment; remember the worker."""
        self.worker = worker
        if self.environment and any(os.environ.get(k) != v for k, v in self.environment.items()):
            os.environ.update(self.environment)
            configure()  # re-read the OTEL_* variables: later tasks use the new exporters

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


_attempts = Attempts("dask_key", "dask_worker", "Dask")


def _handle_event(event: tuple[float, Mapping[str, Any]]) -> None:
    _, msg = event
    records = [Task.model_validate_json(r) for r in msg.get("records", ())]
    deliver(_attempts.sort_out(records))


def _annotating(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def submit_with_carrier(*args: Any, **kwargs: Any) -> Any:
        carrier = capture()
        if carrier is None:
            return method(*args, **kwargs)
        with dask.annotate(**{ANNOTATION: carrier.to_headers()}):
            return method(*args, **kwargs)

    submit_with_carrier.__tasktrace_wrapped__ = True  # type: ignore[attr-defined]
    return submit_with_carrier


def setup(client: Client) -> Client:
    """Make work submitted through ``client`` join the submitting task's tree and trace.

    Registers :class:`TaskTracePlugin` on every current and future worker, subscribes the
    client to :data:`TOPIC`, and wraps this client object's :data:`SUBMITTING_METHODS`.
    Calling it again is harmless.

    Returns:
        ``client``, for chaining.
    """
    client.register_plugin(TaskTracePlugin(worker_environment()), name=PLUGIN_NAME)
    client.subscribe_topic(TOPIC, _handle_event)
    for name in SUBMITTING_METHODS:
        method = getattr(client, name)
        if not getattr(method, "__tasktrace_wrapped__", False):
            setattr(client, name, _annotating(method))
    return client
