"""Find or create the tracer provider tasks use, and own the life of tasktrace's exporters.

Provider ownership, checked when a top-level task starts (nested tasks use their root's
tracer), at no cost once a provider is installed globally (the OpenTelemetry API lets that be
done only once), else with one ``trace.get_tracer_provider()`` call and one identity comparison:

- If a real tracer provider is installed globally (by the user, by ``opentelemetry-instrument``,
  by Logfire), tasks go through it: tasktrace adds its
  :class:`~tasktrace.tree.processor.TaskTreeProcessor` (when the provider has
  ``add_span_processor``) and never replaces it. It adds an exporter of its own only when code
  asked for one with :func:`tasktrace.configure` (``exporters=`` or ``endpoint=``); the
  ``OTEL_*`` variables are that other set-up's to read.
- Otherwise tasktrace uses a private SDK :class:`~opentelemetry.sdk.trace.TracerProvider`
  with a resource (``service.name``, ``host.name``, ``process.pid``, ``tasktrace.machine``,
  ``telemetry.sdk.*``, ``OTEL_RESOURCE_ATTRIBUTES``), the sampler of ``OTEL_TRACES_SAMPLER``
  (both parsed by tasktrace, see :mod:`tasktrace.export.environment`) and the exporters named by
  :func:`tasktrace.configure` or the ``OTEL_*`` variables. It is **not** installed globally,
  so a provider that the user or a library installs later (before or after the first task)
  never triggers OpenTelemetry's "Overriding of current TracerProvider" warning; tasks started
  after that go through the new provider. Spans of the user's own tracers are therefore
  non-recording until some provider is installed globally (they still carry the trace
  context, so tasks inside them stay in the same trace).

A forked child (``os.fork()``, a ``multiprocessing`` worker started by fork) is another
process: its tasks go through a provider of tasktrace's own with the child's resource (its
``process.pid``, a new ``service.instance.id``, the resource detectors run again), the same
sampler, and the same exporters (their batch processors restarted in the child). A provider
the user installed is the user's: tasktrace never replaces it, in a child either, so its
resource (``process.pid`` included) stays what the user built, the parent's.

With nothing configured, no exporter is created and no connection is attempted. Exporters run
on batch-processor threads; at interpreter exit they are flushed within ``exit_timeout_s``
(:func:`tasktrace.configure`, ``TASKTRACE_EXIT_TIMEOUT_S``; default 5 s), see
:mod:`tasktrace.export.pipeline`: one deadline (:func:`exit_deadline`) for the spans and the
task metrics of tasktrace's meter provider together.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import PROCESS_PID, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

from tasktrace.core.forksafe import renew_after_fork
from tasktrace.core.ids import HOSTNAME, random_bits
from tasktrace.core.settings import get_settings
from tasktrace.core.spans import host_attributes
from tasktrace.core.version import VERSION
from tasktrace.core.warn import WarnOnce
from tasktrace.export import environment
from tasktrace.export.config import (
    ExportConfig,
    check_environment,
    current_config,
    on_configure,
    resolve_exit_timeout_s,
)
from tasktrace.export.exporters import span_exporters
from tasktrace.export.pipeline import ExportPipeline, shutdown_pipelines
from tasktrace.export.resource import environment_resource
from tasktrace.tree.processor import tree

__all__ = [
    "FLUSH_TIMEOUT_S",
    "PrivateIdGenerator",
    "build_resource",
    "current_tracer",
    "exit_deadline",
    "exit_timeout_s",
    "flush_spans",
    "get_tracer",
    "owns_provider",
    "pipelines",
    "reset_tracing",
    "shutdown_export",
    "tracer_provider",
]

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)

FLUSH_TIMEOUT_S = 1.0
"""How long :func:`flush_spans` waits by default (a task's path), in seconds: so that a worker
ending by ``os._exit`` loses no span while the collector works, which takes a few spans in
milliseconds (a remote one in tenths of a second). An endpoint that has not answered by then is
treated as failing by later flushes (they do not wait) until an export succeeds again."""


@dataclass(frozen=True)
class _Tracing:
    source: object
    """The global provider seen at set-up (the API's proxy when tasktrace owns the provider)."""
    provider: Any
    tracer: trace.Tracer
    owned: bool


_lock = threading.RLock()
renew_after_fork(sys.modules[__name__], "_lock")
_state: _Tracing | None = None
_owned_provider: TracerProvider | None = None
_owned_pipeline: ExportPipeline | None = None  # the exporters of _owned_provider
_owned_pid = 0  # the process _owned_provider's resource describes
_pipelines: list[ExportPipeline] = []
# Providers holding the tree processor (strong references, so identities stay unique).
_with_processor: list[Any] = []
_exported_to: list[Any] = []  # foreign providers given the configured exporters
_exit_registered = False
_exit_deadline: float | None = None  # see exit_deadline


def _script_name() -> str:
    script = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return script if script and script not in {"-c", "-m"} else "tasktrace"


def build_resource(config: ExportConfig | None = None) -> Resource:
    """Return the resource of a tasktrace-owned provider.

    Attributes, later sources winning: ``telemetry.sdk.*`` (the SDK) and what the SDK's
    resource detectors other than ``otel`` find (``service.instance.id``), ``host.name``
    (``socket.gethostname()``), ``process.pid`` (``os.getpid()``), ``tasktrace.machine`` (the
    ``machine`` setting, when set), ``OTEL_RESOURCE_ATTRIBUTES`` (parsed by tasktrace),
    ``resource_attributes`` of :func:`tasktrace.configure`. ``service.name`` is the
    ``service_name`` argument, else ``service.name`` of ``resource_attributes``, else
    ``OTEL_SERVICE_NAME``, else ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES``, else the
    script's file name, else ``"tasktrace"``.
    """
    config = config or current_config()
    # the host as every task's span has it (core.spans.host_attributes), then the process
    attrs: dict[str, Any] = {**host_attributes(HOSTNAME, get_settings().machine)}
    attrs[PROCESS_PID] = os.getpid()
    name = environment.service_name(config.service_name, config.resource_attributes, _script_name())
    return environment_resource(attrs, config.resource_attributes, name)


def exit_timeout_s() -> float:
    """Seconds the exit may wait for exports: ``configure`` > ``TASKTRACE_EXIT_TIMEOUT_S`` > 5."""
    return resolve_exit_timeout_s().value


def _new_pipeline(config: ExportConfig) -> ExportPipeline | None:
    global _exit_registered  # noqa: PLW0603 - one exit handler per process
    exporters = span_exporters(config)
    if not exporters:
        return None
    pipeline = ExportPipeline(exporters)
    _pipelines.append(pipeline)
    if not _exit_registered:
        atexit.register(_shutdown_at_exit)
        _exit_registered = True
    return pipeline


class PrivateIdGenerator(RandomIdGenerator):
    """Trace and span ids from tasktrace's private random generator.

    The SDK's :class:`~opentelemetry.sdk.trace.id_generator.RandomIdGenerator` draws from the
    ``random`` module's global generator, so a program that calls ``random.seed(42)`` (most
    experiments do) repeats its trace and span ids on every run, and a trace backend merges the
    runs. This one draws from a generator seeded from ``os.urandom`` (and reseeded in forked
    children) that ``random.seed`` does not touch; ids are still fully random
    (``is_trace_id_random``).
    """

    def generate_span_id(self) -> int:
        """Return a random, valid 64-bit span id."""
        span_id = random_bits(64)
        while span_id == trace.INVALID_SPAN_ID:
            span_id = random_bits(64)
        return span_id

    def generate_trace_id(self) -> int:
        """Return a random, valid 128-bit trace id."""
        trace_id = random_bits(128)
        while trace_id == trace.INVALID_TRACE_ID:
            trace_id = random_bits(128)
        return trace_id


def _create_provider() -> TracerProvider:
    global _owned_pipeline  # noqa: PLW0603 - see _install
    check_environment()  # name any bad OTEL_* variable before the SDK's own messages
    config = current_config()
    _owned_pipeline = _new_pipeline(config)
    # parsed here: the SDK's own parse logs no variable
    return _provider(build_resource(config), environment.traces_sampler(), _owned_pipeline)


def _provider(resource: Resource, sampler: Any, pipeline: ExportPipeline | None) -> TracerProvider:
    global _owned_pid  # noqa: PLW0603 - see _install
    # shutdown_on_exit=False: the SDK's own exit hook waits up to 30 s; ours is bounded.
    provider = TracerProvider(
        resource=resource,
        shutdown_on_exit=False,
        id_generator=PrivateIdGenerator(),
        sampler=sampler,
    )
    for processor in pipeline.processors if pipeline is not None else ():
        provider.add_span_processor(processor)
    _owned_pid = os.getpid()
    return provider


def _install(source: Any) -> _Tracing:
    global _owned_provider  # noqa: PLW0603 - one tracing set-up per process
    owned = type(source) is trace.ProxyTracerProvider  # nothing installed globally
    if owned:
        if _owned_provider is None:
            _owned_provider = _create_provider()
        elif _owned_pid != os.getpid():  # a forked child: its own resource, the same exporters
            resource = build_resource(current_config())
            _owned_provider = _provider(resource, _owned_provider.sampler, _owned_pipeline)
        provider: Any = _owned_provider
    else:
        provider = source
    add = getattr(provider, "add_span_processor", None)
    if add is not None:
        if not any(p is provider for p in _with_processor):
            add(tree)
            _with_processor.append(provider)
        config = current_config()
        if not owned and config.asked_for_export and not any(p is provider for p in _exported_to):
            _exported_to.append(provider)
            pipeline = _new_pipeline(config)
            for processor in pipeline.processors if pipeline is not None else ():
                add(processor)
    tracer = provider.get_tracer("tasktrace", VERSION)
    return _Tracing(source=source, provider=provider, tracer=tracer, owned=owned)


def get_tracer() -> trace.Tracer:
    """Return the tracer for the next task, setting tracing up when the global provider changed.

    Thread-safe. Once a provider is installed globally, no check at all: the OpenTelemetry API
    installs a global provider only once, so it never changes again. While tasktrace uses its
    own provider, one call to ``trace.get_tracer_provider()`` and one identity comparison.
    """
    global _state  # noqa: PLW0603 - see _install
    state = _state
    if state is not None and not state.owned:
        return state.tracer
    source = trace.get_tracer_provider()
    if state is not None and state.source is source:
        return state.tracer
    with _lock:
        state = _state
        if state is None or state.source is not source:
            state = _state = _install(source)
        return state.tracer


def current_tracer() -> trace.Tracer:
    """Return the tracer of the last :func:`get_tracer`, without checking the global provider.

    For a task nested in a running task of this process: it goes through its root's provider.
    """
    state = _state
    return state.tracer if state is not None else get_tracer()


def reconfigure() -> None:
    """Apply a new :func:`tasktrace.configure`: later tasks get new exporters and resource.

    The previous pipelines start flushing and shutting down on a daemon thread now; the exit
    handler waits for them within the exit bound.
    """
    global _state, _owned_provider, _owned_pipeline  # noqa: PLW0603 - see _install
    with _lock:
        for pipeline in _pipelines:
            pipeline.begin_shutdown()
        _state = None
        _owned_provider = _owned_pipeline = None
        _exported_to.clear()


def shutdown_export(timeout_s: float | None = None) -> bool:
    """Flush and shut down every tasktrace exporter within ``timeout_s`` seconds in total.

    Past the bound it returns and leaves the export threads (daemons) behind; a single warning
    then says how many spans were not exported and where they were going. The interpreter's
    exit does the same within :func:`exit_deadline`.

    Args:
        timeout_s: The bound in seconds (``None``: :func:`exit_timeout_s`).

    Returns:
        Whether every span was exported.

    """
    bound = exit_timeout_s() if timeout_s is None else timeout_s
    return shutdown_pipelines(pipelines(), time.monotonic() + bound, bound)


def exit_deadline() -> float:
    """Return the ``time.monotonic()`` by which the interpreter's exit ends its exports.

    The first call, by the first of tasktrace's exit handlers to run (the spans' or the task
    metrics', :mod:`tasktrace.export.metric_guard`), fixes it :func:`exit_timeout_s` from then
    and begins every span pipeline's shutdown, so that spans flush while metrics do; later calls
    return the same time. The exit thus waits ``exit_timeout_s`` in all, not once per kind of
    export. For exit handlers only: the first call starts shutting tasktrace's exporters down.
    Thread-safe.
    """
    global _exit_deadline  # noqa: PLW0603 - one exit per process
    with _lock:
        if _exit_deadline is None:
            _exit_deadline = time.monotonic() + exit_timeout_s()
        deadline, started = _exit_deadline, list(_pipelines)
    for pipeline in started:
        pipeline.begin_shutdown()
    return deadline


def _shutdown_at_exit() -> None:  # the spans' exit handler (atexit)
    shutdown_pipelines(pipelines(), exit_deadline(), exit_timeout_s())


def pipelines() -> list[ExportPipeline]:
    """Return the export pipelines tasktrace created in this process, oldest first.

    Every :func:`tasktrace.configure` that asks for exporters adds one (the earlier ones are
    shutting down). For diagnostics and tests.
    """
    with _lock:
        return list(_pipelines)


def tracer_provider() -> Any:
    """Return the tracer provider tasks use now (``None`` before the first task)."""
    state = _state
    return state.provider if state is not None else None


def owns_provider() -> bool:
    """Whether tasks currently go through tasktrace's own (private) tracer provider."""
    state = _state
    return state.owned if state is not None else False


def reset_tracing() -> None:
    """Forget the cached tracer so the next task looks for the provider again (for tests)."""
    global _state  # noqa: PLW0603 - see _install
    with _lock:
        _state = None


on_configure(reconfigure)


def _after_fork_in_child() -> None:
    # The next task of a forked child looks for the provider again (get_tracer), and gets one
    # with the child's resource (_install); a provider not tasktrace's is kept as it is.
    global _state, _exit_deadline  # noqa: PLW0603 - see _install
    if _state is not None and _state.owned:
        _state = None
    _exit_deadline = None  # the child's exit has a deadline of its own


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def flush_spans(timeout_s: float = FLUSH_TIMEOUT_S) -> bool:
    """Flush the tracer provider tasks use now, waiting at most ``timeout_s`` seconds.

    For a process that may end without its exit handlers (a forked worker ending by
    ``os._exit``, a job stopped by ``SIGTERM``). Never raises: a failure is warned about once.

    The wait is at most ``timeout_s`` and at most :func:`exit_timeout_s`; tasktrace's own
    exporters are not waited for at all while their endpoint is known to fail (an export
    failed, or an earlier flush got no answer in time: see
    :mod:`tasktrace.export.pipeline`). A user's span processor on a provider of the user's is
    the user's: how long its ``force_flush`` takes is its own.

    Returns:
        Whether the provider flushed everything in time (``False`` without a provider, for
        one without ``force_flush``, or when an endpoint is known to fail).
    """
    flush = getattr(tracer_provider(), "force_flush", None)
    if flush is None:
        return False
    try:
        return bool(flush(int(min(timeout_s, exit_timeout_s()) * 1000)))
    except Exception as e:  # noqa: BLE001 - exporting must not break the task
        _warn("flush", "tasktrace: flushing spans failed: %r", e)
        return False
