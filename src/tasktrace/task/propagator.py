"""An OpenTelemetry propagator that carries the running task beside the trace context.

Registered as the ``opentelemetry_propagator`` entry point ``tasktrace``, so
``OTEL_PROPAGATORS=tracecontext,baggage,tasktrace`` makes any channel that propagates
OpenTelemetry context (Ray's tracing, HTTP and task-queue instrumentations) carry the running
task too: tasks started on the other side are subprocess subtasks of the submitting task.

- ``inject`` writes the carrier of the running task (:func:`~tasktrace.task.carriers.capture`)
  as ``tasktrace-*`` keys beside ``traceparent``; nothing when no task runs.
- ``extract`` opens a remote scope for a carrier from another process (or, in the carrier's own
  process, makes the real task current). Without a ``scope_factory`` the scope keeps no
  records: tasks started there reach the submitting process only as spans (the collector route
  of :doc:`/clusters`). The engine integrations pass a factory whose scopes send records home.

Thread-safety: a propagator may be used from any thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from opentelemetry import context as otel_context
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)

from tasktrace.core.warn import WarnOnce
from tasktrace.task.carriers import HEADER_PREFIX, Carrier, RemoteScope, capture, local_context

__all__ = ["ScopeFactory", "TaskTracePropagator"]

_warn = WarnOnce(logging.getLogger(__name__))

ScopeFactory = Callable[[Carrier], RemoteScope]
"""Makes the remote scope for a carrier extracted in a worker."""


class TaskTracePropagator(TextMapPropagator):
    """Carries the running task in OpenTelemetry propagation (keys ``tasktrace-*``).

    Args:
        scope_factory: Makes the scope for a carrier extracted from another process (default:
            a scope that keeps no records; spans only).
        on_inject: Called with each carrier injected (an integration preparing its way home).
    """

    def __init__(
        self,
        scope_factory: ScopeFactory | None = None,
        on_inject: Callable[[Carrier], None] | None = None,
    ) -> None:
        """Create the propagator (see the class docstring)."""
        self.scope_factory = scope_factory
        self.on_inject = on_inject

    def inject(
        self,
        carrier: CarrierT,
        context: otel_context.Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        """Add the running task's carrier to ``carrier`` (nothing when no task runs)."""
        found = capture(context)
        if found is None:
            return
        if self.on_inject is not None:
            self.on_inject(found)
        for key, value in found.to_headers().items():
            setter.set(carrier, key, value)

    def extract(
        self,
        carrier: CarrierT,
        context: otel_context.Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> otel_context.Context:
        """Return ``context`` with the carrier's task current (a remote scope elsewhere).

        A malformed carrier is ignored with one warning (the context is returned as given).
        """
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
            _warn("carrier", "tasktrace: bad task carrier in propagated context: %s", e)
            return ctx
        if found is None:
            return ctx
        if found.here:
            local = local_context(found, ctx)
            return local if local is not None else ctx
        factory = self.scope_factory
        scope = factory(found) if factory is not None else RemoteScope(found, keep=False)
        return scope.context(ctx)

    @property
    def fields(self) -> set[str]:
        """The keys this propagator writes."""
        return {f"{HEADER_PREFIX}{k}" for k in ("parent", "origin", "traceparent", "tracestate")}
