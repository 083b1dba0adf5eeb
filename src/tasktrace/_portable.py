"""Carriers, remote scopes and delivery: what the engine integrations need from the core.

**Prototype** (issue 14, phase 1) of the narrow functions listed in
``docs/_design/integrations-core-api.md``; the item numbers below refer to that list. This is
the only module of the prototype that touches the core's internals (each place is marked
``core item N``); :mod:`tasktrace.integrations` uses only its public names. Once the
restructured core (issue 13) offers these functions, this module goes away.

The path of a task's record across an engine:

1. In the driver, :func:`capture` turns the running task into a :class:`Carrier` (trace
   context, parent task id, where it came from) that the integration sends with the work.
2. In the worker, :func:`remote_scope` makes the carrier's task the parent of top-level tasks
   started inside it; their records collect in the scope's outbox (not the spool folder).
3. The integration ships :meth:`RemoteScope.take`'s records home through the engine, and the
   driver's :func:`deliver` attaches each under its parent task, running or finished.

Thread-safety: every function may be called from any thread.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import os
import socket
import threading
import urllib.parse
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import PrivateAttr, ValidationError

from tasktrace._config import current_config
from tasktrace._model import TaskStatus, dump_json
from tasktrace._processor import tree
from tasktrace._setup import build_resource
from tasktrace._subprocess import PARENT_TASK_ENV, SPOOL_ENV, flush_spans
from tasktrace._task import _TASK_KEY, Task  # core item 3: putting a parent into the context
from tasktrace.meters._base import WarnOnce

__all__ = [
    "Carrier",
    "DeliveryReport",
    "RemoteScope",
    "capture",
    "deliver",
    "pull_records",
    "register_record_source",
    "remote_scope",
    "snapshot",
    "worker_environment",
]

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)
_propagator = TraceContextTextMapPropagator()
_HOST: Final = socket.gethostname()

HEADER_PREFIX: Final = "tasktrace-"
"""Prefix of a carrier's keys in its text form (:meth:`Carrier.to_headers`)."""
FILE_OWNERS_KEPT: Final = 64
"""How many finished trees with a file the driver keeps reachable for late records."""


# ----- core item 1: the carrier ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Carrier:
    """What work submitted under a running task needs to join its tree and trace elsewhere.

    Small, picklable and free of secrets: no settings values, no environment.

    Attributes:
        parent_task_id: The submitting task's ``task_id``.
        traceparent: W3C ``traceparent`` of the span to parent remote spans on (the current
            span at capture: the task's, or a user's span inside it); ``None`` if invalid.
        tracestate: W3C ``tracestate``, if any.
        origin_host: ``socket.gethostname()`` of the submitting process.
        origin_pid: Process id of the submitting process.
    """

    parent_task_id: uuid.UUID
    traceparent: str | None
    tracestate: str | None
    origin_host: str
    origin_pid: int

    @property
    def here(self) -> bool:
        """Whether the submitting process is this one (threads, in-process workers)."""
        return self.origin_pid == os.getpid() and self.origin_host == _HOST

    def to_headers(self) -> dict[str, str]:
        """Return the carrier as text (for OpenTelemetry propagation and task annotations).

        Every key starts with :data:`HEADER_PREFIX`, so the carrier travels beside the W3C
        ``traceparent`` of the same propagation without replacing it.
        """
        headers = {
            f"{HEADER_PREFIX}parent": str(self.parent_task_id),
            f"{HEADER_PREFIX}origin": f"{self.origin_pid}@{self.origin_host}",
        }
        if self.traceparent:
            headers[f"{HEADER_PREFIX}traceparent"] = self.traceparent
        if self.tracestate:
            headers[f"{HEADER_PREFIX}tracestate"] = self.tracestate
        return headers

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> Carrier | None:
        """Rebuild a carrier from :meth:`to_headers`; ``None`` if ``headers`` hold none.

        Raises:
            ValueError: The carrier's keys are present but malformed (names the key).
        """
        parent = headers.get(f"{HEADER_PREFIX}parent")
        if parent is None:
            return None
        origin = headers.get(f"{HEADER_PREFIX}origin", "")
        pid, _, host = origin.partition("@")
        try:
            parent_id = uuid.UUID(parent)
        except ValueError:
            raise ValueError(f"{HEADER_PREFIX}parent: not a task id: {parent!r}") from None
        if not pid.isdigit() or not host:
            raise ValueError(f"{HEADER_PREFIX}origin: expected 'pid@host', got {origin!r}")
        return cls(
            parent_task_id=parent_id,
            traceparent=headers.get(f"{HEADER_PREFIX}traceparent"),
            tracestate=headers.get(f"{HEADER_PREFIX}tracestate"),
            origin_host=host,
            origin_pid=int(pid),
        )

    def span_context(self) -> trace.SpanContext | None:
        """Return the remote span context to parent spans on (``None`` without a valid one)."""
        if not self.traceparent:
            return None
        carrier = {"traceparent": self.traceparent}
        if self.tracestate:
            carrier["tracestate"] = self.tracestate
        sctx = trace.get_current_span(_propagator.extract(carrier)).get_span_context()
        return sctx if sctx.is_valid else None


