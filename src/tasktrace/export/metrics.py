"""Task metrics: OpenTelemetry metrics of finished and running tasks, for dashboards.

Traces give one span per task; metrics aggregate task costs across many runs (a Grafana panel
of "duration of `train` by machine, last 30 days"). When metrics are on, tasktrace records:

- ``tasktrace.task.duration``: histogram, ``s``, with ``tasktrace.task.status`` (buckets from
  1 ms to 1 day: :data:`DURATION_BUCKETS_S`), or the counters :data:`DURATION_SUM` and
  :data:`COUNT` instead (the ``metrics_durations`` setting, below);
- ``process.cpu.time``: observable counter (a monotonic sum), ``s``, with
  ``tasktrace.task.status`` and ``cpu.mode`` (``user`` / ``system``);
- ``hw.energy``: observable counter (a monotonic sum), ``J``, with ``tasktrace.task.status``
  and ``hw.type`` (``cpu``, ``gpu``, ``enclosure`` for the whole system);
- ``tasktrace.task.running.memory.rss``: observable gauge, ``By`` (running tasks only);
- ``tasktrace.task.running.cpu.time``: observable gauge, ``s`` (running tasks only).

Common attributes: ``tasktrace.task.label`` (the task label) and ``tasktrace.machine`` (when the
``machine`` setting is set). The service (``service.name``), host and process are resource
attributes. The task id is never an attribute: metrics must stay low-cardinality, so labels
should be stable names (``"epoch"`` with ``epoch=3`` as data, not ``"epoch 3"``).

Sources: duration from ``time.perf_counter`` (the task's ``duration``); CPU time from the
task's own ``getrusage(RUSAGE_SELF)`` at start and finish, split into user and system (this
process only, all threads, so a parent's CPU time includes its subtasks': do not sum across
nested labels); energy from the task's energy fields (RAPL, NVML, Prometheus meters). The gauges
are read when the metrics are collected (by the meter provider's reader, every export
interval): the process's current RSS (``psutil.Process().memory_info().rss``) and each running
task's CPU seconds so far (``getrusage`` now, less the task's at start), for the tasks in the
task tree's running registry; a task stops being reported once it finishes. A forked child
drops the totals and the gauge's process it inherited (:meth:`TaskMetrics.forget_parent`); the
SDK's histogram state it inherits as it is (see docs/watching-long-runs.md).

What a finishing task costs: tasktrace adds its figures to running totals per label, machine and
status (:class:`~tasktrace.export.task_totals.TaskTotals`: one lock, a few additions) and keeps
its duration until the next collection. No SDK instrument is called on the task's path (the
totals are observable counters); waiting durations go into the histogram when the reader
collects (its first callback), or from a finishing task once :data:`MAX_WAITING_DURATIONS`
wait: about 69,000 instructions a ``Histogram.record`` (a quarter of a nested task), with a
context of tasktrace's own that holds no span, so points carry no exemplars. The
``metrics_durations`` setting ``"sum"`` reports :data:`DURATION_SUM` and :data:`COUNT`
(observable counters from the totals) instead: nothing per task at collection, no quantiles.
Its default, ``"auto"``, gives the histogram where task metrics were asked for (the ``metrics``
setting, or tasktrace's own provider), the counters where they are on only because somebody's
meter provider was found (:func:`~tasktrace.export.task_totals.duration_choice`).

When metrics are on (:func:`tasktrace.export.metrics_setup.enabled`, which also finds or
creates the meter provider):

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
  kept private (never installed globally): a provider the program installs later is found at
  the next top-level task.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry.metrics import CallbackOptions, Observation

from tasktrace.core.record import TaskRecord
from tasktrace.core.version import VERSION
from tasktrace.export.task_totals import (
    LABEL,
    MAX_WAITING_DURATIONS,
    TaskTotals,
    Totals,
    common_attributes,
)

__all__ = [
    "COUNT",
    "CPU_MODE",
    "CPU_TIME",
    "DURATION",
    "DURATION_BUCKETS_S",
    "DURATION_SUM",
    "ENERGY",
    "HW_TYPE",
    "LABEL",
    "MAX_WAITING_DURATIONS",
    "RUNNING_CPU_TIME",
    "RUNNING_RSS",
    "RunningSource",
    "TaskMetrics",
    "set_running_source",
]

_log = logging.getLogger(__name__)

DURATION: Final = "tasktrace.task.duration"
"""Histogram of finished tasks' wall-clock durations, in seconds (``time.perf_counter``)."""
DURATION_SUM: Final = "tasktrace.task.duration.sum"
"""Monotonic sum of finished tasks' durations, in seconds (``metrics_durations="sum"``)."""
COUNT: Final = "tasktrace.task.count"
"""Monotonic sum: how many tasks finished with a duration (``metrics_durations="sum"``)."""
CPU_TIME: Final = "process.cpu.time"
"""Monotonic sum of finished tasks' CPU seconds (semantic convention), by ``cpu.mode``."""
ENERGY: Final = "hw.energy"
"""Monotonic sum of finished tasks' energy in joules (semantic convention), by ``hw.type``."""
RUNNING_RSS: Final = "tasktrace.task.running.memory.rss"
"""Observable gauge: the process's current RSS in bytes, per running task label."""
RUNNING_CPU_TIME: Final = "tasktrace.task.running.cpu.time"
"""Observable gauge: a running task's CPU seconds so far (``getrusage(RUSAGE_SELF)``)."""
CPU_MODE: Final = "cpu.mode"
"""Metric attribute (semantic convention): ``user`` or ``system``."""
HW_TYPE: Final = "hw.type"
"""Metric attribute (semantic convention): ``cpu``, ``gpu`` or ``enclosure`` (whole system)."""

