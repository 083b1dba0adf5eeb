"""Find or create the tracer provider, and build exporters from the standard ``OTEL_*`` variables.

Provider ownership:

- If a real tracer provider is already installed globally (by the user, by
  ``opentelemetry-instrument``, by Logfire), tasktrace adds its
  :class:`~tasktrace._processor.TaskTreeProcessor` to it (when it has ``add_span_processor``)
  and never replaces it or adds exporters to it.
- Otherwise tasktrace creates an SDK :class:`~opentelemetry.sdk.trace.TracerProvider` with a
  resource (``service.name`` from ``OTEL_SERVICE_NAME`` or the script name, ``host.name``,
  ``process.pid``, ``tasktrace.machine``, ``OTEL_RESOURCE_ATTRIBUTES``), adds the exporters named
  by ``OTEL_TRACES_EXPORTER``, and installs it globally only while the global is still the
  default proxy. Set-up is lazy (the first task start), so a provider the user installs before
  their first task always wins and no "Overriding of current TracerProvider" warning is logged.

With nothing configured, no exporter is created and no connection is attempted.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import (
    HOST_NAME,
    PROCESS_PID,
    SERVICE_NAME,
    OTELResourceDetector,
    Resource,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from tasktrace._attributes import MACHINE
from tasktrace._processor import tree
from tasktrace._settings import get_settings

__all__ = ["get_tracer", "reset_tracing", "tracer_provider"]

_log = logging.getLogger(__name__)
_lock = threading.Lock()
_tracer: trace.Tracer | None = None
_provider: Any = None
_owned = False
_with_processor: set[int] = set()

OTEL_TRACES_EXPORTER = "OTEL_TRACES_EXPORTER"
OTEL_EXPORTER_OTLP_PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL"
OTEL_EXPORTER_OTLP_TRACES_PROTOCOL = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
OTEL_EXPORTER_OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
OTEL_SERVICE_NAME = "OTEL_SERVICE_NAME"


def _service_name() -> str:
    name = os.environ.get(OTEL_SERVICE_NAME)
    if name:
        return name
    script = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return script if script and script not in {"-c", "-m"} else "tasktrace"


def build_resource() -> Resource:
    """The resource of a tasktrace-owned provider (``OTEL_RESOURCE_ATTRIBUTES`` merged in)."""
    attrs: dict[str, Any] = {
        SERVICE_NAME: _service_name(),
        HOST_NAME: socket.gethostname(),
        PROCESS_PID: os.getpid(),
    }
    machine = get_settings().machine
    if machine:
        attrs[MACHINE] = machine
    # Resource.create adds telemetry.sdk.* and OTEL_RESOURCE_ATTRIBUTES; ours win on conflicts
    # except service.name, where OTEL_SERVICE_NAME already won above.
    env = OTELResourceDetector().detect()
    return Resource.create(attrs).merge(Resource({k: v for k, v in env.attributes.items()}))


def _exporter_names() -> list[str]:
    raw = os.environ.get(OTEL_TRACES_EXPORTER, "").strip()
    if not raw:
        endpoint = os.environ.get(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) or os.environ.get(
            OTEL_EXPORTER_OTLP_ENDPOINT
        )
        return ["otlp"] if endpoint else []
    return [n.strip().lower() for n in raw.split(",") if n.strip() and n.strip() != "none"]


def _otlp_exporter() -> SpanExporter | None:
    protocol = (
        os.environ.get(OTEL_EXPORTER_OTLP_TRACES_PROTOCOL)
        or os.environ.get(OTEL_EXPORTER_OTLP_PROTOCOL)
        or "http/protobuf"
    ).strip()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError:
            _log.warning(
                "tasktrace: OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the gRPC exporter: "
                "pip install 'tasktrace[grpc]'; no OTLP export"
            )
            return None
        return GrpcExporter()
    if protocol != "http/protobuf":
        _log.warning(
            "tasktrace: invalid OTEL_EXPORTER_OTLP_PROTOCOL=%r (expected http/protobuf or grpc); "
            "using http/protobuf",
            protocol,
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter as HttpExporter,
    )

    return HttpExporter()


def _entry_point_exporter(name: str) -> SpanExporter | None:
    from importlib.metadata import entry_points  # noqa: PLC0415 - only for rare names

    for ep in entry_points(group="opentelemetry_traces_exporter"):
        if ep.name == name:
            return ep.load()()  # type: ignore[no-any-return]
    _log.warning("tasktrace: unknown OTEL_TRACES_EXPORTER name %r; ignored", name)
    return None


def build_exporters() -> list[SpanExporter]:
    """Create the span exporters named by ``OTEL_TRACES_EXPORTER`` (see the module docstring).

    ``otlp`` uses the OTel project's OTLP exporter for ``OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL``
    (which itself reads the endpoint, headers, timeout and certificate variables); ``console``
    the SDK's console exporter; other names are looked up in the
    ``opentelemetry_traces_exporter`` entry-point group, as the SDK does. Unset, the list is
    empty unless an OTLP endpoint variable is set.
    """
    exporters: list[SpanExporter] = []
    for name in _exporter_names():
        try:
            if name == "otlp":
                exporter = _otlp_exporter()
            elif name == "console":
                from opentelemetry.sdk.trace.export import ConsoleSpanExporter  # noqa: PLC0415

                exporter = ConsoleSpanExporter()
            else:
                exporter = _entry_point_exporter(name)
        except Exception as e:  # noqa: BLE001 - a bad exporter must not break tasks
            _log.warning("tasktrace: cannot create the %r span exporter (%s); ignored", name, e)
            exporter = None
        if exporter is not None:
            exporters.append(exporter)
    return exporters


def _create_provider() -> TracerProvider:
    provider = TracerProvider(resource=build_resource())
    for exporter in build_exporters():
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _install() -> trace.Tracer:
    global _provider, _owned  # noqa: PLW0603 - one tracing set-up per process
    provider: Any = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider):
        provider = _create_provider()
        trace.set_tracer_provider(provider)
        _owned = True
        provider = trace.get_tracer_provider()  # another thread may have won the race
    add = getattr(provider, "add_span_processor", None)
    if add is not None and id(provider) not in _with_processor:
        add(tree)
        _with_processor.add(id(provider))
    _provider = provider
    from tasktrace import __version__  # noqa: PLC0415 - import cycle

    return provider.get_tracer("tasktrace", __version__)  # type: ignore[no-any-return]


def get_tracer() -> trace.Tracer:
    """Return tasktrace's tracer, setting tracing up on first use (thread-safe)."""
    global _tracer  # noqa: PLW0603 - see _install
    tracer = _tracer
    if tracer is None:
        with _lock:
            if _tracer is None:
                _tracer = _install()
            tracer = _tracer
    return tracer


def tracer_provider() -> Any:
    """Return the tracer provider tasktrace uses (``None`` before the first task)."""
    return _provider


def owns_provider() -> bool:
    """Whether tasktrace created and installed the global tracer provider."""
    return _owned


def reset_tracing() -> None:
    """Forget the cached tracer so the next task looks for the provider again (for tests)."""
    global _tracer, _provider, _owned  # noqa: PLW0603 - see _install
    with _lock:
        _tracer = None
        _provider = None
        _owned = False