# ----- core item 2: capture ----------------------------------------------------------------------


@dataclasses.dataclass
class _Parent:
    task: weakref.ReferenceType[Task]
    owner: weakref.ReferenceType[Task] | None  # nearest ancestor (or itself) with a task file


_lock = threading.Lock()
_parents: dict[uuid.UUID, _Parent] = {}
_owners: collections.OrderedDict[uuid.UUID, Task] = collections.OrderedDict()


def capture() -> Carrier | None:
    """Return the innermost running task of the current context as a :class:`Carrier`.

    ``None`` when no task runs here (work submitted then behaves as without tasktrace). The
    task is remembered (weakly) as a carrier parent, so records that arrive after it finished
    are still attached (:func:`deliver`).
    """
    task = Task.current()
    if task is None:
        return None
    key = task.task_id
    if key not in _parents:
        _remember(task)
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)  # the current span: the task's, or a user's span inside it
    return Carrier(
        parent_task_id=key,
        traceparent=carrier.get("traceparent"),
        tracestate=carrier.get("tracestate"),
        origin_host=_HOST,
        origin_pid=os.getpid(),
    )


def _remember(task: Task) -> None:
    owner = None
    node: Task | None = task
    while node is not None:  # core item 5: the tree with a file that holds this task
        rt = node._rt
        if rt is None:
            break
        if rt.file is not None:
            owner = node
            break
        node = rt.parent
    object.__setattr__(task, "__class__", _pulling_class(type(task)))
    with _lock:
        owner_ref = weakref.ref(owner) if owner is not None else None
        _parents[task.task_id] = _Parent(weakref.ref(task, _forget(task.task_id)), owner_ref)
        if owner is not None:  # kept alive for late records, the most recent ones only
            _owners[owner.task_id] = owner
            _owners.move_to_end(owner.task_id)
            while len(_owners) > FILE_OWNERS_KEPT:
                _owners.popitem(last=False)


def _forget(task_id: uuid.UUID) -> Callable[[object], None]:
    def drop(_ref: object) -> None:
        with _lock:
            _parents.pop(task_id, None)

    return drop


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


# ----- core item 5: delivery in the driver --------------------------------------------------------


@dataclasses.dataclass
class DeliveryReport:
    """What :func:`deliver` did with the records it was given (counts)."""

    attached: int = 0
    """Records attached under a running task."""
    late: int = 0
    """Records attached under a task that had finished (its file re-written)."""
    orphaned: int = 0
    """Records whose parent is unknown here, dropped with one warning."""
    invalid: int = 0
    """Records that are not task JSON, dropped with one warning."""


