"""Remote scopes and the worker's export environment: the worker side of engine work.

**Prototype** (issue 14) of core items 3, 4, 7, 8 and 9 of
``docs/_design/integrations-core-api.md`` (see :mod:`tasktrace._portable`).

Thread-safety: every function may be called from any thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from pydantic import PrivateAttr

from tasktrace._carrier import Carrier
from tasktrace._config import current_config
from tasktrace._model import TaskStatus, dump_json
from tasktrace._processor import tree
from tasktrace._setup import build_resource
from tasktrace._subprocess import PARENT_TASK_ENV, SPOOL_ENV, flush_spans
from tasktrace._task import _TASK_KEY, Task  # core item 3: putting a parent into the context
from tasktrace.meters._base import WarnOnce

__all__ = ["RemoteScope", "remote_scope", "snapshot", "worker_environment"]

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)

# ----- core items 3 and 4: the remote scope in a worker -------------------------------------------


class _CarrierParent(Task):
    """Stand-in for the carrier's task in a worker: the roots started under it attach here."""

    _scope: RemoteScope | None = PrivateAttr(default=None)

    def _attach(self, task: Task) -> None:  # core item 3: a hook at a root's start
        super()._attach(task)
        scope = self.__pydantic_private__.get("_scope") if self.__pydantic_private__ else None
        if scope is not None:
            scope._root_started(task)


_hooked: dict[type[Task], type[Task]] = {}


def _finish_hooked(cls: type[Task]) -> type[Task]:
    """Return a subclass of ``cls`` whose finish tells the root's scope (core item 3)."""
    hooked = _hooked.get(cls)
    if hooked is None:

        def _finish(self: Task, status: TaskStatus, exc: BaseException | None) -> None:
            rt = self._rt
            parent = rt.parent if rt is not None else None
            private = parent.__pydantic_private__ if parent is not None else None
            scope = private.get("_scope") if private else None
            cls._finish(self, status, exc)
            if scope is not None:
                scope._root_finished(self)

        hooked = _hooked[cls] = type(cls.__name__, (cls,), {"_finish": _finish})
    return hooked


class RemoteScope:
    """The worker side of a carrier: the roots started under it and their outbox.

    Created by :func:`remote_scope`. Thread-safety: :meth:`take` may be called from any
    thread while tasks run.
    """

    def __init__(
        self,
        carrier: Carrier,
        data: Mapping[str, Any] | None = None,
        *,
        on_started: Callable[[bytes], None] | None = None,
        on_finished: Callable[[bytes], None] | None = None,
    ) -> None:
        """Create the scope's stand-in parent.

        Args:
            carrier: From :func:`capture` in the submitting process.
            data: Extra data (JSON values) set on every root task at its start.
            on_started: Called with a root's record (running) right after it started, in the
                starting thread, before the user's code runs on.
            on_finished: Called with a root's record (subtasks included) when it finished, in
                the finishing thread; the record is then no longer in :meth:`take`. The tracer
                provider is flushed afterwards (the worker may be killed next).

        Without callbacks, records wait for :meth:`take` (the caller ships them).
        """
        self.carrier = carrier
        """The carrier this scope runs under."""
        self.data = dict(data or {})
        """Extra data set on every root task at its start."""
        self.roots_started = 0
        """How many root tasks started in this scope."""
        self.on_started = on_started
        self.on_finished = on_finished
        self._parent = _CarrierParent.model_construct(
            task_id=carrier.parent_task_id,
            label="(carrier)",
            status=TaskStatus.RUNNING,
            subtasks=[],
        )
        self._parent.__pydantic_private__["_scope"] = self  # type: ignore[index]
        rt = self._parent._runtime()
        rt.remote = True  # a stand-in: tasks under it are subprocess roots
        rt.span_context = carrier.span_context()

    def _root_started(self, task: Task) -> None:
        rt = task._runtime()  # core item 3: the root's runtime state
        rt.spool_file = None  # records go to the outbox, never to a spool folder
        self.roots_started += 1
        for key, value in self.data.items():
            setattr(task, key, value)
        if self.on_finished is not None:  # core item 3: a hook at the root's finish
            object.__setattr__(task, "__class__", _finish_hooked(type(task)))
        if self.on_started is not None:
            record = dump_json(task)
            if record is not None:
                self.on_started(record)

    def _root_finished(self, task: Task) -> None:
        with tree.lock:
            subtasks = self._parent.subtasks
            for i, sub in enumerate(subtasks):
                if sub is task:
                    del subtasks[i]
                    break
            record = dump_json(task)
        if record is not None and self.on_finished is not None:
            self.on_finished(record)
        flush_spans()

    def take(self, *, running: bool = False) -> list[bytes]:
        """Return the JSON records of the roots that finished since the last call.

        Args:
            running: Also return snapshots of the roots still running (not removed).

        Returns:
            One task-file JSON document (bytes, subtasks included) per root.
        """
        out: list[bytes] = []
        with tree.lock:
            keep = []
            for task in self._parent.subtasks:
                if task.status is TaskStatus.RUNNING:
                    keep.append(task)
                    if not running:
                        continue
                data = dump_json(task)
                if data is not None:
                    out.append(data)
            self._parent.subtasks[:] = keep
        return out

    def context(self, base: otel_context.Context | None = None) -> otel_context.Context:
        """Return ``base`` (default: the current context) with the carrier's task current.

        The carrier's span becomes the current span unless ``base`` already has a valid one
        (a span propagated beside the carrier, e.g. a Ray producer span, stays the parent).
        """
        ctx = otel_context.set_value(_TASK_KEY, self._parent, base)
        sctx = self._parent._runtime().span_context
        if sctx is not None and not trace.get_current_span(ctx).get_span_context().is_valid:
            ctx = trace.set_span_in_context(trace.NonRecordingSpan(sctx), ctx)
        return ctx