DURATION_BUCKETS_S: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0)  # fmt: skip
"""Bucket boundaries of the duration histogram in seconds, the SDK's advice (the SDK's default,
0, 5, 10 … 10,000, is meant for ms); a view of the provider setting an aggregation wins."""

_NO_SPAN: Final = otel_context.Context({otel_context.create_key("tasktrace.metrics"): True})
"""The context of each histogram record: no span, so the default (trace-based) exemplar filter
offers no exemplar; non-empty (an empty ``Context`` is falsy), so the SDK does not read the
current one, which on a finishing task's thread holds the parent task's span."""

RunningSource = Callable[[], Iterable[tuple[TaskRecord, float | None]]]
"""Returns the running tasks of this process with their CPU seconds so far (``None``: unknown)."""
_running_source: RunningSource = lambda: ()  # noqa: E731 - bound by the façade at import


def set_running_source(source: RunningSource) -> None:
    """Set where the running-task gauges come from (the façade's; it knows each task's start)."""
    global _running_source  # noqa: PLW0603 - bound once, at the façade's import
    _running_source = source


class TaskMetrics:
    """The tasktrace instruments on one meter provider (see the module docstring).

    Args:
        provider: An OpenTelemetry ``MeterProvider`` (SDK or any other).
        durations: ``"histogram"`` (the ``tasktrace.task.duration`` histogram) or ``"sum"``
            (the ``tasktrace.task.duration.sum`` and ``tasktrace.task.count`` counters): the
            ``metrics_durations`` setting.

    Thread-safety: every method may be called from any thread.

    """

    def __init__(self, provider: Any, durations: str = "histogram") -> None:
        """Create the instruments on ``provider``'s ``tasktrace`` meter."""
        self.provider = provider
        """The meter provider the instruments belong to."""
        self.durations = durations
        """How durations are reported: ``"histogram"`` or ``"sum"`` (see the args)."""
        self._totals = TaskTotals(keep_durations=durations != "sum")
        self._process: Any = None
        meter = provider.get_meter("tasktrace", VERSION)
        self._duration: Any = None
        counter, gauge = meter.create_observable_counter, meter.create_observable_gauge
        observed: list[tuple[Any, str, Any, str, str]] = [
            (
                counter,
                CPU_TIME,
                self._observe_cpu_total,
                "s",
                "CPU time of this process during finished tasks",
            ),
            (counter, ENERGY, self._observe_energy, "J", "Energy used during finished tasks"),
            (
                gauge,
                RUNNING_RSS,
                self._observe_rss,
                "By",
                "Current resident set size of the process running the task",
            ),
            (gauge, RUNNING_CPU_TIME, self._observe_cpu, "s", "CPU time so far of running tasks"),
        ]
        if durations == "sum":
            observed[:0] = [
                (
                    counter,
                    DURATION_SUM,
                    self._observe_duration_sum,
                    "s",
                    "Wall-clock duration of finished tasks, summed",
                ),
                (counter, COUNT, self._observe_count, "{task}", "Finished tasks"),
            ]
        else:
            self._duration = meter.create_histogram(
                DURATION,
                unit="s",
                description="Wall-clock duration of finished tasks",
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S,
            )
        for create, name, callback, unit, description in observed:
            create(name, callbacks=[callback], unit=unit, description=description)

    def finished(self, task: TaskRecord, user_s: float, system_s: float) -> None:
        """Add a finished task's duration, CPU time and energy to the totals.

        Args:
            task: The finished task (its ``label``, ``machine``, ``status``, ``duration`` and
                energy fields are read).
            user_s: Its user CPU seconds (from its own ``getrusage`` at start and finish).
            system_s: Its system CPU seconds (same source).
        """
        if self._totals.finished(task, user_s, system_s):
            self.record_durations()

    def record_durations(self) -> None:
        """Record the waiting durations into the histogram now (see the module docstring)."""
        batches = self._totals.take_durations()
        if self._duration is None:
            return
        record = self._duration.record
        for attrs, durations in batches:
            for duration in durations:
                record(duration, attrs, _NO_SPAN)

    def forget_parent(self) -> None:
        """After ``os.fork``, in the child: forget the parent's figures (else counted twice).

        The totals, the waiting durations and the RSS gauge's ``psutil.Process`` are dropped.
        """
        self._totals.forget()
        self._process = None

    def _snapshot(self) -> list[Totals]:
        self.record_durations()  # every callback: whichever runs first in a collection
        return self._totals.snapshot()

    def _observe_duration_sum(self, options: CallbackOptions) -> Iterable[Observation]:
        del options
        return [Observation(t.duration_s, t.attributes) for t in self._snapshot()]

    def _observe_count(self, options: CallbackOptions) -> Iterable[Observation]:
        del options
        return [Observation(t.count, t.attributes) for t in self._snapshot()]

    def _observe_cpu_total(self, options: CallbackOptions) -> Iterable[Observation]:
        del options
        out = []
        for t in self._snapshot():
            out.append(Observation(t.user_s, {**t.attributes, CPU_MODE: "user"}))
            out.append(Observation(t.system_s, {**t.attributes, CPU_MODE: "system"}))
        return out

    def _observe_energy(self, options: CallbackOptions) -> Iterable[Observation]:
        del options
        return [
            Observation(joules, {**t.attributes, HW_TYPE: hw_type})
            for t in self._snapshot()
            for hw_type, joules in t.energy_j.items()
        ]

    def _rss_bytes(self) -> int | None:
        try:
            if self._process is None:
                import psutil  # noqa: PLC0415 - only when metrics are on

                self._process = psutil.Process()
            return int(self._process.memory_info().rss)
        except Exception:  # noqa: BLE001 - a gauge must never break the collection
            return None

    def _running(self) -> list[tuple[dict[str, Any], float | None]]:
        self.record_durations()
        try:
            running = list(_running_source())
        except Exception as e:  # noqa: BLE001 - a gauge must never break the collection
            _log.debug("tasktrace: running tasks unreadable for the gauges (%r)", e)
            return []
        return [(common_attributes(t.label, t.machine), cpu_s) for t, cpu_s in running]

    def _observe_rss(self, options: CallbackOptions) -> Iterable[Observation]:
        del options
        running = self._running()
        if not running:
            return []
        rss = self._rss_bytes()
        if rss is None:
            return []
        return [Observation(rss, attrs) for attrs, _ in running]

    def _observe_cpu(self, options: CallbackOptions) -> Iterable[Observation]:
        del options
        return [Observation(cpu_s, attrs) for attrs, cpu_s in self._running() if cpu_s is not None]
