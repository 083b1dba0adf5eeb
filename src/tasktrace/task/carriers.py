"""Carriers and remote scopes: a running task handed to work that an engine runs elsewhere.

The path of a task's record across an engine (joblib, Ray, Dask, any OpenTelemetry
propagation):

1. In the submitting process, :func:`capture` turns the running task into a :class:`Carrier`
   (its ``task_id``, the W3C trace context of the current span, where it came from): small,
   picklable, free of secrets, with a text form (:meth:`Carrier.to_headers`) that travels
   beside a W3C ``traceparent``. The task is remembered as a *carrier parent*
   (:func:`tasktrace.tree.delivery.keep_parent`), so records arriving after it finished are
   still attached.
2. In the worker, a :class:`RemoteScope` (or :func:`remote_scope`) puts a stand-in for the
   carrier's task in the context: a task started there with no other parent is a subprocess
   subtask of the carrier's task (``subprocess: true``), its span a child of the carrier's
   span. Its record is handed to the scope at its start and finish, never to a spool folder:
   the scope keeps finished records for :meth:`RemoteScope.take`, or calls the integration's
   callbacks.
3. The integration ships the records home through the engine, and the submitting process's
   :func:`tasktrace.tree.delivery.deliver` attaches each under its parent.

Thread-safety: every function may be called from any thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tasktrace.core.attributes import normalise_data
from tasktrace.core.context import TASK_KEY, get_current, live_context
from tasktrace.core.ids import HOSTNAME
from tasktrace.core.record import TaskRecord, dump_json
from tasktrace.export.provider import flush_spans
from tasktrace.task.processes import remote_parent
from tasktrace.task.roots import RootSink, kept_subtasks
from tasktrace.tree.delivery import keep_parent
from tasktrace.tree.processor import tree

__all__ = [
    "HEADER_PREFIX",
    "Carrier",
    "RemoteScope",
    "capture",
    "local_context",
    "remote_scope",
    "snapshot",
]

_propagator = TraceContextTextMapPropagator()

HEADER_PREFIX: Final = "tasktrace-"
"""Prefix of a carrier's keys in its text form (:meth:`Carrier.to_headers`)."""
SPAN_CONTEXTS_KEPT: Final = 256
"""How many carriers a process remembers: parsed (:meth:`Carrier.from_headers`), captured
(:func:`capture`), their span contexts (:meth:`Carrier.span_context`), and scopes
(:class:`~tasktrace.task.scope_cache.ScopeCache`)."""
_MISSING: Final = object()
_span_contexts: dict[tuple[str, str | None], trace.SpanContext | None] = {}
_carriers: dict[tuple[Any, ...], Carrier] = {}
_parsed: dict[tuple[Any, ...], Carrier] = {}


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
    _headers: dict[str, str] | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def here(self) -> bool:
        """Whether the submitting process is this one (threads, in-process workers)."""
        return self.origin_pid == os.getpid() and self.origin_host == HOSTNAME

    def to_headers(self) -> dict[str, str]:
        """Return the carrier as text (for OpenTelemetry propagation and task annotations).

        Every key starts with :data:`HEADER_PREFIX`, so the carrier travels beside the W3C
        ``traceparent`` of the same propagation without replacing it. The caller may not
        change the returned dict (it is made once per carrier).
        """
        if self._headers is not None:
            return self._headers
        headers = {
            f"{HEADER_PREFIX}parent": str(self.parent_task_id),
            f"{HEADER_PREFIX}origin": f"{self.origin_pid}@{self.origin_host}",
        }
        if self.traceparent:
            headers[f"{HEADER_PREFIX}traceparent"] = self.traceparent
        if self.tracestate:
            headers[f"{HEADER_PREFIX}tracestate"] = self.tracestate
        object.__setattr__(self, "_headers", headers)  # frozen: made once, on first use
        return headers

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> Carrier | None:
        """Rebuild a carrier from :meth:`to_headers`; ``None`` if ``headers`` hold none.

        The last :data:`SPAN_CONTEXTS_KEPT` carriers parsed are remembered (the same headers
        give the same carrier object).

        Raises:
            ValueError: The carrier's keys are present but malformed (names the key).
        """
        parent = headers.get(f"{HEADER_PREFIX}parent")
        if parent is None:
            return None
        origin = headers.get(f"{HEADER_PREFIX}origin", "")
        traceparent = headers.get(f"{HEADER_PREFIX}traceparent")
        tracestate = headers.get(f"{HEADER_PREFIX}tracestate")
        key = (cls, parent, origin, traceparent, tracestate)
        found = _parsed.get(key)
        if found is not None:
            return found  # a worker sees the same few carriers call after call
        pid, _, host = origin.partition("@")
        try:
            parent_id = uuid.UUID(parent)
        except ValueError:
            raise ValueError(f"{HEADER_PREFIX}parent: not a task id: {parent!r}") from None
        if not pid.isdigit() or not host:
            raise ValueError(f"{HEADER_PREFIX}origin: expected 'pid@host', got {origin!r}")
        carrier = cls(
            parent_task_id=parent_id,
            traceparent=traceparent,
            tracestate=tracestate,
            origin_host=host,
            origin_pid=int(pid),
        )
        if len(_parsed) >= SPAN_CONTEXTS_KEPT:
            _parsed.clear()
        _parsed[key] = carrier
        return carrier

    def span_context(self) -> trace.SpanContext | None:
        """Return the remote span context to parent spans on (``None`` without a valid one).

        Parsed by OpenTelemetry's W3C propagator; the last :data:`SPAN_CONTEXTS_KEPT` are
        remembered (a worker sees the same few carriers call after call).
        """
        if not self.traceparent:
            return None
        key = (self.traceparent, self.tracestate)
        found = _span_contexts.get(key, _MISSING)
        if found is not _MISSING:
            return found  # type: ignore[return-value]
        carrier = {"traceparent": self.traceparent}
        if self.tracestate:
            carrier["tracestate"] = self.tracestate
        sctx = trace.get_current_span(_propagator.extract(carrier)).get_span_context()
        result = sctx if sctx.is_valid else None
        if len(_span_contexts) >= SPAN_CONTEXTS_KEPT:
            _span_contexts.clear()  # rare: many parents; parsing again is cheap enough
        _span_contexts[key] = result
        return result