@contextlib.contextmanager
def remote_scope(
    carrier: Carrier,
    *,
    data: Mapping[str, Any] | None = None,
    on_started: Callable[[bytes], None] | None = None,
    on_finished: Callable[[bytes], None] | None = None,
) -> Iterator[RemoteScope | None]:
    """Run the block with ``carrier``'s task as the parent of tasks started in it.

    In another process than the carrier's, a task started in the block with no other parent
    is a subprocess subtask of the carrier's task, its span a child of the carrier's span; its
    record waits in the scope's outbox (:meth:`RemoteScope.take`). In the carrier's own process
    the real task is made current instead (when it still runs) and the scope is ``None``:
    nothing needs to travel.

    Args:
        carrier: From :func:`capture` in the submitting process.
        data: Extra data (JSON values) set on every root task at its start, e.g. the node.
        on_started: See :class:`RemoteScope`.
        on_finished: See :class:`RemoteScope`.

    The tracer provider is flushed at the end of the block when a root task ran, since engine
    workers may be killed without running exit handlers.
    """
    if carrier.here:
        task = tree.running_task(carrier.parent_task_id)
        if task is not None:
            with _current(task):
                yield None
            return
    scope = RemoteScope(carrier, data, on_started=on_started, on_finished=on_finished)
    token = otel_context.attach(scope.context())
    try:
        yield scope
    finally:
        otel_context.detach(token)
        if scope.roots_started:
            flush_spans()  # core item 7


@contextlib.contextmanager
def _current(task: Task) -> Iterator[None]:
    ctx = otel_context.set_value(_TASK_KEY, task)
    sctx = task._span_context()
    if sctx is not None:
        ctx = trace.set_span_in_context(trace.NonRecordingSpan(sctx), ctx)
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


# ----- core item 9 -------------------------------------------------------------------------------


def snapshot(task: Task) -> bytes | None:
    """Return ``task``'s JSON with its subtasks, taken under the tree lock (``None``: cannot)."""
    with tree.lock:
        return dump_json(task)


# ----- core item 8: the export set-up a worker needs ---------------------------------------------

ENVIRONMENT_PREFIXES: Final = ("OTEL_", "TASKTRACE_")
"""Variables of the driver's environment that a worker gets (:func:`worker_environment`)."""
_PROCESS_BOUND: Final = ("TRACEPARENT", "TRACESTATE", PARENT_TASK_ENV, SPOOL_ENV)


def worker_environment() -> dict[str, str]:
    """Return the driver's effective export set-up as environment variables for workers.

    The ``OTEL_*`` and ``TASKTRACE_*`` variables of this process (less those naming this
    process's own parent: ``TASKTRACE_PARENT_TASK_ID``, ``TASKTRACE_SPOOL``), overlaid with the
    :func:`tasktrace.configure` arguments written as the per-signal ``OTEL_EXPORTER_OTLP_TRACES_*``
    variables (which win over the general ones, as ``configure`` wins over the environment),
    and ``OTEL_SERVICE_NAME`` set to this process's service name so that the whole run shows
    as one service. Headers (secrets) travel only as ``OTEL_EXPORTER_OTLP_TRACES_HEADERS``;
    exporter *instances* given to ``configure`` cannot travel and are left out with a warning.

    Returns:
        Variable name → value; apply it to the worker's ``os.environ``, then ``configure()``.
    """
    env = {k: v for k, v in os.environ.items() if k.startswith(ENVIRONMENT_PREFIXES)}
    for name in _PROCESS_BOUND:
        env.pop(name, None)
    config = current_config()
    env["OTEL_SERVICE_NAME"] = str(build_resource(config).attributes.get("service.name"))
    protocol = config.protocol
    if protocol is not None:
        env["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] = protocol
    if config.endpoint is not None:
        grpc = (protocol or env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")) == "grpc"
        base = config.endpoint.rstrip("/")
        env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = base if grpc else f"{base}/v1/traces"
    if config.headers is not None:
        env["OTEL_EXPORTER_OTLP_TRACES_HEADERS"] = _kv_list(config.headers)
    if config.timeout_s is not None:
        env["OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"] = repr(config.timeout_s)
    if config.exit_timeout_s is not None:
        env["TASKTRACE_EXIT_TIMEOUT_S"] = repr(config.exit_timeout_s)
    if config.resource_attributes:
        extra = _kv_list({k: str(v) for k, v in config.resource_attributes.items()})
        old = env.get("OTEL_RESOURCE_ATTRIBUTES")
        env["OTEL_RESOURCE_ATTRIBUTES"] = f"{old},{extra}" if old else extra
    if config.exporters is not None:
        names = [e for e in config.exporters if isinstance(e, str)]
        if len(names) < len(config.exporters):
            _warn(
                "worker-exporters",
                "tasktrace: exporter objects given to configure() cannot be sent to engine "
                "workers; workers use only the named exporters %s",
                names,
            )
        env["OTEL_TRACES_EXPORTER"] = ",".join(names) or "none"
    return env


def _kv_list(items: Mapping[str, str]) -> str:
    quote = urllib.parse.quote
    return ",".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in items.items())
