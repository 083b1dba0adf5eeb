"""Task metrics: OpenTelemetry metrics of finished and running tasks, for dashboards.

Traces give one span per task; metrics aggregate task costs across many runs (a Grafana panel
of "duration of `train` by machine, last 30 days"). When metrics are on, tasktrace records:

- ``tasktrace.task.duration``: histogram, ``s``, with ``tasktrace.task.status``;
- ``process.cpu.time``: counter, ``s``, with ``tasktrace.task.status`` and ``cpu.mode``
  (``user`` / ``system``);
- ``hw.energy``: counter, ``J``, with ``tasktrace.task.status`` and ``hw.type`` (``cpu``,
  ``gpu``, ``enclosure`` for the whole system);
- ``tasktrace.task.running.memory.rss``: observable gauge, ``By`` (running tasks only);
- ``tasktrace.task.running.cpu.time``: observable gauge, ``s`` (running tasks only).

Common attributes: ``tasktrace.task.label`` (the task label) and ``tasktrace.machine`` (when the
``machine`` setting is set). The service (``service.name``), host and process are resource
attributes. The task id is never an attribute: metrics must stay low-cardinality, so labels
should be stable names (``"epoch"`` with ``epoch=3`` as data, not ``"epoch 3"``).

Sources: duration from ``time.perf_counter`` (the task's ``duration``); CPU time from
``getrusage(RUSAGE_SELF)`` at start and finish, split into user and system (this process only,
all threads, so a parent's CPU time includes its subtasks': do not sum across nested labels);
energy from the task's energy fields (RAPL, NVML, Prometheus meters). The gauges are read by
the refresh thread every ``refresh_interval_s``: the process's current RSS
(``psutil.Process().memory_info().rss``) and the task's CPU seconds so far; a task stops being
reported once it finishes.

When metrics are on (:func:`enabled`):

- the ``metrics`` setting (``TASKTRACE_METRICS``): ``true`` on, ``false`` off; unset (auto): on
  when ``OTEL_METRICS_EXPORTER`` names an exporter or ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` is
  set, or when a meter provider is already installed globally (the user's, Logfire's,
  ``opentelemetry-instrument``'s), which is then reused, never replaced. The generic
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` alone does not turn metrics on.
- Otherwise tasktrace creates an SDK ``MeterProvider`` with the traces' resource and a
  ``PeriodicExportingMetricReader`` (interval ``OTEL_METRIC_EXPORT_INTERVAL``, 60 s by default)
  for each exporter named by ``OTEL_METRICS_EXPORTER`` (default ``otlp``: the OTel project's
  OTLP exporter, ``http/protobuf`` or ``grpc`` by ``OTEL_EXPORTER_OTLP_(METRICS_)PROTOCOL``,
  its endpoint, headers and timeout parsed by tasktrace from the
  ``OTEL_EXPORTER_OTLP_(METRICS_)*`` variables, see :mod:`tasktrace.export.otlp`; ``console``),
  and installs it globally while the global is still the default proxy.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from opentelemetry import metrics
from opentelemetry.environment_variables import OTEL_METRICS_EXPORTER
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.environment_variables import OTEL_EXPORTER_OTLP_METRICS_ENDPOINT

from tasktrace.core import attributes as attr
from tasktrace.core.forksafe import renew_after_fork
from tasktrace.core.record import TaskRecord
from tasktrace.core.settings import get_settings
from tasktrace.core.version import VERSION
from tasktrace.export.exporters import metric_exporters
from tasktrace.export.provider import build_resource

__all__ = [
    "CPU_MODE",
    "CPU_TIME",
    "DURATION",
    "ENERGY",
    "HW_TYPE",
    "LABEL",
    "RUNNING_CPU_TIME",
    "RUNNING_RSS",
    "TaskMetrics",
    "enabled",
    "reset_metrics",
    "task_metrics",
]

_log = logging.getLogger(__name__)

DURATION: Final = "tasktrace.task.duration"
"""Histogram of finished tasks' wall-clock durations, in seconds (``time.perf_counter``)."""
CPU_TIME: Final = "process.cpu.time"
"""Counter of finished tasks' CPU seconds (semantic convention), by ``cpu.mode``."""
ENERGY: Final = "hw.energy"
"""Counter of finished tasks' energy in joules (semantic convention), by ``hw.type``."""
RUNNING_RSS: Final = "tasktrace.task.running.memory.rss"
"""Observable gauge: the process's current RSS in bytes, per running task label."""
RUNNING_CPU_TIME: Final = "tasktrace.task.running.cpu.time"
"""Observable gauge: a running task's CPU seconds so far (``getrusage(RUSAGE_SELF)``)."""
LABEL: Final = "tasktrace.task.label"
"""Metric attribute: the task's label."""
CPU_MODE: Final = "cpu.mode"
"""Metric attribute (semantic convention): ``user`` or ``system``."""
HW_TYPE: Final = "hw.type"
"""Metric attribute (semantic convention): ``cpu``, ``gpu`` or ``enclosure`` (whole system)."""