def capture(context: otel_context.Context | None = None) -> Carrier | None:
    """Return the innermost running task of ``context`` (default: the current one) as a carrier.

    ``None`` when no task runs there (work submitted then behaves as without tasktrace). The
    task is remembered as a carrier parent (:func:`~tasktrace.tree.delivery.keep_parent`).
    The carrier of the same task and span is made once (the last :data:`SPAN_CONTEXTS_KEPT`
    are kept): submitting many calls under one task costs a dict lookup each.
    """
    task, ctx = live_context(context if context is not None else otel_context.get_current())
    if task is None:
        return None
    sctx = trace.get_current_span(ctx).get_span_context()  # the task's span, or a user's in it
    key = (task.task_id, sctx.span_id, sctx.trace_id, sctx.trace_state.to_header())
    found = _carriers.get(key)
    if found is not None and found.origin_pid == os.getpid():
        return found  # the same task and span as a call before: the same carrier
    keep_parent(task)
    headers: dict[str, str] = {}
    _propagator.inject(headers, context=ctx)
    carrier = Carrier(
        parent_task_id=task.task_id,
        traceparent=headers.get("traceparent"),
        tracestate=headers.get("tracestate"),
        origin_host=HOSTNAME,
        origin_pid=os.getpid(),
    )
    if len(_carriers) >= SPAN_CONTEXTS_KEPT:
        _carriers.clear()
    _carriers[key] = carrier
    return carrier


def local_context(
    carrier: Carrier, base: otel_context.Context | None = None
) -> otel_context.Context | None:
    """In the carrier's own process: ``base`` with its task (still running) current, else ``None``.

    Work that an engine runs in the submitting process (threads, local mode) needs no scope:
    the real task becomes the current task, and the carrier's span the current span.
    """
    task = tree.running_task(carrier.parent_task_id)
    if task is None:
        return None
    ctx = otel_context.set_value(TASK_KEY, task, base)
    sctx = carrier.span_context()
    if sctx is not None:
        ctx = trace.set_span_in_context(trace.NonRecordingSpan(sctx), ctx)
    return ctx