def deliver(records: Iterable[bytes | str | Task]) -> DeliveryReport:
    """Attach records of remote tasks under their parent tasks in this process.

    Each record's parent (``parent_id``) is looked up among the running tasks, then among the
    carrier parents of :func:`capture` that finished. A record replaces an earlier one with the
    same ``task_id`` (a running record's refresh). Subtasks are kept in start order. A late
    record (parent finished) re-writes the task file of the tree that holds it.

    Args:
        records: Task JSON (one task with its subtasks), or :class:`~tasktrace.Task` objects.

    Returns:
        The counts of what happened.
    """
    report = DeliveryReport()
    touched: dict[uuid.UUID, Task] = {}
    late_owners: dict[uuid.UUID, Task] = {}
    for item in records:
        try:
            record = item if isinstance(item, Task) else Task.model_validate_json(item)
        except (ValidationError, ValueError) as e:
            report.invalid += 1
            _warn("deliver-invalid", "tasktrace: a remote task record is not task JSON: %s", e)
            continue
        parent, owner = _find_parent(record.parent_id)
        if parent is None:
            report.orphaned += 1
            _warn(
                "deliver-orphan",
                "tasktrace: a remote task %r arrived for parent %s, unknown in this process "
                "(finished and released?); its record is dropped",
                record.label,
                record.parent_id,
            )
            continue
        parent.add_subtask(record)
        touched[parent.task_id] = parent
        if parent.status is TaskStatus.RUNNING:
            report.attached += 1
        else:
            report.late += 1
            if owner is not None and owner.status is not TaskStatus.RUNNING:
                late_owners[owner.task_id] = owner
    with tree.lock:
        for parent in touched.values():
            parent.subtasks.sort(key=_start_key)
    for owner in late_owners.values():
        owner.update()  # a finished task with a file: re-write it with the late records
    return report


def _find_parent(parent_id: uuid.UUID | None) -> tuple[Task | None, Task | None]:
    if parent_id is None:
        return None, None
    with _lock:
        known = _parents.get(parent_id)
    running = tree.running_task(parent_id)
    if known is None:
        return running, None
    return (running or known.task()), (known.owner() if known.owner is not None else None)


_sources: list[Callable[[], Iterable[bytes | str | Task]]] = []


def register_record_source(pull: Callable[[], Iterable[bytes | str | Task]]) -> Callable[[], None]:
    """Have ``pull`` called for records when a carrier parent finishes (core item 6).

    The records ``pull`` returns are delivered (:func:`deliver`) just before the carrier parent
    finishes, so they are in its task file from the start. ``pull`` must not raise; an
    exception is logged once and its records are lost for that call.

    Returns:
        A function that unregisters ``pull``.
    """
    with _lock:
        _sources.append(pull)

    def unregister() -> None:
        with _lock, contextlib.suppress(ValueError):
            _sources.remove(pull)

    return unregister


def pull_records() -> DeliveryReport:
    """Call every registered record source now and deliver what they return."""
    with _lock:
        sources = list(_sources)
    report = DeliveryReport()
    for pull in sources:
        try:
            records = list(pull())
        except Exception as e:  # noqa: BLE001 - a source must not break the user's task
            _warn(f"pull:{pull!r}", "tasktrace: pulling remote task records failed: %r", e)
            continue
        if records:
            got = deliver(records)
            for field in dataclasses.fields(DeliveryReport):
                name = field.name
                setattr(report, name, getattr(report, name) + getattr(got, name))
    return report


_pulling: dict[type[Task], type[Task]] = {}


def _pulling_class(cls: type[Task]) -> type[Task]:
    """Return a subclass of ``cls`` that pulls the record sources before finishing (item 6)."""
    if getattr(cls, "_pulls_records", False):
        return cls
    pulling = _pulling.get(cls)
    if pulling is None:

        def _finish(self: Task, status: TaskStatus, exc: BaseException | None) -> None:
            if _sources:
                pull_records()
            cls._finish(self, status, exc)

        pulling = _pulling[cls] = type(
            cls.__name__, (cls,), {"_finish": _finish, "_pulls_records": True}
        )
    return pulling


def _start_key(task: Task) -> float:
    return task.start_time if task.start_time is not None else float("inf")


# ----- core item 9 -------------------------------------------------------------------------------


def snapshot(task: Task) -> bytes | None:
    """Return ``task``'s JSON with its subtasks, taken under the tree lock (``None``: cannot)."""
    with tree.lock:
        return dump_json(task)


def forget_parents_for_tests() -> None:
    """Forget every carrier parent and kept file owner (test isolation)."""
    with _lock:
        _parents.clear()
        _owners.clear()


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