_ENERGY_FIELDS: Final = (("cpu_power", "cpu"), ("gpu_power", "gpu"), ("system_power", "enclosure"))


@dataclass
class _Running:
    attributes: dict[str, Any]
    utime0_s: float
    stime0_s: float
    rss_bytes: int | None = None
    cpu_time_s: float | None = None


def _common_attributes(task: TaskRecord) -> dict[str, Any]:
    attrs: dict[str, Any] = {LABEL: task.label}
    if task.machine:
        attrs[attr.MACHINE] = task.machine
    return attrs


class TaskMetrics:
    """The tasktrace instruments on one meter provider (see the module docstring).

    Args:
        provider: An OpenTelemetry ``MeterProvider`` (SDK or any other).

    Thread-safety: every method may be called from any thread.

    """

    def __init__(self, provider: Any) -> None:
        """Create the instruments on ``provider``'s ``tasktrace`` meter."""
        self.provider = provider
        """The meter provider the instruments belong to."""
        meter = provider.get_meter("tasktrace", VERSION)
        self._duration = meter.create_histogram(
            DURATION, unit="s", description="Wall-clock duration of finished tasks"
        )
        self._cpu = meter.create_counter(
            CPU_TIME, unit="s", description="CPU time of this process during finished tasks"
        )
        self._energy = meter.create_counter(
            ENERGY, unit="J", description="Energy used during finished tasks"
        )
        meter.create_observable_gauge(
            RUNNING_RSS,
            callbacks=[self._observe_rss],
            unit="By",
            description="Current resident set size of the process running the task",
        )
        meter.create_observable_gauge(
            RUNNING_CPU_TIME,
            callbacks=[self._observe_cpu],
            unit="s",
            description="CPU time so far of running tasks",
        )
        self._running: dict[int, _Running] = {}
        self._lock = threading.Lock()
        renew_after_fork(self, "_lock")
        self._process: Any = None

    def started(self, task: TaskRecord) -> None:
        """Remember a started task and this process's user/system CPU seconds now."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        state = _Running(_common_attributes(task), usage.ru_utime, usage.ru_stime)
        with self._lock:
            self._running[id(task)] = state

    def refreshed(self, task: TaskRecord) -> None:
        """Store a running task's gauge values (called by the refresh thread)."""
        rss = self._rss_bytes()
        with self._lock:
            state = self._running.get(id(task))
            if state is not None:
                state.rss_bytes = rss
                state.cpu_time_s = task.cpu_time

    def finished(self, task: TaskRecord) -> None:
        """Record a finished task's duration, CPU time and energy; stop its gauges."""
        with self._lock:
            state = self._running.pop(id(task), None)
        if state is None:
            return
        attrs = {**state.attributes, attr.STATUS: task.status.value}
        if task.duration is not None:
            self._duration.record(task.duration, attrs)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self._cpu.add(max(0.0, usage.ru_utime - state.utime0_s), {**attrs, CPU_MODE: "user"})
        self._cpu.add(max(0.0, usage.ru_stime - state.stime0_s), {**attrs, CPU_MODE: "system"})
        for name, hw_type in _ENERGY_FIELDS:
            value = getattr(task, name)
            if value is not None and value >= 0:
                self._energy.add(value, {**attrs, HW_TYPE: hw_type})

    def _rss_bytes(self) -> int | None:
        try:
            if self._process is None:
                import psutil  # noqa: PLC0415 - only when metrics are on

                self._process = psutil.Process()
            return int(self._process.memory_info().rss)
        except Exception:  # noqa: BLE001 - a gauge must never break the refresh
            return None

    def _observe_rss(self, options: CallbackOptions) -> Iterable[Observation]:
        del options
        with self._lock:
            states = list(self._running.values())
        return [Observation(s.rss_bytes, s.attributes) for s in states if s.rss_bytes is not None]

    def _observe_cpu(self, options: CallbackOptions) -> Iterable[Observation]:
        del options
        with self._lock:
            states = list(self._running.values())
        return [Observation(s.cpu_time_s, s.attributes) for s in states if s.cpu_time_s is not None]