class RemoteScope:
    """The worker side of a carrier: the root tasks started under it and their records.

    Args:
        carrier: From :func:`capture` in the submitting process.
        data: Extra data (JSON values) set on every root task at its start, so it is in the
            record and on the span (``ray_node_id``, ``dask_worker``).
        on_started: Called with a root task (running) right after it started, in the thread
            that started it, before the user's code goes on; the integration decides whether
            and when to send a snapshot of it (:meth:`snapshot`). Must not raise.
        on_finished: Called with each finished root (the task object) when the scope's
            finished roots are collected (:func:`~tasktrace.task.roots.hand_on_finished`,
            which the record batchers call before each batch), not at the root's finish; the
            scope keeps nothing of it then. The receiver serialises it when it sends it
            (:func:`snapshot`): one record serialised between two user calls, with the caches
            cold, costs several times more CPU than many in a row. Must not raise.
        keep: Keep finished records for :meth:`take` (when ``on_finished`` is not given).
        call_data: Returns more extra data, called at each root's start (in its thread):
            what differs from call to call when one scope serves many (``ray_task_id``).
            Must return JSON values; a raise is warned about once (the root goes without).

    A scope is cheap (one stand-in object) and is freed by reference counting once neither
    it, a context made by :meth:`context`, nor a running root task is held: the Ray and Dask
    integrations make one per remote call. Thread-safety: :meth:`take` and
    :meth:`running_roots` may be called from any thread while tasks run.
    """

    def __init__(
        self,
        carrier: Carrier,
        data: Mapping[str, Any] | None = None,
        *,
        on_started: Callable[[TaskRecord], None] | None = None,
        on_finished: Callable[[TaskRecord], None] | None = None,
        keep: bool = True,
        call_data: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        """Create the scope's stand-in parent (see the class docstring)."""
        self.carrier = carrier
        """The carrier this scope runs under."""
        self.data = {k: normalise_data(k, v) for k, v in (data or {}).items()}
        """Extra data set on every root task at its start (JSON values)."""
        keep = keep and on_finished is None
        self._roots = RootSink(self.data, on_started, on_finished, keep, call_data)
        self._span_context = carrier.span_context()
        self.parent = remote_parent(carrier.parent_task_id, self._span_context, self._roots)
        """The stand-in for the carrier's task that root tasks attach to (as its subtasks,
        until they are collected)."""
        self.parent.__dict__["subtasks"] = kept_subtasks(self._roots, self.parent)
        self._last: tuple[object, otel_context.Context] = (None, otel_context.Context())
        self._roots.parent = weakref.ref(self.parent)

    @property
    def roots_started(self) -> int:
        """How many root tasks started in this scope."""
        return self._roots.roots_started

    def running_roots(self) -> list[TaskRecord]:
        """Return the root tasks of this scope still running (oldest first)."""
        return self._roots.running()

    def take(self, *, running: bool = False) -> list[bytes]:
        """Return the records of the roots that finished since the last call (removed).

        Args:
            running: Also return snapshots of the roots still running (they stay).

        Returns:
            One task-file JSON document (bytes, subtasks included) per root.
        """
        finished = self._roots.collect() if self._roots.keep else []
        out: list[bytes] = []
        if finished:
            with tree.lock:  # once for all (tree.snapshot's lock, as each is serialised)
                for task in finished:  # one after the other: warm caches
                    record = dump_json(task)
                    if record is not None:
                        out.append(record)
        if running:
            for task in self.running_roots():
                record = snapshot(task)
                if record is not None:
                    out.append(record)
        return out

    def context(self, base: otel_context.Context | None = None) -> otel_context.Context:
        """Return ``base`` (default: the current context) with the carrier's task current.

        The carrier's span becomes the current span unless ``base`` already has a valid one
        (a span propagated beside the carrier, e.g. a Ray producer span, stays the parent).
        """
        if base is None:
            base = get_current()
        last = self._last  # a worker's batches start from the same context: made once
        if last[0] is base:
            return last[1]
        ctx = otel_context.set_value(TASK_KEY, self.parent, base)
        sctx = self._span_context
        if sctx is not None and not trace.get_current_span(ctx).get_span_context().is_valid:
            ctx = trace.set_span_in_context(trace.NonRecordingSpan(sctx), ctx)
        self._last = (base, ctx)  # contexts are immutable: the same base gives the same
        return ctx


def snapshot(task: TaskRecord) -> bytes | None:
    """Return ``task``'s record (subtasks included) as task JSON, taken under the tree lock."""
    return tree.snapshot(task)


@contextlib.contextmanager
def remote_scope(
    carrier: Carrier,
    *,
    data: Mapping[str, Any] | None = None,
    on_started: Callable[[TaskRecord], None] | None = None,
    on_finished: Callable[[TaskRecord], None] | None = None,
    flush: bool = True,
    scope: RemoteScope | None = None,
) -> Iterator[RemoteScope | None]:
    """Run the block with ``carrier``'s task as the parent of tasks started in it.

    In another process than the carrier's, a task started in the block with no other parent
    is a subprocess subtask of the carrier's task, its span a child of the carrier's span; its
    record is kept in the scope (:meth:`RemoteScope.take`) or handed to ``on_finished``. In the
    carrier's own process the real task is made current instead (when it still runs) and the
    scope is ``None``: nothing needs to travel.

    Args:
        carrier: From :func:`capture` in the submitting process.
        data: See :class:`RemoteScope`.
        on_started: See :class:`RemoteScope`.
        on_finished: See :class:`RemoteScope`.
        flush: Flush the tracer provider at the end of the block when a root task ran (engine
            workers may be ended without running exit handlers).
        scope: A scope made for ``carrier`` before (from a
            :class:`~tasktrace.task.scope_cache.ScopeCache`) to run the
            block in; ``data`` and the callbacks are then the scope's own.
    """
    if carrier.here:
        ctx = local_context(carrier)
        if ctx is not None:
            token = otel_context.attach(ctx)
            try:
                yield None
            finally:
                otel_context.detach(token)
            return
    if scope is None:
        scope = RemoteScope(carrier, data, on_started=on_started, on_finished=on_finished)
    started = scope.roots_started
    token = otel_context.attach(scope.context())
    try:
        yield scope
    finally:
        otel_context.detach(token)
        if flush and scope.roots_started != started:
            flush_spans()