# ----- provider resolution -----------------------------------------------------------------------

_UNSET: Final = object()
_state: Any = _UNSET
_state_lock = threading.Lock()
renew_after_fork(sys.modules[__name__], "_state_lock")


def _env_configured() -> bool:
    names = os.environ.get(OTEL_METRICS_EXPORTER, "").strip().lower()
    if names:
        return any(n.strip() not in ("", "none") for n in names.split(","))
    return bool(os.environ.get(OTEL_EXPORTER_OTLP_METRICS_ENDPOINT))


def _is_proxy(provider: object) -> bool:
    try:
        # The API's proxy class is private: looked up where needed, in case a release renames it.
        from opentelemetry.metrics._internal import _ProxyMeterProvider  # noqa: PLC0415
    except ImportError:  # pragma: no cover - a future API without the private class
        return type(provider).__name__ == "_ProxyMeterProvider"
    return isinstance(provider, _ProxyMeterProvider)


def _resolve() -> TaskMetrics | None:
    setting = get_settings().metrics
    if setting is False:
        return None
    provider: Any = metrics.get_meter_provider()
    if _is_proxy(provider):
        if setting is None and not _env_configured():
            return None
        # The metrics SDK is imported only when tasktrace creates a meter provider.
        from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415 - see above
        from opentelemetry.sdk.metrics.export import (  # noqa: PLC0415 - see above
            PeriodicExportingMetricReader,
        )

        readers = [PeriodicExportingMetricReader(e) for e in metric_exporters()]
        metrics.set_meter_provider(MeterProvider(resource=build_resource(), metric_readers=readers))
        provider = metrics.get_meter_provider()  # another thread may have won the race
    return TaskMetrics(provider)


def task_metrics() -> TaskMetrics | None:
    """Return the process's :class:`TaskMetrics`, or ``None`` when metrics are off.

    Decided (and the provider found or created) on the first call; thread-safe.
    """
    state = _state
    if state is _UNSET:
        with _state_lock:
            if _state is _UNSET:
                _set(_resolve())
            state = _state
    return state  # type: ignore[no-any-return]


def _set(value: TaskMetrics | None) -> None:
    global _state  # noqa: PLW0603 - one metrics set-up per process
    _state = value


def _forget() -> None:
    global _state  # noqa: PLW0603 - see _set
    _state = _UNSET


def enabled() -> bool:
    """Whether task metrics are recorded (cheap after the first call)."""
    return task_metrics() is not None


def reset_metrics(provider: Any = None) -> None:
    """Use ``provider`` for task metrics from now on; ``None``: decide again on next use.

    For tests and for programs that set a meter provider up after their first task.
    """
    with _state_lock:
        if provider is None:
            _forget()
        else:
            _set(TaskMetrics(provider))
